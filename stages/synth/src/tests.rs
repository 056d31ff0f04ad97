use std::collections::BTreeMap;
use std::path::Path;

use super::formats::{AFLW21_EARS, w300_folder_counts};
use super::model::{Camera, FaceModel, FaceParams, Layout, Pose};
use super::*;
use contract::scheme;

fn small(format: SynthFormat, count: usize, seed: u64) -> SynthConfig {
    SynthConfig {
        count,
        seed,
        image_size: (64, 112),
        ..SynthConfig::new(format)
    }
}

fn generate_in_pool(config: &SynthConfig, threads: usize, dir: &Path) -> SynthSummary {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool");
    pool.install(|| generate(config, dir, &|| {}))
        .expect("generate")
}

/// Every file under `root` (relative path → bytes).
fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path
                    .strip_prefix(root)
                    .expect("under root")
                    .to_string_lossy()
                    .replace('\\', "/");
                out.insert(rel, fs::read(&path).expect("read file"));
            }
        }
    }
    out
}

#[test]
fn same_seed_gives_identical_trees_with_one_or_two_threads() {
    for (format, count) in [
        (SynthFormat::W300, 7),
        (SynthFormat::Aflw, 6),
        (SynthFormat::AflwSqlite, 5),
    ] {
        let config = small(format, count, 42);
        let (a, b) = (
            tempfile::tempdir().expect("tmp"),
            tempfile::tempdir().expect("tmp"),
        );
        let done = std::sync::atomic::AtomicUsize::new(0);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .expect("pool");
        pool.install(|| {
            generate(&config, a.path(), &|| {
                done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            })
        })
        .expect("generate");
        assert_eq!(
            done.into_inner(),
            count,
            "{format:?}: one callback per face"
        );
        generate_in_pool(&config, 2, b.path());
        let (ta, tb) = (tree(a.path()), tree(b.path()));
        assert_eq!(
            ta.keys().collect::<Vec<_>>(),
            tb.keys().collect::<Vec<_>>(),
            "{format:?}"
        );
        for (k, v) in &ta {
            assert!(
                v == &tb[k],
                "{format:?}: {k} differs between 1 and 2 threads"
            );
            assert!(
                !k.rsplit('/').next().unwrap_or("").starts_with('.'),
                "{format:?}: leftover temporary {k}"
            );
        }
        let c = tempfile::tempdir().expect("tmp");
        generate_in_pool(
            &SynthConfig {
                seed: 43,
                ..config.clone()
            },
            2,
            c.path(),
        );
        assert_ne!(
            tree(c.path())[TRUTH_FILE],
            ta[TRUTH_FILE],
            "{format:?}: another seed, other faces"
        );
    }
}

#[test]
fn landmarks_lie_inside_their_images_and_files_agree_with_the_truth() {
    for format in SynthFormat::ALL {
        let dir = tempfile::tempdir().expect("tmp");
        let summary = generate_in_pool(&small(format, 12, 7), 2, dir.path());
        let truth = read_truth(dir.path()).expect("truth");
        assert_eq!(truth.len(), 12);
        assert_eq!(summary.faces, 12);
        for t in &truth {
            let img = image::open(dir.path().join(&t.image_path)).expect("image decodes");
            assert_eq!(
                (img.width(), img.height()),
                (t.image_width, t.image_height),
                "{}",
                t.sample_id
            );
            let n = scheme_len(&t.scheme);
            assert_eq!(
                (t.landmarks.len(), t.visible.len(), t.annotated.len()),
                (2 * n, n, n),
                "{}",
                t.sample_id
            );
            for (i, xy) in t.landmarks.chunks_exact(2).enumerate() {
                if t.visible[i] {
                    assert!(
                        xy[0] > 0.0
                            && xy[1] > 0.0
                            && xy[0] < t.image_width as f32
                            && xy[1] < t.image_height as f32,
                        "{} point {i} at {xy:?} outside {}×{}",
                        t.sample_id,
                        t.image_width,
                        t.image_height
                    );
                }
            }
        }
        let poses = fs::read_to_string(dir.path().join(POSES_FILE)).expect("poses");
        let mut lines = poses.lines();
        assert_eq!(
            lines.next(),
            Some("sample_id,image_path,split,yaw,pitch,roll")
        );
        for (line, t) in lines.zip(&truth) {
            let f: Vec<&str> = line.split(',').collect();
            assert_eq!(
                (f[0], f[1], f[2]),
                (
                    t.sample_id.as_str(),
                    t.image_path.as_str(),
                    t.split.as_str()
                )
            );
            assert_eq!(f[3].parse::<f32>().ok(), Some(t.yaw));
        }
        if format == SynthFormat::W300 {
            for t in &truth {
                let pts = fs::read_to_string(dir.path().join(&t.image_path).with_extension("pts"))
                    .expect("pts");
                let values: Vec<f32> = pts
                    .lines()
                    .filter(|l| l.trim().split(' ').count() == 2 && !l.contains(':'))
                    .flat_map(|l| {
                        l.trim()
                            .split(' ')
                            .map(|v| v.parse::<f32>().expect("number"))
                            .collect::<Vec<_>>()
                    })
                    .collect();
                assert_eq!(values.len(), 136, "{}", t.sample_id);
                for (v, truth) in values.iter().zip(&t.landmarks) {
                    assert!(
                        (v - 0.5 - truth).abs() < 6e-4,
                        "{}: {v} vs {truth}",
                        t.sample_id
                    );
                }
            }
        }
    }
}

fn scheme_len(name: &str) -> usize {
    match name {
        "aflw21" => 21,
        other => scheme::by_name(other).expect("known scheme").num_points(),
    }
}

/// Signed offset of `nose` from the midpoint of `left`–`right`, along that line.
fn asymmetry(xy: &[f32], nose: usize, left: usize, right: usize) -> f32 {
    let p = |i: usize| [xy[2 * i], xy[2 * i + 1]];
    let (n, l, r) = (p(nose), p(left), p(right));
    let axis = [r[0] - l[0], r[1] - l[1]];
    let mid = [0.5 * (l[0] + r[0]), 0.5 * (l[1] + r[1])];
    ((n[0] - mid[0]) * axis[0] + (n[1] - mid[1]) * axis[1]) / (axis[0].hypot(axis[1]))
}

#[test]
fn yaw_sign_matches_the_left_right_asymmetry_of_the_shape() {
    // (format, nose tip, image-left and image-right reference points)
    for (format, nose, left, right) in [
        (SynthFormat::W300, 30, 0, 16),
        (SynthFormat::Aflw, 13, 6, 11),
    ] {
        let dir = tempfile::tempdir().expect("tmp");
        let config = SynthConfig {
            max_yaw_deg: 80.0_f32.min(SynthConfig::new(format).max_yaw_deg),
            ..small(format, 40, 3)
        };
        generate_in_pool(&config, 2, dir.path());
        let truth = read_truth(dir.path()).expect("truth");
        let turned: Vec<&TruthFace> = truth.iter().filter(|t| t.yaw.abs() > 10.0).collect();
        assert!(
            turned.len() >= 5,
            "{format:?}: only {} turned faces",
            turned.len()
        );
        for t in turned {
            let a = asymmetry(&t.landmarks, nose, left, right);
            assert_eq!(
                a > 0.0,
                t.yaw > 0.0,
                "{}: yaw {} but nose offset {a}",
                t.sample_id,
                t.yaw
            );
        }
    }
}

/// The AFLW-21 flip permutation (Left*/Right* names swapped).
const AFLW21_FLIP: [usize; 21] = [
    5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 6, 16, 15, 14, 13, 12, 19, 18, 17, 20,
];

#[test]
fn mirrored_mean_frontal_face_maps_onto_itself() {
    let model = FaceModel::new(FaceParams::mean());
    let pose = Pose {
        yaw: 0.0,
        pitch: 0.0,
        roll: 0.0,
    };
    let cam = Camera {
        rot: pose.rotation(),
        pivot: [0.0, 0.4, -0.25],
        distance: 8.0,
        scale: 60.0,
        cx: 100.0,
        cy: 90.0,
    };
    let shape = |layout: Layout| -> Vec<f32> {
        model
            .landmarks(layout, &cam)
            .iter()
            .flat_map(|s| {
                let q = cam.project(s.p);
                [q[0], q[1]]
            })
            .collect()
    };
    let ibug = shape(Layout::Ibug68);
    let aflw21 = shape(Layout::Aflw21);
    let aflw19: Vec<f32> = (0..21)
        .filter(|i| !AFLW21_EARS.contains(i))
        .flat_map(|i| [aflw21[2 * i], aflw21[2 * i + 1]])
        .collect();
    let flip21: Vec<f32> = AFLW21_FLIP
        .iter()
        .flat_map(|&src| [200.0 - aflw21[2 * src], aflw21[2 * src + 1]])
        .collect();
    for (name, xy, flipped) in [
        (
            "ibug68",
            &ibug,
            scheme::by_name("ibug68")
                .expect("scheme")
                .flip_shape(&ibug, 200.0),
        ),
        (
            "aflw19",
            &aflw19,
            scheme::by_name("aflw19")
                .expect("scheme")
                .flip_shape(&aflw19, 200.0),
        ),
        ("aflw21", &aflw21, flip21),
    ] {
        for (i, (a, b)) in xy.iter().zip(&flipped).enumerate() {
            assert!(
                (a - b).abs() < 1e-4,
                "{name}: coordinate {i}: {a} vs mirrored {b}"
            );
        }
    }
    // The test has teeth: a turned face is not symmetric.
    let turned = Camera {
        rot: Pose {
            yaw: 0.2,
            pitch: 0.0,
            roll: 0.0,
        }
        .rotation(),
        ..cam
    };
    let xy: Vec<f32> = model
        .landmarks(Layout::Ibug68, &turned)
        .iter()
        .flat_map(|s| {
            let q = turned.project(s.p);
            [q[0], q[1]]
        })
        .collect();
    let flipped = scheme::by_name("ibug68")
        .expect("scheme")
        .flip_shape(&xy, 200.0);
    assert!(xy.iter().zip(&flipped).any(|(a, b)| (a - b).abs() > 1.0));
}

#[test]
fn w300_counts_keep_the_real_proportions() {
    assert_eq!(w300_folder_counts(3837), [337, 2000, 811, 330, 224, 135]);
    for n in [6usize, 7, 10, 31, 100, 689, 1000, 5000] {
        let c = w300_folder_counts(n);
        assert_eq!(c.iter().sum::<usize>(), n, "n = {n}");
        assert!(c.iter().all(|&k| k >= 1), "n = {n}: {c:?}");
        let (train, common, chall) = (c[0] + c[1] + c[2], c[3] + c[4], c[5]);
        let ideal = |w: f64| n as f64 * w / 3837.0;
        if n >= 100 {
            assert!(
                (train as f64 - ideal(3148.0)).abs() <= 1.0,
                "n = {n}: {c:?}"
            );
            assert!(
                (common as f64 - ideal(554.0)).abs() <= 1.0,
                "n = {n}: {c:?}"
            );
            assert!((chall as f64 - ideal(135.0)).abs() <= 1.0, "n = {n}: {c:?}");
        }
    }
    let dir = tempfile::tempdir().expect("tmp");
    let summary = generate_in_pool(&small(SynthFormat::W300, 9, 1), 2, dir.path());
    let c = w300_folder_counts(9);
    assert_eq!(summary.per_split["train"], c[0] + c[1] + c[2]);
    assert_eq!(summary.per_split["common"], c[3] + c[4]);
    assert_eq!(summary.per_split["challenging"], c[5]);
    for folder in [
        "afw",
        "helen/trainset",
        "helen/testset",
        "lfpw/trainset",
        "lfpw/testset",
        "ibug",
    ] {
        let n = fs::read_dir(dir.path().join(folder))
            .expect("folder")
            .count();
        assert!(n >= 2, "{folder}: image + pts expected");
    }
    assert!(
        read_truth(dir.path())
            .expect("truth")
            .iter()
            .any(|t| t.image_path.ends_with(".png"))
    );
}

#[test]
fn aflw_sqlite_omits_exactly_the_self_occluded_points() {
    let dir = tempfile::tempdir().expect("tmp");
    let summary = generate_in_pool(&small(SynthFormat::AflwSqlite, 40, 5), 2, dir.path());
    assert!(
        summary.hidden_points > 0,
        "no hidden point in 40 faces: the test would prove nothing"
    );
    let truth = read_truth(dir.path()).expect("truth");
    let conn = rusqlite::Connection::open(dir.path().join("aflw.sqlite")).expect("open");
    let names: Vec<String> = conn
        .prepare("SELECT descr FROM FeatureCoordTypes ORDER BY feature_id")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(names.len(), 21);
    assert_eq!(
        (names[12].as_str(), names[16].as_str()),
        ("LeftEar", "RightEar")
    );
    for (k, t) in truth.iter().enumerate() {
        let face_id = k as i64 + 1;
        assert_eq!(t.sample_id, format!("aflw/{face_id}"));
        let mut st = conn
            .prepare("SELECT feature_id, x, y FROM FeatureCoords WHERE face_id = ?1")
            .expect("prepare");
        let rows: BTreeMap<i64, (f64, f64)> = st
            .query_map([face_id], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        for i in 0..21 {
            match rows.get(&(i as i64 + 1)) {
                Some(&(x, y)) => {
                    assert!(t.visible[i], "{}: hidden point {i} has a row", t.sample_id);
                    assert!((x + 0.5 - t.landmarks[2 * i] as f64).abs() < 1e-4);
                    assert!((y + 0.5 - t.landmarks[2 * i + 1] as f64).abs() < 1e-4);
                }
                None => assert!(
                    !t.visible[i],
                    "{}: visible point {i} has no row",
                    t.sample_id
                ),
            }
        }
        let (path, w, h): (String, u32, u32) = conn
            .query_row(
                "SELECT filepath, width, height FROM FaceImages WHERE image_id = ?1",
                [face_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .expect("image row");
        assert_eq!(format!("flickr/{path}"), t.image_path);
        assert_eq!((w, h), (t.image_width, t.image_height));
        let yaw: f64 = conn
            .query_row(
                "SELECT yaw FROM FacePose WHERE face_id = ?1",
                [face_id],
                |r| r.get(0),
            )
            .expect("pose");
        assert!((yaw.to_degrees() - t.yaw as f64).abs() < 1e-3);
    }
}

#[test]
fn aflw_csvs_hold_19_points_in_the_0_based_convention() {
    let dir = tempfile::tempdir().expect("tmp");
    generate_in_pool(&small(SynthFormat::Aflw, 12, 11), 2, dir.path());
    let truth: BTreeMap<String, TruthFace> = read_truth(dir.path())
        .expect("truth")
        .into_iter()
        .map(|t| (t.image_path.clone(), t))
        .collect();
    let mut rows = 0;
    for (file, crlf) in [
        ("face_landmarks_aflw_train.csv", false),
        ("face_landmarks_aflw_test.csv", true),
    ] {
        let text = fs::read_to_string(dir.path().join(file)).expect("csv");
        assert_eq!(text.contains("\r\n"), crlf, "{file}");
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().expect("header").split(',').collect();
        assert_eq!(
            &header[..5],
            &["image_name", "scale", "box_size", "center_w", "center_h"]
        );
        assert_eq!(
            (header.len(), header[5], header[42]),
            (43, "original_0_x", "original_18_y")
        );
        for line in lines {
            let f: Vec<&str> = line.split(',').collect();
            let t = &truth[f[0]];
            let v: Vec<f64> = f[1..].iter().map(|s| s.parse().expect("number")).collect();
            let bbox = t.bbox.expect("aflw box");
            assert_eq!(v[1], bbox[2] as f64);
            assert!((v[0] * 200.0 - v[1]).abs() < 1e-9);
            assert!((v[2] + 0.5 - (bbox[0] + 0.5 * bbox[2]) as f64).abs() < 1e-9);
            for (k, &lm) in t.landmarks.iter().enumerate() {
                assert!(
                    (v[4 + k] + 0.5 - lm as f64).abs() < 6e-4,
                    "{}: value {k}",
                    f[0]
                );
            }
            rows += 1;
        }
    }
    assert_eq!(rows, 12);
    assert!(
        truth.values().any(|t| t.split == "test") && truth.values().any(|t| t.split == "train")
    );
}

#[test]
fn preview_and_config_errors() {
    let dir = tempfile::tempdir().expect("tmp");
    generate_in_pool(&small(SynthFormat::W300, 6, 2), 1, dir.path());
    let png = dir.path().join("preview.png");
    assert_eq!(write_preview(dir.path(), &png, 4).expect("preview"), 4);
    let img = image::open(&png).expect("png");
    assert_eq!((img.width(), img.height()), (2 * 224, 2 * 224));
    // The directory now holds files: a second run must refuse rather than mix trees.
    let err = generate(&small(SynthFormat::W300, 6, 2), dir.path(), &|| {}).unwrap_err();
    assert!(matches!(err, SynthError::OutputNotEmpty(_)), "{err}");
    let bad = SynthConfig {
        image_size: (200, 100),
        ..SynthConfig::default()
    };
    assert!(matches!(
        generate(&bad, &dir.path().join("x"), &|| {}),
        Err(SynthError::Config(_))
    ));
    assert!(matches!(
        SynthFormat::parse("wflw"),
        Err(SynthError::UnknownFormat(_))
    ));
    assert_eq!(
        SynthFormat::parse("aflw-sqlite").expect("known"),
        SynthFormat::AflwSqlite
    );
}
