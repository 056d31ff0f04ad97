use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::decode::SourceFile;
use crate::{ShardStatus, contact_sheet, gc, index_shard_set, inspect};
use contract::metrics::Normaliser;
use contract::scheme;
use faces::face::{BBox, BoxSource};

/// A 3-point scheme: two "eyes" that swap under a flip, and a midline point.
fn tri_scheme() -> Scheme {
    Scheme {
        name: "tri3",
        point_names: vec!["eye_l".into(), "eye_r".into(), "mouth".into()],
        flip_permutation: vec![1, 0, 2],
        left_eye: vec![0],
        right_eye: vec![1],
        normaliser: Normaliser::InterOcular { a: 0, b: 1 },
        alternative_normalisers: vec![],
    }
}

fn face(
    sample_id: &str,
    image_path: &str,
    scheme: &Scheme,
    landmarks: Vec<f32>,
    w: u32,
    h: u32,
) -> FaceRecord {
    let n = scheme.num_points();
    FaceRecord {
        sample_id: sample_id.to_owned(),
        dataset: "synthetic".to_owned(),
        scheme: scheme.name.to_owned(),
        split: "train".to_owned(),
        image_path: image_path.to_owned(),
        image_width: w,
        image_height: h,
        visible: (0..n).map(|i| i % 5 != 4).collect(),
        occluded: vec![false; n],
        bbox: BBox {
            x: 10.0,
            y: 10.0,
            w: (w / 2) as f32,
            h: (h / 2) as f32,
        },
        bbox_source: BoxSource::Annotation,
        landmarks,
        yaw: None,
        pitch: None,
        roll: None,
        attributes: None,
    }
}

const DISC_POINTS: [(f32, f32); 3] = [(170.0, 180.0), (240.0, 195.0), (205.0, 255.0)];
const DISC_RADIUS: f32 = 9.0;

/// A black image with a pure red, green and blue disc centred on the three landmarks.
fn disc_image(w: u32, h: u32) -> Pyramid {
    Pyramid::new(w, h, disc_pixels(w, h, &DISC_POINTS, DISC_RADIUS))
}

/// RGB8 pixels of a black image with a pure red, green and blue disc of `radius` centred on
/// each of `points`.
fn disc_pixels(w: u32, h: u32, points: &[(f32, f32); 3], radius: f32) -> Vec<u8> {
    let mut data = vec![0u8; (w * h * 3) as usize];
    // Supersample each pixel 8×8 so disc edges are anti-aliased and centroids unbiased.
    for (c, &(px, py)) in points.iter().enumerate() {
        let (x0, x1) = ((px - radius - 1.0) as u32, (px + radius + 1.0) as u32);
        let (y0, y1) = ((py - radius - 1.0) as u32, (py + radius + 1.0) as u32);
        for y in y0..=y1 {
            for x in x0..=x1 {
                let mut hits = 0;
                for sy in 0..8 {
                    for sx in 0..8 {
                        let (fx, fy) = (
                            x as f32 + (sx as f32 + 0.5) / 8.0,
                            y as f32 + (sy as f32 + 0.5) / 8.0,
                        );
                        hits += (((fx - px).powi(2) + (fy - py).powi(2)) <= radius * radius) as u32;
                    }
                }
                data[((y * w + x) * 3) as usize + c] = (hits * 255 / 64) as u8;
            }
        }
    }
    data
}

/// Intensity-weighted centroid of channel `c` in an S×S crop.
fn centroid(image: &[u8], size: usize, c: usize) -> (f64, f64) {
    centroid_above(image, size, c, 0)
}

/// Centroid of channel `c` weighted by the intensity above `floor`: JPEG leaves faint noise
/// on the black background which, summed over the whole crop, would pull the centroid
/// towards the crop's centre; subtracting a floor keeps a symmetric disc's centre.
fn centroid_above(image: &[u8], size: usize, c: usize, floor: u8) -> (f64, f64) {
    let (mut sx, mut sy, mut sw) = (0.0, 0.0, 0.0);
    for y in 0..size {
        for x in 0..size {
            let v = image[(y * size + x) * 3 + c].saturating_sub(floor) as f64;
            sx += v * (x as f64 + 0.5);
            sy += v * (y as f64 + 0.5);
            sw += v;
        }
    }
    (sx / sw, sy / sw)
}

fn geometric_params() -> RenderParams {
    // A roomy box keeps every disc inside the crop under the tested transforms.
    RenderParams {
        box_enlarge: 2.5,
        ..RenderParams::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn disc_of_each_point_is_at_its_rendered_landmark(
        rotation_deg in -45.0f64..45.0, tx in -0.1f64..0.1, ty in -0.1f64..0.1,
        scale in 0.8f64..1.3, flip in any::<bool>(),
        j in (-0.05f64..0.05, -0.05f64..0.05, 0.95f64..1.05, -5.0f64..5.0),
    ) {
        let scheme = tri_scheme();
        let lm: Vec<f32> = DISC_POINTS.iter().flat_map(|&(x, y)| [x, y]).collect();
        let f = face("s", "mem", &scheme, lm, 400, 400);
        let mut pyramid = disc_image(400, 400);
        let aug = Augmentation {
            rotation_deg, translate_x: tx, translate_y: ty, scale, flip,
            stage2_translate_x: j.0, stage2_translate_y: j.1, stage2_scale: j.2, stage2_rotation_deg: j.3,
            ..Augmentation::identity()
        };
        let params = geometric_params();
        for (stage, tol) in [(CropLevel::One, 1.0), (CropLevel::Two, 0.5)] {
            let (crop, m) = render_sample(&mut pyramid, &f, &scheme, &params, &aug, stage).unwrap();
            let size = params.crop_size(stage) as usize;
            for i in 0..3 {
                let c = if flip { scheme.flip_permutation[i] } else { i };
                let (lx, ly) = (crop.landmarks[2 * i] as f64, crop.landmarks[2 * i + 1] as f64);
                // A disc cut by the crop edge has a shifted centroid: only whole discs count.
                let margin = DISC_RADIUS as f64 * m.scale() + 1.0;
                let s = size as f64;
                if !(margin..s - margin).contains(&lx) || !(margin..s - margin).contains(&ly) {
                    continue;
                }
                let (cx, cy) = centroid(&crop.image, size, c);
                prop_assert_eq!(crop.in_crop[i], 1);
                let err = ((cx - lx).powi(2) + (cy - ly).powi(2)).sqrt();
                prop_assert!(err <= tol, "{:?} point {} disc at ({:.2},{:.2}) landmark at ({:.2},{:.2})", stage, i, cx, cy, lx, ly);
            }
        }
    }
}

/// The disc image at `factor`× size (points, radius and image scaled), JPEG-encoded at
/// quality 98, and its faces' landmarks.
fn disc_jpeg(factor: u32) -> (SourceFile, Vec<f32>) {
    let f = factor as f32;
    let points = DISC_POINTS.map(|(x, y)| (x * f, y * f));
    let side = 400 * factor;
    let px = disc_pixels(side, side, &points, DISC_RADIUS * f);
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 98)
        .encode(&px, side, side, image::ExtendedColorType::Rgb8)
        .unwrap();
    let lm = points.iter().flat_map(|&(x, y)| [x, y]).collect();
    (SourceFile::from_bytes(Path::new("discs.jpg"), bytes), lm)
}

fn disc_jpegs() -> &'static [(SourceFile, Vec<f32>); 2] {
    static FILES: std::sync::OnceLock<[(SourceFile, Vec<f32>); 2]> = std::sync::OnceLock::new();
    FILES.get_or_init(|| [disc_jpeg(1), disc_jpeg(2)])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn disc_centroids_match_with_reduced_jpeg_decoding(
        big in any::<bool>(), rotation_deg in -45.0f64..45.0, tx in -0.1f64..0.1,
        ty in -0.1f64..0.1, scale in 0.8f64..1.3, flip in any::<bool>(),
        j in (-0.05f64..0.05, -0.05f64..0.05, 0.95f64..1.05, -5.0f64..5.0),
    ) {
        let scheme = tri_scheme();
        let (file, lm) = &disc_jpegs()[big as usize];
        let side = if big { 800 } else { 400 };
        let f = face("s", "discs.jpg", &scheme, lm.clone(), side, side);
        let aug = Augmentation {
            rotation_deg, translate_x: tx, translate_y: ty, scale, flip,
            stage2_translate_x: j.0, stage2_translate_y: j.1, stage2_scale: j.2, stage2_rotation_deg: j.3,
            ..Augmentation::identity()
        };
        let params = geometric_params();
        prop_assert!(params.reduced_decode);
        let crops = [(&f, &aug, CropLevel::One), (&f, &aug, CropLevel::Two)];
        let rendered = render_image_crops(file, &crops, &scheme, &params).unwrap();
        // The stage-1 crop is always read from a reduced decode at these scales.
        let m1 = rendered[0].1;
        let (requests, serving) = decode::plan_decodes(&[(m1, params.stage1_size)], side, side, true);
        prop_assert!(requests[serving[0].unwrap()].level >= 1);
        let radius = DISC_RADIUS as f64 * if big { 2.0 } else { 1.0 };
        for ((crop, m), (stage, tol)) in rendered.iter().zip([(CropLevel::One, 1.0), (CropLevel::Two, 0.5)]) {
            let size = params.crop_size(stage) as usize;
            for i in 0..3 {
                let c = if flip { scheme.flip_permutation[i] } else { i };
                let (lx, ly) = (crop.landmarks[2 * i] as f64, crop.landmarks[2 * i + 1] as f64);
                let margin = radius * m.scale() + 1.0;
                let s = size as f64;
                if !(margin..s - margin).contains(&lx) || !(margin..s - margin).contains(&ly) {
                    continue;
                }
                let (cx, cy) = centroid_above(&crop.image, size, c, 24);
                let err = ((cx - lx).powi(2) + (cy - ly).powi(2)).sqrt();
                prop_assert!(err <= tol, "{:?} point {} disc at ({:.2},{:.2}) landmark at ({:.2},{:.2})", stage, i, cx, cy, lx, ly);
            }
        }
    }
}

#[test]
fn reduced_decoding_is_a_render_param_and_changes_only_what_it_should() {
    let scheme = tri_scheme();
    let (file, lm) = &disc_jpegs()[1];
    let f = face("s", "discs.jpg", &scheme, lm.clone(), 800, 800);
    let aug = Augmentation::identity();
    let crops = [(&f, &aug, CropLevel::One)];
    let on = geometric_params();
    let off = RenderParams {
        reduced_decode: false,
        ..geometric_params()
    };
    assert_ne!(on.digest(), off.digest());
    let a = render_image_crops(file, &crops, &scheme, &on).unwrap();
    let b = render_image_crops(file, &crops, &scheme, &off).unwrap();
    assert_eq!(a[0].1, b[0].1);
    assert_eq!(a[0].0.landmarks, b[0].0.landmarks);
    // Different low-pass filters, same picture: close but (on this sharp-edged image) not equal.
    let diff: u64 = a[0]
        .0
        .image
        .iter()
        .zip(&b[0].0.image)
        .map(|(x, y)| x.abs_diff(*y) as u64)
        .sum();
    let mean = diff as f64 / a[0].0.image.len() as f64;
    assert!(diff > 0 && mean < 3.0, "mean difference {mean}");
}

#[test]
fn a_crop_does_not_depend_on_the_other_crops_of_its_image() {
    // Decode regions and levels are planned from all crops of an image; a crop's bytes must
    // still be the same whatever else is rendered with it (worker splits, incremental runs).
    let scheme = tri_scheme();
    let (file, lm) = &disc_jpegs()[1];
    let f = face("s", "discs.jpg", &scheme, lm.clone(), 800, 800);
    let params = geometric_params();
    let a = Augmentation {
        rotation_deg: 11.0,
        scale: 1.05,
        ..Augmentation::identity()
    };
    let far = Augmentation {
        rotation_deg: -30.0,
        translate_x: 0.5,
        translate_y: -0.4,
        scale: 2.5,
        ..Augmentation::identity()
    };
    let near = Augmentation {
        scale: 0.5,
        ..Augmentation::identity()
    };
    let alone = render_image_crops(file, &[(&f, &a, CropLevel::One)], &scheme, &params).unwrap();
    for off in [false, true] {
        let params = RenderParams {
            reduced_decode: !off,
            ..params.clone()
        };
        let alone =
            render_image_crops(file, &[(&f, &a, CropLevel::One)], &scheme, &params).unwrap();
        let crowd = [
            (&f, &far, CropLevel::One),
            (&f, &a, CropLevel::Two),
            (&f, &a, CropLevel::One),
            (&f, &near, CropLevel::One),
            (&f, &far, CropLevel::Two),
        ];
        let together = render_image_crops(file, &crowd, &scheme, &params).unwrap();
        assert_eq!(
            alone[0].0.image, together[2].0.image,
            "reduced_decode = {}",
            !off
        );
    }
    assert!(!alone[0].0.image.is_empty());
}

#[test]
fn disc_centroids_match_at_deep_pyramid_levels() {
    // 64² crop of a 2.5 × 75 px box at scale 0.8: ≈0.36 output px per source px (level 1);
    // a smaller crop of the same box reaches level 3.
    let scheme = tri_scheme();
    let lm: Vec<f32> = DISC_POINTS.iter().flat_map(|&(x, y)| [x, y]).collect();
    let f = face("s", "mem", &scheme, lm, 400, 400);
    let mut pyramid = disc_image(400, 400);
    for size in [64, 32] {
        let params = RenderParams {
            stage1_size: size,
            ..geometric_params()
        };
        let aug = Augmentation {
            rotation_deg: 17.0,
            scale: 1.2,
            ..Augmentation::identity()
        };
        let (crop, m) =
            render_sample(&mut pyramid, &f, &scheme, &params, &aug, CropLevel::One).unwrap();
        assert!(warp::level_for_scale(m.scale()) >= 1);
        for i in 0..3 {
            let (cx, cy) = centroid(&crop.image, size as usize, i);
            let err = ((cx - crop.landmarks[2 * i] as f64).powi(2)
                + (cy - crop.landmarks[2 * i + 1] as f64).powi(2))
            .sqrt();
            assert!(err <= 1.0, "size {size} point {i}: error {err}");
        }
    }
}

#[test]
fn flip_equals_mirrored_render_with_permuted_landmarks() {
    let scheme = tri_scheme();
    let lm: Vec<f32> = DISC_POINTS.iter().flat_map(|&(x, y)| [x, y]).collect();
    let mut f = face("s", "mem", &scheme, lm, 400, 400);
    f.occluded[0] = true;
    let mut pyramid = disc_image(400, 400);
    let params = geometric_params();
    let plain = Augmentation {
        rotation_deg: 12.0,
        translate_x: 0.03,
        scale: 1.1,
        stage2_rotation_deg: 3.0,
        ..Augmentation::identity()
    };
    let flipped = Augmentation {
        flip: true,
        ..plain.clone()
    };
    for stage in CropLevel::ALL {
        let s = params.crop_size(stage) as usize;
        let (a, _) = render_sample(&mut pyramid, &f, &scheme, &params, &plain, stage).unwrap();
        let (b, _) = render_sample(&mut pyramid, &f, &scheme, &params, &flipped, stage).unwrap();
        for y in 0..s {
            for x in 0..s {
                let (pa, pb) = ((y * s + x) * 3, (y * s + (s - 1 - x)) * 3);
                for c in 0..3 {
                    let d = a.image[pa + c].abs_diff(b.image[pb + c]);
                    assert!(d <= 1, "{stage:?} pixel ({x},{y}) channel {c}: {d}");
                }
            }
        }
        for i in 0..3 {
            let src = scheme.flip_permutation[i];
            assert!((b.landmarks[2 * i] - (s as f32 - a.landmarks[2 * src])).abs() < 1e-3);
            assert!((b.landmarks[2 * i + 1] - a.landmarks[2 * src + 1]).abs() < 1e-3);
            assert_eq!(b.visible[i], a.visible[src]);
            assert_eq!(b.occluded[i], a.occluded[src]);
        }
        assert_eq!(
            (a.occluded.clone(), b.occluded),
            (vec![1, 0, 0], vec![0, 1, 0])
        );
    }
}

#[test]
fn landmarks_outside_the_crop_are_kept_and_flagged() {
    let scheme = tri_scheme();
    let lm: Vec<f32> = DISC_POINTS.iter().flat_map(|&(x, y)| [x, y]).collect();
    let f = face("s", "mem", &scheme, lm, 400, 400);
    let mut pyramid = disc_image(400, 400);
    let aug = Augmentation {
        translate_x: 0.5,
        ..Augmentation::identity()
    };
    let (crop, _) = render_sample(
        &mut pyramid,
        &f,
        &scheme,
        &RenderParams::default(),
        &aug,
        CropLevel::One,
    )
    .unwrap();
    assert_eq!(crop.in_crop[0], 0);
    assert!(crop.landmarks[0] < 0.0 && crop.landmarks[0].is_finite());
    assert_eq!(crop.visible, vec![1, 1, 1]);
}

/// A synthetic data set on disk: JPEG files with noise and discs, faces (aflw19), a plan.
struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    faces: Vec<FaceRecord>,
    plan: Vec<PlanRow>,
    digests: BTreeMap<String, String>,
}

fn fixture(images: usize, image_side: u32) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    let scheme = scheme::by_name("aflw19").unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let (mut faces, mut plan, mut digests) = (Vec::new(), Vec::new(), BTreeMap::new());
    fs::create_dir_all(root.join("img")).unwrap();
    for k in 0..images {
        let path = root.join("img").join(format!("{k:04}.jpg"));
        let mut img = image::RgbImage::new(image_side, image_side);
        for (x, y, p) in img.enumerate_pixels_mut() {
            *p = image::Rgb([
                (x * 255 / image_side) as u8,
                (y * 255 / image_side) as u8,
                rng.r#gen::<u8>() / 4,
            ]);
        }
        // Two faces on every third image, so some images feed several shards.
        let n_faces = if k % 3 == 0 { 2 } else { 1 };
        for q in 0..n_faces {
            let side = image_side as f32 * 0.3;
            let (ox, oy) = (
                image_side as f32 * (0.15 + 0.4 * q as f32),
                image_side as f32 * 0.3,
            );
            let lm: Vec<f32> = (0..scheme.num_points())
                .flat_map(|_| {
                    [
                        ox + rng.r#gen::<f32>() * side,
                        oy + rng.r#gen::<f32>() * side,
                    ]
                })
                .collect();
            for p in lm.chunks_exact(2) {
                let (cx, cy) = (p[0] as u32, p[1] as u32);
                for y in cy.saturating_sub(2)..(cy + 3).min(image_side) {
                    for x in cx.saturating_sub(2)..(cx + 3).min(image_side) {
                        img.put_pixel(x, y, image::Rgb([255, 255, 255]));
                    }
                }
            }
            let id = format!("synthetic/{k:04}_{q}");
            let split = if k % 4 == 3 { "val" } else { "train" };
            let hash = blake3::hash(id.as_bytes()).as_bytes()[0] as u32;
            let replicas = if split == "train" { 1 + hash % 3 } else { 1 };
            for replica in 0..replicas {
                plan.push(PlanRow {
                    sample_id: id.clone(),
                    split: split.to_owned(),
                    replica,
                    bin: (split == "train").then_some(hash % 9),
                    pose_coefficient: Some(hash as f32 / 255.0 - 0.5),
                    seed: u64::from_le_bytes(
                        blake3::hash(format!("{id}/{replica}").as_bytes()).as_bytes()[..8]
                            .try_into()
                            .unwrap(),
                    ),
                    shard_stage1: hash % 3,
                    shard_stage2: hash % 5,
                });
            }
            let mut f = face(
                &id,
                path.to_str().unwrap(),
                scheme,
                lm,
                image_side,
                image_side,
            );
            f.split = split.to_owned();
            faces.push(f);
        }
        img.save(&path).unwrap();
        digests.insert(
            path.to_str().unwrap().to_owned(),
            shard::file_digest(&path).unwrap().0,
        );
    }
    // Plan order must not matter: shuffle it deterministically.
    plan.reverse();
    Fixture {
        _dir: dir,
        root,
        faces,
        plan,
        digests,
    }
}

/// Render the fixture with the default parameters and one augmentation epoch.
fn run(
    fx: &Fixture,
    out: &Path,
    threads: usize,
    worker: Option<WorkerSplit>,
    digests: &BTreeMap<String, String>,
) -> RenderReport {
    let params = RenderParams {
        epochs: 1,
        ..RenderParams::default()
    };
    run_with(fx, out, threads, worker, digests, &params)
}

fn run_with(
    fx: &Fixture,
    out: &Path,
    threads: usize,
    worker: Option<WorkerSplit>,
    digests: &BTreeMap<String, String>,
    params: &RenderParams,
) -> RenderReport {
    let scheme = scheme::by_name(&fx.faces[0].scheme).unwrap();
    let digest = |p: &str| digests.get(p).cloned().unwrap_or_default();
    let inputs = RenderInputs {
        faces: &fx.faces,
        plan: &fx.plan,
        scheme,
        params,
        source_digest: &digest,
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| render_shards(&inputs, out, worker, &|_| {}))
        .unwrap()
}

/// Every file under `dir` (relative path → bytes).
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    p.strip_prefix(dir).unwrap().to_owned(),
                    fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}

#[test]
fn output_is_byte_identical_for_any_thread_count_and_worker_split() {
    let fx = fixture(10, 160);
    let (one, two, split) = (
        fx.root.join("one"),
        fx.root.join("two"),
        fx.root.join("split"),
    );
    let report = run(&fx, &one, 1, None, &fx.digests);
    assert!(report.fresh.is_empty() && !report.rendered.is_empty());
    assert_eq!(report.images_decoded, 10);
    assert_eq!(report.crops_rendered, 2 * fx.plan.len());
    run(&fx, &two, 2, None, &fx.digests);
    for index in 0..3 {
        let r = run(
            &fx,
            &split,
            2,
            Some(WorkerSplit { index, count: 3 }),
            &fx.digests,
        );
        assert!(r.indexes.is_empty());
        assert!(r.rendered.iter().all(|p| {
            let id: u32 = p.file_stem().unwrap().to_str().unwrap()[6..]
                .parse()
                .unwrap();
            id % 3 == index
        }));
    }
    for (dir, index) in &report.indexes {
        let dir = split.join(dir.strip_prefix(&one).unwrap());
        index_shard_set(&dir, index.augmentation_epochs).unwrap();
    }
    let (a, b, c) = (tree(&one), tree(&two), tree(&split));
    assert!(a.keys().any(|k| k.ends_with("stage2/val/samples.parquet")));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    assert!(a == b, "1 vs 2 threads differ");
    assert_eq!(a.keys().collect::<Vec<_>>(), c.keys().collect::<Vec<_>>());
    assert!(a == c, "worker split differs from one run");

    // The index covers every plan row, and sample_index addresses samples.parquet rows.
    let (idx_dir, index) = &report.indexes[0];
    let n: u64 = fx.plan.iter().filter(|r| r.split == index.split).count() as u64;
    assert_eq!(index.total_samples, n);
    let last = &index.shards[index.shards.len() - 1];
    let bytes = fs::read(idx_dir.join(&last.file)).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let si = st.tensor("sample_index").unwrap();
    let final_index = i64::from_le_bytes(si.data()[si.data().len() - 8..].try_into().unwrap());
    assert_eq!(final_index as u64, n - 1);
}

#[test]
fn only_shards_with_an_occluded_point_get_the_occluded_tensor() {
    let mut fx = fixture(6, 128);
    let plain = fx.root.join("plain");
    run(&fx, &plain, 2, None, &fx.digests);
    // All-false flags are the flags every face already had: the same bytes, keys included.
    let again = fx.root.join("again");
    for f in &mut fx.faces {
        f.occluded = vec![false; f.visible.len()];
    }
    run(&fx, &again, 2, None, &fx.digests);
    assert!(tree(&plain) == tree(&again));

    let marked = fx.faces[0].sample_id.clone();
    fx.faces[0].occluded[3] = true;
    let occluded = fx.root.join("occluded");
    run(&fx, &occluded, 2, None, &fx.digests);
    let (before, after) = (tree(&plain), tree(&occluded));
    let mut with_tensor = 0;
    for (path, bytes) in after
        .iter()
        .filter(|(p, _)| p.extension().is_some_and(|e| e == "safetensors"))
    {
        let st = safetensors::SafeTensors::deserialize(bytes).unwrap();
        let index = st.tensor("sample_index").unwrap();
        let sidecar: Sidecar =
            serde_json::from_slice(&after[&path.with_extension("json")]).unwrap();
        let rows: Vec<&str> = sidecar
            .samples
            .iter()
            .map(|s| s.sample_id.as_str())
            .collect();
        match st.tensor("occluded") {
            Ok(t) => {
                with_tensor += 1;
                assert!(rows.contains(&marked.as_str()), "{path:?}");
                let l = 19;
                assert_eq!(t.shape(), &[index.shape()[0], l]);
                // Point 3 of the marked face's rows (mirrored crops: point 2 takes it).
                let set: usize = t.data().iter().map(|&b| b as usize).sum();
                let rows_of_face = rows.iter().filter(|&&r| r == marked).count();
                assert_eq!(set, rows_of_face, "{path:?}");
            }
            Err(_) => {
                assert!(!rows.contains(&marked.as_str()), "{path:?}");
                assert!(bytes == &before[path], "{path:?} changed");
            }
        }
    }
    assert!(with_tensor >= 2, "both crop levels hold the marked face");
}

#[test]
fn changed_source_rewrites_only_its_shards_and_corruption_is_repaired() {
    let fx = fixture(8, 128);
    let out = fx.root.join("out");
    let first = run(&fx, &out, 2, None, &fx.digests);
    let all: BTreeSet<PathBuf> = first.rendered.iter().cloned().collect();
    let again = run(&fx, &out, 2, None, &fx.digests);
    assert!(again.rendered.is_empty());
    assert_eq!(again.fresh.iter().cloned().collect::<BTreeSet<_>>(), all);

    // Edit one image's digest: exactly the shards holding its faces' rows are rewritten.
    let image = fx.faces[0].image_path.clone();
    let mut digests = fx.digests.clone();
    digests.insert(image.clone(), "edited".to_owned());
    let mut expected = BTreeSet::new();
    for row in &fx.plan {
        let f = fx
            .faces
            .iter()
            .find(|f| f.sample_id == row.sample_id)
            .unwrap();
        if f.image_path == image {
            for stage in CropLevel::ALL {
                expected.insert(
                    epoch_set_dir(&out, stage, &row.split, 0)
                        .join(shard::shard_file_name(stage.shard_of(row))),
                );
            }
        }
    }
    let before = tree(&out);
    let edited = run(&fx, &out, 2, None, &digests);
    assert_eq!(
        edited.rendered.iter().cloned().collect::<BTreeSet<_>>(),
        expected
    );
    assert_eq!(edited.rendered.len() + edited.fresh.len(), all.len());
    assert!(edited.rendered.len() < all.len());
    // The image itself did not change, so the re-rendered shards are identical.
    let after = tree(&out);
    for (k, v) in &before {
        if k.extension().is_some_and(|e| e == "safetensors") {
            assert_eq!(&after[k], v);
        }
    }

    // Truncate a shard: inspect flags it, the next run renders just that shard again.
    let victim = first.rendered[1].clone();
    let original = fs::read(&victim).unwrap();
    fs::write(&victim, &original[..original.len() / 2]).unwrap();
    let report = inspect(victim.parent().unwrap()).unwrap();
    assert!(!report.all_ok());
    let bad: Vec<_> = report
        .shards
        .iter()
        .filter(|s| s.status != ShardStatus::Ok)
        .collect();
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].status, ShardStatus::DigestMismatch);
    let repaired = run(&fx, &out, 1, None, &digests);
    assert_eq!(repaired.rendered, vec![victim.clone()]);
    assert_eq!(fs::read(&victim).unwrap(), original);
    assert!(inspect(victim.parent().unwrap()).unwrap().all_ok());
}

#[test]
fn gc_removes_only_shards_the_plan_no_longer_has() {
    let mut fx = fixture(6, 128);
    let out = fx.root.join("out");
    run(&fx, &out, 2, None, &fx.digests);
    // Drop the val split and fold stage-2 train shards 3 and 4 into shard 0.
    fx.plan.retain(|r| r.split == "train");
    for r in &mut fx.plan {
        if r.shard_stage2 >= 3 {
            r.shard_stage2 = 0;
        }
    }
    let before = tree(&out);
    let folded = |name: &str| {
        name.strip_prefix("shards/stage2/train/shard-")
            .and_then(|r| r.split('.').next())
            .and_then(|id| id.parse::<u32>().ok())
            .is_some_and(|id| id >= 3)
    };
    let mut expected: BTreeSet<String> = before
        .keys()
        .map(|k| k.to_string_lossy().into_owned())
        .filter(|k| k.contains("/val/") || folded(k))
        .collect();
    assert!(
        expected.iter().any(|k| folded(k)),
        "fixture has no stage-2 shard ≥ 3"
    );
    expected.extend([
        "shards/stage1/val".to_owned(),
        "shards/stage2/val".to_owned(),
    ]);
    let removed = gc(&out, &fx.plan, 1).unwrap();
    let names: BTreeSet<String> = removed
        .iter()
        .map(|p| p.strip_prefix(&out).unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, expected);
    assert!(!out.join("shards/stage2/val").exists());
    assert!(gc(&out, &fx.plan, 1).unwrap().is_empty());
    let report = run(&fx, &out, 2, None, &fx.digests);
    assert!(report.indexes.iter().all(|(_, i)| i.split == "train"));
}

#[test]
fn contact_sheet_draws_samples_with_sided_colours() {
    let fx = fixture(4, 128);
    let out = fx.root.join("out");
    let report = run(&fx, &out, 1, None, &fx.digests);
    let (dir, index) = report
        .indexes
        .iter()
        .find(|(_, i)| i.crop_size == 128)
        .unwrap();
    let png = fx.root.join("sheet.png");
    let drawn = contact_sheet(dir, &png, 4).unwrap();
    assert_eq!(drawn as u64, index.total_samples.min(4));
    let sheet = image::open(&png).unwrap().to_rgb8();
    assert_eq!(sheet.width() % 128, 0);
    let has = |c: [u8; 3]| sheet.pixels().any(|p| p.0 == c);
    assert!(has([0, 255, 0]) && has([255, 0, 0]) && has([255, 255, 0]));
}

#[test]
fn bad_inputs_are_reported_with_their_sample() {
    let fx = fixture(2, 96);
    let scheme = scheme::by_name("aflw19").unwrap();
    let params = RenderParams::default();
    let digest = |_: &str| String::new();
    let mut plan = fx.plan.clone();
    plan[0].sample_id = "nope".to_owned();
    let inputs = RenderInputs {
        faces: &fx.faces,
        plan: &plan,
        scheme,
        params: &params,
        source_digest: &digest,
    };
    let err = render_shards(&inputs, &fx.root.join("o"), None, &|_| {}).unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
    let mut plan = fx.plan.clone();
    plan.push(plan[0].clone());
    let inputs = RenderInputs {
        plan: &plan,
        ..inputs
    };
    assert!(matches!(
        render_shards(&inputs, &fx.root.join("o"), None, &|_| {}),
        Err(RenderError::DuplicateRow { .. })
    ));
    let ibug = scheme::by_name("ibug68").unwrap();
    let inputs = RenderInputs {
        plan: &fx.plan,
        scheme: ibug,
        ..inputs
    };
    assert!(matches!(
        render_shards(&inputs, &fx.root.join("o"), None, &|_| {}),
        Err(RenderError::BadFace { .. })
    ));
    let inputs = RenderInputs { scheme, ..inputs };
    let worker = Some(WorkerSplit { index: 3, count: 3 });
    assert!(matches!(
        render_shards(&inputs, &fx.root.join("o"), worker, &|_| {}),
        Err(RenderError::Config(_))
    ));
}

#[test]
fn damaged_or_oversized_sources_fail_the_render_and_harmless_warnings_are_counted() {
    let fx = fixture(3, 96);
    let image = |k: usize| fx.root.join("img").join(format!("{k:04}.jpg"));
    let params = RenderParams {
        epochs: 1,
        ..RenderParams::default()
    };
    let with_reduced = |reduced_decode| RenderParams {
        reduced_decode,
        ..params.clone()
    };
    for reduced_decode in [true, false] {
        let out = fx.root.join(format!("clean-{reduced_decode}"));
        let report = run_with(
            &fx,
            &out,
            2,
            None,
            &fx.digests,
            &with_reduced(reduced_decode),
        );
        assert_eq!(report.images_with_decoder_warnings, 0);
    }

    // Three bytes before a header marker: libjpeg-turbo warns, the pixels are the same.
    let bytes = fs::read(image(0)).unwrap();
    let dqt = bytes.windows(2).position(|m| m == [0xFF, 0xDB]).unwrap();
    let mut warned = bytes[..dqt].to_vec();
    warned.extend([1, 2, 3]);
    warned.extend(&bytes[dqt..]);
    fs::write(image(0), warned).unwrap();
    for reduced_decode in [true, false] {
        let out = fx.root.join(format!("warned-{reduced_decode}"));
        let report = run_with(
            &fx,
            &out,
            2,
            None,
            &fx.digests,
            &with_reduced(reduced_decode),
        );
        assert_eq!(report.images_with_decoder_warnings, 1);
        assert!(tree(&out) == tree(&fx.root.join(format!("clean-{reduced_decode}"))));
    }

    // A file cut in half fails on both decode paths, naming the file.
    let bytes = fs::read(image(1)).unwrap();
    fs::write(image(1), &bytes[..bytes.len() / 2]).unwrap();
    let scheme = scheme::by_name("aflw19").unwrap();
    let digest = |_: &str| String::new();
    for reduced_decode in [true, false] {
        let params = with_reduced(reduced_decode);
        let inputs = RenderInputs {
            faces: &fx.faces,
            plan: &fx.plan,
            scheme,
            params: &params,
            source_digest: &digest,
        };
        let err = render_shards(&inputs, &fx.root.join("cut"), None, &|_| {})
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("{}: ", image(1).display()))
                && err.contains("Premature end of JPEG file"),
            "{err}"
        );
    }
    fs::write(image(1), &bytes).unwrap();

    // Headers declaring more than max_image_pixels are refused before decoding.
    let params = RenderParams {
        max_image_pixels: 96 * 96 - 1,
        ..params
    };
    let inputs = RenderInputs {
        faces: &fx.faces,
        plan: &fx.plan,
        scheme,
        params: &params,
        source_digest: &digest,
    };
    let err = render_shards(&inputs, &fx.root.join("big"), None, &|_| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("96×96 = 9216 pixels, more than [render] max_image_pixels = 9215"),
        "{err}"
    );
}

/// Writes a small shard set for the Python reader's tests:
/// `WINGFLOW_SHARD_FIXTURE=/some/dir cargo test -p render --lib write_python_fixture -- --ignored`.
#[test]
#[ignore = "writes a fixture for python/tests/test_shards.py"]
fn write_python_fixture() {
    let Ok(target) = std::env::var("WINGFLOW_SHARD_FIXTURE") else {
        panic!("set WINGFLOW_SHARD_FIXTURE to the output directory");
    };
    // cargo runs this test in the crate's folder, so a relative path would land inside the
    // source tree rather than where the caller meant.
    assert!(
        Path::new(&target).is_absolute(),
        "WINGFLOW_SHARD_FIXTURE must be an absolute path, got {target}"
    );
    let fx = fixture(5, 128);
    // Two augmentation epochs, so the Python readers see a training set with epochs.
    let params = RenderParams {
        epochs: 2,
        ..RenderParams::default()
    };
    let report = run_with(&fx, Path::new(&target), 2, None, &fx.digests, &params);
    assert!(!report.indexes.is_empty());
}

/// Render throughput on a few hundred synthetic 450×450 JPEGs (one face each, one replica):
/// `cargo test -p render --lib bench_render_throughput -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark"]
fn bench_render_throughput() {
    let fx = fixture(300, 450);
    for threads in [1, 2] {
        let out = fx.root.join(format!("bench{threads}"));
        let start = std::time::Instant::now();
        let report = run(&fx, &out, threads, None, &fx.digests);
        let secs = start.elapsed().as_secs_f64();
        let rows = fx.plan.len();
        println!(
            "{threads} thread(s): {rows} plan rows ({} crops, {} images) in {secs:.2} s = {:.0} samples/s ({:.0} crops/s)",
            report.crops_rendered,
            report.images_decoded,
            rows as f64 / secs,
            report.crops_rendered as f64 / secs
        );
    }
}
