//! `wingflow synth`: determinism across thread counts, and the files it writes.

use crate::common::{ok, synth, tree, wingflow};

#[test]
fn same_seed_gives_byte_identical_trees_with_one_and_two_threads() {
    let tmp = tempfile::tempdir().unwrap();
    for (threads, name) in [("1", "one"), ("2", "two")] {
        ok(wingflow()
            .env("RAYON_NUM_THREADS", threads)
            .arg("synth")
            .arg(tmp.path().join(name))
            .args([
                "--format", "300w", "--count", "12", "--seed", "3", "--size", "120-160",
            ]));
    }
    let one = tree(&tmp.path().join("one"));
    let two = tree(&tmp.path().join("two"));
    assert!(
        one.len() > 12,
        "expected images, .pts and sidecars, got {}",
        one.len()
    );
    assert_eq!(
        one.keys().collect::<Vec<_>>(),
        two.keys().collect::<Vec<_>>()
    );
    for (path, bytes) in &one {
        assert!(
            bytes == &two[path],
            "{} differs between 1 and 2 threads",
            path.display()
        );
    }
}

#[test]
fn every_format_writes_its_files_and_a_preview() {
    let tmp = tempfile::tempdir().unwrap();
    synth(&tmp.path().join("aflw"), "aflw", 8, 1);
    assert!(
        tmp.path()
            .join("aflw/face_landmarks_aflw_train.csv")
            .is_file()
    );
    synth(&tmp.path().join("sqlite"), "aflw-sqlite", 8, 1);
    assert!(tmp.path().join("sqlite/aflw.sqlite").is_file());
    let png = tmp.path().join("preview.png");
    let out = ok(wingflow()
        .arg("synth")
        .arg(tmp.path().join("w300"))
        .args(["--count", "8", "--size", "120-160", "--preview"])
        .arg(&png));
    assert!(String::from_utf8_lossy(&out.stdout).contains("faces/s"));
    let preview = image::open(&png).unwrap();
    assert!(preview.width() > 100 && preview.height() > 100);
}
