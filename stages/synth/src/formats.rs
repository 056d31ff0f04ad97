//! Writers of the synthetic trees in the real formats, and the sidecars.
//!
//! Pixel conventions (DESIGN.md): `.pts` values are internal + 0.5 (MATLAB 1-based centres);
//! AFLW (CSV and sqlite) values are internal − 0.5 (0-based pixel indices); COCO files are
//! written in the rule their options name.

use std::fmt::Write as _;
use std::path::Path;

use image::ExtendedColorType;
use image::ImageEncoder;
use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::model::{Camera, FaceModel, FaceParams, Layout};
use super::scene::{FaceRequest, RenderedFace};
use super::{
    CocoFlags, CocoOptions, POSES_FILE, SynthConfig, SynthError, SynthFormat, TRUTH_FILE,
    TruthFace, io_err,
};
use faces::formats::pts::write_pts;

/// 300W folders with their split, image extension and their face counts in the real dataset.
const W300_FOLDERS: [(&str, &str, &str, usize); 6] = [
    ("afw", "train", "jpg", 337),
    ("helen/trainset", "train", "jpg", 2000),
    ("lfpw/trainset", "train", "png", 811),
    ("helen/testset", "common", "jpg", 330),
    ("lfpw/testset", "common", "png", 224),
    ("ibug", "challenging", "jpg", 135),
];

/// AFLW's 21 feature names (ids 1..=21) and short codes.
pub(crate) const AFLW21_NAMES: [(&str, &str); 21] = [
    ("LeftBrowLeftCorner", "LBLC"),
    ("LeftBrowCenter", "LBC"),
    ("LeftBrowRightCorner", "LBRC"),
    ("RightBrowLeftCorner", "RBLC"),
    ("RightBrowCenter", "RBC"),
    ("RightBrowRightCorner", "RBRC"),
    ("LeftEyeLeftCorner", "LELC"),
    ("LeftEyeCenter", "LEC"),
    ("LeftEyeRightCorner", "LERC"),
    ("RightEyeLeftCorner", "RELC"),
    ("RightEyeCenter", "REC"),
    ("RightEyeRightCorner", "RERC"),
    ("LeftEar", "LE"),
    ("NoseLeft", "LN"),
    ("NoseCenter", "NC"),
    ("NoseRight", "RN"),
    ("RightEar", "RE"),
    ("MouthLeftCorner", "MLC"),
    ("MouthCenter", "MC"),
    ("MouthRightCorner", "MRC"),
    ("ChinCenter", "CC"),
];

/// 0-based indices of the ears among the 21 AFLW points (dropped for AFLW-19).
pub(crate) const AFLW21_EARS: [usize; 2] = [12, 16];

/// Fraction of AFLW faces in HRNet's test file (4386 of 24386).
const AFLW_TEST_FRACTION: f64 = 4386.0 / 24386.0;

/// One face to generate.
pub(crate) struct PlannedFace {
    pub index: usize,
    pub sample_id: String,
    /// Relative to the output directory.
    pub image_path: String,
    pub split: &'static str,
    pub request: FaceRequest,
    /// Whether this face writes its image (false for the later faces of a tiled image).
    pub writes_image: bool,
}

/// A written face: its truth plus what the format tables need.
pub(crate) struct WrittenFace {
    pub truth: TruthFace,
    pub face_box: [i32; 3],
    pub grey: bool,
}

/// Round `n · weight / total` to the nearest integer (halves up).
fn share(n: usize, weight: usize, total: usize) -> usize {
    (2 * n * weight + total) / (2 * total)
}

/// Faces per 300W folder (order of `W300_FOLDERS`): the splits in 300W's 3148 : 554 : 135
/// proportions, each split over its folders in the real proportions, and at least one face per
/// folder when `n ≥ 6`.
pub(crate) fn w300_folder_counts(n: usize) -> [usize; 6] {
    let total: usize = W300_FOLDERS.iter().map(|f| f.3).sum();
    let common = share(n, 554, total);
    let challenging = share(n, 135, total);
    let mut splits = [n - common - challenging, common, challenging];
    if n >= 6 {
        for (s, min) in [(1usize, 2usize), (2, 1)] {
            while splits[s] < min {
                splits[s] += 1;
                splits[0] -= 1;
            }
        }
    }
    let mut out = [0usize; 6];
    for (s, name) in ["train", "common", "challenging"].iter().enumerate() {
        let idx: Vec<usize> = (0..6).filter(|&i| W300_FOLDERS[i].1 == *name).collect();
        let weights: Vec<usize> = idx.iter().map(|&i| W300_FOLDERS[i].3).collect();
        let wsum: usize = weights.iter().sum();
        // Largest remainder apportionment.
        let mut counts: Vec<usize> = weights.iter().map(|&w| splits[s] * w / wsum).collect();
        let mut order: Vec<usize> = (0..idx.len()).collect();
        order.sort_by_key(|&k| std::cmp::Reverse((splits[s] * weights[k]) % wsum));
        let mut left = splits[s] - counts.iter().sum::<usize>();
        for &k in order.iter().cycle() {
            if left == 0 {
                break;
            }
            counts[k] += 1;
            left -= 1;
        }
        if splits[s] >= idx.len() {
            for k in 0..idx.len() {
                while counts[k] == 0 {
                    let big = (0..idx.len()).max_by_key(|&j| counts[j]).unwrap_or(0);
                    counts[big] -= 1;
                    counts[k] += 1;
                }
            }
        }
        for (k, &i) in idx.iter().enumerate() {
            out[i] = counts[k];
        }
    }
    out
}

/// Whether AFLW face `index` goes to the test file: spread evenly, about 18 % of faces.
fn aflw_is_test(index: usize) -> bool {
    let f = |i: usize| (i as f64 * AFLW_TEST_FRACTION + 0.5).floor();
    f(index + 1) > f(index)
}

/// Every face of the run in index order.
pub(crate) fn plan(config: &SynthConfig) -> Vec<PlannedFace> {
    let mut out = Vec::with_capacity(config.count);
    match config.format {
        SynthFormat::W300 => {
            let counts = w300_folder_counts(config.count);
            let mut index = 0;
            for (f, &(folder, split, ext, _)) in W300_FOLDERS.iter().enumerate() {
                for _ in 0..counts[f] {
                    let stem = format!("synth_{index:06}");
                    out.push(PlannedFace {
                        index,
                        sample_id: format!("300w/{folder}/{stem}"),
                        image_path: format!("{folder}/{stem}.{ext}"),
                        split,
                        request: FaceRequest {
                            layout: Layout::Ibug68,
                            hard: folder == "ibug",
                        },
                        writes_image: true,
                    });
                    index += 1;
                }
            }
        }
        SynthFormat::Aflw | SynthFormat::AflwSqlite => {
            let sqlite = config.format == SynthFormat::AflwSqlite;
            for index in 0..config.count {
                let name = format!("flickr/0/image{:05}", index + 1);
                let (sample_id, split) = if sqlite {
                    (format!("aflw/{}", index + 1), "train")
                } else {
                    (
                        format!("aflw/{name}"),
                        if aflw_is_test(index) { "test" } else { "train" },
                    )
                };
                out.push(PlannedFace {
                    index,
                    sample_id,
                    image_path: format!("{name}.jpg"),
                    split,
                    request: FaceRequest {
                        layout: Layout::Aflw21,
                        hard: false,
                    },
                    writes_image: true,
                });
            }
        }
        SynthFormat::Coco => {
            let per_image = config.coco.faces_per_image;
            for index in 0..config.count {
                let image = index / per_image;
                out.push(PlannedFace {
                    index,
                    // The reader's ids: `<dataset>/<annotation id>`, annotation id = index + 1.
                    sample_id: format!("300w/{}", index + 1),
                    image_path: format!("images/synth_{image:06}.jpg"),
                    split: if aflw_is_test(image) { "test" } else { "train" },
                    request: FaceRequest {
                        layout: Layout::Ibug68,
                        hard: false,
                    },
                    writes_image: index % per_image == 0,
                });
            }
        }
    }
    out
}

/// Tile the faces of one image side by side (left to right, tops aligned, the rest grey):
/// every face gets the tiled image, its landmarks and box moved with its tile.
pub(crate) fn tile(faces: &mut [(RenderedFace, ChaCha8Rng)]) {
    let width: u32 = faces.iter().map(|(f, _)| f.image.width()).sum();
    let height = faces
        .iter()
        .map(|(f, _)| f.image.height())
        .max()
        .unwrap_or(0);
    let mut tiled = image::RgbImage::from_pixel(width, height, image::Rgb([118, 118, 118]));
    let mut left = 0u32;
    for (face, _) in faces.iter_mut() {
        image::imageops::replace(&mut tiled, &face.image, i64::from(left), 0);
        for x in face.landmarks.iter_mut().step_by(2) {
            *x += left as f32;
        }
        face.face_box[0] += left as i32;
        left += face.image.width();
    }
    for (face, _) in faces.iter_mut() {
        face.image = tiled.clone();
    }
}

/// Write `bytes` to `path` atomically (`manifests::write_atomic`: temporary sibling, fsync,
/// rename).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SynthError> {
    Ok(manifests::write_atomic(path, bytes)?)
}

fn encode_image(
    img: &image::RgbImage,
    ext: &str,
    quality: u8,
    path: &Path,
) -> Result<Vec<u8>, SynthError> {
    let mut buf = Vec::new();
    let (w, h) = img.dimensions();
    let res = if ext == "png" {
        PngEncoder::new(&mut buf).write_image(img.as_raw(), w, h, ExtendedColorType::Rgb8)
    } else {
        JpegEncoder::new_with_quality(&mut buf, quality).encode(
            img.as_raw(),
            w,
            h,
            ExtendedColorType::Rgb8,
        )
    };
    res.map_err(|source| SynthError::Image {
        path: path.to_owned(),
        source,
    })?;
    Ok(buf)
}

/// Write one face's image (and `.pts` for 300W); returns its truth.
pub(crate) fn write_face(
    config: &SynthConfig,
    out_dir: &Path,
    item: &PlannedFace,
    face: RenderedFace,
    rng: &mut ChaCha8Rng,
) -> Result<WrittenFace, SynthError> {
    let image_path = out_dir.join(&item.image_path);
    let ext = image_path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("jpg")
        .to_owned();
    let quality = rng.gen_range(config.jpeg_quality.0..=config.jpeg_quality.1);
    if item.writes_image {
        write_atomic(
            &image_path,
            &encode_image(&face.image, &ext, quality, &image_path)?,
        )?;
    }

    let (landmarks, visible) = match config.format {
        SynthFormat::Aflw => {
            let keep = |i: &usize| !AFLW21_EARS.contains(i);
            let lm = (0..21)
                .filter(keep)
                .flat_map(|i| [face.landmarks[2 * i], face.landmarks[2 * i + 1]])
                .collect();
            let vis = (0..21).filter(keep).map(|i| face.visible[i]).collect();
            (lm, vis)
        }
        _ => (face.landmarks, face.visible),
    };
    if config.format == SynthFormat::W300 {
        let mut text = write_pts(&landmarks, rng.gen_range(3..=6));
        // Readers must cope with CRLF files and a missing final newline; exercise both.
        if rng.gen_bool(0.15) {
            text = text.replace('\n', "\r\n");
        }
        if rng.gen_bool(0.15) {
            text.truncate(text.trim_end().len());
        }
        write_atomic(&image_path.with_extension("pts"), text.as_bytes())?;
    }
    let annotated = if config.format == SynthFormat::AflwSqlite {
        visible.clone()
    } else {
        vec![true; visible.len()]
    };
    let [bx, by, side] = face.face_box;
    let bbox = (config.format != SynthFormat::W300).then_some([
        bx as f32,
        by as f32,
        side as f32,
        side as f32,
    ]);
    let (w, h) = face.image.dimensions();
    Ok(WrittenFace {
        truth: TruthFace {
            sample_id: item.sample_id.clone(),
            image_path: item.image_path.clone(),
            split: item.split.to_owned(),
            scheme: config.format.scheme().to_owned(),
            image_width: w,
            image_height: h,
            landmarks,
            visible,
            annotated,
            bbox,
            yaw: face.pose_deg[0],
            pitch: face.pose_deg[1],
            roll: face.pose_deg[2],
        },
        face_box: face.face_box,
        grey: face.grey,
    })
}

/// Write the sidecars and the format's tables (CSV files or the sqlite database).
pub(crate) fn write_tables(
    config: &SynthConfig,
    out_dir: &Path,
    faces: &[WrittenFace],
) -> Result<(), SynthError> {
    let mut poses = String::from("sample_id,image_path,split,yaw,pitch,roll\n");
    let mut truth = String::new();
    for f in faces {
        let t = &f.truth;
        let _ = writeln!(
            poses,
            "{},{},{},{},{},{}",
            t.sample_id, t.image_path, t.split, t.yaw, t.pitch, t.roll
        );
        let line = serde_json::to_string(t).map_err(|e| SynthError::Truth {
            path: out_dir.join(TRUTH_FILE),
            line: truth.lines().count() + 1,
            source: e,
        })?;
        truth.push_str(&line);
        truth.push('\n');
    }
    write_atomic(&out_dir.join(POSES_FILE), poses.as_bytes())?;
    write_atomic(&out_dir.join(TRUTH_FILE), truth.as_bytes())?;
    match config.format {
        SynthFormat::W300 => Ok(()),
        SynthFormat::Aflw => write_aflw_csvs(out_dir, faces),
        SynthFormat::AflwSqlite => write_aflw_sqlite(out_dir, faces),
        SynthFormat::Coco => write_coco_json(&config.coco, out_dir, faces),
    }
}

/// COCO keypoint JSON files, one per split with faces, under `annotations/` (image names are
/// relative to `images/`, beside it: mmpose's layout). Values are written in `options.origin`'s
/// rule, rounded to 0.001 px; image ids count from 1 per file, annotation ids are the faces'
/// indices + 1; WholeBody files get one more person per image, without a face.
fn write_coco_json(
    options: &CocoOptions,
    out_dir: &Path,
    faces: &[WrittenFace],
) -> Result<(), SynthError> {
    use faces::formats::PixelOrigin;
    use faces::formats::coco::CocoField;
    use serde_json::{Value, json};
    let shift = -options.origin.to_internal();
    let box_shift = if options.origin == PixelOrigin::OneBased {
        shift
    } else {
        0.0
    };
    let round = |v: f64| (v * 1000.0).round() / 1000.0;
    let zeros = |n: usize| vec![json!(0); n];
    for split in ["train", "test"] {
        let mut images: Vec<Value> = Vec::new();
        let mut annotations: Vec<Value> = Vec::new();
        let mut image_ids: std::collections::HashMap<&str, i64> = Default::default();
        for (index, f) in faces
            .iter()
            .enumerate()
            .filter(|(_, f)| f.truth.split == split)
        {
            let t = &f.truth;
            let image_id = match image_ids.get(t.image_path.as_str()) {
                Some(&id) => id,
                None => {
                    let id = image_ids.len() as i64 + 1;
                    image_ids.insert(&t.image_path, id);
                    images.push(json!({
                        "id": id,
                        "file_name": t.image_path.strip_prefix("images/").unwrap_or(&t.image_path),
                        "width": t.image_width,
                        "height": t.image_height,
                    }));
                    if options.field == CocoField::Face {
                        annotations.push(json!({
                            "id": 1_000_000 + index,
                            "image_id": id,
                            "category_id": 1,
                            "keypoints": zeros(51),
                            "num_keypoints": 0,
                            "face_kpts": zeros(3 * t.visible.len()),
                            "face_box": [0, 0, 0, 0],
                            "face_valid": false,
                            "iscrowd": 0,
                        }));
                    }
                    id
                }
            };
            let mut points = Vec::with_capacity(3 * t.visible.len());
            for (p, &seen) in t.landmarks.chunks_exact(2).zip(&t.visible) {
                let v = match options.flags {
                    CocoFlags::Coco if seen => 2,
                    CocoFlags::Coco | CocoFlags::AllOne => 1,
                    CocoFlags::AllTwo => 2,
                };
                points.extend([
                    json!(round(f64::from(p[0]) + shift)),
                    json!(round(f64::from(p[1]) + shift)),
                    json!(v),
                ]);
            }
            let [bx, by, side] = f.face_box;
            let bbox = json!([
                f64::from(bx) + box_shift,
                f64::from(by) + box_shift,
                side,
                side
            ]);
            annotations.push(match options.field {
                CocoField::Keypoints => json!({
                    "id": index + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "keypoints": points,
                    "num_keypoints": t.visible.len(),
                    "bbox": bbox,
                    "iscrowd": 0,
                }),
                CocoField::Face => json!({
                    "id": index + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "keypoints": zeros(51),
                    "num_keypoints": 0,
                    "bbox": bbox,
                    "face_kpts": points,
                    "face_box": bbox,
                    "face_valid": true,
                    "iscrowd": 0,
                }),
            });
        }
        if annotations.is_empty() {
            continue;
        }
        let name = match options.field {
            CocoField::Keypoints => format!("face_landmarks_synth_{split}.json"),
            CocoField::Face => format!("coco_wholebody_face_{split}.json"),
        };
        let document = json!({
            "info": {"description": "wingflow synth"},
            "images": images,
            "annotations": annotations,
            "categories": [{"id": 1, "name": "face"}],
        });
        let path = out_dir.join("annotations").join(name);
        std::fs::create_dir_all(out_dir.join("annotations")).map_err(io_err(out_dir))?;
        write_atomic(&path, document.to_string().as_bytes())?;
    }
    Ok(())
}

/// HRNet-style AFLW CSVs. The train file holds exact values (f32 → f64 − 0.5, printed in full)
/// with LF endings; the test file holds values rounded to 0.001 px the way floating-point
/// arithmetic leaves them (e.g. `460.55199999999996`) with CRLF endings, as shared files do.
fn write_aflw_csvs(out_dir: &Path, faces: &[WrittenFace]) -> Result<(), SynthError> {
    let mut header = String::from("image_name,scale,box_size,center_w,center_h");
    for i in 0..19 {
        let _ = write!(header, ",original_{i}_x,original_{i}_y");
    }
    for (split, file, eol, noisy) in [
        ("train", "face_landmarks_aflw_train.csv", "\n", false),
        ("test", "face_landmarks_aflw_test.csv", "\r\n", true),
    ] {
        let value = |v: f32| {
            let x = v as f64 - 0.5;
            if noisy {
                (x * 1000.0).round() * 0.001
            } else {
                x
            }
        };
        let mut text = format!("{header}{eol}");
        for f in faces.iter().filter(|f| f.truth.split == split) {
            let [bx, by, side] = f.face_box;
            let name = f.truth.image_path.as_str();
            let side = side as f64;
            let (cx, cy) = (bx as f64 + 0.5 * side - 0.5, by as f64 + 0.5 * side - 0.5);
            let _ = write!(text, "{name},{},{side},{cx},{cy}", side / 200.0);
            for &v in &f.truth.landmarks {
                let _ = write!(text, ",{}", value(v));
            }
            text.push_str(eol);
        }
        write_atomic(&out_dir.join(file), text.as_bytes())?;
    }
    Ok(())
}

/// `aflw.sqlite` with the original schema; written to a temporary file, then renamed.
fn write_aflw_sqlite(out_dir: &Path, faces: &[WrittenFace]) -> Result<(), SynthError> {
    let path = out_dir.join("aflw.sqlite");
    // sqlite opens the file itself: reserve the temporary name, let it fill the empty file.
    let (file, tmp) = manifests::create_temp(&path)?;
    drop(file);
    let sql = |source| SynthError::Sqlite {
        path: path.clone(),
        source,
    };
    let mut conn = rusqlite::Connection::open(&tmp).map_err(sql)?;
    conn.execute_batch(
        "CREATE TABLE Faces(face_id INTEGER, file_id TEXT, db_id TEXT);
         CREATE TABLE FaceImages(image_id INTEGER, db_id TEXT, file_id TEXT, filepath TEXT, bw INTEGER, width INTEGER, height INTEGER);
         CREATE TABLE FaceRect(face_id INTEGER, x INTEGER, y INTEGER, w INTEGER, h INTEGER, annot_type_id INTEGER);
         CREATE TABLE FacePose(face_id INTEGER, roll REAL, pitch REAL, yaw REAL, annot_type_id INTEGER);
         CREATE TABLE FeatureCoords(face_id INTEGER, feature_id INTEGER, x REAL, y REAL);
         CREATE TABLE FeatureCoordTypes(feature_id INTEGER, descr TEXT, code TEXT, x REAL, y REAL, z REAL);",
    )
    .map_err(sql)?;
    let tx = conn.transaction().map_err(sql)?;
    {
        // The mean 3D model stands in for AFLW's mean 3D face in FeatureCoordTypes.
        let mean = FaceModel::new(FaceParams::mean());
        let cam = Camera::frontal();
        let mut st = tx
            .prepare("INSERT INTO FeatureCoordTypes VALUES (?1, ?2, ?3, ?4, ?5, ?6)")
            .map_err(sql)?;
        for (i, (sp, (descr, code))) in mean
            .landmarks(Layout::Aflw21, &cam)
            .iter()
            .zip(AFLW21_NAMES)
            .enumerate()
        {
            st.execute(rusqlite::params![
                i as i64 + 1,
                descr,
                code,
                sp.p[0] as f64,
                sp.p[1] as f64,
                sp.p[2] as f64
            ])
            .map_err(sql)?;
        }
        let mut faces_st = tx
            .prepare("INSERT INTO Faces VALUES (?1, ?2, 'flickr')")
            .map_err(sql)?;
        let mut images_st = tx
            .prepare("INSERT INTO FaceImages VALUES (?1, 'flickr', ?2, ?3, ?4, ?5, ?6)")
            .map_err(sql)?;
        let mut rect_st = tx
            .prepare("INSERT INTO FaceRect VALUES (?1, ?2, ?3, ?4, ?5, 1)")
            .map_err(sql)?;
        let mut pose_st = tx
            .prepare("INSERT INTO FacePose VALUES (?1, ?2, ?3, ?4, 1)")
            .map_err(sql)?;
        let mut coord_st = tx
            .prepare("INSERT INTO FeatureCoords VALUES (?1, ?2, ?3, ?4)")
            .map_err(sql)?;
        for (k, f) in faces.iter().enumerate() {
            let t = &f.truth;
            let id = k as i64 + 1;
            let filepath = t
                .image_path
                .strip_prefix("flickr/")
                .unwrap_or(&t.image_path);
            let file_id = filepath.rsplit('/').next().unwrap_or(filepath);
            faces_st
                .execute(rusqlite::params![id, file_id])
                .map_err(sql)?;
            images_st
                .execute(rusqlite::params![
                    id,
                    file_id,
                    filepath,
                    i64::from(f.grey),
                    t.image_width,
                    t.image_height
                ])
                .map_err(sql)?;
            let [bx, by, side] = f.face_box;
            rect_st
                .execute(rusqlite::params![id, bx, by, side, side])
                .map_err(sql)?;
            let rad = |d: f32| (d as f64).to_radians();
            pose_st
                .execute(rusqlite::params![id, rad(t.roll), rad(t.pitch), rad(t.yaw)])
                .map_err(sql)?;
            for (i, xy) in t.landmarks.chunks_exact(2).enumerate() {
                if t.annotated[i] {
                    coord_st
                        .execute(rusqlite::params![
                            id,
                            i as i64 + 1,
                            xy[0] as f64 - 0.5,
                            xy[1] as f64 - 0.5
                        ])
                        .map_err(sql)?;
                }
            }
        }
    }
    tx.commit().map_err(sql)?;
    conn.close().map_err(|(_, e)| sql(e))?;
    Ok(manifests::commit_temp(&tmp, &path)?)
}
