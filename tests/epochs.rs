//! Augmentation epochs through the CLI: every training crop augmented, the kept original, epochs
//! as independent units (raising renders only the new ones, lowering leaves them to `gc`).

use std::path::{Path, PathBuf};

use polars::prelude::*;

use crate::common::{ok, project_300w, stdout, tree, wingflow};

/// A project rendering `epochs` augmentation epochs, with `augment` lines in [render.augment].
fn project(root: &Path, epochs: u32, augment: &[&str]) -> PathBuf {
    let config = project_300w(root, 40, "");
    set_epochs(&config, epochs);
    let mut text = std::fs::read_to_string(&config).unwrap();
    for line in augment {
        let key = line.split('=').next().unwrap().trim();
        let old = text
            .lines()
            .find(|l| l.starts_with(&format!("{key} =")))
            .unwrap_or_else(|| panic!("no `{key}` in\n{text}"))
            .to_owned();
        text = text.replace(&old, line);
    }
    std::fs::write(&config, text).unwrap();
    config
}

fn set_epochs(config: &Path, epochs: u32) {
    let text = std::fs::read_to_string(config).unwrap();
    let old = text
        .lines()
        .find(|l| l.starts_with("epochs ="))
        .expect("init writes [render] epochs")
        .to_owned();
    std::fs::write(config, text.replace(&old, &format!("epochs = {epochs}"))).unwrap();
}

fn run(config: &Path) -> String {
    let out = ok(wingflow().arg("run").arg("--config").arg(config));
    format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr))
}

/// The training set of crop level 1, augmentation epoch `epoch`.
fn train_set(root: &Path, epoch: u32) -> PathBuf {
    let set = root.join("out/shards/stage1/train");
    if epoch == 0 {
        set
    } else {
        set.join(format!("augmentation-epoch-{epoch:03}"))
    }
}

fn samples(set: &Path) -> DataFrame {
    let file = std::fs::File::open(set.join("samples.parquet")).unwrap();
    ParquetReader::new(file).finish().unwrap()
}

/// Whether each row's crop is the identity augmentation (geometry and photometry).
fn identity_rows(df: &DataFrame) -> Vec<bool> {
    let f = |name: &str| -> Vec<f64> {
        df.column(name)
            .unwrap()
            .f64()
            .unwrap()
            .into_no_null_iter()
            .collect()
    };
    let neutral = [
        ("rotation_deg", 0.0),
        ("translate_x", 0.0),
        ("translate_y", 0.0),
        ("scale", 1.0),
        ("brightness", 1.0),
        ("contrast", 1.0),
        ("saturation", 1.0),
        ("blur_sigma", 0.0),
    ];
    let columns: Vec<(Vec<f64>, f64)> = neutral.iter().map(|(n, v)| (f(n), *v)).collect();
    (0..df.height())
        .map(|i| columns.iter().all(|(c, v)| c[i] == *v))
        .collect()
}

fn replicas(df: &DataFrame) -> Vec<u32> {
    df.column("replica")
        .unwrap()
        .u32()
        .unwrap()
        .into_no_null_iter()
        .collect()
}

#[test]
fn every_training_crop_is_augmented_unless_the_original_is_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let config = project(tmp.path(), 2, &[]);
    run(&config);
    for epoch in [0, 1] {
        let df = samples(&train_set(tmp.path(), epoch));
        assert!(df.height() > 0);
        assert!(
            identity_rows(&df).iter().all(|&id| !id),
            "epoch {epoch} has an unaugmented training crop"
        );
    }
    // Two epochs of one row differ; validation crops are never augmented.
    let (e0, e1) = (
        samples(&train_set(tmp.path(), 0)),
        samples(&train_set(tmp.path(), 1)),
    );
    assert_eq!(
        e0.column("sample_id").unwrap(),
        e1.column("sample_id").unwrap()
    );
    assert_ne!(
        e0.column("translate_x").unwrap(),
        e1.column("translate_x").unwrap()
    );
    let val = samples(&tmp.path().join("out/shards/stage1/val"));
    assert!(identity_rows(&val).iter().all(|&id| id));
    assert!(
        !tmp.path()
            .join("out/shards/stage1/val/augmentation-epoch-001")
            .exists()
    );

    let tmp = tempfile::tempdir().unwrap();
    let config = project(tmp.path(), 2, &["keep_original = true"]);
    run(&config);
    let e0 = samples(&train_set(tmp.path(), 0));
    let kept: Vec<bool> = replicas(&e0).iter().map(|&r| r == 0).collect();
    assert!(kept.iter().any(|&k| k) && kept.iter().any(|&k| !k));
    assert_eq!(
        identity_rows(&e0),
        kept,
        "exactly the replica-0 rows of epoch 0"
    );
    let e1 = samples(&train_set(tmp.path(), 1));
    assert!(identity_rows(&e1).iter().all(|&id| !id));
}

#[test]
fn raising_epochs_renders_only_the_new_ones_and_gc_removes_the_surplus() {
    let tmp = tempfile::tempdir().unwrap();
    let config = project(tmp.path(), 4, &[]);
    run(&config);
    let shards = tmp.path().join("out/shards");
    let before = tree(&shards);
    let index = |epoch| -> serde_json::Value {
        serde_json::from_slice(
            &std::fs::read(train_set(tmp.path(), epoch).join("index.json")).unwrap(),
        )
        .unwrap()
    };
    assert_eq!(index(0)["augmentation_epochs"], 4);
    assert!(index(3)["shards"].as_array().is_some_and(|s| !s.is_empty()));

    set_epochs(&config, 6);
    let log = run(&config);
    for epoch in 0..4 {
        assert!(
            log.contains(&format!("augmentation epoch {epoch}: 0 shard(s) rendered")),
            "epoch {epoch} re-rendered:\n{log}"
        );
    }
    for epoch in [4, 5] {
        assert!(
            !log.contains(&format!("augmentation epoch {epoch}: 0 shard(s) rendered")),
            "epoch {epoch} not rendered:\n{log}"
        );
        assert!(train_set(tmp.path(), epoch).join("index.json").exists());
    }
    let after = tree(&shards);
    for (path, bytes) in &before {
        if path.extension().is_some_and(|e| e == "safetensors") {
            assert_eq!(&after[path], bytes, "{} changed", path.display());
        }
    }
    assert_eq!(index(0)["augmentation_epochs"], 6);

    set_epochs(&config, 4);
    run(&config);
    assert!(
        train_set(tmp.path(), 5).exists(),
        "lowering epochs removed data"
    );
    assert_eq!(index(0)["augmentation_epochs"], 4);
    let gc = stdout(&ok(wingflow().arg("gc").arg("--config").arg(&config)));
    for epoch in [4, 5] {
        let name = format!("augmentation-epoch-{epoch:03}");
        assert!(gc.contains(&name), "gc did not list epoch {epoch}:\n{gc}");
        assert!(!train_set(tmp.path(), epoch).exists());
        assert!(!shards.join("stage2/train").join(&name).exists());
    }
    assert!(train_set(tmp.path(), 3).join("index.json").exists());
}
