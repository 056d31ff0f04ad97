//! A training stage killed mid-run (or aborted right after any checkpoint write) resumes from
//! its last committed checkpoint on the next `wingflow run`, and ends where an uninterrupted run
//! ends.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use contract::layout::training_run::CHECKPOINT_POINTER;

use crate::common::{fails, ok, project_300w, wingflow};

/// A project that trains CNN-6 for 80 steps of 4 (a checkpoint every 4 steps) and CNN-7 for 2.
fn project(root: &Path) -> PathBuf {
    let config = project_300w(root, 40, "");
    let text = std::fs::read_to_string(&config).unwrap();
    let edits = [
        ("enabled = false", "enabled = true"),
        ("device = \"auto\"", "device = \"cpu\""),
        ("epochs = 4", "epochs = 2"),
        (
            "[train.cnn6]\nsteps = 2000\nbatch_size = 32",
            "[train.cnn6]\nsteps = 80\nbatch_size = 4",
        ),
        (
            "[train.cnn7]\nsteps = 2000\nbatch_size = 32",
            "[train.cnn7]\nsteps = 2\nbatch_size = 2",
        ),
    ];
    let mut text = text;
    for (from, to) in edits {
        assert!(text.contains(from), "no `{from}` in\n{text}");
        text = text.replace(from, to);
    }
    std::fs::write(&config, text).unwrap();
    config
}

fn evaluation(root: &Path) -> serde_json::Value {
    let path = root.join("out/reports/evaluation.json");
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

#[test]
fn a_killed_training_stage_resumes_from_its_checkpoint() {
    let whole = tempfile::tempdir().unwrap();
    let config = project(whole.path());
    ok(wingflow().arg("run").arg("--config").arg(&config));
    let expected = evaluation(whole.path());

    let killed = tempfile::tempdir().unwrap();
    let config = project(killed.path());
    // Its own process group, so the kill takes `wingflow-train` with it (as Ctrl-C would).
    let mut child = wingflow()
        .arg("run")
        .arg("--config")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let work = killed.path().join("out/models/.stage1.partial");
    let started = Instant::now();
    let checkpointed = || committed_step(&work).is_some_and(|s| (8..80).contains(&s));
    while !checkpointed() {
        assert!(child.try_wait().unwrap().is_none(), "training ended first");
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "no checkpoint"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let group = child.id() as i32;
    // SAFETY: signalling a process group this test started.
    unsafe { libc_kill(-group, 9) };
    child.wait().unwrap();
    assert!(!killed.path().join("out/models/stage1").exists());

    let out = ok(wingflow().arg("run").arg("--config").arg(&config));
    let log =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        log.contains("train1: resuming the interrupted run"),
        "{log}"
    );
    assert!(!work.exists(), "the work folder was not swapped in");
    assert_eq!(evaluation(killed.path()), expected, "resumed run differs");
    // Checkpoints are written byte-stably, so the resumed CNN-6 is the uninterrupted one's file.
    let weights = |root: &Path| std::fs::read(root.join("out/models/stage1/last.safetensors"));
    assert!(
        weights(killed.path()).unwrap() == weights(whole.path()).unwrap(),
        "the resumed run's weights differ from the uninterrupted run's"
    );
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, signal: i32) -> i32;
}

/// The step of the `last` checkpoint generation the pointer in a training folder names.
fn committed_step(work: &Path) -> Option<u64> {
    let bytes = std::fs::read(work.join(CHECKPOINT_POINTER)).ok()?;
    let pointer: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    pointer["last"]
        .as_str()?
        .strip_prefix("last-")?
        .parse()
        .ok()
}

/// `wingflow-train` aborted right after one of its checkpoint writes
/// (`WINGFLOW_TRAIN_ABORT_AFTER_WRITE`, inherited from `wingflow`) leaves a folder that the
/// next `wingflow run` resumes from the last committed checkpoint (or, with none committed,
/// trains afresh), to the uninterrupted run's model and evaluation.
#[test]
fn a_training_stage_aborted_after_any_checkpoint_write_resumes_to_the_same_model() {
    let tmp = tempfile::tempdir().unwrap();
    let config = project(tmp.path());
    ok(wingflow().arg("run").arg("--config").arg(&config));
    let expected = evaluation(tmp.path());
    let model = tmp.path().join("out/models/stage1");
    let weights = || std::fs::read(model.join("last.safetensors")).unwrap();
    let uninterrupted = weights();
    let work = tmp.path().join("out/models/.stage1.partial");
    // CNN-6 checkpoints every 4 steps and validates at the end only, so its checkpoint writes
    // are 7 a generation: at step 4, writes 1–7; at step 8, the weights (8), the optimiser
    // state (9), the record (10), the generation renamed in (11), the pointer (12), the two
    // exports (13, 14). Each k: the step the pointer names after the abort (None: no pointer).
    let cases = [
        (4, None),
        (8, Some(4)),
        (9, Some(4)),
        (10, Some(4)),
        (11, Some(4)),
        (12, Some(8)),
        (13, Some(8)),
    ];
    for (k, committed) in cases {
        // Train CNN-6 again (and evaluate again) from scratch.
        std::fs::remove_dir_all(&model).unwrap();
        std::fs::remove_dir_all(tmp.path().join("out/reports")).unwrap();
        let stderr = fails(
            wingflow()
                .args(["run", "--until", "train1", "--config"])
                .arg(&config)
                .env("WINGFLOW_TRAIN_ABORT_AFTER_WRITE", k.to_string()),
        );
        assert!(
            stderr.contains(&format!("aborting after checkpoint write {k}")),
            "write {k}: {stderr}"
        );
        assert_eq!(committed_step(&work), committed, "write {k}");
        let out = ok(wingflow().arg("run").arg("--config").arg(&config));
        let log = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        match committed {
            Some(step) => assert!(
                log.contains("train1: resuming the interrupted run")
                    && log.contains(&format!(
                        "resume: resuming from last-{step:09} (step {step})"
                    )),
                "write {k}: {log}"
            ),
            None => assert!(!log.contains("resuming"), "write {k}: {log}"),
        }
        assert!(weights() == uninterrupted, "write {k}: the weights differ");
        assert_eq!(evaluation(tmp.path()), expected, "write {k}");
    }
}

/// Append `[train]` keys to a project's config (after its `[train]` table's other keys).
fn set_train_keys(config: &Path, keys: &str) {
    let text = std::fs::read_to_string(config).unwrap();
    let text = text.replacen("[train]\n", &format!("[train]\n{keys}"), 1);
    std::fs::write(config, text).unwrap();
}

#[test]
fn named_runs_share_the_shards_and_keep_each_others_results() {
    let tmp = tempfile::tempdir().unwrap();
    let config = project(tmp.path());
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("steps = 80\n", "steps = 4\n");
    std::fs::write(&config, &text).unwrap();
    let out = tmp.path().join("out");
    let wingflow_with = |command: &str, keys: &str| {
        std::fs::write(&config, &text).unwrap();
        set_train_keys(&config, keys);
        let output = ok(wingflow().arg(command).arg("--config").arg(&config));
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let run_a = "run = \"a\"\nseed = 1\nvalidation = false\n";
    wingflow_with("run", run_a);
    let a = out.join("reports/a/evaluation.json");
    let a_report = std::fs::read(&a).unwrap();
    assert!(out.join("models/a/stage2/last.safetensors").exists());
    assert!(
        !out.join("models/a/stage1/best.safetensors").exists(),
        "no validation"
    );
    // Run b, on CNN-6 alone: only its own stages run; a's results stay.
    let summary = wingflow_with("run", "run = \"b\"\nseed = 2\nsecond_stage = false\n");
    assert!(
        summary.contains("train1@b") && !summary.contains("train2@b"),
        "{summary}"
    );
    assert!(out.join("models/b/stage1/last.safetensors").exists());
    assert!(!out.join("models/b/stage2").exists());
    assert_eq!(std::fs::read(&a).unwrap(), a_report);
    // Back to a: everything fresh, nothing retrained.
    let status = wingflow_with("status", run_a);
    assert!(
        status.contains("evaluate@a") && !status.contains("stale"),
        "{status}"
    );
    // CNN-7's budget is CNN-7's alone: changing it retrains train2@a, not train1@a.
    let cnn7_steps = "[train.cnn7]\nsteps = 2\n";
    assert!(text.contains(cnn7_steps));
    let text = text.replace(cnn7_steps, "[train.cnn7]\nsteps = 3\n");
    std::fs::write(&config, &text).unwrap();
    set_train_keys(&config, run_a);
    let summary =
        String::from_utf8_lossy(&ok(wingflow().arg("run").arg("--config").arg(&config)).stdout)
            .into_owned();
    let outcome = |stage: &str| {
        summary
            .lines()
            .find(|l| l.split_whitespace().next() == Some(stage))
            .and_then(|l| l.split_whitespace().nth(1))
            .map(str::to_owned)
    };
    assert_eq!(outcome("train1@a").as_deref(), Some("fresh"), "{summary}");
    assert_eq!(outcome("train2@a").as_deref(), Some("ran"), "{summary}");
    // The two seeds trained different networks on the same shards.
    let weights = |run: &str| {
        std::fs::read(out.join(format!("models/{run}/stage1/last.safetensors"))).unwrap()
    };
    assert_ne!(weights("a"), weights("b"));
}
