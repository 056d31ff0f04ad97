//! COCO-style keypoint JSON, as mmpose ships 300W, AFLW, WFLW, COFW and 300W-LP faces and as
//! COCO-WholeBody keeps a face: `images[]` (`id`, `file_name`, `width`, `height`) and
//! `annotations[]` (`id`, `image_id`, `keypoints` `[x, y, v] × N`, `bbox` `[x, y, w, h]`);
//! WholeBody's face is `face_kpts` / `face_box` / `face_valid` ([`CocoField::Face`]).
//!
//! Pixel rule: files differ, so the source says which rule applies ([`PixelOrigin`]):
//! - `one-based` (the `.pts` rule: mmpose's 300W file keeps the `.pts` values): 0.5 is
//!   subtracted from the points and the box corner (mmpose derived its boxes from those values);
//! - `zero-based` (the COCO rule: keypoints are 0-based pixel indices, boxes are continuous
//!   already; Detectron2 adds 0.5 to the keypoints only): 0.5 is added to the points;
//! - `continuous` (wingflow's own convention): nothing is added.
//!
//! Visibility ([`CocoVisibility`]): `v = 0` is an unlabelled point (NaN, not visible). Under
//! `coco`, `v = 2` is visible and `v = 1` labelled but occluded: the point keeps its coordinates,
//! is visible (it trains and is scored) and is marked occluded. Under `labelled`, every point with
//! `v > 0` is labelled and not occluded (mmpose's 300W, AFLW and WFLW files write 1 for every
//! point; 300W-LP writes 2).

use std::collections::HashMap;
use std::path::Path;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{
    Entries, Location, Origin, PixelOrigin, ReadError, SourcedFace, check_name_length, image_facts,
};
use crate::face::{BBox, BoxSource, FaceRecord, landmarks_bbox};
use crate::{MESSAGE_EXCERPT, VALUE_EXCERPT, escaped_path, excerpt};
use contract::scheme::Scheme;

/// Which member of an annotation holds the face.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CocoField {
    /// `keypoints` and `bbox` (mmpose's face files).
    #[default]
    Keypoints,
    /// COCO-WholeBody's `face_kpts`, `face_box` and `face_valid`.
    Face,
}

impl CocoField {
    /// The name used in `wingflow.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            CocoField::Keypoints => "keypoints",
            CocoField::Face => "face",
        }
    }

    /// The annotation members holding the points and the box.
    fn members(self) -> (&'static str, &'static str) {
        match self {
            CocoField::Keypoints => ("keypoints", "bbox"),
            CocoField::Face => ("face_kpts", "face_box"),
        }
    }
}

/// What a point's `v` flag means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CocoVisibility {
    /// COCO's meaning: 2 visible, 1 labelled but occluded, 0 not labelled.
    Coco,
    /// Every point with `v > 0` is labelled and not occluded.
    Labelled,
}

impl CocoVisibility {
    /// The name used in `wingflow.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            CocoVisibility::Coco => "coco",
            CocoVisibility::Labelled => "labelled",
        }
    }
}

/// One COCO keypoint JSON source.
#[derive(Debug, Clone, Copy)]
pub struct CocoJson<'a> {
    /// The JSON file.
    pub path: &'a Path,
    /// Folder `file_name` is relative to.
    pub images: &'a Path,
    /// Dataset name: first part of every sample id.
    pub dataset: &'a str,
    /// Split of every face in the file.
    pub split: &'a str,
    /// The landmark scheme; every annotation must have its point count.
    pub scheme: &'a Scheme,
    /// Which member holds the face.
    pub field: CocoField,
    /// The pixel rule of the values.
    pub origin: PixelOrigin,
    /// What the `v` flags mean.
    pub visibility: CocoVisibility,
}

/// What a COCO file yielded: the faces (or why each could not be read) and the number of
/// annotations that hold no face (WholeBody persons with `face_valid = false`, annotations
/// without a labelled point), which are left out without being errors.
#[derive(Debug)]
pub struct CocoEntries {
    /// One entry per annotation that holds a face, in file order.
    pub entries: Entries,
    /// Annotations without a face.
    pub without_face: usize,
}

/// What `wingflow init` makes of a COCO file: the settings it infers, and a comment on what it
/// recognised and how to check it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CocoGuess {
    /// The member holding the faces (`face` when annotations have `face_kpts`).
    pub field: CocoField,
    /// The scheme with the file's point count, if one has it.
    pub scheme: Option<&'static str>,
    /// The pixel rule of the recognised flavour.
    pub origin: PixelOrigin,
    /// The meaning of the file's `v` flags.
    pub visibility: CocoVisibility,
    /// What was recognised, why these values, and how to check them (several lines).
    pub advice: String,
}

/// How to check `origin` (the last line of every [`CocoGuess::advice`]).
const ORIGIN_CHECK: &str = "Check origin on a contact sheet (`wingflow inspect SHARD_DIR --contact-sheet \
    PNG`): on small crops a wrong origin shows as every point shifted by one pixel.";

/// Recognise a COCO keypoint file (mmpose's 300W, AFLW, WFLW, COFW and 300W-LP files,
/// COCO-WholeBody) and infer `field`, `scheme`, `origin` and `visibility`.
///
/// Rules: annotations with `face_kpts` are COCO-WholeBody (68 points, the COCO rule:
/// `zero-based`). Otherwise the point count names the scheme; 68 points are mmpose's 300W file
/// (`v = 1` everywhere; it keeps the `.pts` values: `one-based`) or 300W-LP (`v = 2` everywhere;
/// its points come from MATLAB files: `one-based`); 19 (AFLW), 98 (WFLW) and 29 (COFW) points
/// are 0-based pixel indices as in HRNet's CSV files (`zero-based`); any other file (e.g. 68
/// points with both flags) is taken to follow the COCO rule (`zero-based`). Visibility: `coco` when the
/// file uses both `v = 1` and `v = 2` (COFW's and COCO's meaning), else `labelled`.
pub fn guess(path: &Path) -> Result<CocoGuess, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let root: Value = serde_json::from_slice(&bytes).map_err(|e| format!("not valid JSON: {e}"))?;
    let annotations = root
        .get("annotations")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
        .ok_or("no annotations")?;
    let wholebody = annotations.iter().any(|a| a.get("face_kpts").is_some());
    let field = if wholebody {
        CocoField::Face
    } else {
        CocoField::Keypoints
    };
    let (points_key, box_key) = field.members();
    let mut counts = std::collections::BTreeSet::new();
    let mut flags = std::collections::BTreeSet::new();
    for a in annotations {
        let Some(points) = a.get(points_key).and_then(Value::as_array) else {
            continue;
        };
        counts.insert(points.len() / 3);
        for p in points.chunks_exact(3) {
            if let Some(v) = p[2].as_f64() {
                flags.insert(v as i64);
            }
        }
    }
    let n = match counts.iter().copied().collect::<Vec<_>>()[..] {
        [n] => n,
        ref several => return Err(format!("annotations have {several:?} points")),
    };
    let scheme = contract::scheme::all()
        .iter()
        .find(|s| s.num_points() == n)
        .map(|s| s.name);
    let visibility = if flags.contains(&1) && flags.contains(&2) {
        CocoVisibility::Coco
    } else {
        CocoVisibility::Labelled
    };
    let flags_text = flags
        .iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    // Flags other than 0 (unlabelled) are all `v`.
    let only = |v: i64| flags.iter().all(|&f| f == 0 || f == v);
    let (flavour, origin, face_box) = match (wholebody, n) {
        (true, _) => (
            "COCO-WholeBody faces (`face_kpts`)",
            PixelOrigin::ZeroBased,
            true,
        ),
        (false, 68) if only(1) => (
            "mmpose's 300W file (68 points, v = 1; it keeps the .pts values)",
            PixelOrigin::OneBased,
            true,
        ),
        (false, 68) if only(2) => (
            "300W-LP (68 points, v = 2; from MATLAB files, taken as 1-based like .pts)",
            PixelOrigin::OneBased,
            false,
        ),
        (false, 19) => (
            "mmpose's AFLW file (19 points)",
            PixelOrigin::ZeroBased,
            true,
        ),
        (false, 98) => (
            "mmpose's WFLW file (98 points)",
            PixelOrigin::ZeroBased,
            false,
        ),
        (false, 29) => (
            "mmpose's COFW file (29 points)",
            PixelOrigin::ZeroBased,
            true,
        ),
        _ => (
            "a COCO keypoint file of no known mmpose flavour (the COCO rule assumed)",
            PixelOrigin::ZeroBased,
            true,
        ),
    };
    let mut advice = format!(
        "Recognised as {flavour}: origin \"{}\"; v flags in the file: {flags_text}, so \
         visibility \"{}\" ({}).",
        origin.as_str(),
        visibility.as_str(),
        match visibility {
            CocoVisibility::Coco =>
                "1 = labelled but occluded: kept, trained and scored, marked occluded",
            CocoVisibility::Labelled => "every point with v > 0 labelled and not occluded",
        }
    );
    if !face_box {
        advice.push_str(&format!(
            "\nIts `{box_key}` is not a face box ({}): keep [render] box_rule = \"landmarks\".",
            if n == 98 {
                "mmpose rescales WFLW's box to about 200 px"
            } else {
                "300W-LP's box is the landmarks' extent"
            }
        ));
    }
    advice.push('\n');
    advice.push_str(ORIGIN_CHECK);
    Ok(CocoGuess {
        field,
        scheme,
        origin,
        visibility,
        advice,
    })
}

/// One `images[]` entry.
struct ImageEntry {
    index: usize,
    /// The image's path relative to the image folder, or why it names no file (too long: an
    /// error of the annotations on this image, not of the whole file).
    file_name: Result<String, String>,
    size: Option<(u64, u64)>,
}

/// An annotation's face, before its image is opened.
struct Parsed {
    image_id: i64,
    id: i64,
    xy: Vec<f32>,
    visible: Vec<bool>,
    occluded: Vec<bool>,
    bbox: Option<BBox>,
}

/// Whether `text` (the start of a JSON file) looks like a COCO keypoint file: an object with
/// `images` or `annotations` (for `wingflow init`, which reads only the file's start).
pub fn looks_like_coco(text: &str) -> bool {
    text.trim_start().starts_with('{')
        && (text.contains("\"annotations\"") || text.contains("\"images\""))
}

impl CocoJson<'_> {
    /// Read every annotation of the file.
    ///
    /// Sample id: `<dataset>/<annotation id>` (stable across runs). Box: the annotation's
    /// `bbox` (`face_box`) as the annotation box; where it is missing or empty, the landmarks'
    /// box. The image size comes from the image header (a different `width`/`height` in
    /// `images[]` is an error for the annotation).
    ///
    /// Whole-file errors: not JSON (with its line and column), no `images` or `annotations`
    /// array, an `images[]` entry without an integer `id` or a `file_name`, two entries with
    /// one id. Errors of one annotation (named by its index and id): no integer `id`, an
    /// `image_id` that `images[]` lacks, points that are not `3 × N` finite numbers of the
    /// scheme's N, a `v` other than 0, 1 or 2, a box that is not four finite numbers.
    pub fn read(&self) -> Result<CocoEntries, ReadError> {
        let bytes = std::fs::read(self.path).map_err(|source| ReadError::Io {
            path: self.path.into(),
            source,
        })?;
        self.parse(&bytes)
    }

    /// [`CocoJson::read`] on the file's bytes.
    pub fn parse(&self, bytes: &[u8]) -> Result<CocoEntries, ReadError> {
        let root: Value = serde_json::from_slice(bytes).map_err(|e| ReadError::Syntax {
            path: self.path.into(),
            line: e.line(),
            problem: format!("column {}: not valid JSON: {e}", e.column()),
        })?;
        let whole = |problem: String| ReadError::Source {
            path: self.path.into(),
            problem,
        };
        let root = root
            .as_object()
            .ok_or_else(|| whole("the top level is not a JSON object".into()))?;
        let array = |key: &str| {
            root.get(key)
                .and_then(Value::as_array)
                .ok_or_else(|| whole(format!("no `{key}` array")))
        };
        let (images, annotations) = (array("images")?, array("annotations")?);
        let mut by_id: HashMap<i64, ImageEntry> = HashMap::with_capacity(images.len());
        for (index, image) in images.iter().enumerate() {
            let entry =
                image_entry(index, image).map_err(|p| whole(format!("images[{index}]: {p}")))?;
            let (id, entry) = entry;
            if let Some(first) = by_id.insert(id, entry) {
                return Err(whole(format!(
                    "images[{index}]: id {id} is also the id of images[{}]",
                    first.index
                )));
            }
        }
        // Per annotation: its face, `None` when it holds none, or what is wrong with it.
        let parsed: Vec<(usize, Option<i64>, Result<Parsed, String>)> = annotations
            .iter()
            .enumerate()
            .filter_map(|(index, a)| {
                let id = a.get("id").and_then(Value::as_i64);
                self.parse_annotation(a, &by_id)
                    .transpose()
                    .map(|p| (index, id, p))
            })
            .collect();
        let without_face = annotations.len() - parsed.len();
        let entries = parsed
            .into_par_iter()
            .map(|(index, id, p)| {
                let origin = Origin {
                    path: self.path.into(),
                    location: Location::Annotation { index, id },
                };
                match p {
                    Ok(parsed) => self.face(&by_id, parsed, origin),
                    Err(problem) => Err(ReadError::Record {
                        path: origin.path,
                        location: origin.location,
                        problem,
                    }),
                }
            })
            .collect();
        Ok(CocoEntries {
            entries,
            without_face,
        })
    }

    /// The face of one annotation, `None` when it holds none (a WholeBody person with
    /// `face_valid = false`, no labelled point), or what is wrong with it (the caller adds the
    /// location).
    fn parse_annotation(
        &self,
        a: &Value,
        images: &HashMap<i64, ImageEntry>,
    ) -> Result<Option<Parsed>, String> {
        let a = a.as_object().ok_or("not a JSON object")?;
        let id = integer(a, "id")?;
        let image_id = integer(a, "image_id")?;
        if !images.contains_key(&image_id) {
            return Err(format!("image_id {image_id} is not in `images`"));
        }
        let (points_key, box_key) = self.field.members();
        if self.field == CocoField::Face
            && a.get("face_valid").and_then(Value::as_bool) == Some(false)
        {
            return Ok(None);
        }
        let points = a
            .get(points_key)
            .ok_or_else(|| format!("no `{points_key}`"))?
            .as_array()
            .ok_or_else(|| format!("`{points_key}` is not an array"))?;
        let n = self.scheme.num_points();
        if points.len() != 3 * n {
            return Err(format!(
                "`{points_key}` has {} values; scheme `{}` has {n} points, {} values",
                points.len(),
                self.scheme.name,
                3 * n
            ));
        }
        let offset = self.origin.to_internal();
        let (mut xy, mut visible, mut occluded) = (
            Vec::with_capacity(2 * n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for (k, p) in points.chunks_exact(3).enumerate() {
            let value = |j: usize| {
                p[j].as_f64().filter(|v| v.is_finite()).ok_or_else(|| {
                    format!(
                        "`{points_key}` point {k}: `{}` is not a finite number",
                        excerpt(&p[j], VALUE_EXCERPT)
                    )
                })
            };
            let (x, y, v) = (value(0)?, value(1)?, value(2)?);
            let (seen, hidden) = match (v, self.visibility) {
                (0.0, _) => (false, false),
                (1.0, CocoVisibility::Coco) => (true, true),
                (1.0 | 2.0, _) => (true, false),
                _ => {
                    return Err(format!(
                        "`{points_key}` point {k}: v = {v} (allowed: 0, 1, 2)"
                    ));
                }
            };
            if seen {
                xy.extend([(x + offset) as f32, (y + offset) as f32]);
            } else {
                xy.extend([f32::NAN, f32::NAN]);
            }
            visible.push(seen);
            occluded.push(hidden);
        }
        if !visible.iter().any(|&v| v) {
            return Ok(None);
        }
        let bbox = match a.get(box_key) {
            None | Some(Value::Null) => None,
            Some(b) => {
                let values: Option<Vec<f64>> =
                    b.as_array().filter(|b| b.len() == 4).and_then(|b| {
                        b.iter()
                            .map(|v| v.as_f64().filter(|v| v.is_finite()))
                            .collect()
                    });
                let [x, y, w, h] = values
                    .as_deref()
                    .and_then(|v| <[f64; 4]>::try_from(v).ok())
                    .ok_or_else(|| {
                        format!(
                            "`{box_key}` {} is not four finite numbers [x, y, w, h]",
                            excerpt(b, VALUE_EXCERPT)
                        )
                    })?;
                // The .pts rule shifts the box with the points; COCO boxes are continuous.
                let shift = if self.origin == PixelOrigin::OneBased {
                    offset
                } else {
                    0.0
                };
                (w > 0.0 && h > 0.0).then_some(BBox {
                    x: (x + shift) as f32,
                    y: (y + shift) as f32,
                    w: w as f32,
                    h: h as f32,
                })
            }
        };
        Ok(Some(Parsed {
            image_id,
            id,
            xy,
            visible,
            occluded,
            bbox,
        }))
    }

    /// The record of a parsed annotation: its image is opened for its size.
    fn face(
        &self,
        images: &HashMap<i64, ImageEntry>,
        parsed: Parsed,
        origin: Origin,
    ) -> Result<SourcedFace, ReadError> {
        let Parsed {
            image_id,
            id,
            xy,
            visible,
            occluded,
            bbox,
        } = parsed;
        // `parse_annotation` kept only annotations whose image is listed.
        let Some(entry) = images.get(&image_id) else {
            return Err(ReadError::Record {
                path: origin.path,
                location: origin.location,
                problem: format!("image_id {image_id} is not in `images`"),
            });
        };
        let file_name = entry
            .file_name
            .as_ref()
            .map_err(|problem| ReadError::Record {
                path: origin.path.clone(),
                location: origin.location.clone(),
                problem: format!("images[{}]: {problem}", entry.index),
            })?;
        let image = self.images.join(file_name);
        let (image_path, width, height) = image_facts(&image, &origin)?;
        if let Some((w, h)) = entry.size
            && (w, h) != (u64::from(width), u64::from(height))
        {
            return Err(ReadError::Record {
                path: origin.path.clone(),
                location: origin.location.clone(),
                problem: format!(
                    "images[{}] says {w}×{h}, {} is {width}×{height}",
                    entry.index,
                    excerpt(escaped_path(&image), MESSAGE_EXCERPT)
                ),
            });
        }
        let (bbox, bbox_source) = match bbox {
            Some(b) => (b, BoxSource::Annotation),
            None => (
                landmarks_bbox(&xy).unwrap_or(BBox {
                    x: 0.0,
                    y: 0.0,
                    w: 0.0,
                    h: 0.0,
                }),
                BoxSource::Landmarks,
            ),
        };
        let face = FaceRecord {
            sample_id: format!("{}/{id}", self.dataset),
            dataset: self.dataset.to_owned(),
            scheme: self.scheme.name.to_owned(),
            split: self.split.to_owned(),
            image_path,
            image_width: width,
            image_height: height,
            landmarks: xy,
            visible,
            occluded,
            bbox,
            bbox_source,
            yaw: None,
            pitch: None,
            roll: None,
            attributes: None,
        };
        Ok(SourcedFace { face, origin })
    }
}

/// An `images[]` entry: its id and what the reader needs, or what is wrong with it.
fn image_entry(index: usize, image: &Value) -> Result<(i64, ImageEntry), String> {
    let image = image.as_object().ok_or("not a JSON object")?;
    let id = integer(image, "id")?;
    let file_name = image
        .get("file_name")
        .and_then(Value::as_str)
        .ok_or("no `file_name` string")?;
    let file_name =
        check_name_length(file_name, "`file_name`").map(|()| file_name.replace('\\', "/"));
    let size = match (image.get("width"), image.get("height")) {
        (None, None) => None,
        (w, h) => {
            let side = |v: Option<&Value>, key: &str| {
                v.and_then(Value::as_u64)
                    .ok_or_else(|| format!("`{key}` is not a whole number"))
            };
            Some((side(w, "width")?, side(h, "height")?))
        }
    };
    Ok((
        id,
        ImageEntry {
            index,
            file_name,
            size,
        },
    ))
}

/// The integer member `key` of an object, or what is wrong.
fn integer(object: &Map<String, Value>, key: &str) -> Result<i64, String> {
    match object.get(key) {
        None => Err(format!("no `{key}`")),
        Some(v) => v
            .as_i64()
            .ok_or_else(|| format!("`{key}` {} is not an integer", excerpt(v, VALUE_EXCERPT))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::test_support::{mutated, scheme_of, write_png};
    use proptest::prelude::*;
    use serde_json::json;

    /// Three points: point k at (10 + k, 20 + 2k), with the given flags.
    fn keypoints(flags: [u8; 3]) -> Value {
        json!(
            (0..3)
                .flat_map(|k| [json!(10 + k), json!(20 + 2 * k), json!(flags[k])])
                .collect::<Vec<_>>()
        )
    }

    fn document(annotations: Vec<Value>) -> Value {
        json!({
            "images": [
                {"id": 1, "file_name": "a.png", "width": 40, "height": 60},
                {"id": 7, "file_name": "sub/b.png"},
            ],
            "annotations": annotations,
            "categories": [{"id": 1, "name": "face"}],
        })
    }

    fn fixture() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        write_png(&dir.path().join("img/a.png"), 40, 60);
        write_png(&dir.path().join("img/sub/b.png"), 80, 80);
        dir
    }

    fn read_with(
        dir: &Path,
        bytes: &[u8],
        field: CocoField,
        origin: PixelOrigin,
        visibility: CocoVisibility,
    ) -> Result<CocoEntries, ReadError> {
        let scheme = scheme_of(3);
        let path = dir.join("faces_train.json");
        std::fs::write(&path, bytes).unwrap();
        CocoJson {
            path: &path,
            images: &dir.join("img"),
            dataset: "cofw",
            split: "train",
            scheme: &scheme,
            field,
            origin,
            visibility,
        }
        .read()
    }

    fn read(dir: &Path, doc: &Value, visibility: CocoVisibility) -> CocoEntries {
        read_with(
            dir,
            doc.to_string().as_bytes(),
            CocoField::Keypoints,
            PixelOrigin::ZeroBased,
            visibility,
        )
        .unwrap()
    }

    fn faces(entries: CocoEntries) -> Vec<FaceRecord> {
        entries
            .entries
            .into_iter()
            .map(|e| e.unwrap().face)
            .collect()
    }

    #[test]
    fn huge_values_are_echoed_as_short_excerpts() {
        let dir = fixture();
        let huge = "x".repeat(5_000_000);
        let doc = json!({
            "images": [{"id": 1, "file_name": huge.clone()}, {"id": 2, "file_name": "a.png"}],
            "annotations": [
                {"id": 11, "image_id": 1, "keypoints": keypoints([2, 2, 2])},
                {"id": 12, "image_id": 2, "keypoints": [huge.clone(), 1, 2, 3, 4, 2, 5, 6, 2]},
                {"id": 13, "image_id": 2, "keypoints": keypoints([2, 2, 2]), "bbox": [huge]},
            ],
        });
        let entries = read(dir.path(), &doc, CocoVisibility::Coco).entries;
        let errors: Vec<String> = entries
            .iter()
            .map(|e| e.as_ref().unwrap_err().to_string())
            .collect();
        for e in &errors {
            assert!(
                e.len() < 600 && e.contains("…(500000"),
                "{} bytes: {e}",
                e.len()
            );
        }
        assert!(errors[0].contains("annotations[0] (id 11): images[0]: `file_name` `xxx"));
        assert!(errors[0].contains("is longer than any file name (at most 4096 bytes)"));
        assert!(errors[1].contains("point 0: `\"xxx"), "{}", errors[1]);
        assert!(errors[2].contains("`bbox` [\"xxx"), "{}", errors[2]);
    }

    #[test]
    fn reads_faces_flags_boxes_and_ids_under_both_rules() {
        let dir = fixture();
        let doc = document(vec![
            json!({"id": 11, "image_id": 1, "keypoints": keypoints([2, 1, 0]), "bbox": [5, 6, 20, 30]}),
            json!({"id": 12, "image_id": 7, "keypoints": keypoints([1, 1, 1])}),
            json!({"id": 13, "image_id": 7, "keypoints": keypoints([2, 2, 2]), "bbox": [0, 0, 0, 0]}),
        ]);
        let coco = faces(read(dir.path(), &doc, CocoVisibility::Coco));
        let ids: Vec<&str> = coco.iter().map(|f| f.sample_id.as_str()).collect();
        assert_eq!(ids, ["cofw/11", "cofw/12", "cofw/13"]);
        let a = &coco[0];
        assert_eq!(&a.landmarks[..4], &[10.5, 20.5, 11.5, 22.5]);
        assert!(a.landmarks[4].is_nan() && a.landmarks[5].is_nan());
        assert_eq!(a.visible, [true, true, false]);
        assert_eq!(a.occluded, [false, true, false]);
        // COCO boxes are continuous: the zero-based rule moves the points only.
        assert_eq!(
            (a.bbox, a.bbox_source),
            (
                BBox {
                    x: 5.0,
                    y: 6.0,
                    w: 20.0,
                    h: 30.0
                },
                BoxSource::Annotation
            )
        );
        assert_eq!((a.image_width, a.image_height), (40, 60));
        assert!(a.image_path.ends_with("img/a.png"));
        assert_eq!(coco[1].occluded, [true; 3]);
        assert_eq!(coco[1].visible, [true; 3]);
        assert_eq!(coco[1].bbox_source, BoxSource::Landmarks);
        assert_eq!((coco[1].image_width, coco[1].image_height), (80, 80));
        assert_eq!(
            coco[2].bbox_source,
            BoxSource::Landmarks,
            "an empty box is no box"
        );
        assert_eq!(coco[2].occluded, [false; 3]);

        let labelled = faces(read(dir.path(), &doc, CocoVisibility::Labelled));
        assert_eq!(labelled[0].visible, [true, true, false]);
        assert!(labelled.iter().all(|f| !f.any_occluded()));
    }

    #[test]
    fn each_origin_has_its_offset_and_one_based_moves_the_box_too() {
        let dir = fixture();
        let doc = document(vec![
            json!({"id": 1, "image_id": 1, "keypoints": keypoints([2, 2, 2]), "bbox": [5, 6, 20, 30]}),
        ]);
        for (origin, dx, box_x) in [
            (PixelOrigin::OneBased, -0.5, 4.5),
            (PixelOrigin::ZeroBased, 0.5, 5.0),
            (PixelOrigin::Continuous, 0.0, 5.0),
        ] {
            let f = faces(
                read_with(
                    dir.path(),
                    doc.to_string().as_bytes(),
                    CocoField::Keypoints,
                    origin,
                    CocoVisibility::Coco,
                )
                .unwrap(),
            )
            .remove(0);
            assert_eq!(
                (f.landmarks[0], f.landmarks[1]),
                (10.0 + dx, 20.0 + dx),
                "{origin:?}"
            );
            assert_eq!(f.bbox.x, box_x, "{origin:?}");
        }
    }

    #[test]
    fn wholebody_faces_come_from_face_kpts_and_persons_without_one_are_counted() {
        let dir = fixture();
        let doc = document(vec![
            json!({"id": 1, "image_id": 1, "keypoints": [], "face_kpts": keypoints([1, 1, 1]), "face_box": [1, 2, 10, 10], "face_valid": true}),
            json!({"id": 2, "image_id": 1, "keypoints": [], "face_kpts": keypoints([1, 1, 1]), "face_box": [0, 0, 0, 0], "face_valid": false}),
            json!({"id": 3, "image_id": 1, "keypoints": [], "face_kpts": [0, 0, 0, 0, 0, 0, 0, 0, 0], "face_box": [0, 0, 0, 0], "face_valid": true}),
        ]);
        let read = read_with(
            dir.path(),
            doc.to_string().as_bytes(),
            CocoField::Face,
            PixelOrigin::ZeroBased,
            CocoVisibility::Labelled,
        )
        .unwrap();
        assert_eq!(read.without_face, 2);
        let f = faces(read);
        assert_eq!(f.len(), 1);
        assert_eq!((f[0].sample_id.as_str(), f[0].bbox.x), ("cofw/1", 1.0));
    }

    #[test]
    fn errors_name_the_file_and_the_annotation() {
        let dir = fixture();
        let good = json!({"id": 1, "image_id": 1, "keypoints": keypoints([2, 2, 2])});
        let cases = [
            (
                json!({"id": 5, "image_id": 3, "keypoints": keypoints([2, 2, 2])}),
                "annotations[1] (id 5): image_id 3 is not in `images`",
            ),
            (
                json!({"id": 5, "image_id": 1, "keypoints": [1, 2, 2]}),
                "annotations[1] (id 5): `keypoints` has 3 values; scheme `test` has 3 points, 9 values",
            ),
            (
                json!({"id": 5, "image_id": 1, "keypoints": keypoints([2, 3, 2])}),
                "annotations[1] (id 5): `keypoints` point 1: v = 3",
            ),
            (
                json!({"id": 5, "image_id": 1, "keypoints": [1, "x", 2, 1, 2, 2, 1, 2, 2]}),
                "annotations[1] (id 5): `keypoints` point 0: `\"x\"` is not a finite number",
            ),
            (
                json!({"id": 5, "image_id": 1, "keypoints": keypoints([2, 2, 2]), "bbox": [1, 2, 3]}),
                "annotations[1] (id 5): `bbox` [1,2,3] is not four finite numbers",
            ),
            (
                json!({"image_id": 1, "keypoints": keypoints([2, 2, 2])}),
                "annotations[1]: no `id`",
            ),
            (
                json!({"id": "x", "image_id": 1}),
                "annotations[1]: `id` \"x\" is not an integer",
            ),
            (
                json!({"id": 5, "image_id": 7, "keypoints": keypoints([2, 2, 2])}),
                "",
            ),
        ];
        for (bad, want) in cases {
            let entries = read(
                dir.path(),
                &document(vec![good.clone(), bad]),
                CocoVisibility::Coco,
            )
            .entries;
            assert!(entries[0].is_ok());
            match &entries[1] {
                Ok(_) => assert!(want.is_empty()),
                Err(e) => assert!(
                    e.to_string().contains(&format!("faces_train.json, {want}")),
                    "{e}"
                ),
            }
        }
        // The image's own size wins over a wrong `width`/`height`, which is an error.
        let mut doc = document(vec![good.clone()]);
        doc["images"][0]["width"] = json!(41);
        let e = read(dir.path(), &doc, CocoVisibility::Coco)
            .entries
            .remove(0)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("annotations[0] (id 1): images[0] says 41×60") && e.contains("is 40×60"),
            "{e}"
        );

        let whole = |bytes: &[u8]| {
            read_with(
                dir.path(),
                bytes,
                CocoField::Keypoints,
                PixelOrigin::ZeroBased,
                CocoVisibility::Coco,
            )
            .unwrap_err()
            .to_string()
        };
        let e = whole(b"{\n  \"images\": [\n  }");
        assert!(
            e.contains("faces_train.json, line 3: column 3: not valid JSON"),
            "{e}"
        );
        assert!(whole(b"[1]").contains("faces_train.json: the top level is not a JSON object"));
        assert!(whole(b"{\"images\": []}").contains("faces_train.json: no `annotations` array"));
        let e = whole(br#"{"images": [{"id": 1, "file_name": "a"}, {"id": 1, "file_name": "b"}], "annotations": []}"#);
        assert!(
            e.contains("images[1]: id 1 is also the id of images[0]"),
            "{e}"
        );
        let e = whole(br#"{"images": [{"id": 1}], "annotations": []}"#);
        assert!(e.contains("images[0]: no `file_name` string"), "{e}");
    }

    #[test]
    fn the_start_of_a_coco_file_is_recognised() {
        assert!(looks_like_coco("{\"images\": [{\"id\": 1"));
        assert!(looks_like_coco("  {\"info\": {}, \"annotations\": ["));
        assert!(!looks_like_coco("{\"format_version\": 1}"));
        assert!(!looks_like_coco("[\"images\"]"));
    }

    fn valid_text() -> String {
        document(vec![
            json!({"id": 1, "image_id": 1, "keypoints": keypoints([2, 1, 0]), "bbox": [5, 6, 20, 30]}),
            json!({"id": 2, "image_id": 7, "keypoints": keypoints([1, 1, 2])}),
        ])
        .to_string()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn arbitrary_and_mutated_files_never_panic_and_errors_are_located(
            junk in proptest::collection::vec(any::<u8>(), 0..400),
            cut in 0usize..600,
            flips in proptest::collection::vec((0usize..600, any::<u8>()), 0..6),
        ) {
            let dir = fixture();
            let check = |bytes: &[u8]| -> Result<(), TestCaseError> {
                match read_with(dir.path(), bytes, CocoField::Keypoints, PixelOrigin::OneBased, CocoVisibility::Coco) {
                    Ok(read) => {
                        for e in read.entries.iter().filter_map(|e| e.as_ref().err()) {
                            prop_assert!(e.to_string().contains("faces_train.json, annotations["), "{}", e);
                        }
                    }
                    Err(e) => {
                        let text = e.to_string();
                        prop_assert!(
                            text.contains("faces_train.json, line ") || text.contains("faces_train.json: "),
                            "{}", text
                        );
                    }
                }
                Ok(())
            };
            check(&junk)?;
            check(&mutated(&valid_text(), None, &flips, cut))?;
        }

        #[test]
        fn any_value_in_any_member_never_panics_and_errors_are_located(
            annotation in 0usize..2,
            key in proptest::sample::select(vec!["id", "image_id", "keypoints", "bbox", "face_kpts", "face_valid"]),
            number in proptest::option::of(any::<f64>()),
            text in ".{0,8}",
            shape in 0usize..6,
        ) {
            let value = match shape {
                0 => json!(null),
                1 => json!(text),
                2 => number.map_or(json!(-1), |n| json!(n)),
                3 => json!([number, number, 1]),
                4 => json!((0..9).map(|k| number.unwrap_or(k as f64)).collect::<Vec<_>>()),
                _ => json!({"x": text}),
            };
            let mut doc: Value = serde_json::from_str(&valid_text()).unwrap();
            doc["annotations"][annotation][key] = value;
            let dir = fixture();
            for field in [CocoField::Keypoints, CocoField::Face] {
                let read = read_with(dir.path(), doc.to_string().as_bytes(), field, PixelOrigin::ZeroBased, CocoVisibility::Coco);
                prop_assert!(read.is_ok(), "the file is still COCO JSON");
                for e in read.unwrap().entries.iter().filter_map(|e| e.as_ref().err()) {
                    // Keypoints-only annotations have no `face_kpts`: every one is a located error.
                    prop_assert!(e.to_string().contains("faces_train.json, annotations["), "{}", e);
                }
            }
        }
    }
}
