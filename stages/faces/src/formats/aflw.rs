//! The AFLW database `aflw.sqlite`: `Faces`, `FaceImages`, `FaceRect`, `FacePose`,
//! `FeatureCoords` (feature ids 1..=21; an unannotated point has no row) and
//! `FeatureCoordTypes`.
//!
//! Pixel rule: AFLW coordinates are 0-based pixel indices, so 0.5 is added to every landmark
//! and to the `FaceRect` corner (its width and height are kept).

use std::collections::HashMap;
use std::path::Path;

use rayon::prelude::*;
use rusqlite::{Connection, OpenFlags};

use super::{Entries, Location, Origin, ReadError, SourcedFace, image_facts, quote};
use crate::face::{BBox, BoxSource, FaceRecord};
use contract::scheme::{AFLW21_EARS, AFLW21_FEATURES, Scheme};

/// The `+0.5` of the 0-based AFLW values.
const OFFSET: f64 = 0.5;

/// The default image folder of a database: `flickr/` beside it.
pub fn default_images(database: &Path) -> std::path::PathBuf {
    database.parent().unwrap_or(Path::new("")).join("flickr")
}

/// One AFLW database source.
#[derive(Debug, Clone, Copy)]
pub struct AflwSqlite<'a> {
    /// The `aflw.sqlite` file.
    pub path: &'a Path,
    /// Folder `FaceImages.filepath` is relative to (see [`default_images`]).
    pub images: &'a Path,
    /// Split of every face.
    pub split: &'a str,
    /// `aflw19` (the ears, feature ids 13 and 17, are dropped) or `aflw21`.
    pub scheme: &'a Scheme,
}

/// Columns 1..=n of a row as numbers; on a bad value, the face records the problem and `None`.
fn row_values(
    face: &mut FaceRows,
    row: &rusqlite::Row<'_>,
    n: usize,
    table: &str,
) -> Option<Vec<f64>> {
    match (1..=n).map(|i| row.get::<_, f64>(i)).collect() {
        Ok(v) => Some(v),
        Err(e) => {
            face.problem = Some(format!("{table}: {e}"));
            None
        }
    }
}

/// Everything the tables say about one face before its image is looked at.
#[derive(Default)]
struct FaceRows {
    filepath: Option<String>,
    image_rows: usize,
    rect: Option<[f64; 4]>,
    /// roll, pitch, yaw in radians.
    pose: Option<[f64; 3]>,
    coords: [Option<(f64, f64)>; 21],
    problem: Option<String>,
}

impl AflwSqlite<'_> {
    /// Read every face of the database, in `face_id` order.
    ///
    /// Sample id: `aflw/<face_id>`. Landmarks: the 21 features in `feature_id` order, without
    /// the ears for `aflw19`; a point without a `FeatureCoords` row is NaN and not visible.
    /// Box: `FaceRect` (`bbox_source` `annotation`; with several rows per face the lowest
    /// `annot_type_id` wins, likewise for `FacePose`). Pose: `FacePose` radians converted to
    /// degrees, signs kept as AFLW stores them. The image size comes from the image header.
    /// A database that cannot be opened or queried, or whose `FeatureCoordTypes` disagree with
    /// the AFLW feature order, is an error for the whole source; a face without an image row
    /// or a `FaceRect`, with a feature id outside 1..=21, a duplicated feature or an unreadable
    /// value is an error for that face.
    pub fn read(&self) -> Result<Entries, ReadError> {
        let keep: Vec<usize> = match self.scheme.name {
            "aflw21" => (0..21).collect(),
            "aflw19" => (0..21).filter(|i| !AFLW21_EARS.contains(i)).collect(),
            other => {
                return Err(ReadError::Source {
                    path: self.path.into(),
                    problem: format!("aflw.sqlite yields `aflw19` or `aflw21`, not `{other}`"),
                });
            }
        };
        let db = Connection::open_with_flags(
            self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| self.sqlite("opening the database", e))?;
        self.check_feature_types(&db)?;
        let faces = self.face_rows(&db)?;
        Ok(faces
            .into_par_iter()
            .map(|(face_id, rows)| self.face(face_id, rows, &keep))
            .collect())
    }

    fn sqlite(&self, doing: &str, source: rusqlite::Error) -> ReadError {
        ReadError::Sqlite {
            path: self.path.into(),
            doing: doing.to_owned(),
            source,
        }
    }

    /// Refuse a database whose feature ids do not mean what [`AFLW21_FEATURES`] says.
    fn check_feature_types(&self, db: &Connection) -> Result<(), ReadError> {
        let doing = "reading FeatureCoordTypes";
        let mut stmt = db
            .prepare("SELECT feature_id, descr FROM FeatureCoordTypes")
            .map_err(|e| self.sqlite(doing, e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
            .map_err(|e| self.sqlite(doing, e))?;
        for row in rows {
            let (id, descr) = row.map_err(|e| self.sqlite(doing, e))?;
            let expected = usize::try_from(id)
                .ok()
                .and_then(|i| AFLW21_FEATURES.get(i.wrapping_sub(1)));
            if let Some(expected) = expected
                && descr.trim() != *expected
            {
                return Err(ReadError::Source {
                    path: self.path.into(),
                    problem: format!(
                        "FeatureCoordTypes: feature_id {id} is `{}`, expected `{expected}`",
                        quote(&descr)
                    ),
                });
            }
        }
        Ok(())
    }

    /// Run `sql`, whose first column is a face_id, and hand each row to `each` with that face's
    /// rows: every face seen when `add_faces`, else only faces already known (rows of other
    /// faces are ignored).
    fn for_each_face_row(
        &self,
        db: &Connection,
        table: &str,
        sql: &str,
        faces: &mut HashMap<i64, FaceRows>,
        add_faces: bool,
        mut each: impl FnMut(&mut FaceRows, &rusqlite::Row<'_>),
    ) -> Result<(), ReadError> {
        let doing = format!("reading {table}");
        let mut stmt = db.prepare(sql).map_err(|e| self.sqlite(&doing, e))?;
        let mut rows = stmt.query([]).map_err(|e| self.sqlite(&doing, e))?;
        while let Some(row) = rows.next().map_err(|e| self.sqlite(&doing, e))? {
            let face_id: i64 = row.get(0).map_err(|e| self.sqlite(&doing, e))?;
            let face = if add_faces {
                Some(faces.entry(face_id).or_default())
            } else {
                faces.get_mut(&face_id)
            };
            if let Some(face) = face {
                each(face, row);
            }
        }
        Ok(())
    }

    /// Gather every table's rows per face.
    fn face_rows(&self, db: &Connection) -> Result<Vec<(i64, FaceRows)>, ReadError> {
        let mut faces: HashMap<i64, FaceRows> = HashMap::new();
        self.for_each_face_row(
            db,
            "Faces and FaceImages",
            "SELECT Faces.face_id, FaceImages.filepath FROM Faces \
             LEFT JOIN FaceImages ON Faces.file_id = FaceImages.file_id",
            &mut faces,
            true,
            |face, row| match row.get::<_, Option<String>>(1) {
                Ok(Some(path)) => {
                    face.image_rows += 1;
                    face.filepath = Some(path);
                }
                Ok(None) => {}
                Err(e) => face.problem = Some(format!("FaceImages.filepath: {e}")),
            },
        )?;
        // The first row of each face (lowest annotation type) wins.
        self.for_each_face_row(
            db,
            "FaceRect",
            "SELECT face_id, x, y, w, h FROM FaceRect ORDER BY face_id, annot_type_id",
            &mut faces,
            false,
            |face, row| {
                if face.rect.is_none()
                    && let Some(v) = row_values(face, row, 4, "FaceRect")
                {
                    face.rect = Some([v[0], v[1], v[2], v[3]]);
                }
            },
        )?;
        self.for_each_face_row(
            db,
            "FacePose",
            "SELECT face_id, roll, pitch, yaw FROM FacePose ORDER BY face_id, annot_type_id",
            &mut faces,
            false,
            |face, row| {
                if face.pose.is_none()
                    && let Some(v) = row_values(face, row, 3, "FacePose")
                {
                    face.pose = Some([v[0], v[1], v[2]]);
                }
            },
        )?;
        self.for_each_face_row(
            db,
            "FeatureCoords",
            "SELECT face_id, feature_id, x, y FROM FeatureCoords",
            &mut faces,
            false,
            |face, row| {
                let values = (
                    row.get::<_, i64>(1),
                    row.get::<_, f64>(2),
                    row.get::<_, f64>(3),
                );
                let (feature, x, y) = match values {
                    (Ok(f), Ok(x), Ok(y)) => (f, x, y),
                    (Err(e), ..) | (_, Err(e), _) | (.., Err(e)) => {
                        face.problem = Some(format!("FeatureCoords: {e}"));
                        return;
                    }
                };
                let slot = usize::try_from(feature)
                    .ok()
                    .and_then(|f| f.checked_sub(1))
                    .and_then(|i| face.coords.get_mut(i));
                match slot {
                    Some(slot @ None) => *slot = Some((x, y)),
                    Some(Some(_)) => {
                        face.problem =
                            Some(format!("FeatureCoords: feature_id {feature} appears twice"));
                    }
                    None => {
                        face.problem = Some(format!(
                            "FeatureCoords: feature_id {feature} is not in 1..=21"
                        ));
                    }
                }
            },
        )?;

        let mut faces: Vec<(i64, FaceRows)> = faces.into_iter().collect();
        faces.sort_by_key(|(id, _)| *id);
        Ok(faces)
    }

    fn face(&self, face_id: i64, rows: FaceRows, keep: &[usize]) -> Result<SourcedFace, ReadError> {
        let origin = Origin {
            path: self.path.into(),
            location: Location::AflwFace(face_id),
        };
        let record_error = |problem: String| ReadError::Record {
            path: self.path.into(),
            location: origin.location.clone(),
            problem,
        };
        if let Some(problem) = rows.problem {
            return Err(record_error(problem));
        }
        let filepath = match (rows.filepath, rows.image_rows) {
            (Some(p), 1) => p,
            (None, _) => return Err(record_error("no FaceImages row for its file_id".to_owned())),
            (Some(_), n) => {
                return Err(record_error(format!("{n} FaceImages rows for its file_id")));
            }
        };
        let [x, y, w, h] = rows
            .rect
            .ok_or_else(|| record_error("no FaceRect row".to_owned()))?;
        if !(w > 0.0 && h > 0.0 && x.is_finite() && y.is_finite() && w.is_finite() && h.is_finite())
        {
            return Err(record_error(format!(
                "FaceRect ({x}, {y}, {w}, {h}) is not a box"
            )));
        }
        let image = self.images.join(&filepath);
        let (image_path, width, height) = image_facts(&image, &origin)?;
        let mut landmarks = Vec::with_capacity(2 * keep.len());
        let mut visible = Vec::with_capacity(keep.len());
        for &i in keep {
            match rows.coords[i] {
                Some((px, py)) => {
                    landmarks.extend([(px + OFFSET) as f32, (py + OFFSET) as f32]);
                    visible.push(true);
                }
                None => {
                    landmarks.extend([f32::NAN, f32::NAN]);
                    visible.push(false);
                }
            }
        }
        let degrees = |r: f64| r.to_degrees() as f32;
        let face = FaceRecord {
            sample_id: format!("aflw/{face_id}"),
            dataset: "aflw".to_owned(),
            scheme: self.scheme.name.to_owned(),
            split: self.split.to_owned(),
            image_path,
            image_width: width,
            image_height: height,
            landmarks,
            occluded: vec![false; visible.len()],
            visible,
            bbox: BBox {
                x: (x + OFFSET) as f32,
                y: (y + OFFSET) as f32,
                w: w as f32,
                h: h as f32,
            },
            bbox_source: BoxSource::Annotation,
            roll: rows.pose.map(|p| degrees(p[0])),
            pitch: rows.pose.map(|p| degrees(p[1])),
            yaw: rows.pose.map(|p| degrees(p[2])),
            attributes: None,
        };
        Ok(SourcedFace { face, origin })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::formats::test_support::write_png;
    use contract::scheme::by_name;
    use proptest::prelude::*;

    /// Create an AFLW-shaped database with two faces on two images: face 1 has every feature
    /// but feature 5, face 2 has features 1..=3 only.
    pub(crate) fn write_database(path: &Path) {
        let db = Connection::open(path).unwrap();
        db.execute_batch(
            "CREATE TABLE Faces(face_id INTEGER PRIMARY KEY, file_id TEXT, db_id TEXT);
             CREATE TABLE FaceImages(image_id INTEGER PRIMARY KEY, db_id TEXT, file_id TEXT,
                 filepath TEXT, bw INTEGER, width INTEGER, height INTEGER);
             CREATE TABLE FaceRect(face_id INTEGER, x INTEGER, y INTEGER, w INTEGER, h INTEGER,
                 annot_type_id INTEGER);
             CREATE TABLE FacePose(face_id INTEGER, roll REAL, pitch REAL, yaw REAL,
                 annot_type_id INTEGER);
             CREATE TABLE FeatureCoords(face_id INTEGER, feature_id INTEGER, x REAL, y REAL);
             CREATE TABLE FeatureCoordTypes(feature_id INTEGER, descr TEXT, code TEXT, x REAL,
                 y REAL, z REAL);
             INSERT INTO Faces VALUES (1, 'image00002.jpg', 'aflw'), (2, 'image00004.jpg', 'aflw');
             INSERT INTO FaceImages VALUES (1, 'aflw', 'image00002.jpg', '0/image00002.jpg', 0, 80, 60),
                                           (2, 'aflw', 'image00004.jpg', '2/image00004.jpg', 0, 50, 40);
             INSERT INTO FaceRect VALUES (1, 10, 12, 30, 32, 1), (2, 5, 6, 20, 21, 1), (2, 0, 0, 1, 1, 2);
             INSERT INTO FacePose VALUES (1, 0.0, 0.5, -1.0, 1);",
        )
        .unwrap();
        for (i, name) in AFLW21_FEATURES.iter().enumerate() {
            db.execute(
                "INSERT INTO FeatureCoordTypes VALUES (?1, ?2, '', 0, 0, 0)",
                rusqlite::params![i as i64 + 1, name],
            )
            .unwrap();
        }
        for f in (1..=21).filter(|&f| f != 5) {
            db.execute(
                "INSERT INTO FeatureCoords VALUES (1, ?1, ?2, ?3)",
                rusqlite::params![f, 10.0 + f as f64, 20.0 + f as f64],
            )
            .unwrap();
        }
        for f in 1..=3 {
            db.execute("INSERT INTO FeatureCoords VALUES (2, ?1, ?1, ?1)", [f])
                .unwrap();
        }
    }

    fn fixture() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        write_database(&dir.path().join("aflw.sqlite"));
        write_png(&dir.path().join("flickr/0/image00002.jpg"), 80, 60);
        write_png(&dir.path().join("flickr/2/image00004.jpg"), 50, 40);
        dir
    }

    fn read(dir: &Path, scheme: &str) -> Result<Entries, ReadError> {
        let path = dir.join("aflw.sqlite");
        let images = default_images(&path);
        AflwSqlite {
            path: &path,
            images: &images,
            split: "train",
            scheme: by_name(scheme).unwrap(),
        }
        .read()
    }

    #[test]
    fn reads_faces_with_missing_points_boxes_and_poses() {
        let dir = fixture();
        let faces: Vec<SourcedFace> = read(dir.path(), "aflw21")
            .unwrap()
            .into_iter()
            .map(|e| e.unwrap())
            .collect();
        assert_eq!(faces.len(), 2);
        let f = &faces[0].face;
        assert_eq!(f.sample_id, "aflw/1");
        assert_eq!(f.landmarks.len(), 42);
        assert_eq!((f.landmarks[0], f.landmarks[1]), (11.5, 21.5));
        assert!(f.landmarks[8].is_nan() && f.landmarks[9].is_nan());
        assert!(!f.visible[4] && f.visible[3] && f.visible[12]);
        assert_eq!(
            (f.bbox.x, f.bbox.y, f.bbox.w, f.bbox.h),
            (10.5, 12.5, 30.0, 32.0)
        );
        assert_eq!(
            (f.roll, f.yaw),
            (Some(0.0), Some(-1.0f64.to_degrees() as f32))
        );
        assert_eq!((f.image_width, f.image_height), (80, 60));
        let g = &faces[1].face;
        assert_eq!(
            (g.bbox.x, g.bbox.w),
            (5.5, 20.0),
            "lowest annot_type_id wins"
        );
        assert_eq!(g.yaw, None);
        assert_eq!(g.visible.iter().filter(|v| **v).count(), 3);
        assert_eq!(faces[1].origin.location, Location::AflwFace(2));
    }

    #[test]
    fn aflw19_drops_the_ears() {
        let dir = fixture();
        let faces: Vec<SourcedFace> = read(dir.path(), "aflw19")
            .unwrap()
            .into_iter()
            .map(|e| e.unwrap())
            .collect();
        let f = &faces[0].face;
        assert_eq!(f.landmarks.len(), 38);
        // Index 12 of AFLW-19 is NoseLeft, feature id 14.
        assert_eq!((f.landmarks[24], f.landmarks[25]), (24.5, 34.5));
        // Index 18 (chin) is feature id 21.
        assert_eq!(f.landmarks[36], 31.5);
    }

    #[test]
    fn face_errors_name_the_database_and_face() {
        let dir = fixture();
        let db = Connection::open(dir.path().join("aflw.sqlite")).unwrap();
        db.execute_batch(
            "INSERT INTO Faces VALUES (3, 'nope.jpg', 'aflw'), (4, 'image00004.jpg', 'aflw');
             INSERT INTO FaceRect VALUES (4, 1, 1, 10, 10, 1);
             INSERT INTO FeatureCoords VALUES (4, 22, 1, 1);
             UPDATE FaceImages SET filepath = 'missing.jpg' WHERE image_id = 1;",
        )
        .unwrap();
        drop(db);
        let entries = read(dir.path(), "aflw21").unwrap();
        let errors: Vec<String> = entries
            .iter()
            .map(|e| e.as_ref().err().map(|e| e.to_string()).unwrap_or_default())
            .collect();
        assert!(
            errors[0].contains("aflw.sqlite, face_id 1: image")
                && errors[0].contains("missing.jpg"),
            "{errors:?}"
        );
        assert!(entries[1].is_ok());
        assert!(
            errors[2].contains("aflw.sqlite, face_id 3: no FaceImages row"),
            "{errors:?}"
        );
        assert!(
            errors[3].contains("face_id 4: FeatureCoords: feature_id 22"),
            "{errors:?}"
        );
    }

    #[test]
    fn wrong_feature_order_and_wrong_scheme_are_rejected() {
        let dir = fixture();
        let e = read(dir.path(), "ibug68").unwrap_err().to_string();
        assert!(e.contains("not `ibug68`"), "{e}");
        let db = Connection::open(dir.path().join("aflw.sqlite")).unwrap();
        db.execute(
            "UPDATE FeatureCoordTypes SET descr = 'LeftEar' WHERE feature_id = 1",
            [],
        )
        .unwrap();
        drop(db);
        let e = read(dir.path(), "aflw21").unwrap_err().to_string();
        assert!(e.contains("feature_id 1 is `LeftEar`"), "{e}");
    }

    #[test]
    fn a_file_that_is_not_a_database_is_a_source_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("aflw.sqlite"),
            b"this is not sqlite at all, just text",
        )
        .unwrap();
        let e = read(dir.path(), "aflw19").unwrap_err().to_string();
        assert!(e.contains("aflw.sqlite: sqlite error"), "{e}");
        let e = read(&dir.path().join("absent"), "aflw19")
            .unwrap_err()
            .to_string();
        assert!(e.contains("opening the database"), "{e}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn corrupted_databases_never_panic(
            cut in proptest::option::of(0usize..40_000),
            flips in proptest::collection::vec((0usize..40_000, any::<u8>()), 1..40),
        ) {
            let dir = fixture();
            let path = dir.path().join("aflw.sqlite");
            let mut bytes = std::fs::read(&path).unwrap();
            for (at, b) in flips {
                let n = bytes.len();
                bytes[at % n] = b;
            }
            if let Some(cut) = cut {
                bytes.truncate(cut.min(bytes.len()));
            }
            std::fs::write(&path, &bytes).unwrap();
            match read(dir.path(), "aflw19") {
                Ok(entries) => {
                    for e in entries.iter().filter_map(|e| e.as_ref().err()) {
                        prop_assert!(e.to_string().contains("aflw.sqlite"), "{}", e);
                    }
                }
                Err(e) => prop_assert!(e.to_string().contains("aflw.sqlite"), "{}", e),
            }
        }
    }
}
