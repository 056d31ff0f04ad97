//! Behaviour of the pipeline as a whole: freshness, reasons, early cut-off, failures, locking.

use std::cell::Cell;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use manifests::{AtomicFile, Record, RunLock, write_atomic};
use serde_json::{Value, json};

use crate::*;

fn quiet(_: &Event<'_>) {}

/// Run counters and a switch that makes `count` crash.
#[derive(Default)]
struct Probe {
    upper_runs: Cell<u32>,
    count_runs: Cell<u32>,
    count_crashes: Cell<bool>,
}

/// A two-stage pipeline: `upper` turns the external `src` into `upper.txt` (upper-cased unless
/// `params.mode` is "keep"); `count` writes the byte length of `upper.txt` into `count.txt`.
fn two_stages<'a>(
    root: &Path,
    src: &Path,
    upper_version: &str,
    upper_params: Value,
    count_version: &str,
    probe: &'a Probe,
) -> Pipeline<'a> {
    let upper = Stage::new("upper", upper_version, move |ctx| {
        probe.upper_runs.set(probe.upper_runs.get() + 1);
        let text = fs::read_to_string(&ctx.inputs()[0])?;
        let out = match ctx.params()["mode"].as_str() {
            Some("keep") => text.clone(),
            _ => text.to_uppercase(),
        };
        write_atomic(&ctx.outputs()[0], out.as_bytes())?;
        Ok(StageReport::new().rows("lines", text.lines().count() as u64))
    })
    .params(upper_params)
    .input(src)
    .output("upper.txt");
    let count = Stage::new("count", count_version, move |ctx| {
        probe.count_runs.set(probe.count_runs.get() + 1);
        let text = fs::read_to_string(&ctx.inputs()[0])?;
        let mut out = AtomicFile::create(&ctx.outputs()[0])?;
        write!(out, "{}", text.len())?;
        if probe.count_crashes.get() {
            // What SIGKILL mid-write leaves: a temp file that is never renamed or cleaned up.
            std::mem::forget(out);
            return Err("disk on fire".into());
        }
        out.commit()?;
        Ok(StageReport::new().rows("bytes", text.len() as u64))
    })
    .input("upper.txt")
    .output("count.txt");
    Pipeline::new(root).with(upper).with(count)
}

/// A temp dir with `src.txt` outside the output root `out/`.
fn setup(contents: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.txt");
    fs::write(&src, contents).unwrap();
    let root = dir.path().join("out");
    (dir, root, src)
}

fn reasons(report: &StatusReport, stage: &str) -> Vec<String> {
    report
        .get(stage)
        .unwrap()
        .reasons
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn run(pipeline: &mut Pipeline<'_>) -> RunSummary {
    pipeline.run(&RunOptions::default(), &quiet).unwrap()
}

#[test]
fn first_run_runs_everything_and_second_run_is_fresh() {
    let (_dir, root, src) = setup("abc\n");
    let probe = Probe::default();
    let mut p = two_stages(&root, &src, "1", json!({"mode": "upper"}), "1", &probe);
    assert_eq!(
        reasons(&p.status(HashPolicy::TrustStat).unwrap(), "count"),
        ["never run", "upstream stage `upper` is stale"]
    );

    let summary = run(&mut p);
    assert_eq!(summary.ran(), ["upper", "count"]);
    assert_eq!(
        summary.get("upper").unwrap().outcome,
        Outcome::Ran {
            reasons: vec![StaleReason::NeverRun]
        }
    );
    assert_eq!(fs::read_to_string(root.join("count.txt")).unwrap(), "4");

    let again = run(&mut p);
    assert!(again.ran().is_empty(), "{again}");
    assert_eq!((probe.upper_runs.get(), probe.count_runs.get()), (1, 1));
    assert_eq!(
        again.get("count").unwrap().rows["bytes"],
        4,
        "fresh rows come from the record"
    );
    let table = again.to_string();
    assert!(
        table.starts_with("stage  result  rows     duration\n"),
        "{table}"
    );
    assert!(table.contains("upper  fresh   lines=1  -"), "{table}");
    assert!(p.status(HashPolicy::TrustStat).unwrap().all_fresh());
    assert!(p.status(HashPolicy::Rehash).unwrap().all_fresh());
}

#[test]
fn param_change_names_the_parameter_and_identical_output_cuts_off_downstream() {
    let (_dir, root, src) = setup("abc\n");
    let probe = Probe::default();
    run(&mut two_stages(
        &root,
        &src,
        "1",
        json!({"mode": "upper", "bins": 9}),
        "1",
        &probe,
    ));

    let mut p = two_stages(
        &root,
        &src,
        "1",
        json!({"mode": "upper", "bins": 12}),
        "1",
        &probe,
    );
    let status = p.status(HashPolicy::TrustStat).unwrap();
    assert_eq!(reasons(&status, "upper"), ["params.bins: 9 → 12"]);
    assert_eq!(
        reasons(&status, "count"),
        ["upstream stage `upper` is stale"]
    );
    print!("{status}");

    let summary = run(&mut p);
    // `upper` re-ran but wrote the same bytes, so `count` sees unchanged inputs.
    assert_eq!(summary.ran(), ["upper"]);
    assert_eq!(summary.get("count").unwrap().outcome, Outcome::Fresh);
    assert_eq!((probe.upper_runs.get(), probe.count_runs.get()), (2, 1));
}

#[test]
fn code_version_change_reruns_and_changed_output_propagates_with_its_producer() {
    let (_dir, root, src) = setup("abc\n");
    let probe = Probe::default();
    run(&mut two_stages(
        &root,
        &src,
        "1",
        json!({"mode": "upper"}),
        "1",
        &probe,
    ));

    let mut p = two_stages(&root, &src, "2", json!({"mode": "upper"}), "1", &probe);
    assert_eq!(
        reasons(&p.status(HashPolicy::TrustStat).unwrap(), "upper"),
        ["code version changed: 1 → 2"]
    );
    assert_eq!(run(&mut p).ran(), ["upper"]);

    let mut p = two_stages(&root, &src, "2", json!({"mode": "keep"}), "1", &probe);
    let summary = run(&mut p);
    assert_eq!(summary.ran(), ["upper", "count"]);
    let Outcome::Ran { reasons } = &summary.get("count").unwrap().outcome else {
        panic!("count should have run");
    };
    assert_eq!(
        reasons,
        &[StaleReason::InputChanged {
            path: "upper.txt".into(),
            change: InputChange::Content,
            producer: Some("upper".into()),
        }]
    );
    assert_eq!(
        reasons[0].to_string(),
        "input upper.txt: content changed (written by `upper`)"
    );
}

#[test]
fn touching_an_input_without_changing_it_keeps_everything_fresh() {
    let (_dir, root, src) = setup("abc\n");
    let probe = Probe::default();
    let mut p = two_stages(&root, &src, "1", json!({}), "1", &probe);
    run(&mut p);
    for file in [src.clone(), root.join("upper.txt")] {
        fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(SystemTime::now() - Duration::from_secs(7200))
            .unwrap();
    }
    assert!(p.status(HashPolicy::TrustStat).unwrap().all_fresh());
    assert!(run(&mut p).ran().is_empty());
}

#[test]
fn same_size_input_edit_is_detected() {
    let (_dir, root, src) = setup("abc\n");
    let probe = Probe::default();
    let mut p = two_stages(&root, &src, "1", json!({}), "1", &probe);
    run(&mut p);
    fs::write(&src, "xyz\n").unwrap();
    let status = p.status(HashPolicy::TrustStat).unwrap();
    assert_eq!(
        reasons(&status, "upper"),
        [format!("input {}: content changed", src.display())]
    );
    assert_eq!(run(&mut p).ran(), ["upper", "count"]);
    assert_eq!(fs::read_to_string(root.join("upper.txt")).unwrap(), "XYZ\n");
}

#[test]
fn missing_or_modified_outputs_make_their_stage_stale() {
    let (_dir, root, src) = setup("abc\n");
    let probe = Probe::default();
    let mut p = two_stages(&root, &src, "1", json!({}), "1", &probe);
    run(&mut p);
    let count = root.join("count.txt");

    fs::remove_file(&count).unwrap();
    let status = p.status(HashPolicy::TrustStat).unwrap();
    assert_eq!(reasons(&status, "count"), ["output count.txt: missing"]);
    assert!(status.get("upper").unwrap().is_fresh());

    fs::write(&count, "999").unwrap();
    assert_eq!(
        reasons(&p.status(HashPolicy::TrustStat).unwrap(), "count"),
        ["output count.txt: modified (size 1 → 3 bytes)"]
    );
    assert_eq!(run(&mut p).ran(), ["count"]);
    assert_eq!(fs::read_to_string(&count).unwrap(), "4");
}

#[test]
fn crashed_stage_keeps_the_record_and_reruns_next_time() {
    let (_dir, root, src) = setup("abc\n");
    let probe = Probe::default();
    run(&mut two_stages(&root, &src, "1", json!({}), "1", &probe));
    let record_path = Record::path_in(&root);
    let record_before = fs::read(&record_path).unwrap();

    probe.count_crashes.set(true);
    let mut p = two_stages(&root, &src, "1", json!({}), "2", &probe);
    let err = p.run(&RunOptions::default(), &quiet).unwrap_err();
    assert_eq!(err.to_string(), "stage `count` failed: disk on fire");
    assert_eq!(
        fs::read(&record_path).unwrap(),
        record_before,
        "record untouched"
    );
    assert_eq!(fs::read_to_string(root.join("count.txt")).unwrap(), "4");
    let leftovers: Vec<_> = fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".count.txt.tmp-"))
        .collect();
    assert_eq!(leftovers.len(), 1, "the crash left its temp file");

    probe.count_crashes.set(false);
    let removed = Mutex::new(Vec::new());
    let summary = p
        .run(&RunOptions::default(), &|event: &Event<'_>| {
            if let Event::TempFilesRemoved { paths } = event {
                removed.lock().unwrap().extend(paths.iter().cloned());
            }
        })
        .unwrap();
    assert_eq!(summary.ran(), ["count"]);
    assert_eq!(removed.into_inner().unwrap(), [root.join(&leftovers[0])]);
    let record = Record::load(&record_path).unwrap();
    assert_eq!(record.stage("count").unwrap().code_version, "2");
}

#[test]
fn crash_on_first_run_keeps_upstream_manifest_only() {
    let (_dir, root, src) = setup("abc\n");
    let probe = Probe::default();
    probe.count_crashes.set(true);
    let mut p = two_stages(&root, &src, "1", json!({}), "1", &probe);
    assert!(p.run(&RunOptions::default(), &quiet).is_err());
    let record = Record::load(&Record::path_in(&root)).unwrap();
    assert_eq!(record.stages.keys().collect::<Vec<_>>(), ["upper"]);
    assert!(!root.join("count.txt").exists());

    probe.count_crashes.set(false);
    assert_eq!(run(&mut p).ran(), ["count"]);
}

#[test]
fn a_concurrent_run_is_refused_with_a_clear_message() {
    let (_dir, root, src) = setup("abc\n");
    let probe = Probe::default();
    let mut p = two_stages(&root, &src, "1", json!({}), "1", &probe);
    let held = RunLock::acquire(&root).unwrap();
    let err = p
        .run(&RunOptions::default(), &quiet)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!(
            "another wingflow run holds {} (pid {})",
            held.path().display(),
            std::process::id()
        )
    );
    assert_eq!(probe.upper_runs.get(), 0);
    drop(held);
    assert_eq!(run(&mut p).ran(), ["upper", "count"]);
}

#[test]
fn until_runs_only_what_the_target_needs_and_force_reruns() {
    let (_dir, root, src) = setup("abc\n");
    let probe = Probe::default();
    let mut p = two_stages(&root, &src, "1", json!({}), "1", &probe);
    let until = RunOptions {
        until: Some("upper".into()),
        ..RunOptions::default()
    };
    let summary = p.run(&until, &quiet).unwrap();
    assert_eq!(summary.ran(), ["upper"]);
    assert_eq!(summary.get("count").unwrap().outcome, Outcome::Skipped);

    let force = RunOptions {
        force: vec!["upper".into()],
        ..RunOptions::default()
    };
    let summary = p.run(&force, &quiet).unwrap();
    assert_eq!(
        summary.get("upper").unwrap().outcome,
        Outcome::Ran {
            reasons: vec![StaleReason::Forced]
        }
    );
    assert_eq!(summary.ran(), ["upper", "count"], "count had never run");
    let summary = p.run(&force, &quiet).unwrap();
    assert_eq!(summary.ran(), ["upper"]);

    let unknown = RunOptions {
        until: Some("nope".into()),
        ..RunOptions::default()
    };
    assert_eq!(
        p.run(&unknown, &quiet).unwrap_err().to_string(),
        "no stage is named `nope` (stages: upper, count)"
    );
}

fn noop(_: &StageContext<'_>) -> Result<StageReport, BoxError> {
    Ok(StageReport::new())
}

#[test]
fn invalid_graphs_are_rejected_with_the_stages_named() {
    let dir = tempfile::tempdir().unwrap();
    let err = |p: Pipeline<'_>| p.status(HashPolicy::TrustStat).unwrap_err().to_string();

    let cycle = Pipeline::new(dir.path())
        .with(Stage::new("a", "1", noop).after("c"))
        .with(Stage::new("b", "1", noop).after("a"))
        .with(Stage::new("c", "1", noop).after("b"));
    assert_eq!(err(cycle), "the stages form a cycle: a → b → c → a");

    let unknown = Pipeline::new(dir.path()).with(Stage::new("a", "1", noop).after("x"));
    assert_eq!(
        err(unknown),
        "stage `a` runs after `x`, which is not a declared stage"
    );

    let overlap = Pipeline::new(dir.path())
        .with(Stage::new("render", "1", noop).output("shards"))
        .with(Stage::new("index", "1", noop).output("./shards/index.json"));
    assert_eq!(
        err(overlap),
        format!(
            "stages `render` and `index` both write {}",
            dir.path().join("shards/index.json").display()
        )
    );

    let duplicate = Pipeline::new(dir.path())
        .with(Stage::new("a", "1", noop))
        .with(Stage::new("a", "1", noop));
    assert_eq!(err(duplicate), "two stages are named `a`");

    let own = Pipeline::new(dir.path()).with(Stage::new("a", "1", noop).input("o/x").output("o"));
    assert!(err(own).starts_with("stage `a` reads its own output"));
}

#[test]
fn missing_external_input_is_an_error_naming_stage_and_path() {
    let dir = tempfile::tempdir().unwrap();
    let ghost = dir.path().join("ghost.jpg");
    let mut p = Pipeline::new(dir.path().join("out")).with(
        Stage::new("ingest", "1", noop)
            .input(&ghost)
            .output("faces"),
    );
    let err = p
        .run(&RunOptions::default(), &quiet)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!(
            "stage `ingest` cannot run: input {} does not exist",
            ghost.display()
        )
    );
}

#[test]
fn after_without_inputs_fingerprints_the_upstream_outputs() {
    let (_dir, root, src) = setup("abc\n");
    let probe = Probe::default();
    let reports = Cell::new(0);
    let build = |params: Value| {
        two_stages(&root, &src, "1", params, "1", &probe).with(
            Stage::new("report", "1", |ctx| {
                reports.set(reports.get() + 1);
                write_atomic(&ctx.outputs()[0], b"ok")?;
                Ok(StageReport::new())
            })
            .after("upper")
            .output("report.txt"),
        )
    };
    assert_eq!(
        run(&mut build(json!({}))).ran(),
        ["upper", "count", "report"]
    );
    assert_eq!(run(&mut build(json!({"bins": 3}))).ran(), ["upper"]);
    let summary = run(&mut build(json!({"mode": "keep"})));
    assert_eq!(summary.ran(), ["upper", "count", "report"]);
    assert_eq!(reports.get(), 2);
}

#[test]
fn directory_outputs_and_inputs_are_tracked_file_by_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("out");
    let mut p = Pipeline::new(&root)
        .with(
            Stage::new("render", "1", |ctx| {
                let shards = &ctx.outputs()[0];
                fs::create_dir_all(shards.join("train"))?;
                for i in 0..3 {
                    write_atomic(shards.join(format!("train/shard-{i}")), &[i as u8; 16])?;
                }
                Ok(StageReport::new().rows("shards", 3))
            })
            .output("shards"),
        )
        .with(
            Stage::new("index", "1", |ctx| {
                let n = fs::read_dir(ctx.inputs()[0].join("train"))?.count();
                write_atomic(&ctx.outputs()[0], n.to_string().as_bytes())?;
                Ok(StageReport::new())
            })
            .input("shards")
            .output("index.txt"),
        );
    run(&mut p);
    let shard = root.join("shards/train/shard-1");
    fs::write(&shard, [9u8; 16]).unwrap();
    let status = p.status(HashPolicy::TrustStat).unwrap();
    assert_eq!(
        reasons(&status, "render"),
        ["output shards: modified (same size, different content)"]
    );
    assert_eq!(
        reasons(&status, "index"),
        [
            "input shards: content changed (written by `render`)",
            "upstream stage `render` is stale",
        ]
    );
    // Re-rendering restores the recorded bytes, so `index` is cut off.
    assert_eq!(run(&mut p).ran(), ["render"]);
    assert!(p.status(HashPolicy::Rehash).unwrap().all_fresh());
}

#[test]
fn progress_and_lifecycle_events_reach_the_callback() {
    let (_dir, root, src) = setup("abc\n");
    let events = Mutex::new(Vec::new());
    let on_event = |event: &Event<'_>| {
        let line = match event {
            Event::Checking { stage } => format!("check {stage}"),
            Event::Started { stage, reasons } => format!("start {stage} {}", reasons.len()),
            Event::Progress { stage, done, total } => format!("progress {stage} {done}/{total}"),
            Event::Finished { stage, .. } => format!("finish {stage}"),
            Event::Fresh { stage } => format!("fresh {stage}"),
            other => format!("{other:?}"),
        };
        events.lock().unwrap().push(line);
    };
    let mut p = Pipeline::new(&root).with(
        Stage::new("render", "1", |ctx| {
            // Progress may come from worker threads.
            std::thread::scope(|s| {
                s.spawn(|| ctx.progress(1, 2));
            });
            ctx.progress(2, 2);
            write_atomic(&ctx.outputs()[0], b"x")?;
            Ok(StageReport::new())
        })
        .input(&src)
        .output("r"),
    );
    p.run(&RunOptions::default(), &on_event).unwrap();
    p.run(&RunOptions::default(), &on_event).unwrap();
    assert_eq!(
        events.into_inner().unwrap(),
        [
            "check render",
            "start render 1",
            "progress render 1/2",
            "progress render 2/2",
            "finish render",
            "check render",
            "fresh render",
        ]
    );
}
