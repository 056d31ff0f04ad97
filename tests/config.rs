//! The whole `wingflow.toml` is checked before any stage runs: each bad setting fails `run`
//! naming the file, the line, the key and the allowed values, and nothing is written under the
//! output root.

use std::path::Path;

use crate::common::{fails, ok, wingflow};

/// A project whose only source is an (empty) 300W folder, with `extra` appended.
fn project(root: &Path, extra: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(root.join("data/300w")).unwrap();
    let config = root.join("wingflow.toml");
    let text =
        format!("output = \"out\"\n\n[[sources]]\nkind = \"300w\"\npath = \"data/300w\"\n{extra}");
    std::fs::write(&config, text).unwrap();
    config
}

/// `run` fails; its message names `file:line: key:` and the allowed values; no output root.
fn refused(root: &Path, config: &Path, line: usize, key: &str, allowed: &str) {
    let err = fails(wingflow().arg("run").arg("--config").arg(config));
    let at = format!("wingflow.toml:{line}: {key}:");
    assert!(err.contains(&at), "no `{at}` in:\n{err}");
    assert!(err.contains(allowed), "no `{allowed}` in:\n{err}");
    assert_eq!(err.matches("error:").count(), 1, "printed once:\n{err}");
    assert!(!root.join("out").exists(), "{key}: something was written");
}

#[test]
fn a_misspelt_loss_is_refused_before_any_stage() {
    let tmp = tempfile::tempdir().unwrap();
    let config = project(tmp.path(), "\n[train]\nloss = \"wingg\"\n");
    refused(
        tmp.path(),
        &config,
        8,
        "train.loss",
        "wing, l1, l2, smooth-l1",
    );
}

#[test]
fn a_crop_size_the_network_does_not_take_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let config = project(tmp.path(), "\n[render]\nstage1_size = 48\n");
    refused(
        tmp.path(),
        &config,
        8,
        "render.stage1_size",
        "CNN-6 takes 64² crops",
    );
    // Without training, any crop size goes.
    let config = project(
        tmp.path(),
        "\n[render]\nstage1_size = 48\n[train]\nenabled = false\n",
    );
    ok(wingflow().arg("status").arg("--config").arg(&config));
}

#[test]
fn an_unknown_device_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let config = project(tmp.path(), "\n[train]\ndevice = \"gpu\"\n");
    refused(
        tmp.path(),
        &config,
        8,
        "train.device",
        "auto, cpu, cuda, cuda:N",
    );
}

#[test]
fn a_normaliser_the_scheme_lacks_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("data")).unwrap();
    std::fs::write(tmp.path().join("data/aflw.sqlite"), b"").unwrap();
    let config = tmp.path().join("wingflow.toml");
    std::fs::write(
        &config,
        "output = \"out\"\n\n[[sources]]\nkind = \"aflw-sqlite\"\npath = \"data/aflw.sqlite\"\n\n\
         [train]\nnormaliser = \"inter-pupil\"\n",
    )
    .unwrap();
    refused(
        tmp.path(),
        &config,
        8,
        "train.normaliser",
        "aflw19 allows box-width, inter-ocular, box-sqrt",
    );
}

#[test]
fn a_missing_source_is_refused_by_run_but_not_by_status() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("wingflow.toml");
    std::fs::write(
        &config,
        "output = \"out\"\n\n[[sources]]\nkind = \"300w\"\npath = \"nowhere\"\n",
    )
    .unwrap();
    refused(
        tmp.path(),
        &config,
        5,
        "sources[0].path",
        "an existing 300W folder",
    );
    ok(wingflow().arg("status").arg("--config").arg(&config));
}

#[test]
fn init_sets_keys_through_set_and_refuses_unknown_ones() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("data")).unwrap();
    let init = |set: &str| {
        let mut cmd = wingflow();
        cmd.current_dir(tmp.path())
            .args(["init", "data", "--force", "--set", set]);
        cmd
    };
    ok(&mut init("train.cnn6.steps=123"));
    let text = std::fs::read_to_string(tmp.path().join("wingflow.toml")).unwrap();
    assert!(text.contains("steps = 123"), "{text}");
    let err = fails(&mut init("train.cnn6.stepz=5"));
    assert!(err.contains("stepz") && err.contains("batch_size"), "{err}");
}

#[test]
fn init_refuses_a_setting_run_would_refuse_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    crate::common::synth(&tmp.path().join("data/300w"), "300w", 4, 1);
    let err = fails(wingflow().current_dir(tmp.path()).args([
        "init",
        "data",
        "--set",
        "train.loss=\"wingg\"",
    ]));
    assert!(err.contains("train.loss: `wingg`"), "{err}");
    assert!(!tmp.path().join("wingflow.toml").exists());
    ok(wingflow()
        .current_dir(tmp.path())
        .args(["init", "data", "--set", "train.loss=\"l1\""]));
    assert!(tmp.path().join("wingflow.toml").exists());
}

/// Values that parse but would switch a check off, fail late or exhaust memory are refused
/// at load, each naming its line (issue #28 item 5).
#[test]
fn out_of_range_settings_are_refused_at_load() {
    let cases: [(&str, usize, &str, &str); 8] = [
        (
            "\n[ingest]\nmax_outside_fraction = nan\n",
            8,
            "ingest.max_outside_fraction",
            "NaN (allowed: a finite number >= 0)",
        ),
        (
            "\n[ingest]\nmax_outside_fraction = -1\n",
            8,
            "ingest.max_outside_fraction",
            "-1 (allowed: a finite number >= 0)",
        ),
        (
            "\n[balance]\nbins = 100000000\n",
            8,
            "balance.bins",
            "(allowed: an integer from 1 to 10000)",
        ),
        (
            "\n[balance]\nuniform_train_rows = 1000000000\n",
            8,
            "balance.uniform_train_rows",
            "(allowed: at most 10000000 rows",
        ),
        (
            "\n[train]\nnormaliser = \"inter-pupil:41-36,47-42\"\n",
            8,
            "train.normaliser",
            "the range 41-36 is reversed",
        ),
        (
            "\n[pca]\npose_component = 99\n",
            8,
            "pca.pose_component",
            "99, but [pca] computes 10 components",
        ),
        (
            "\n[pca]\ncomponents = 200\n",
            8,
            "pca.components",
            "200 (allowed: an integer from 1 to 136)",
        ),
        (
            "\n[train.cnn6]\nweight_decay = -0.1\n",
            8,
            "train.cnn6.weight_decay",
            "(allowed: a finite number >= 0)",
        ),
    ];
    for (extra, line, key, allowed) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let config = project(tmp.path(), extra);
        refused(tmp.path(), &config, line, key, allowed);
    }
}

/// A 300w source's keys that only other kinds take are refused at load with their line, not
/// in ingest (issue #28 item 5).
#[test]
fn keys_a_300w_source_does_not_take_are_refused_at_load() {
    for (key, line_text, allowed) in [
        ("dataset", "dataset = \"mine\"", "allowed: `300w`"),
        (
            "split",
            "split = \"train\"",
            "300w splits come from its folders",
        ),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("data/300w")).unwrap();
        let config = tmp.path().join("wingflow.toml");
        std::fs::write(
            &config,
            format!(
                "output = \"out\"\n\n[[sources]]\nkind = \"300w\"\npath = \"data/300w\"\n{line_text}\n"
            ),
        )
        .unwrap();
        refused(
            tmp.path(),
            &config,
            6,
            &format!("sources[0].{key}"),
            allowed,
        );
    }
}
