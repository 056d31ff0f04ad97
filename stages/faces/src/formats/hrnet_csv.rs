//! HRNet-style landmark CSV files (the annotation files widely shared for 300W, AFLW, WFLW and
//! COFW): header `image_name,scale,center_w,center_h,original_0_x,original_0_y,…`, AFLW files
//! with an extra `box_size` column after `scale`; one face per row.
//!
//! Pixel rule: the values are the dataset's raw values, so the rule follows the dataset — see
//! [`pixel_origin_for_scheme`]: 300W (`ibug68`) values are 1-based pixel centres as in `.pts`
//! (subtract 0.5); AFLW, WFLW and COFW values are 0-based pixel indices (add 0.5). The box
//! centre is in the same convention as the landmarks.

use std::collections::HashMap;
use std::io::BufReader;
use std::path::Path;

use rayon::prelude::*;

use super::{
    Entries, ListSource, ListedFace, PixelOrigin, ReadError, check_name_length, parse_finite,
    quote, read_line_bounded, read_text, strip_extension,
};
use crate::face::BBox;
use contract::scheme::Scheme;

/// The pixel rule of an HRNet CSV by landmark scheme: 1-based for 300W (`ibug68`, whose raw
/// values come from `.pts` files), 0-based for every other dataset.
pub fn pixel_origin_for_scheme(scheme: &str) -> PixelOrigin {
    if scheme == "ibug68" {
        PixelOrigin::OneBased
    } else {
        PixelOrigin::ZeroBased
    }
}

/// One HRNet CSV source.
#[derive(Debug, Clone, Copy)]
pub struct HrnetCsv<'a> {
    /// The CSV file.
    pub path: &'a Path,
    /// Folder the `image_name` column is relative to.
    pub images: &'a Path,
    /// Dataset name (`300w`, `aflw`, `wflw`, `cofw`): first part of every sample id.
    pub dataset: &'a str,
    /// Split of every face in the file (the CSVs are one file per split).
    pub split: &'a str,
    /// The landmark scheme; its point count must match the header.
    pub scheme: &'a Scheme,
    /// The pixel rule of the values (see [`pixel_origin_for_scheme`]).
    pub pixel_origin: PixelOrigin,
}

/// The columns before the landmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    /// Whether a `box_size` column follows `scale` (AFLW files).
    box_size: bool,
    /// Landmark count.
    points: usize,
}

impl Layout {
    fn leading(&self) -> usize {
        if self.box_size { 5 } else { 4 }
    }

    fn fields(&self) -> usize {
        self.leading() + 2 * self.points
    }
}

/// The longest header line read: 1 MiB, some 35 000 points.
const MAX_HEADER_BYTES: usize = 1 << 20;

/// The number of landmarks announced by the header of an HRNet CSV file (only its first line
/// is read, and at most [`MAX_HEADER_BYTES`] of it held).
pub fn header_point_count(path: &Path) -> Result<usize, ReadError> {
    let io = |source| ReadError::Io {
        path: path.into(),
        source,
    };
    let syntax = |problem: String| ReadError::Syntax {
        path: path.into(),
        line: 1,
        problem,
    };
    let mut reader = BufReader::new(std::fs::File::open(path).map_err(io)?);
    let mut line = Vec::new();
    let len = read_line_bounded(&mut reader, &mut line, MAX_HEADER_BYTES)
        .map_err(io)?
        .unwrap_or(0);
    if len > MAX_HEADER_BYTES as u64 {
        return Err(syntax(format!(
            "a header line of {len} bytes, longer than any HRNet header ({MAX_HEADER_BYTES})"
        )));
    }
    let header =
        std::str::from_utf8(&line).map_err(|_| syntax("not valid UTF-8 text".to_owned()))?;
    Ok(parse_header(header, path)?.points)
}

impl HrnetCsv<'_> {
    /// Read every face of the file.
    ///
    /// Sample id: `<dataset>/<image_name without extension>`, plus `_<k>` (k = 0, 1, … in
    /// file order) when the image has several faces. Box: centre (`center_w`, `center_h`),
    /// side `scale` × 200, or `box_size` where that column exists; `bbox_source` is
    /// `annotation`. Every point is visible. The image size comes from the image header.
    /// A malformed header is an error for the whole file; a malformed row (wrong field count,
    /// a value that is not a finite number, a non-positive box) is an error for that row.
    pub fn read(&self) -> Result<Entries, ReadError> {
        let text = read_text(self.path)?;
        let mut lines = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim_end_matches('\r')));
        let header = lines.next().map_or("", |(_, l)| l);
        let layout = parse_header(header, self.path)?;
        if layout.points != self.scheme.num_points() {
            return Err(ReadError::Syntax {
                path: self.path.into(),
                line: 1,
                problem: format!(
                    "wrong point count: the header has {} points, scheme `{}` has {}",
                    layout.points,
                    self.scheme.name,
                    self.scheme.num_points()
                ),
            });
        }
        let rows: Vec<Result<ListedFace, ReadError>> = lines
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(n, l)| self.parse_row(n, l, layout))
            .collect();
        let mut faces_per_image: HashMap<&str, usize> = HashMap::new();
        for row in rows.iter().flatten() {
            *faces_per_image.entry(&row.image_name).or_default() += 1;
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let ids: Vec<Option<String>> = rows
            .iter()
            .map(|row| {
                let row = row.as_ref().ok()?;
                let stem = strip_extension(&row.image_name);
                let k = seen.entry(&row.image_name).or_default();
                let id = if faces_per_image[row.image_name.as_str()] > 1 {
                    format!("{}/{stem}_{k}", self.dataset)
                } else {
                    format!("{}/{stem}", self.dataset)
                };
                *k += 1;
                Some(id)
            })
            .collect();
        let source = self.source();
        Ok(rows
            .into_par_iter()
            .zip(ids)
            .map(|(row, id)| {
                let row = row?;
                // Every parsed row got an id above.
                let id = id.unwrap_or_default();
                source.face(row, id)
            })
            .collect())
    }

    fn parse_row(&self, line: usize, text: &str, layout: Layout) -> Result<ListedFace, ReadError> {
        let syntax = |problem: String| ReadError::Syntax {
            path: self.path.into(),
            line,
            problem,
        };
        let fields: Vec<&str> = text.split(',').map(str::trim).collect();
        if fields.len() != layout.fields() {
            return Err(syntax(format!(
                "expected {} fields, found {}",
                layout.fields(),
                fields.len()
            )));
        }
        let number = |i: usize| {
            parse_finite(fields[i]).map_err(|p| syntax(format!("column {}: {p}", i + 1)))
        };
        check_name_length(fields[0], "image_name").map_err(syntax)?;
        let image_name = fields[0].replace('\\', "/");
        if image_name.is_empty() {
            return Err(syntax("empty image_name".to_owned()));
        }
        let side = if layout.box_size {
            number(2)?
        } else {
            number(1)? * 200.0
        };
        if side <= 0.0 {
            return Err(syntax(format!("box side {side} is not positive")));
        }
        let offset = self.pixel_origin.to_internal();
        let lead = layout.leading();
        let cx = number(lead - 2)? + offset;
        let cy = number(lead - 1)? + offset;
        let xy = (lead..layout.fields())
            .map(|i| number(i).map(|v| (v + offset) as f32))
            .collect::<Result<Vec<f32>, ReadError>>()?;
        let bbox = BBox {
            x: (cx - side / 2.0) as f32,
            y: (cy - side / 2.0) as f32,
            w: side as f32,
            h: side as f32,
        };
        Ok(ListedFace {
            line,
            image_name,
            xy,
            bbox,
        })
    }

    fn source(&self) -> ListSource<'_> {
        ListSource {
            list: self.path,
            images: self.images,
            dataset: self.dataset,
            scheme: self.scheme.name,
            split: self.split,
        }
    }
}

/// Check the header column by column and return the layout it announces.
fn parse_header(header: &str, path: &Path) -> Result<Layout, ReadError> {
    let columns: Vec<&str> = header
        .trim_end_matches('\r')
        .split(',')
        .map(str::trim)
        .collect();
    let columns: Vec<&str> = match columns.first() {
        // A byte-order mark may precede the first column name.
        Some(first) => std::iter::once(first.trim_start_matches('\u{feff}'))
            .chain(columns[1..].iter().copied())
            .collect(),
        None => columns,
    };
    let box_size = columns.get(2) == Some(&"box_size");
    let mut expected: Vec<String> = vec!["image_name".into(), "scale".into()];
    if box_size {
        expected.push("box_size".into());
    }
    expected.extend(["center_w".into(), "center_h".into()]);
    let leading = expected.len();
    let points = columns.len().saturating_sub(leading) / 2;
    for k in 0..points {
        expected.push(format!("original_{k}_x"));
        expected.push(format!("original_{k}_y"));
    }
    let problem = if let Some((i, (want, got))) = expected
        .iter()
        .zip(&columns)
        .enumerate()
        .find(|(_, (w, g))| w.as_str() != **g)
    {
        Some(format!(
            "column {}: expected `{want}`, found `{}`",
            i + 1,
            quote(got)
        ))
    } else if columns.len() != expected.len() {
        Some(format!(
            "expected {} leading columns and x/y pairs, found {} columns",
            leading,
            columns.len()
        ))
    } else if points == 0 {
        Some("no landmark columns".to_owned())
    } else {
        None
    };
    match problem {
        Some(problem) => Err(ReadError::Syntax {
            path: path.into(),
            line: 1,
            problem,
        }),
        None => Ok(Layout { box_size, points }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::face::BoxSource;
    use crate::formats::test_support::{mutated, scheme_of, write_png};
    use crate::formats::{Location, SourcedFace};
    use proptest::prelude::*;

    fn header(points: usize, box_size: bool) -> String {
        let mut h = String::from("image_name,scale,");
        if box_size {
            h.push_str("box_size,");
        }
        h.push_str("center_w,center_h");
        for k in 0..points {
            h.push_str(&format!(",original_{k}_x,original_{k}_y"));
        }
        h
    }

    struct Fixture {
        dir: tempfile::TempDir,
        scheme: Scheme,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            write_png(&dir.path().join("img/a.png"), 40, 30);
            write_png(&dir.path().join("img/sub/b.png"), 50, 60);
            Fixture {
                dir,
                scheme: scheme_of(2),
            }
        }

        fn read(&self, text: &str, origin: PixelOrigin) -> Result<Entries, ReadError> {
            let path = self.dir.path().join("faces_train.csv");
            std::fs::write(&path, text).unwrap();
            let images = self.dir.path().join("img");
            HrnetCsv {
                path: &path,
                images: &images,
                dataset: "cofw",
                split: "train",
                scheme: &self.scheme,
                pixel_origin: origin,
            }
            .read()
        }
    }

    #[test]
    fn reads_rows_with_box_ids_and_pixel_rule() {
        let fx = Fixture::new();
        let text = format!(
            "{}\r\na.png,0.1,20,15,1,2,460.55199999999996,4\r\nsub/b.png,0.05,10,10,1,1,2,2\r\nsub/b.png,0.05,30,30,5,5,6,6",
            header(2, false)
        );
        let faces: Vec<SourcedFace> = fx
            .read(&text, PixelOrigin::ZeroBased)
            .unwrap()
            .into_iter()
            .map(|e| e.unwrap())
            .collect();
        let ids: Vec<&str> = faces.iter().map(|f| f.face.sample_id.as_str()).collect();
        assert_eq!(ids, ["cofw/a", "cofw/sub/b_0", "cofw/sub/b_1"]);
        let a = &faces[0].face;
        assert_eq!(a.landmarks, vec![1.5, 2.5, 461.052, 4.5]);
        assert_eq!(
            (a.bbox.x, a.bbox.y, a.bbox.w, a.bbox.h),
            (10.5, 5.5, 20.0, 20.0)
        );
        assert_eq!(a.bbox_source, BoxSource::Annotation);
        assert_eq!(
            (a.image_width, a.image_height, a.split.as_str()),
            (40, 30, "train")
        );
        assert_eq!(faces[2].face.image_height, 60);
        assert_eq!(faces[2].origin.location, Location::Line(4));

        let one_based: Vec<SourcedFace> = fx
            .read(&text, PixelOrigin::OneBased)
            .unwrap()
            .into_iter()
            .map(|e| e.unwrap())
            .collect();
        assert_eq!(one_based[0].face.landmarks[..2], [0.5, 1.5]);
        assert_eq!(one_based[0].face.bbox.x, 9.5);
    }

    #[test]
    fn huge_fields_are_echoed_as_short_excerpts() {
        let fx = Fixture::new();
        let huge = "7".repeat(5_000_000);
        let text = format!(
            "{}\na.png,0.1,30,20,{huge},1,2,3\n{huge}.png,0.1,30,20,1,1,2,3\n",
            header(2, false)
        );
        let entries = fx.read(&text, PixelOrigin::ZeroBased).unwrap();
        let errors: Vec<String> = entries
            .iter()
            .map(|e| e.as_ref().err().unwrap().to_string())
            .collect();
        for e in &errors {
            assert!(
                e.len() < 600 && e.contains("…(5000"),
                "{} bytes: {e}",
                e.len()
            );
        }
        assert!(
            errors[0].contains("line 2: column 5: `777"),
            "{}",
            errors[0]
        );
        assert!(
            errors[1].contains("line 3: image_name `777"),
            "{}",
            errors[1]
        );
        let e = fx
            .read(&format!("image_name,{huge}\n"), PixelOrigin::ZeroBased)
            .unwrap_err()
            .to_string();
        assert!(e.len() < 600 && e.contains("found `777"), "{e}");
    }

    #[test]
    fn box_size_column_is_detected_by_header() {
        let fx = Fixture::new();
        let text = format!("{}\na.png,0.1,30,20,15,1,2,3,4\n", header(2, true));
        let entries = fx.read(&text, PixelOrigin::ZeroBased).unwrap();
        let a = &entries[0].as_ref().unwrap().face;
        assert_eq!((a.bbox.x, a.bbox.w), (20.5 - 15.0, 30.0));
        assert_eq!(a.landmarks, vec![1.5, 2.5, 3.5, 4.5]);
    }

    #[test]
    fn row_errors_name_file_and_line() {
        let fx = Fixture::new();
        let cases = [
            (
                "a.png,0.1,20,15,1,2,3\n",
                "line 2: expected 8 fields, found 7",
            ),
            (
                "a.png,0.1,20,15,1,2,3,x\n",
                "line 2: column 8: `x` is not a number",
            ),
            (
                "a.png,0.1,20,15,1,2,3,nan\n",
                "line 2: column 8: `nan` is not a finite",
            ),
            (
                "a.png,0.1,20,15,1,2,3,4\na.png,-1,20,15,1,2,3,4\n",
                "line 3: box side -200",
            ),
            (
                "a.png,0.1,20,15,1,2,3,4\n\nmissing.png,0.1,20,15,1,2,3,4\n",
                "line 4: image",
            ),
        ];
        for (rows, want) in cases {
            let entries = fx
                .read(
                    &format!("{}\n{rows}", header(2, false)),
                    PixelOrigin::ZeroBased,
                )
                .unwrap();
            let e = entries
                .iter()
                .find_map(|e| e.as_ref().err())
                .unwrap()
                .to_string();
            assert!(e.contains(&format!("faces_train.csv, {want}")), "{e}");
        }
    }

    #[test]
    fn header_errors_are_whole_file_errors() {
        let fx = Fixture::new();
        let e = fx
            .read(
                "image_name,scale,center_x,center_h\n",
                PixelOrigin::ZeroBased,
            )
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("line 1: column 3: expected `center_w`"),
            "{e}"
        );
        let e = fx
            .read(&header(3, false), PixelOrigin::ZeroBased)
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("line 1: wrong point count: the header has 3"),
            "{e}"
        );
        let e = fx.read("", PixelOrigin::ZeroBased).unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn arbitrary_and_mutated_files_never_panic(
            junk in proptest::collection::vec(any::<u8>(), 0..300),
            cut in 0usize..200,
            flips in proptest::collection::vec((0usize..200, any::<u8>()), 0..4),
            drop_line in 0usize..5,
        ) {
            let fx = Fixture::new();
            let path = fx.dir.path().join("faces_train.csv");
            let images = fx.dir.path().join("img");
            let reader = HrnetCsv {
                path: &path,
                images: &images,
                dataset: "cofw",
                split: "train",
                scheme: &fx.scheme,
                pixel_origin: PixelOrigin::ZeroBased,
            };
            std::fs::write(&path, &junk).unwrap();
            let _ = reader.read();
            let valid = format!("{}\r\na.png,0.1,20,15,1,2,3,4\r\nsub/b.png,0.05,10,10,1,1,2,2\r\n", header(2, false));
            std::fs::write(&path, mutated(&valid, Some(drop_line), &flips, cut)).unwrap();
            match reader.read() {
                Ok(entries) => {
                    for e in entries.iter().filter_map(|e| e.as_ref().err()) {
                        prop_assert!(e.to_string().contains("faces_train.csv, line "), "{}", e);
                    }
                }
                Err(e) => prop_assert!(e.to_string().contains("faces_train.csv"), "{}", e),
            }
        }
    }
}
