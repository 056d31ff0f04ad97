//! Held-out splits by photo: faces cut from one photo (300W's `<photo>_<n>`) are held out
//! together, into `val` and `test`, and the choice survives re-runs and other run seeds.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use shapes::plan_table::read_plan_parquet;

use crate::common::{fails, ok, synth, wingflow};

/// A 300W tree of `count` synthetic faces whose training files are renamed into photos of
/// one to four faces each (`p<k>_<n>`, as AFW's are), and a config holding out by photo.
fn grouped_project(root: &Path, count: usize, balance: &str) -> std::path::PathBuf {
    let data = root.join("data/300w");
    synth(&data, "300w", count, 11);
    // poses.csv names the files as synth wrote them: optional, so left out.
    std::fs::remove_file(data.join("poses.csv")).unwrap();
    let mut photo = 0;
    for folder in ["afw", "helen/trainset", "lfpw/trainset"] {
        let dir = data.join(folder);
        let mut stems: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "pts"))
            .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
            .collect();
        stems.sort();
        let mut i = 0;
        while i < stems.len() {
            let faces = 1 + (photo % 4);
            for (n, stem) in stems[i..(i + faces).min(stems.len())].iter().enumerate() {
                for entry in std::fs::read_dir(&dir).unwrap() {
                    let path = entry.unwrap().path();
                    if path
                        .file_stem()
                        .is_some_and(|s| s.to_string_lossy() == *stem)
                    {
                        let ext = path.extension().unwrap().to_string_lossy().into_owned();
                        let to = dir.join(format!("p{photo}_{}.{ext}", n + 1));
                        std::fs::rename(&path, to).unwrap();
                    }
                }
            }
            i += faces;
            photo += 1;
        }
    }
    let config = root.join("wingflow.toml");
    let text = format!(
        "output = \"out\"\nseed = 3\n\n[[sources]]\nkind = \"300w\"\npath = \"data/300w\"\n\n[balance]\n{balance}\n\n[train]\nenabled = false\n"
    );
    std::fs::write(&config, text).unwrap();
    config
}

/// sample id → split, of replica 0 of every plan row.
fn splits(root: &Path) -> BTreeMap<String, String> {
    read_plan_parquet(&root.join("out/plan.parquet"))
        .unwrap()
        .into_iter()
        .filter(|r| r.replica == 0)
        .map(|r| (r.sample_id, r.split))
        .collect()
}

#[test]
fn no_photo_has_faces_on_two_sides_of_any_split() {
    let tmp = tempfile::tempdir().unwrap();
    let config = grouped_project(
        tmp.path(),
        240,
        "holdout = \"photo\"\nval_fraction = 0.2\ntest_fraction = 0.2",
    );
    ok(wingflow()
        .args(["run", "--until", "balance", "--config"])
        .arg(&config));
    let split_of = splits(tmp.path());
    let mut sides: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    let renamed = |id: &str| id.rsplit('/').next().is_some_and(|f| f.starts_with('p'));
    for (id, split) in split_of.iter().filter(|(id, _)| renamed(id)) {
        // `300w/afw/p12_3` → `300w/afw/p12`.
        let photo = id.rsplit_once('_').map_or(id.as_str(), |(p, _)| p);
        sides.entry(photo.to_owned()).or_default().insert(split);
    }
    let multi = sides.keys().filter(|p| {
        split_of
            .keys()
            .filter(|id| id.starts_with(&format!("{p}_")))
            .count()
            > 1
    });
    assert!(multi.count() > 20, "the fixture has few multi-face photos");
    for (photo, on) in &sides {
        assert_eq!(on.len(), 1, "photo {photo} is in {on:?}");
    }
    let count = |s: &str| split_of.values().filter(|v| *v == s).count();
    let train_faces = split_of.keys().filter(|id| renamed(id)).count() as f64;
    for split in ["val", "test"] {
        let share = count(split) as f64 / train_faces;
        assert!((0.12..0.28).contains(&share), "{split}: {share}");
    }
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("out/balance.json")).unwrap())
            .unwrap();
    assert_eq!(summary["test_carved"].as_u64(), Some(count("test") as u64));
    assert_eq!(summary["val_carved"].as_u64(), Some(count("val") as u64));

    // Another run seed (augmentation) holds out the same faces; the holdout seed does not.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("seed = 3", "seed = 4")).unwrap();
    ok(wingflow()
        .args(["run", "--until", "balance", "--config"])
        .arg(&config));
    assert_eq!(splits(tmp.path()), split_of);
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("test_fraction", "holdout_seed = 1\ntest_fraction"),
    )
    .unwrap();
    ok(wingflow()
        .args(["run", "--until", "balance", "--config"])
        .arg(&config));
    assert_ne!(splits(tmp.path()), split_of);
}

#[test]
fn a_test_carve_out_by_face_is_refused_at_load() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("data/300w")).unwrap();
    let config = tmp.path().join("wingflow.toml");
    std::fs::write(
        &config,
        "output = \"out\"\n\n[[sources]]\nkind = \"300w\"\npath = \"data/300w\"\n\n[balance]\ntest_fraction = 0.1\n",
    )
    .unwrap();
    let err = fails(wingflow().arg("run").arg("--config").arg(&config));
    assert!(
        err.contains("wingflow.toml:8: balance.test_fraction: 0.1 needs holdout = \"photo\""),
        "{err}"
    );
    std::fs::write(
        &config,
        "output = \"out\"\n\n[[sources]]\nkind = \"300w\"\npath = \"data/300w\"\n\n[balance]\nholdout = \"photo\"\nval_fraction = 0.5\ntest_fraction = 0.5\n",
    )
    .unwrap();
    let err = fails(wingflow().arg("run").arg("--config").arg(&config));
    assert!(
        err.contains("wingflow.toml:10: balance.test_fraction:"),
        "{err}"
    );
    assert!(err.contains("val_fraction + test_fraction < 1"), "{err}");
    assert!(!tmp.path().join("out").exists());
}
