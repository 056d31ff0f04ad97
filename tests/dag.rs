//! Ingest through the DAG: faces.parquet against the generator's truth, freshness, staleness
//! reasons, bad input.

use std::collections::HashMap;

use faces::faces_table::read_faces_parquet;
use synth::read_truth;

use crate::common::{fails, ok, project_300w, stdout, wingflow};

#[test]
fn ingest_matches_the_generators_truth_in_the_internal_convention() {
    let tmp = tempfile::tempdir().unwrap();
    let config = project_300w(tmp.path(), 40, "");
    ok(wingflow()
        .arg("run")
        .arg("--config")
        .arg(&config)
        .args(["--until", "ingest"]));
    let faces = read_faces_parquet(&tmp.path().join("out/faces.parquet")).unwrap();
    let truth = read_truth(&tmp.path().join("data/300w")).unwrap();
    assert_eq!(faces.len(), truth.len(), "one row per face");
    let by_id: HashMap<&str, _> = truth.iter().map(|t| (t.sample_id.as_str(), t)).collect();
    let mut splits: HashMap<&str, usize> = HashMap::new();
    for face in &faces {
        let t = by_id
            .get(face.sample_id.as_str())
            .unwrap_or_else(|| panic!("{}", face.sample_id));
        assert_eq!(face.split, t.split, "{}", face.sample_id);
        *splits.entry(face.split.as_str()).or_default() += 1;
        assert_eq!(face.landmarks.len(), t.landmarks.len());
        for (a, b) in face.landmarks.iter().zip(&t.landmarks) {
            assert!(
                (a - b).abs() <= 1e-3,
                "{}: {a} vs truth {b}",
                face.sample_id
            );
        }
        assert_eq!(
            (face.image_width, face.image_height),
            (t.image_width, t.image_height)
        );
        let yaw = face.yaw.expect("poses.csv joined");
        assert!((yaw - t.yaw).abs() < 1e-3);
    }
    for split in ["train", "common", "challenging"] {
        assert!(
            splits.get(split).copied().unwrap_or(0) > 0,
            "no {split} faces: {splits:?}"
        );
    }
}

#[test]
fn reruns_are_fresh_and_status_names_what_changed() {
    let tmp = tempfile::tempdir().unwrap();
    let config = project_300w(tmp.path(), 24, "");
    let run = || ok(wingflow().arg("run").arg("--config").arg(&config));
    let status = || stdout(&ok(wingflow().arg("status").arg("--config").arg(&config)));
    let first = stdout(&run());
    assert!(first.contains("ran"), "{first}");
    let second = stdout(&run());
    assert!(
        !second.contains(" ran "),
        "second run re-ran something:\n{second}"
    );
    assert!(!status().contains("stale"));

    // Same bytes, new mtime: still fresh.
    let pts = tmp.path().join("data/300w/afw/synth_000000.pts");
    let bytes = std::fs::read(&pts).unwrap();
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(&pts)
        .unwrap()
        .set_modified(later)
        .unwrap();
    assert!(!status().contains("stale"), "{}", status());

    // One edited .pts: status names it and marks ingest stale.
    let text = String::from_utf8(bytes).unwrap();
    let line = text.lines().nth(3).unwrap().to_owned();
    let edited = text.replacen(&line, "100.5 100.5", 1);
    std::fs::write(&pts, edited).unwrap();
    let report = status();
    assert!(
        report.contains("ingest") && report.contains("stale"),
        "{report}"
    );
    assert!(
        report.contains("synth_000000.pts"),
        "status does not name the file:\n{report}"
    );
    run();
    assert!(!status().contains("stale"));

    // A parameter change names the parameter.
    let mut toml = std::fs::read_to_string(&config).unwrap();
    toml = toml.replace("max_outside_fraction = 0.5", "max_outside_fraction = 0.6");
    std::fs::write(&config, toml).unwrap();
    let report = status();
    assert!(report.contains("max_outside_fraction"), "{report}");
}

#[test]
fn a_bad_pts_file_is_named_with_its_line_and_skip_lists_it() {
    let tmp = tempfile::tempdir().unwrap();
    let config = project_300w(tmp.path(), 12, "");
    let pts = tmp.path().join("data/300w/afw/synth_000000.pts");
    let text = std::fs::read_to_string(&pts).unwrap();
    let bad_line = text.lines().nth(5).unwrap().to_owned();
    std::fs::write(&pts, text.replacen(&bad_line, "12.5 abc", 1)).unwrap();
    let err = fails(wingflow().arg("run").arg("--config").arg(&config));
    assert!(
        err.contains("synth_000000.pts") && err.contains("line 6"),
        "{err}"
    );
    assert!(
        !tmp.path().join("out/faces.parquet").exists(),
        "half-written output left behind"
    );

    let toml = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        toml.replace("on_invalid = \"fail\"", "on_invalid = \"skip\""),
    )
    .unwrap();
    ok(wingflow()
        .arg("run")
        .arg("--config")
        .arg(&config)
        .args(["--until", "ingest"]));
    let report = std::fs::read_to_string(tmp.path().join("out/ingest-report.json")).unwrap();
    assert!(report.contains("synth_000000.pts"), "{report}");
    let faces = read_faces_parquet(&tmp.path().join("out/faces.parquet")).unwrap();
    assert_eq!(faces.len(), 11);
}

/// The config named from another folder (`-c ../wingflow.toml`) names the same files, so the
/// same identities: nothing is stale (issue #28 item 7).
#[test]
fn a_config_named_from_a_subfolder_finds_every_stage_fresh() {
    let tmp = tempfile::tempdir().unwrap();
    let config = project_300w(tmp.path(), 24, "");
    ok(wingflow().arg("run").arg("--config").arg(&config));
    let sub = tmp.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let status = stdout(&ok(wingflow().current_dir(&sub).args([
        "status",
        "--config",
        "../wingflow.toml",
    ])));
    assert!(!status.contains("stale"), "{status}");
    let again = stdout(&ok(wingflow().current_dir(&sub).args([
        "run",
        "--config",
        "../sub/../wingflow.toml",
    ])));
    assert!(!again.contains(" ran "), "re-ran something:\n{again}");
}
