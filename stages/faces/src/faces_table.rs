//! `faces.parquet`: the ingest stage's output, one row per [`FaceRecord`] (DESIGN.md data
//! model).
//!
//! Columns, in order: `sample_id`, `dataset`, `scheme`, `split`, `image_path` (str),
//! `image_width`, `image_height` (u32), `landmarks` (list[f32], NaN where a point has no
//! coordinates), `visible` (list[bool]: the point has coordinates we trust), `occluded`
//! (list[bool]: labelled but marked occluded by the source; all false where the format has no
//! such flag), `bbox_x`, `bbox_y`, `bbox_w`, `bbox_h` (f32),
//! `bbox_source` (str), `yaw`, `pitch`, `roll` (nullable f32, degrees) and the WFLW attribute
//! flags `attr_pose`, `attr_expression`, `attr_illumination`, `attr_makeup`, `attr_occlusion`,
//! `attr_blur` (nullable bool: null for faces without WFLW attributes).

use std::fs::File;
use std::path::{Path, PathBuf};

use polars::prelude::*;

use crate::face::{BBox, BoxSource, FaceRecord, WflwAttributes};

/// The WFLW attribute columns, in [`WflwAttributes`] field order.
pub const ATTRIBUTE_COLUMNS: [&str; 6] = [
    "attr_pose",
    "attr_expression",
    "attr_illumination",
    "attr_makeup",
    "attr_occlusion",
    "attr_blur",
];

/// Why `faces.parquet` could not be built, written or read.
#[derive(Debug, thiserror::Error)]
pub enum FacesTableError {
    /// The atomic write (temporary file, fsync, rename) failed; the message names the file.
    #[error(transparent)]
    Write(#[from] manifests::Error),
    /// Polars refused to build the frame from the records.
    #[error("cannot build the faces table: {0}")]
    Build(#[source] PolarsError),
    /// A file system operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Polars could not write or read the Parquet file.
    #[error("{}: {source}", path.display())]
    Parquet {
        /// The file.
        path: PathBuf,
        /// The Parquet error.
        source: PolarsError,
    },
    /// A column is missing or has the wrong type.
    #[error("{}: column `{column}`: {problem}", path.display())]
    Column {
        /// The file.
        path: PathBuf,
        /// The column.
        column: String,
        /// What is wrong.
        problem: String,
    },
    /// A value of a row breaks the data model.
    #[error("{}, row {row}, column `{column}`: {problem}", path.display())]
    Row {
        /// The file.
        path: PathBuf,
        /// 0-based row index.
        row: usize,
        /// The column.
        column: String,
        /// What is wrong.
        problem: String,
    },
}

/// Build the faces table from records, one row each, in order.
pub fn faces_to_dataframe(faces: &[FaceRecord]) -> Result<DataFrame, FacesTableError> {
    let n = faces.len();
    let text = |name: &str, get: fn(&FaceRecord) -> &str| {
        Column::new(name.into(), faces.iter().map(get).collect::<Vec<&str>>())
    };
    let float = |name: &str, get: fn(&FaceRecord) -> f32| {
        Column::new(name.into(), faces.iter().map(get).collect::<Vec<f32>>())
    };
    let angle = |name: &str, get: fn(&FaceRecord) -> Option<f32>| {
        Column::new(
            name.into(),
            faces.iter().map(get).collect::<Vec<Option<f32>>>(),
        )
    };
    let values: usize = faces.iter().map(|f| f.landmarks.len()).sum();
    let mut landmarks = ListPrimitiveChunkedBuilder::<Float32Type>::new(
        "landmarks".into(),
        n,
        values,
        DataType::Float32,
    );
    let mut visible = ListBooleanChunkedBuilder::new("visible".into(), n, values / 2);
    let mut occluded = ListBooleanChunkedBuilder::new("occluded".into(), n, values / 2);
    for f in faces {
        landmarks.append_slice(&f.landmarks);
        for (builder, flags) in [(&mut visible, &f.visible), (&mut occluded, &f.occluded)] {
            let flags = BooleanChunked::from_slice("".into(), flags).into_series();
            builder
                .append_series(&flags)
                .map_err(FacesTableError::Build)?;
        }
    }
    let mut columns = vec![
        text("sample_id", |f| &f.sample_id),
        text("dataset", |f| &f.dataset),
        text("scheme", |f| &f.scheme),
        text("split", |f| &f.split),
        text("image_path", |f| &f.image_path),
        Column::new(
            "image_width".into(),
            faces.iter().map(|f| f.image_width).collect::<Vec<u32>>(),
        ),
        Column::new(
            "image_height".into(),
            faces.iter().map(|f| f.image_height).collect::<Vec<u32>>(),
        ),
        landmarks.finish().into_column(),
        visible.finish().into_column(),
        occluded.finish().into_column(),
        float("bbox_x", |f| f.bbox.x),
        float("bbox_y", |f| f.bbox.y),
        float("bbox_w", |f| f.bbox.w),
        float("bbox_h", |f| f.bbox.h),
        text("bbox_source", |f| f.bbox_source.as_str()),
        angle("yaw", |f| f.yaw),
        angle("pitch", |f| f.pitch),
        angle("roll", |f| f.roll),
    ];
    let flag_getters: [fn(&WflwAttributes) -> bool; 6] = [
        |a| a.pose,
        |a| a.expression,
        |a| a.illumination,
        |a| a.makeup,
        |a| a.occlusion,
        |a| a.blur,
    ];
    for (name, get) in ATTRIBUTE_COLUMNS.iter().zip(flag_getters) {
        let flags: Vec<Option<bool>> = faces
            .iter()
            .map(|f| f.attributes.as_ref().map(get))
            .collect();
        columns.push(Column::new((*name).into(), flags));
    }
    DataFrame::new(n, columns).map_err(FacesTableError::Build)
}

/// Write `faces` to `path` as Parquet, atomically (`manifests::AtomicFile`: a temporary file
/// in the same folder, fsynced and renamed over `path`), so a reader never sees a partial file.
/// Returns the file size in bytes.
pub fn write_faces_parquet(path: &Path, faces: &[FaceRecord]) -> Result<u64, FacesTableError> {
    let mut df = faces_to_dataframe(faces)?;
    let mut file = manifests::AtomicFile::create(path)?;
    ParquetWriter::new(&mut file)
        .finish(&mut df)
        .map_err(|source| FacesTableError::Parquet {
            path: path.into(),
            source,
        })?;
    file.commit()?;
    let bytes = std::fs::metadata(path)
        .map_err(|source| FacesTableError::Io {
            path: path.into(),
            source,
        })?
        .len();
    Ok(bytes)
}

/// Read `faces.parquet` back into records, checking every column's type and every row
/// against the data model (errors name the file, the row and the column).
pub fn read_faces_parquet(path: &Path) -> Result<Vec<FaceRecord>, FacesTableError> {
    let file = File::open(path).map_err(|source| FacesTableError::Io {
        path: path.into(),
        source,
    })?;
    let df = ParquetReader::new(file)
        .finish()
        .map_err(|source| FacesTableError::Parquet {
            path: path.into(),
            source,
        })?;
    dataframe_to_faces(&df, path)
}

/// Typed access to the columns of a faces table, with errors that name the file.
struct Columns<'a> {
    df: &'a DataFrame,
    path: &'a Path,
}

impl<'a> Columns<'a> {
    fn get(&self, name: &str) -> Result<&'a Column, FacesTableError> {
        self.df
            .column(name)
            .map_err(|_| self.column_error(name, "missing".to_owned()))
    }

    fn column_error(&self, name: &str, problem: String) -> FacesTableError {
        FacesTableError::Column {
            path: self.path.into(),
            column: name.to_owned(),
            problem,
        }
    }

    fn typed<T>(
        &self,
        name: &str,
        cast: impl FnOnce(&'a Column) -> PolarsResult<&'a T>,
    ) -> Result<&'a T, FacesTableError> {
        let column = self.get(name)?;
        cast(column)
            .map_err(|_| self.column_error(name, format!("unexpected type {}", column.dtype())))
    }

    fn row_error(&self, row: usize, column: &str, problem: &str) -> FacesTableError {
        FacesTableError::Row {
            path: self.path.into(),
            row,
            column: column.to_owned(),
            problem: problem.to_owned(),
        }
    }
}

fn dataframe_to_faces(df: &DataFrame, path: &Path) -> Result<Vec<FaceRecord>, FacesTableError> {
    let c = Columns { df, path };
    let text = |name: &str| c.typed(name, Column::str);
    let float = |name: &str| c.typed(name, Column::f32);
    let (sample_id, dataset, scheme, split, image_path, bbox_source) = (
        text("sample_id")?,
        text("dataset")?,
        text("scheme")?,
        text("split")?,
        text("image_path")?,
        text("bbox_source")?,
    );
    let width = c.typed("image_width", Column::u32)?;
    let height = c.typed("image_height", Column::u32)?;
    let landmarks = c.typed("landmarks", Column::list)?;
    let visible = c.typed("visible", Column::list)?;
    let occluded = c.typed("occluded", Column::list)?;
    let (bx, by, bw, bh) = (
        float("bbox_x")?,
        float("bbox_y")?,
        float("bbox_w")?,
        float("bbox_h")?,
    );
    let (yaw, pitch, roll) = (float("yaw")?, float("pitch")?, float("roll")?);
    let attributes = ATTRIBUTE_COLUMNS
        .iter()
        .map(|name| c.typed(name, Column::bool))
        .collect::<Result<Vec<&BooleanChunked>, _>>()?;

    let mut faces = Vec::with_capacity(df.height());
    for row in 0..df.height() {
        let need_text = |ca: &StringChunked, name: &str| {
            ca.get(row)
                .map(str::to_owned)
                .ok_or_else(|| c.row_error(row, name, "null"))
        };
        let need_f32 = |ca: &Float32Chunked, name: &str| {
            ca.get(row).ok_or_else(|| c.row_error(row, name, "null"))
        };
        let need_u32 = |ca: &UInt32Chunked, name: &str| {
            ca.get(row).ok_or_else(|| c.row_error(row, name, "null"))
        };
        let xy: Vec<f32> = match landmarks.get_as_series(row) {
            Some(s) => s
                .f32()
                .map_err(|_| c.row_error(row, "landmarks", "not a list of f32"))?
                .iter()
                .map(|v| v.ok_or_else(|| c.row_error(row, "landmarks", "null element (use NaN)")))
                .collect::<Result<_, _>>()?,
            None => return Err(c.row_error(row, "landmarks", "null")),
        };
        let flags = |list: &ListChunked, name: &str| -> Result<Vec<bool>, FacesTableError> {
            let flags: Vec<bool> = match list.get_as_series(row) {
                Some(s) => s
                    .bool()
                    .map_err(|_| c.row_error(row, name, "not a list of bool"))?
                    .iter()
                    .map(|v| v.ok_or_else(|| c.row_error(row, name, "null element")))
                    .collect::<Result<_, _>>()?,
                None => return Err(c.row_error(row, name, "null")),
            };
            if flags.len() * 2 != xy.len() {
                return Err(c.row_error(
                    row,
                    name,
                    &format!("{} flags for {} landmark values", flags.len(), xy.len()),
                ));
            }
            Ok(flags)
        };
        let vis = flags(visible, "visible")?;
        let occluded = flags(occluded, "occluded")?;
        let source_name = need_text(bbox_source, "bbox_source")?;
        let source = BoxSource::parse(&source_name).ok_or_else(|| {
            c.row_error(
                row,
                "bbox_source",
                &format!("unknown box source `{source_name}`"),
            )
        })?;
        let flags: Vec<Option<bool>> = attributes.iter().map(|ca| ca.get(row)).collect();
        let attributes = match flags.as_slice() {
            [
                Some(pose),
                Some(expression),
                Some(illumination),
                Some(makeup),
                Some(occlusion),
                Some(blur),
            ] => Some(WflwAttributes {
                pose: *pose,
                expression: *expression,
                illumination: *illumination,
                makeup: *makeup,
                occlusion: *occlusion,
                blur: *blur,
            }),
            f if f.iter().all(Option::is_none) => None,
            _ => {
                return Err(c.row_error(
                    row,
                    "attr_pose",
                    "some WFLW attributes are null, some are not",
                ));
            }
        };
        faces.push(FaceRecord {
            sample_id: need_text(sample_id, "sample_id")?,
            dataset: need_text(dataset, "dataset")?,
            scheme: need_text(scheme, "scheme")?,
            split: need_text(split, "split")?,
            image_path: need_text(image_path, "image_path")?,
            image_width: need_u32(width, "image_width")?,
            image_height: need_u32(height, "image_height")?,
            landmarks: xy,
            visible: vis,
            occluded,
            bbox: BBox {
                x: need_f32(bx, "bbox_x")?,
                y: need_f32(by, "bbox_y")?,
                w: need_f32(bw, "bbox_w")?,
                h: need_f32(bh, "bbox_h")?,
            },
            bbox_source: source,
            yaw: yaw.get(row),
            pitch: pitch.get(row),
            roll: roll.get(row),
            attributes,
        });
    }
    Ok(faces)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn face(id: &str, attributes: Option<WflwAttributes>) -> FaceRecord {
        FaceRecord {
            sample_id: id.to_owned(),
            dataset: "aflw".to_owned(),
            scheme: "aflw19".to_owned(),
            split: "train".to_owned(),
            image_path: "flickr/0/image00002.jpg".to_owned(),
            image_width: 640,
            image_height: 480,
            landmarks: vec![1.5, 2.5, f32::NAN, f32::NAN, 100.25, 3.0],
            visible: vec![true, false, true],
            occluded: vec![true, false, false],
            bbox: BBox {
                x: 1.0,
                y: 2.0,
                w: 30.5,
                h: 40.0,
            },
            bbox_source: BoxSource::Annotation,
            yaw: Some(-12.5),
            pitch: None,
            roll: Some(3.0),
            attributes,
        }
    }

    /// Records compare equal here when their bits do, so NaN landmarks compare too.
    fn bits(f: &FaceRecord) -> (String, Vec<u32>) {
        (
            format!(
                "{:?}",
                FaceRecord {
                    landmarks: vec![],
                    ..f.clone()
                }
            ),
            f.landmarks.iter().map(|v| v.to_bits()).collect(),
        )
    }

    #[test]
    fn faces_round_trip_through_parquet() {
        let attrs = WflwAttributes {
            pose: true,
            blur: true,
            ..Default::default()
        };
        let mut other = face("wflw/a_0", Some(attrs));
        other.bbox_source = BoxSource::Landmarks;
        other.yaw = None;
        let faces = vec![face("aflw/1", None), other, face("aflw/3", None)];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("faces.parquet");
        let bytes = write_faces_parquet(&path, &faces).unwrap();
        assert_eq!(bytes, std::fs::metadata(&path).unwrap().len());
        let back = read_faces_parquet(&path).unwrap();
        assert_eq!(
            back.iter().map(bits).collect::<Vec<_>>(),
            faces.iter().map(bits).collect::<Vec<_>>()
        );
        // Only faces.parquet is left in the folder: the temporary file was renamed.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn the_table_has_the_data_model_columns_and_types() {
        let df = faces_to_dataframe(&[face("a", None)]).unwrap();
        let names: Vec<String> = df
            .get_column_names()
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut expected: Vec<&str> = vec![
            "sample_id",
            "dataset",
            "scheme",
            "split",
            "image_path",
            "image_width",
            "image_height",
            "landmarks",
            "visible",
            "occluded",
            "bbox_x",
            "bbox_y",
            "bbox_w",
            "bbox_h",
            "bbox_source",
            "yaw",
            "pitch",
            "roll",
        ];
        expected.extend(ATTRIBUTE_COLUMNS);
        assert_eq!(names, expected);
        assert_eq!(df.column("image_width").unwrap().dtype(), &DataType::UInt32);
        assert_eq!(
            df.column("landmarks").unwrap().dtype(),
            &DataType::List(Box::new(DataType::Float32))
        );
        assert_eq!(
            df.column("visible").unwrap().dtype(),
            &DataType::List(Box::new(DataType::Boolean))
        );
        assert_eq!(
            df.column("occluded").unwrap().dtype(),
            &DataType::List(Box::new(DataType::Boolean))
        );
        assert_eq!(df.column("attr_blur").unwrap().null_count(), 1);
    }

    #[test]
    fn an_empty_table_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("faces.parquet");
        write_faces_parquet(&path, &[]).unwrap();
        assert!(read_faces_parquet(&path).unwrap().is_empty());
    }

    #[test]
    fn bad_rows_are_named_by_file_row_and_column() {
        let mut bad = face("b", None);
        bad.visible.pop();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("faces.parquet");
        write_faces_parquet(&path, &[face("a", None), bad]).unwrap();
        let e = read_faces_parquet(&path).unwrap_err().to_string();
        assert!(e.contains("faces.parquet, row 1, column `visible`"), "{e}");

        let mut df = faces_to_dataframe(&[face("a", None)]).unwrap();
        let df2 = df.drop("yaw").unwrap();
        let mut f = File::create(&path).unwrap();
        ParquetWriter::new(&mut f).finish(&mut df2.clone()).unwrap();
        let e = read_faces_parquet(&path).unwrap_err().to_string();
        assert!(e.contains("faces.parquet: column `yaw`: missing"), "{e}");
        df.with_column(Column::new("bbox_source".into(), ["nope"]))
            .unwrap();
        let mut f = File::create(&path).unwrap();
        ParquetWriter::new(&mut f).finish(&mut df).unwrap();
        let e = read_faces_parquet(&path).unwrap_err().to_string();
        assert!(
            e.contains("row 0, column `bbox_source`: unknown box source `nope`"),
            "{e}"
        );
    }

    #[test]
    fn a_file_that_is_not_parquet_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("faces.parquet");
        std::fs::write(&path, b"not parquet").unwrap();
        let e = read_faces_parquet(&path).unwrap_err().to_string();
        assert!(e.contains("faces.parquet"), "{e}");
    }
}
