//! Balance and render through the CLI: stage freshness, byte-identical shards for any thread
//! count or worker split, per-shard incremental re-rendering, crash safety.

use std::path::Path;
use std::process::Command;

use crate::common::{fails, ok, project_300w, stdout, tree, wingflow};

/// A project whose shards are small, so every set has several of them.
fn config_with_small_shards(root: &Path, count: usize) -> std::path::PathBuf {
    let config = project_300w(root, count, "");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace(
            "target_shard_bytes = 67108864",
            "target_shard_bytes = 150000",
        ),
    )
    .unwrap();
    config
}

fn run(config: &Path) -> String {
    stdout(&ok(wingflow().arg("run").arg("--config").arg(config)))
}

fn result_of(summary: &str, stage: &str) -> String {
    summary
        .lines()
        .find(|l| l.split_whitespace().next() == Some(stage))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_else(|| panic!("no `{stage}` in\n{summary}"))
        .to_owned()
}

#[test]
fn shards_are_byte_identical_for_one_or_two_threads_and_for_a_worker_split() {
    let tmp = tempfile::tempdir().unwrap();
    let config = config_with_small_shards(tmp.path(), 60);
    ok(wingflow()
        .env("RAYON_NUM_THREADS", "1")
        .arg("run")
        .arg("--config")
        .arg(&config));
    let one_thread = tree(&tmp.path().join("out/shards"));
    assert!(
        one_thread
            .keys()
            .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
            .count()
            >= 4,
        "expected several shards: {:?}",
        one_thread.keys().collect::<Vec<_>>()
    );

    std::fs::remove_dir_all(tmp.path().join("out/shards")).unwrap();
    ok(wingflow()
        .env("RAYON_NUM_THREADS", "2")
        .arg("run")
        .arg("--config")
        .arg(&config));
    assert!(
        one_thread == tree(&tmp.path().join("out/shards")),
        "1 vs 2 threads differ"
    );

    std::fs::remove_dir_all(tmp.path().join("out/shards")).unwrap();
    for i in 0..3 {
        ok(wingflow()
            .arg("run")
            .arg("--config")
            .arg(&config)
            .arg("--worker")
            .arg(format!("{i}/3")));
    }
    ok(wingflow().arg("index").arg("--config").arg(&config));
    let split = tree(&tmp.path().join("out/shards"));
    assert_eq!(
        one_thread.keys().collect::<Vec<_>>(),
        split.keys().collect::<Vec<_>>()
    );
    for (path, bytes) in &one_thread {
        assert!(
            bytes == &split[path],
            "{} differs after a 3-worker split",
            path.display()
        );
    }
    // Slurm's variables select the worker the same way.
    let out = ok(wingflow()
        .env("SLURM_ARRAY_TASK_ID", "1")
        .env("SLURM_ARRAY_TASK_COUNT", "3")
        .arg("run")
        .arg("--config")
        .arg(&config));
    assert!(stdout(&out).contains("worker 1/3"), "{}", stdout(&out));
    // So do a Kubernetes Indexed Job's (its index, and the worker count from WINGFLOW_WORKERS).
    let out = ok(wingflow()
        .env("JOB_COMPLETION_INDEX", "2")
        .env("WINGFLOW_WORKERS", "3")
        .arg("run")
        .arg("--config")
        .arg(&config));
    assert!(stdout(&out).contains("worker 2/3"), "{}", stdout(&out));
    let no_count = wingflow()
        .env("JOB_COMPLETION_INDEX", "2")
        .arg("run")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!no_count.status.success());
    assert!(
        String::from_utf8_lossy(&no_count.stderr).contains("worker count is not"),
        "{}",
        String::from_utf8_lossy(&no_count.stderr)
    );
}

#[test]
fn changing_k_reruns_balance_only_and_an_edited_image_rewrites_only_its_shards() {
    let tmp = tempfile::tempdir().unwrap();
    let config = config_with_small_shards(tmp.path(), 60);
    run(&config);
    let second = run(&config);
    for stage in ["ingest", "align", "pca", "balance", "plots", "render"] {
        assert_eq!(result_of(&second, stage), "fresh", "{second}");
    }

    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("bins = 9", "bins = 5")).unwrap();
    let status = stdout(&ok(wingflow().arg("status").arg("--config").arg(&config)));
    assert!(status.contains("params.balance.bins: 9 → 5"), "{status}");
    let rerun = run(&config);
    for stage in ["ingest", "align", "pca"] {
        assert_eq!(result_of(&rerun, stage), "fresh", "{rerun}");
    }
    assert_eq!(result_of(&rerun, "balance"), "ran", "{rerun}");

    // Edit one training image: only the shards holding its replicas are rewritten.
    let before = tree(&tmp.path().join("out/shards"));
    let image = tmp.path().join("data/300w/afw/synth_000000.jpg");
    let mut picture = image::open(&image).unwrap().to_rgb8();
    for p in picture.pixels_mut().take(500) {
        p.0 = [255, 0, 255];
    }
    picture.save(&image).unwrap();
    let summary = run(&config);
    assert_eq!(result_of(&summary, "render"), "ran", "{summary}");
    let after = tree(&tmp.path().join("out/shards"));
    let rewritten: Vec<_> = after
        .iter()
        .filter(|(p, b)| {
            p.extension().is_some_and(|e| e == "safetensors") && before.get(*p) != Some(b)
        })
        .map(|(p, _)| p.clone())
        .collect();
    let shards = after
        .keys()
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .count();
    // Its replicas sit in one shard per crop level, and per augmentation epoch (4) if it
    // trains: at most 2 × 4 shards change.
    assert!(
        !rewritten.is_empty() && rewritten.len() <= 2 * 4,
        "rewritten {rewritten:?} of {shards}"
    );
    assert!(
        shards > 4 * rewritten.len(),
        "too few shards for the test to mean anything"
    );
}

#[test]
fn a_corrupted_shard_is_detected_and_rerendered() {
    let tmp = tempfile::tempdir().unwrap();
    let config = config_with_small_shards(tmp.path(), 40);
    run(&config);
    let set = tmp.path().join("out/shards/stage1/train");
    let shard = set.join("shard-00000.safetensors");
    let good = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &good[..good.len() / 2]).unwrap();
    let err = fails(wingflow().arg("inspect").arg(&set));
    assert!(err.contains("failed their check"), "{err}");
    let summary = run(&config);
    assert_eq!(result_of(&summary, "render"), "ran", "{summary}");
    assert_eq!(
        std::fs::read(&shard).unwrap(),
        good,
        "re-rendered shard differs"
    );
    ok(wingflow().arg("inspect").arg(&set));
}

#[test]
fn a_run_killed_midway_completes_on_the_next_run() {
    let tmp = tempfile::tempdir().unwrap();
    let config = config_with_small_shards(tmp.path(), 80);
    run(&config);
    let reference = tree(&tmp.path().join("out"));
    for delay_ms in [150u64, 400, 900] {
        std::fs::remove_dir_all(tmp.path().join("out")).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_wingflow"))
            .arg("run")
            .arg("--config")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        run(&config);
        let status = stdout(&ok(wingflow().arg("status").arg("--config").arg(&config)));
        assert!(
            !status.contains("stale"),
            "after kill at {delay_ms} ms:\n{status}"
        );
        let again = tree(&tmp.path().join("out"));
        for (path, bytes) in &reference {
            let name = path.to_string_lossy();
            if name.ends_with(".safetensors") || name.ends_with(".parquet") {
                assert!(
                    again.get(path) == Some(bytes),
                    "{name} differs after a kill at {delay_ms} ms"
                );
            }
        }
        let leftovers: Vec<_> = again
            .keys()
            .filter(|p| p.to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(
            leftovers.is_empty(),
            "temporary files left after kill at {delay_ms} ms and a re-run: {leftovers:?}"
        );
    }
}
