//! Readers and writers of the on-disk annotation formats.
//!
//! Every reader turns a source into [`SourcedFace`]s: a [`FaceRecord`] in the internal pixel
//! convention (pixel centres at +0.5, see [`crate::face`]) plus the [`Origin`] it came from, so
//! that a later check (ingest validation) can still name the file and line. A reader's doc
//! comment states which pixel rule it applies and why.
//!
//! Readers return `Result<Vec<Result<SourcedFace, ReadError>>, ReadError>`: the outer error
//! means the source as a whole cannot be read (missing file, bad header, not a database); each
//! inner error is one record that could not be read, so the caller decides whether to skip it.

pub mod aflw;
pub mod coco;
pub mod hrnet_csv;
pub mod pts;
pub mod w300;
pub mod wflw;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::face::{BBox, BoxSource, FaceRecord};
use crate::{MESSAGE_EXCERPT, VALUE_EXCERPT, escaped_path, excerpt};

/// Where in its file a record came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// The whole file (a record that is one file, e.g. a `.pts` file before its points).
    File,
    /// A 1-based line of a text file (a CSV row counts its header as line 1).
    Line(usize),
    /// A `.pts` file whose point k is on line `first_line + k`.
    PtsPoints {
        /// 1-based line of point 0.
        first_line: usize,
    },
    /// A face of an AFLW database.
    AflwFace(i64),
    /// An annotation of a COCO JSON file: its index in `annotations` and its `id` (when it
    /// has an integer one).
    Annotation {
        /// 0-based index in the `annotations` array.
        index: usize,
        /// The annotation's `id`.
        id: Option<i64>,
    },
}

impl Location {
    /// Describe the location, pointing at landmark `point` where the format allows it.
    pub fn describe(&self, point: Option<usize>) -> String {
        match (self, point) {
            (Location::File, _) => "whole file".to_owned(),
            (Location::Line(n), _) => format!("line {n}"),
            (Location::PtsPoints { first_line }, Some(k)) => format!("line {}", first_line + k),
            (Location::PtsPoints { .. }, None) => "whole file".to_owned(),
            (Location::AflwFace(id), _) => format!("face_id {id}"),
            (
                Location::Annotation {
                    index,
                    id: Some(id),
                },
                _,
            ) => {
                format!("annotations[{index}] (id {id})")
            }
            (Location::Annotation { index, id: None }, _) => format!("annotations[{index}]"),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe(None))
    }
}

/// The file and place a record came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The annotation file.
    pub path: PathBuf,
    /// The place in it.
    pub location: Location,
}

/// A face record together with where it was read from.
#[derive(Debug, Clone, PartialEq)]
pub struct SourcedFace {
    /// The face.
    pub face: FaceRecord,
    /// Where it came from.
    pub origin: Origin,
}

/// The result of reading one source: per record, the face or why it could not be read.
pub type Entries = Vec<Result<SourcedFace, ReadError>>;

/// How a format numbers pixels; decides the offset added to its values on reading. The
/// serialised names are the `origin` values of a `kind = "coco"` source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PixelOrigin {
    /// MATLAB-style: the centre of the top-left pixel is (1, 1); reading subtracts 0.5.
    OneBased,
    /// Pixel indices: the centre of the top-left pixel is (0, 0); reading adds 0.5.
    ZeroBased,
    /// wingflow's own convention: the centre of the top-left pixel is (0.5, 0.5).
    Continuous,
}

impl PixelOrigin {
    /// The offset that takes a value of this convention to the internal one.
    pub fn to_internal(self) -> f64 {
        match self {
            PixelOrigin::OneBased => -0.5,
            PixelOrigin::ZeroBased => 0.5,
            PixelOrigin::Continuous => 0.0,
        }
    }

    /// The name used in `wingflow.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            PixelOrigin::OneBased => "one-based",
            PixelOrigin::ZeroBased => "zero-based",
            PixelOrigin::Continuous => "continuous",
        }
    }
}

/// Why a source or one of its records could not be read. Every variant names the file, and
/// where it can, the line, row or face. Messages are bounded: file names that are not UTF-8
/// are escaped ([`escaped_path`]), and what came from the input is shown as an [`excerpt`].
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file or folder cannot be read at all.
    #[error("cannot read {}: {source}", escaped_path(path))]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A value, line or structure of a text file is malformed.
    #[error(
        "{}, line {line}: {}",
        escaped_path(path),
        excerpt(problem, MESSAGE_EXCERPT)
    )]
    Syntax {
        /// The annotation file.
        path: PathBuf,
        /// 1-based line number (0 when the file is empty).
        line: usize,
        /// What is wrong.
        problem: String,
    },
    /// The image an annotation refers to is missing or its header cannot be decoded.
    #[error(
        "{}, {location}: image {} cannot be read: {}",
        escaped_path(path),
        excerpt(escaped_path(image), MESSAGE_EXCERPT),
        excerpt(source, MESSAGE_EXCERPT)
    )]
    Image {
        /// The annotation file.
        path: PathBuf,
        /// Where the annotation refers to the image.
        location: Location,
        /// The image file.
        image: PathBuf,
        /// The decoder's error (boxed: it is large and errors travel in every record).
        source: Box<image::ImageError>,
    },
    /// An sqlite database cannot be opened or queried.
    #[error(
        "{}: sqlite error while {doing}: {}",
        escaped_path(path),
        excerpt(source, MESSAGE_EXCERPT)
    )]
    Sqlite {
        /// The database.
        path: PathBuf,
        /// What the reader was doing (e.g. the table it read).
        doing: String,
        /// The sqlite error.
        source: rusqlite::Error,
    },
    /// A record is structurally readable but its content is invalid.
    #[error(
        "{}, {location}: {}",
        escaped_path(path),
        excerpt(problem, MESSAGE_EXCERPT)
    )]
    Record {
        /// The annotation file.
        path: PathBuf,
        /// The record.
        location: Location,
        /// What is wrong.
        problem: String,
    },
    /// The source as configured cannot be read (no data found, unknown point count, …).
    #[error("{}: {}", escaped_path(path), excerpt(problem, MESSAGE_EXCERPT))]
    Source {
        /// The file or folder.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

impl ReadError {
    /// The annotation file (or folder) the error is about.
    pub fn path(&self) -> &Path {
        match self {
            ReadError::Io { path, .. }
            | ReadError::Syntax { path, .. }
            | ReadError::Image { path, .. }
            | ReadError::Sqlite { path, .. }
            | ReadError::Record { path, .. }
            | ReadError::Source { path, .. } => path,
        }
    }

    /// Where in the file the error is, in words (`line 12`, `face_id 7`, `whole file`).
    pub fn location(&self) -> String {
        match self {
            ReadError::Syntax { line, .. } => format!("line {line}"),
            ReadError::Image { location, .. } | ReadError::Record { location, .. } => {
                location.to_string()
            }
            ReadError::Io { .. } | ReadError::Sqlite { .. } | ReadError::Source { .. } => {
                "whole file".to_owned()
            }
        }
    }
}

/// Parse one coordinate-like value: any decimal float Rust accepts, but finite only (the text
/// `nan`, `inf`, `infinity` and overflowing values are errors, not data).
pub(crate) fn parse_finite(field: &str) -> Result<f64, String> {
    match field.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(_) => Err(format!("`{}` is not a finite number", quote(field))),
        Err(_) => Err(format!("`{}` is not a number", quote(field))),
    }
}

/// A value read from a file, as a message shows it: a [`VALUE_EXCERPT`]-byte [`excerpt`].
pub(crate) fn quote(value: &str) -> String {
    excerpt(value, VALUE_EXCERPT)
}

/// The longest image name a list or JSON file may give: Linux's `PATH_MAX`. A longer one names
/// no file, and is refused before it is copied or joined to the image folder.
pub(crate) const MAX_NAME_BYTES: usize = 4096;

/// Refuse an image name (the `what` of the file) longer than [`MAX_NAME_BYTES`].
pub(crate) fn check_name_length(name: &str, what: &str) -> Result<(), String> {
    if name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "{what} `{}` is longer than any file name (at most {MAX_NAME_BYTES} bytes)",
            quote(name)
        ));
    }
    Ok(())
}

/// Read one line of `reader` (up to its `\n`, which is consumed but not kept) into `line`,
/// keeping at most `max` bytes of it. Returns the line's whole length in bytes without the
/// `\n`, or `None` at the end of the input: a line longer than `max` is read through without
/// being held in memory.
pub(crate) fn read_line_bounded(
    reader: &mut impl std::io::BufRead,
    line: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Option<u64>> {
    line.clear();
    let (mut len, mut any) = (0u64, false);
    loop {
        let buf = match reader.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(any.then_some(len));
        }
        any = true;
        let newline = buf.iter().position(|&b| b == b'\n');
        let part = &buf[..newline.unwrap_or(buf.len())];
        let room = max.saturating_sub(line.len());
        line.extend_from_slice(&part[..part.len().min(room)]);
        len += part.len() as u64;
        let used = newline.map_or(buf.len(), |i| i + 1);
        reader.consume(used);
        if newline.is_some() {
            return Ok(Some(len));
        }
    }
}

/// Width and height of an image, from its header only (the pixels are not decoded).
pub(crate) fn image_dimensions(image: &Path) -> Result<(u32, u32), Box<image::ImageError>> {
    let dims = || -> Result<(u32, u32), image::ImageError> {
        image::ImageReader::open(image)?
            .with_guessed_format()?
            .into_dimensions()
    };
    dims().map_err(Box::new)
}

/// An annotated face's image as stored in `faces.parquet`: its path as UTF-8 text, width and
/// height (from the header only). Errors name the annotation record at `origin`.
pub(crate) fn image_facts(image: &Path, origin: &Origin) -> Result<(String, u32, u32), ReadError> {
    let (width, height) = image_dimensions(image).map_err(|source| ReadError::Image {
        path: origin.path.clone(),
        location: origin.location.clone(),
        image: image.to_owned(),
        source,
    })?;
    Ok((path_text(image, origin)?, width, height))
}

/// A text annotation file, or an error naming the file (and, for bytes that are not UTF-8, the
/// line they are on).
pub(crate) fn read_text(path: &Path) -> Result<String, ReadError> {
    let bytes = std::fs::read(path).map_err(|source| ReadError::Io {
        path: path.into(),
        source,
    })?;
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        ReadError::Syntax {
            path: path.into(),
            line: 1 + valid.iter().filter(|&&b| b == b'\n').count(),
            problem: "not valid UTF-8 text".to_owned(),
        }
    })
}

/// A face parsed from one line of a list file (an HRNet CSV or a WFLW list), before its image
/// is opened.
pub(crate) struct ListedFace {
    /// 1-based line number in the list.
    pub(crate) line: usize,
    /// The image's path relative to the list's image folder.
    pub(crate) image_name: String,
    /// x0, y0, x1, y1, … in the internal pixel convention.
    pub(crate) xy: Vec<f32>,
    /// The annotated face box, in the internal pixel convention.
    pub(crate) bbox: BBox,
}

/// What every face of one list file shares.
pub(crate) struct ListSource<'a> {
    /// The list file.
    pub(crate) list: &'a Path,
    /// Folder the image names are relative to.
    pub(crate) images: &'a Path,
    /// Dataset name, stored in every record.
    pub(crate) dataset: &'a str,
    /// Landmark scheme name, stored in every record.
    pub(crate) scheme: &'a str,
    /// Split of every face in the file.
    pub(crate) split: &'a str,
}

impl ListSource<'_> {
    /// The record of a listed face: its image is opened for its size, every point is visible
    /// (list formats mark no occlusion per point), and the box is the annotation's.
    pub(crate) fn face(
        &self,
        listed: ListedFace,
        sample_id: String,
    ) -> Result<SourcedFace, ReadError> {
        let origin = Origin {
            path: self.list.into(),
            location: Location::Line(listed.line),
        };
        let image = self.images.join(&listed.image_name);
        let (image_path, width, height) = image_facts(&image, &origin)?;
        let face = FaceRecord {
            sample_id,
            dataset: self.dataset.to_owned(),
            scheme: self.scheme.to_owned(),
            split: self.split.to_owned(),
            image_path,
            image_width: width,
            image_height: height,
            visible: vec![true; listed.xy.len() / 2],
            occluded: vec![false; listed.xy.len() / 2],
            landmarks: listed.xy,
            bbox: listed.bbox,
            bbox_source: BoxSource::Annotation,
            yaw: None,
            pitch: None,
            roll: None,
            attributes: None,
        };
        Ok(SourcedFace { face, origin })
    }
}

/// A path as UTF-8 text (it is stored in `faces.parquet`), or a record error naming it.
pub(crate) fn path_text(path: &Path, origin: &Origin) -> Result<String, ReadError> {
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| ReadError::Record {
            path: origin.path.clone(),
            location: origin.location.clone(),
            problem: format!(
                "image path {} is not valid UTF-8",
                excerpt(escaped_path(path), MESSAGE_EXCERPT)
            ),
        })
}

/// A split name read off a file name: `train`, `test` or `val` when the stem contains exactly
/// one of them as a `_`/`-`/`.`-separated word (e.g. `face_landmarks_wflw_test.csv` → `test`).
pub fn split_from_file_name(path: &Path) -> Option<&'static str> {
    let stem = path.file_stem()?.to_str()?.to_ascii_lowercase();
    let words: Vec<&str> = stem.split(['_', '-', '.']).collect();
    let found: Vec<&'static str> = [("train", "train"), ("test", "test"), ("val", "val")]
        .into_iter()
        .filter(|(word, _)| words.contains(word))
        .map(|(_, split)| split)
        .collect();
    match found.as_slice() {
        [one] => Some(one),
        _ => None,
    }
}

/// The file stem of an image path without its extension, with `/` separators, for sample ids
/// (`ibug/image_092_01.jpg` → `ibug/image_092_01`).
pub(crate) fn strip_extension(name: &str) -> &str {
    match name.rfind('.') {
        Some(dot) if !name[dot..].contains('/') && dot > 0 => &name[..dot],
        _ => name,
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Helpers for the readers' tests: tiny images on disk, damaged files.

    use std::path::Path;

    use contract::scheme::Scheme;

    /// A scheme of `n` points named `test` (only the count matters to a reader).
    pub fn scheme_of(n: usize) -> Scheme {
        let mut s = contract::scheme::by_name("wflw98").unwrap().clone();
        s.name = "test";
        s.point_names.truncate(n);
        s.flip_permutation = (0..n).collect();
        s
    }

    /// A damaged copy of `valid` for the readers' fuzz tests: line `drop_line` (0-based, when
    /// given and present) left out, the bytes at the `flips` offsets that exist replaced, then
    /// cut to at most `cut` bytes.
    pub fn mutated(
        valid: &str,
        drop_line: Option<usize>,
        flips: &[(usize, u8)],
        cut: usize,
    ) -> Vec<u8> {
        let mut bytes: Vec<u8> = valid
            .split_inclusive('\n')
            .enumerate()
            .filter(|(i, _)| Some(*i) != drop_line)
            .flat_map(|(_, l)| l.bytes())
            .collect();
        for &(at, b) in flips {
            if let Some(slot) = bytes.get_mut(at) {
                *slot = b;
            }
        }
        bytes.truncate(cut.min(bytes.len()));
        bytes
    }

    /// Write a `w`×`h` PNG (its content does not matter; only the header is read).
    pub fn write_png(path: &Path, w: u32, h: u32) {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        image::RgbImage::new(w, h).save(path).unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_read_off_the_file_name_only_when_unambiguous() {
        let s = |p: &str| split_from_file_name(Path::new(p));
        assert_eq!(s("face_landmarks_300w_train.csv"), Some("train"));
        assert_eq!(s("list_98pt_rect_attr_test.txt"), Some("test"));
        assert_eq!(s("aflw.sqlite"), None);
        assert_eq!(s("train_test.csv"), None);
        assert_eq!(s("contest.csv"), None);
    }

    #[test]
    fn extensions_are_stripped_from_the_last_component_only() {
        assert_eq!(
            strip_extension("ibug/image_092_01.jpg"),
            "ibug/image_092_01"
        );
        assert_eq!(strip_extension("a.b/c"), "a.b/c");
        assert_eq!(strip_extension("noext"), "noext");
    }

    #[test]
    fn finite_parse_rejects_nan_and_infinity() {
        assert_eq!(
            parse_finite("460.55199999999996").unwrap(),
            460.55199999999996
        );
        assert!(parse_finite("nan").unwrap_err().contains("finite"));
        assert!(parse_finite("-inf").unwrap_err().contains("finite"));
        assert!(parse_finite("1e999").unwrap_err().contains("finite"));
        assert!(parse_finite("12a").unwrap_err().contains("not a number"));
    }
}
