//! Training, evaluation and two-stage prediction end to end on a small synthetic 300W set:
//! synth → ingest → align → pca → balance → render → `wingflow-train train` (CNN-6, and a few
//! steps of CNN-7 to drive the second stage) → evaluation in image coordinates → `wingflow
//! predict` against the generator's truth.
//!
//! Needs `wingflow-train` beside `wingflow` (`make test` builds every binary first).

use std::path::Path;

use serde_json::Value;
use synth::read_truth;

use crate::common::{ok, wingflow};

/// The trainer `wingflow` will run: `$WINGFLOW_TRAIN_BIN`, else the one beside `wingflow`.
fn trainer_used_by_wingflow() -> std::path::PathBuf {
    if let Some(explicit) = std::env::var_os("WINGFLOW_TRAIN_BIN") {
        return explicit.into();
    }
    let dir = Path::new(env!("CARGO_BIN_EXE_wingflow")).parent().unwrap();
    let trainer = dir.join(format!("wingflow-train{}", std::env::consts::EXE_SUFFIX));
    assert!(
        trainer.exists(),
        "{} is missing: build every binary first (`cargo build --workspace --bins`)",
        trainer.display()
    );
    trainer
}

fn json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Inter-ocular NME (outer eye corners 36, 45) of `pred` against `truth`, both flat x, y lists.
fn nme(pred: &[f32], truth: &[f32]) -> f64 {
    let d = |a: &[f32], i: usize, b: &[f32], j: usize| {
        f64::from(a[2 * i] - b[2 * j]).hypot(f64::from(a[2 * i + 1] - b[2 * j + 1]))
    };
    let io = d(truth, 36, truth, 45);
    (0..68).map(|i| d(pred, i, truth, i)).sum::<f64>() / 68.0 / io
}

#[test]
fn trained_cnn6_beats_the_mean_shape_and_predict_finds_faces_in_image_coordinates() {
    let trainer = trainer_used_by_wingflow();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("study");
    // One small study: 200 faces, Wing, CNN-6 only, no PDB variant, static augmentation;
    // `extra` adds flags; `dir` is its output folder.
    let study_in = |dir: &Path, extra: &[&str]| {
        ok(wingflow()
            .args(["experiment", "losses"])
            .arg(dir)
            .args([
                "--faces",
                "200",
                "--stage1-steps",
                "300",
                "--batch-size",
                "8",
            ])
            .args(["--losses", "wing", "--stage1-only", "--balance", "no-pdb"])
            // Unaugmented faces, each once: the setting in which 300 steps beat the mean shape.
            .args(["--augmentation", "static", "--no-pdb-rows", "original"])
            .args(["--threads", "2", "--device", "cpu"])
            .args(extra))
    };
    let study = |extra: &[&str]| study_in(&out, extra);
    study(&[]);
    let results = json(&out.join("results.json"));
    let baseline = results["mean_shape_baseline"]["mean_nme_percent"]
        .as_f64()
        .unwrap();
    let run = &results["runs"][0];
    assert_eq!(run["method"], "CNN-6");
    let model = run["full"]["mean_nme_percent"].as_f64().unwrap();
    assert!(
        model < baseline,
        "CNN-6 NME {model:.2} is not below the mean-shape baseline {baseline:.2}"
    );

    // The same study over two seeds, finished runs only: seed 1 is neither trained nor listed,
    // and seed 0's evaluation is the final table's.
    study(&["--seeds", "2", "--finished-only"]);
    let interim = json(&out.join("results-interim.json"));
    assert_eq!(interim["interim"], 2, "{interim}");
    assert_eq!(interim["runs"].as_array().unwrap().len(), 1, "{interim}");
    assert_eq!(interim["runs"][0]["full"], run["full"]);
    let variant = out.join("work/static-no-pdb");
    assert!(variant.join("wing-s1.toml").exists());
    assert!(!variant.join("models/wing-s1").exists());
    let table = std::fs::read_to_string(out.join("results-interim.md")).unwrap();
    assert!(
        table.contains("Every cell is over 1 of the 2 seed(s)"),
        "{table}"
    );

    // Another machine, another output folder: with the first sitting's results reused, the
    // cell is not trained again and its run comes back whole.
    let again = tmp.path().join("study-again");
    let first = out.join("results.json");
    let sitting = study_in(&again, &["--reuse", first.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&sitting.stdout);
    assert!(
        said.contains("wing-s0: reused from an earlier sitting"),
        "{said}"
    );
    assert!(!again.join("work/static-no-pdb/models/wing-s0").exists());
    let reused = json(&again.join("results.json"));
    assert_eq!(reused["runs"].as_array().unwrap().len(), 1, "{reused}");
    // (Read back by serde_json, a float may move by an ulp.)
    let mean = |r: &Value| r["full"]["mean_nme_percent"].as_f64().unwrap();
    assert!(
        (mean(&reused["runs"][0]) - mean(run)).abs() < 1e-9,
        "{reused}"
    );
    let faces = |r: &Value| r["nmes"].as_array().unwrap().len();
    assert_eq!(faces(&reused["runs"][0]), faces(run));

    // A few CNN-7 steps: enough to run the second stage, not to be accurate.
    // Each cell is a configuration of the DAG: `wingflow status` finds it all fresh.
    let status = ok(wingflow()
        .args(["status", "-c"])
        .arg(variant.join("wing-s0.toml")));
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.contains("evaluate@wing-s0") && !status.contains("stale"),
        "{status}"
    );
    let run6 = variant.join("models/wing-s0/stage1");
    let run7 = tmp.path().join("cnn7");
    ok(std::process::Command::new(&trainer)
        .args(["--threads", "2", "train", "--stage", "2", "--steps", "2"])
        .args(["--batch-size", "4", "--no-val", "--device", "cpu"])
        .arg("--shards")
        .arg(variant.join("shards/stage2"))
        .arg("--out")
        .arg(&run7));

    // Predict one test face of the generator from its box and compare with the truth, and
    // with the evaluation of the same face (same path, so the same error).
    let data = out.join("data");
    let truth = read_truth(&data).unwrap();
    let face = truth
        .iter()
        .find(|t| t.split == "common")
        .expect("a common face");
    let xs = face.landmarks.iter().step_by(2);
    let ys = face.landmarks.iter().skip(1).step_by(2);
    let (x0, x1) = xs.fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    let (y0, y1) = ys.fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    let image = data.join(&face.image_path);
    let pred_json = tmp.path().join("pred.json");
    let pred_pts = tmp.path().join("pred.pts");
    let drawn = tmp.path().join("drawn.png");
    let weights6 = run6.join("last.safetensors");
    let face_box = format!("{x0},{y0},{},{}", x1 - x0, y1 - y0);
    let predict = |extra: &[&str], out_file: &Path| {
        ok(wingflow()
            .arg("predict")
            .arg(&image)
            .args(["--box", &face_box, "--device", "cpu"])
            .arg("--stage1")
            .arg(&weights6)
            .args(extra)
            .arg("--out")
            .arg(out_file))
    };
    predict(&["--draw", drawn.to_str().unwrap()], &pred_json);
    let doc = json(&pred_json);
    let points: Vec<f32> = doc["faces"][0]["landmarks"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| [p[0].as_f64().unwrap() as f32, p[1].as_f64().unwrap() as f32])
        .collect();
    assert_eq!(points.len(), 136);
    let error = 100.0 * nme(&points, &face.landmarks);
    let evaluated = json(&variant.join("reports/wing-s0/cnn6-full.json"));
    let same_face = evaluated["per_face"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["sample_id"] == face.sample_id.as_str())
        .expect("the face was evaluated");
    let eval_error = same_face["nme_percent"].as_f64().unwrap();
    assert!(
        (error - eval_error).abs() < 0.05,
        "predict gives NME {error:.3}, the evaluation {eval_error:.3}"
    );
    assert!(
        error < 3.0 * model,
        "NME {error:.2} of the predicted face is far above the model's mean {model:.2}"
    );
    let png = image::open(&drawn).unwrap();
    let src = image::open(&image).unwrap();
    assert_eq!((png.width(), png.height()), (src.width(), src.height()));

    // `.pts` holds the same points, 1-based.
    predict(&[], &pred_pts);
    let pts = std::fs::read_to_string(&pred_pts).unwrap();
    let first: Vec<f32> = pts
        .lines()
        .nth(3)
        .unwrap()
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    assert!((first[0] - (points[0] + 0.5)).abs() < 2e-3);
    assert!((first[1] - (points[1] + 0.5)).abs() < 2e-3);

    // The second stage runs and still answers in image coordinates.
    let two_stage = tmp.path().join("two.json");
    let weights7 = run7.join("last.safetensors");
    predict(&["--stage2", weights7.to_str().unwrap()], &two_stage);
    let doc = json(&two_stage);
    assert_eq!(doc["faces"][0]["refined"], true);
    let stage1: Vec<f64> = doc["faces"][0]["stage1_landmarks"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| [p[0].as_f64().unwrap(), p[1].as_f64().unwrap()])
        .collect();
    let stage1_f32: Vec<f32> = stage1.iter().map(|&v| v as f32).collect();
    assert!(
        (100.0 * nme(&stage1_f32, &face.landmarks) - error).abs() < 0.05,
        "stage 1 of the two-stage run differs from the single-stage run"
    );
    let refined = doc["faces"][0]["landmarks"].as_array().unwrap();
    assert!(refined.iter().all(|p| {
        let (x, y) = (p[0].as_f64().unwrap(), p[1].as_f64().unwrap());
        x.is_finite() && y.is_finite()
    }));
}
