//! The 300W folder tree: `.pts` annotations beside their images, one face per `.pts` file.
//!
//! Pixel rule: `.pts` values are MATLAB-style 1-based pixel centres; the reader subtracts 0.5
//! (see [`super::pts`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::pts::read_pts;
use super::{Entries, Location, Origin, ReadError, SourcedFace, image_facts, quote};
use crate::face::{BoxSource, FaceRecord, landmarks_bbox};
use contract::scheme::Scheme;

/// The 300W folders (relative to the root) and the split each one belongs to.
pub const FOLDERS: [(&str, &str); 8] = [
    ("afw", "train"),
    ("helen/trainset", "train"),
    ("lfpw/trainset", "train"),
    ("helen/testset", "common"),
    ("lfpw/testset", "common"),
    ("ibug", "challenging"),
    ("Test/01_Indoor", "test"),
    ("Test/02_Outdoor", "test"),
];

/// Image extensions looked for beside a `.pts` file, in order of preference.
const IMAGE_EXTENSIONS: [&str; 6] = ["jpg", "png", "jpeg", "JPG", "PNG", "JPEG"];

/// The name of the optional pose sidecar in the root (written by the synthetic generator).
pub const POSES_FILE: &str = "poses.csv";

/// Whether `root` looks like a 300W tree (at least one of [`FOLDERS`] exists).
pub fn is_300w_tree(root: &Path) -> bool {
    FOLDERS.iter().any(|(folder, _)| root.join(folder).is_dir())
}

/// Read every face of a 300W tree rooted at `root`, annotated in `scheme` (`ibug68`).
///
/// Walks the [`FOLDERS`] that exist (not recursively), takes every `.pts` file in name order
/// (not hidden ones; a `.pts` symbolic link to a file counts, one to a folder does not) and
/// the image of the same stem beside it (`.jpg`, `.png`, …), and reads the image size from
/// its header. Sample id: `300w/<folder>/<stem>`; split: by folder (afw + helen/trainset +
/// lfpw/trainset = `train`, helen/testset + lfpw/testset = `common`, ibug = `challenging`,
/// Test/* = `test`). Every point is visible; the box is the landmarks' box. If
/// `<root>/poses.csv` exists (`sample_id,image_path,split,yaw,pitch,roll`, degrees, empty =
/// unknown), yaw/pitch/roll are filled from it.
///
/// Pixel rule: subtract 0.5 (1-based `.pts` values).
pub fn read_300w_tree(root: &Path, scheme: &Scheme) -> Result<Entries, ReadError> {
    let mut files: Vec<(PathBuf, &'static str, &'static str)> = Vec::new();
    let mut found_any = false;
    for (folder, split) in FOLDERS {
        let dir = root.join(folder);
        if !dir.is_dir() {
            continue;
        }
        found_any = true;
        let listing = std::fs::read_dir(&dir).map_err(|source| ReadError::Io {
            path: dir.clone(),
            source,
        })?;
        let mut pts: Vec<PathBuf> = Vec::new();
        for entry in listing {
            let entry = entry.map_err(|source| ReadError::Io {
                path: dir.clone(),
                source,
            })?;
            let path = entry.path();
            // Hidden files (editors' and interrupted writers' temporaries, `._*` metadata)
            // are not annotations, and not among ingest's inputs either.
            let hidden = entry.file_name().as_encoded_bytes().starts_with(b".");
            if !hidden && path.extension().is_some_and(|e| e == "pts") && path.is_file() {
                pts.push(path);
            }
        }
        pts.sort();
        files.extend(pts.into_iter().map(|p| (p, folder, split)));
    }
    if !found_any {
        return Err(ReadError::Source {
            path: root.into(),
            problem: format!(
                "not a 300W tree: none of {} exists",
                FOLDERS.map(|(f, _)| f).join(", ")
            ),
        });
    }
    let poses = read_poses(root)?;
    Ok(files
        .par_iter()
        .map(|(pts, folder, split)| read_face(pts, folder, split, scheme, &poses))
        .collect())
}

fn read_face(
    pts: &Path,
    folder: &str,
    split: &str,
    scheme: &Scheme,
    poses: &HashMap<String, Pose>,
) -> Result<SourcedFace, ReadError> {
    let shape = read_pts(pts, scheme.num_points())?;
    let origin = Origin {
        path: pts.into(),
        location: Location::PtsPoints {
            first_line: shape.first_point_line,
        },
    };
    let stem = pts
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| ReadError::Record {
            path: pts.into(),
            location: Location::File,
            problem: "file name is not valid UTF-8".to_owned(),
        })?;
    let image = IMAGE_EXTENSIONS
        .iter()
        .map(|ext| pts.with_extension(ext))
        .find(|p| p.is_file())
        .unwrap_or_else(|| pts.with_extension("jpg"));
    let (image_path, width, height) = image_facts(&image, &origin)?;
    let sample_id = format!("300w/{folder}/{stem}");
    let bbox = landmarks_bbox(&shape.xy).ok_or_else(|| ReadError::Record {
        path: pts.into(),
        location: Location::File,
        problem: "no point has coordinates".to_owned(),
    })?;
    let pose = poses.get(&sample_id).copied().unwrap_or_default();
    let face = FaceRecord {
        dataset: "300w".to_owned(),
        scheme: scheme.name.to_owned(),
        split: split.to_owned(),
        image_path,
        image_width: width,
        image_height: height,
        visible: vec![true; shape.xy.len() / 2],
        occluded: vec![false; shape.xy.len() / 2],
        landmarks: shape.xy,
        bbox,
        bbox_source: BoxSource::Landmarks,
        yaw: pose.yaw,
        pitch: pose.pitch,
        roll: pose.roll,
        attributes: None,
        sample_id,
    };
    Ok(SourcedFace { face, origin })
}

/// Yaw, pitch and roll of one face from the pose sidecar.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Pose {
    yaw: Option<f32>,
    pitch: Option<f32>,
    roll: Option<f32>,
}

/// The optional `poses.csv` sidecar, keyed by sample id; empty when the file does not exist.
fn read_poses(root: &Path) -> Result<HashMap<String, Pose>, ReadError> {
    let path = root.join(POSES_FILE);
    if !path.is_file() {
        return Ok(HashMap::new());
    }
    let text = std::fs::read_to_string(&path).map_err(|source| ReadError::Io {
        path: path.clone(),
        source,
    })?;
    let syntax = |line: usize, problem: String| ReadError::Syntax {
        path: path.clone(),
        line,
        problem,
    };
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_end_matches('\r')));
    const HEADER: &str = "sample_id,image_path,split,yaw,pitch,roll";
    match lines.next() {
        Some((_, h)) if h.trim() == HEADER => {}
        Some((_, h)) => {
            return Err(syntax(
                1,
                format!("expected the header `{HEADER}`, found `{}`", quote(h)),
            ));
        }
        None => {
            return Err(syntax(
                1,
                format!("empty file, expected the header `{HEADER}`"),
            ));
        }
    }
    let mut poses = HashMap::new();
    for (n, line) in lines.filter(|(_, l)| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split(',').collect();
        let [id, _, _, yaw, pitch, roll] = fields.as_slice() else {
            return Err(syntax(
                n,
                format!("expected 6 fields, found {}", fields.len()),
            ));
        };
        let angle = |v: &str| -> Result<Option<f32>, ReadError> {
            let v = v.trim();
            if v.is_empty() {
                return Ok(None);
            }
            super::parse_finite(v)
                .map(|a| Some(a as f32))
                .map_err(|p| syntax(n, p))
        };
        let pose = Pose {
            yaw: angle(yaw)?,
            pitch: angle(pitch)?,
            roll: angle(roll)?,
        };
        if poses.insert(id.trim().to_owned(), pose).is_some() {
            return Err(syntax(
                n,
                format!("sample id `{}` appears twice", quote(id.trim())),
            ));
        }
    }
    Ok(poses)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::pts::write_pts;
    use crate::formats::test_support::{scheme_of, write_png};

    fn shape(n: usize) -> Vec<f32> {
        (0..n)
            .flat_map(|i| [10.0 + i as f32, 20.0 + 0.5 * i as f32])
            .collect()
    }

    fn write_face(root: &Path, rel: &str, n: usize) {
        let pts = root.join(format!("{rel}.pts"));
        write_png(&pts.with_extension("png"), 64, 48);
        std::fs::write(&pts, write_pts(&shape(n), 3)).unwrap();
    }

    fn ok(entries: Entries) -> Vec<SourcedFace> {
        entries.into_iter().map(|e| e.unwrap()).collect()
    }

    #[test]
    fn reads_folders_splits_ids_sizes_and_boxes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write_face(root, "helen/trainset/100032540_1", 4);
        write_face(root, "ibug/image_092_01", 4);
        write_face(root, "Test/02_Outdoor/outdoor_001", 4);
        write_face(root, "lfpw/testset/image_0001", 4);
        let faces = ok(read_300w_tree(root, &scheme_of(4)).unwrap());
        let ids: Vec<(&str, &str)> = faces
            .iter()
            .map(|f| (f.face.sample_id.as_str(), f.face.split.as_str()))
            .collect();
        assert_eq!(
            ids,
            [
                ("300w/helen/trainset/100032540_1", "train"),
                ("300w/lfpw/testset/image_0001", "common"),
                ("300w/ibug/image_092_01", "challenging"),
                ("300w/Test/02_Outdoor/outdoor_001", "test"),
            ]
        );
        let f = &faces[0].face;
        assert_eq!((f.image_width, f.image_height), (64, 48));
        assert_eq!(f.landmarks, shape(4));
        assert_eq!(f.visible, vec![true; 4]);
        assert_eq!(f.bbox_source, BoxSource::Landmarks);
        assert_eq!(
            (f.bbox.x, f.bbox.y, f.bbox.w, f.bbox.h),
            (10.0, 20.0, 3.0, 1.5)
        );
        assert_eq!(f.yaw, None);
        assert!(f.image_path.ends_with("100032540_1.png"));
        assert_eq!(
            faces[0].origin.location,
            Location::PtsPoints { first_line: 4 }
        );
    }

    #[test]
    fn poses_sidecar_fills_angles() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write_face(root, "afw/1", 3);
        write_face(root, "afw/2", 3);
        std::fs::write(
            root.join(POSES_FILE),
            "sample_id,image_path,split,yaw,pitch,roll\r\n300w/afw/1,afw/1.png,train,12.5,-3,0.25\r\n300w/afw/2,x,train,,,\r\n",
        )
        .unwrap();
        let faces = ok(read_300w_tree(root, &scheme_of(3)).unwrap());
        assert_eq!(
            (faces[0].face.yaw, faces[0].face.pitch, faces[0].face.roll),
            (Some(12.5), Some(-3.0), Some(0.25))
        );
        assert_eq!(faces[1].face.yaw, None);
        std::fs::write(
            root.join(POSES_FILE),
            "sample_id,image_path,split,yaw,pitch,roll\n300w/afw/1,a,train,x,1,2\n",
        )
        .unwrap();
        let e = read_300w_tree(root, &scheme_of(3)).unwrap_err().to_string();
        assert!(
            e.contains("poses.csv, line 2") && e.contains("not a number"),
            "{e}"
        );
    }

    #[test]
    fn missing_image_names_the_pts_file_and_the_image() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write_face(root, "afw/1", 3);
        std::fs::remove_file(root.join("afw/1.png")).unwrap();
        let entries = read_300w_tree(root, &scheme_of(3)).unwrap();
        let e = entries[0].as_ref().unwrap_err().to_string();
        assert!(
            e.contains("afw/1.pts, whole file: image") && e.contains("afw/1.jpg"),
            "{e}"
        );
    }

    #[test]
    fn wrong_point_count_is_a_record_error() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write_face(root, "afw/1", 3);
        let entries = read_300w_tree(root, &scheme_of(68)).unwrap();
        let e = entries[0].as_ref().unwrap_err().to_string();
        assert!(e.contains("afw/1.pts, line 2: wrong point count"), "{e}");
    }

    #[test]
    fn a_folder_without_300w_subfolders_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let e = read_300w_tree(dir.path(), &scheme_of(68))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a 300W tree"), "{e}");
    }
}
