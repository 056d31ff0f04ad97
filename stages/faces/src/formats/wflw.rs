//! WFLW list files (`list_98pt_rect_attr_train.txt`, `…_test.txt`): one face per line, 207
//! space-separated fields: 196 coordinates `x0 y0 … x97 y97`, the box `xmin ymin xmax ymax`,
//! six attribute flags (pose, expression, illumination, make-up, occlusion, blur) and the image
//! path relative to the image root. An image can appear on many lines.
//!
//! Pixel rule: WFLW values are 0-based pixel indices, so 0.5 is added to every coordinate,
//! the box corners included.

use std::collections::HashMap;
use std::path::Path;

use rayon::prelude::*;

use super::{
    Entries, ListSource, ListedFace, ReadError, SourcedFace, check_name_length, parse_finite,
    quote, read_text, strip_extension,
};
use crate::face::{BBox, WflwAttributes};

/// Landmarks per WFLW face.
pub const POINTS: usize = 98;
/// Fields per line: coordinates, box, attributes, image path.
pub const FIELDS: usize = 2 * POINTS + 4 + 6 + 1;

/// The `+0.5` of the 0-based WFLW values.
const OFFSET: f64 = 0.5;

/// One WFLW list file.
#[derive(Debug, Clone, Copy)]
pub struct WflwList<'a> {
    /// The list file.
    pub path: &'a Path,
    /// Folder the image paths are relative to (`WFLW_images`).
    pub images: &'a Path,
    /// Split of every face in the file.
    pub split: &'a str,
    /// Scheme name stored in the records (`wflw98`).
    pub scheme: &'a str,
}

/// One parsed line, before its image is looked at.
struct Line {
    listed: ListedFace,
    attributes: WflwAttributes,
}

/// Whether the first non-blank line of `text` has the shape of a WFLW list line.
pub fn looks_like_wflw_list(text: &str) -> bool {
    text.lines()
        .find(|l| !l.trim().is_empty())
        .is_some_and(|l| l.split_ascii_whitespace().count() == FIELDS)
}

impl WflwList<'_> {
    /// Read every face of the list.
    ///
    /// Sample id: `wflw/<image path without extension>_<k>`, k = 0, 1, … counting the faces
    /// of that image in file order. Box: the WFLW rectangle (`bbox_source` `annotation`).
    /// Every point is visible (WFLW marks occlusion per face, in the attributes, not per
    /// point). The image size comes from the image header. A line with the wrong number of
    /// fields, a value that is not a finite number, an inverted box or a flag other than 0/1
    /// is an error for that line.
    pub fn read(&self) -> Result<Entries, ReadError> {
        let text = read_text(self.path)?;
        let lines: Vec<Result<Line, ReadError>> = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| self.parse_line(i + 1, l))
            .collect();
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let ids: Vec<String> = lines
            .iter()
            .map(|l| match l {
                Ok(l) => {
                    let name = &l.listed.image_name;
                    let k = seen.entry(name).or_default();
                    let id = format!("wflw/{}_{k}", strip_extension(name));
                    *k += 1;
                    id
                }
                Err(_) => String::new(),
            })
            .collect();
        Ok(lines
            .into_par_iter()
            .zip(ids)
            .map(|(l, id)| self.face(l?, id))
            .collect())
    }

    fn parse_line(&self, line: usize, text: &str) -> Result<Line, ReadError> {
        let syntax = |problem: String| ReadError::Syntax {
            path: self.path.into(),
            line,
            problem,
        };
        let fields: Vec<&str> = text.split_ascii_whitespace().collect();
        if fields.len() != FIELDS {
            return Err(syntax(format!(
                "expected {FIELDS} fields, found {}",
                fields.len()
            )));
        }
        let number =
            |i: usize| parse_finite(fields[i]).map_err(|p| syntax(format!("field {}: {p}", i + 1)));
        let xy = (0..2 * POINTS)
            .map(|i| number(i).map(|v| (v + OFFSET) as f32))
            .collect::<Result<Vec<f32>, ReadError>>()?;
        let b = 2 * POINTS;
        let (x0, y0, x1, y1) = (number(b)?, number(b + 1)?, number(b + 2)?, number(b + 3)?);
        if x1 < x0 || y1 < y0 {
            return Err(syntax(format!("box ({x0}, {y0})–({x1}, {y1}) is inverted")));
        }
        let bbox = BBox {
            x: (x0 + OFFSET) as f32,
            y: (y0 + OFFSET) as f32,
            w: (x1 - x0) as f32,
            h: (y1 - y0) as f32,
        };
        let flag = |i: usize| match fields[b + 4 + i] {
            "0" => Ok(false),
            "1" => Ok(true),
            other => Err(syntax(format!(
                "attribute field {}: `{}` is not 0 or 1",
                b + 5 + i,
                quote(other)
            ))),
        };
        let attributes = WflwAttributes {
            pose: flag(0)?,
            expression: flag(1)?,
            illumination: flag(2)?,
            makeup: flag(3)?,
            occlusion: flag(4)?,
            blur: flag(5)?,
        };
        check_name_length(fields[FIELDS - 1], "the image path").map_err(syntax)?;
        let image_name = fields[FIELDS - 1].replace('\\', "/");
        Ok(Line {
            listed: ListedFace {
                line,
                image_name,
                xy,
                bbox,
            },
            attributes,
        })
    }

    fn face(&self, l: Line, sample_id: String) -> Result<SourcedFace, ReadError> {
        let source = ListSource {
            list: self.path,
            images: self.images,
            dataset: "wflw",
            scheme: self.scheme,
            split: self.split,
        };
        let mut sourced = source.face(l.listed, sample_id)?;
        sourced.face.attributes = Some(l.attributes);
        Ok(sourced)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::Location;
    use crate::formats::test_support::{mutated, write_png};
    use proptest::prelude::*;

    /// A list line: point i at (i, 2i), box (1, 2)–(30, 40), the given flags, the image.
    fn line(flags: &str, image: &str) -> String {
        let mut f: Vec<String> = (0..POINTS)
            .flat_map(|i| [format!("{i}.25"), format!("{}", 2 * i)])
            .collect();
        f.extend(["1", "2", "30", "40"].map(String::from));
        f.push(flags.to_owned());
        f.push(image.to_owned());
        f.join(" ")
    }

    fn fixture() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        write_png(&dir.path().join("img/51--Dresses/a.jpg"), 200, 300);
        write_png(&dir.path().join("img/b.jpg"), 20, 30);
        dir
    }

    fn read(dir: &Path, text: &[u8]) -> Result<Entries, ReadError> {
        let path = dir.join("list_98pt_rect_attr_train.txt");
        std::fs::write(&path, text).unwrap();
        WflwList {
            path: &path,
            images: &dir.join("img"),
            split: "train",
            scheme: "wflw98",
        }
        .read()
    }

    #[test]
    fn reads_faces_ids_attributes_and_boxes() {
        let dir = fixture();
        let text = format!(
            "{}\n{}\r\n{}",
            line("1 0 0 1 0 1", "51--Dresses/a.jpg"),
            line("0 0 0 0 0 0", "b.jpg"),
            line("0 1 1 0 1 0", "51--Dresses/a.jpg")
        );
        let faces: Vec<SourcedFace> = read(dir.path(), text.as_bytes())
            .unwrap()
            .into_iter()
            .map(|e| e.unwrap())
            .collect();
        let ids: Vec<&str> = faces.iter().map(|f| f.face.sample_id.as_str()).collect();
        assert_eq!(
            ids,
            ["wflw/51--Dresses/a_0", "wflw/b_0", "wflw/51--Dresses/a_1"]
        );
        let a = &faces[0].face;
        assert_eq!(
            (
                a.landmarks[0],
                a.landmarks[1],
                a.landmarks[194],
                a.landmarks[195]
            ),
            (0.75, 0.5, 97.75, 194.5)
        );
        assert_eq!(
            (a.bbox.x, a.bbox.y, a.bbox.w, a.bbox.h),
            (1.5, 2.5, 29.0, 38.0)
        );
        let attr = a.attributes.unwrap();
        assert!(attr.pose && !attr.expression && attr.makeup && attr.blur && !attr.occlusion);
        assert_eq!((a.image_width, a.image_height), (200, 300));
        assert_eq!(faces[2].origin.location, Location::Line(3));
        assert!(looks_like_wflw_list(&text));
        assert!(!looks_like_wflw_list("version: 1\n"));
    }

    #[test]
    fn line_errors_name_file_and_line() {
        let dir = fixture();
        let good = line("0 0 0 0 0 0", "b.jpg");
        let cases = [
            (
                line("0 0 0 0 0", "b.jpg"),
                "line 2: expected 207 fields, found 206",
            ),
            (
                line("0 0 2 0 0 0", "b.jpg"),
                "line 2: attribute field 203: `2`",
            ),
            (line("0 0 0 0 0 0", "nope.jpg"), "line 2: image"),
            (
                good.replacen("0.25", "inf", 1),
                "line 2: field 1: `inf` is not a finite",
            ),
            (
                good.replacen("1.25", "abc", 1),
                "line 2: field 3: `abc` is not a number",
            ),
            (good.replace(" 1 2 30 40 ", " 31 2 30 40 "), "line 2: box"),
        ];
        for (bad, want) in cases {
            let entries = read(dir.path(), format!("{good}\n{bad}\n").as_bytes()).unwrap();
            assert!(entries[0].is_ok());
            let e = entries[1].as_ref().unwrap_err().to_string();
            assert!(
                e.contains(&format!("list_98pt_rect_attr_train.txt, {want}")),
                "{e}"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn arbitrary_and_mutated_files_never_panic(
            junk in proptest::collection::vec(any::<u8>(), 0..400),
            cut in 0usize..3000,
            flips in proptest::collection::vec((0usize..3000, any::<u8>()), 0..6),
            drop_line in 0usize..3,
        ) {
            let dir = fixture();
            let _ = read(dir.path(), &junk);
            let valid = format!("{}\n{}\n", line("1 0 0 1 0 1", "51--Dresses/a.jpg"), line("0 0 0 0 0 0", "b.jpg"));
            let bytes = mutated(&valid, Some(drop_line), &flips, cut);
            match read(dir.path(), &bytes) {
                Ok(entries) => {
                    for e in entries.iter().filter_map(|e| e.as_ref().err()) {
                        prop_assert!(e.to_string().contains("_train.txt, line "), "{}", e);
                    }
                }
                Err(e) => prop_assert!(e.to_string().contains("_train.txt, line "), "{}", e),
            }
        }
    }
}
