//! Helpers shared by the end-to-end tests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A `wingflow` command with a quiet, deterministic environment.
pub fn wingflow() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wingflow"));
    cmd.env("RUST_BACKTRACE", "0");
    cmd
}

/// Run `cmd`, assert it succeeded, return its output.
pub fn ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("wingflow starts");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Run `cmd`, assert it failed, return its stderr.
pub fn fails(cmd: &mut Command) -> String {
    let out = cmd.output().expect("wingflow starts");
    assert!(!out.status.success(), "{cmd:?} unexpectedly succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// stdout as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Generate a synthetic dataset of `count` faces in `format` under `dir`.
pub fn synth(dir: &Path, format: &str, count: usize, seed: u64) {
    ok(wingflow()
        .arg("synth")
        .arg(dir)
        .args([
            "--format",
            format,
            "--count",
            &count.to_string(),
            "--seed",
            &seed.to_string(),
        ])
        .args(["--size", "160-220"]));
}

/// A project folder with a synthetic 300W set in `data/300w` and a `wingflow.toml` written by
/// `wingflow init` (training stages switched off: tests that train turn them on), with `extra`
/// appended.
pub fn project_300w(root: &Path, count: usize, extra: &str) -> PathBuf {
    synth(&root.join("data/300w"), "300w", count, 7);
    let config = root.join("wingflow.toml");
    ok(wingflow()
        .current_dir(root)
        .args(["init", "data", "--output", "out"]));
    let mut text = std::fs::read_to_string(&config).unwrap();
    assert!(
        text.contains("enabled = true"),
        "init wrote no [train] section:\n{text}"
    );
    text = text.replace("enabled = true", "enabled = false");
    text.push_str(extra);
    std::fs::write(&config, text).unwrap();
    config
}

/// Every file under `dir` with its bytes, keyed by relative path.
pub fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(base, &path, out);
            } else {
                out.insert(
                    path.strip_prefix(base).unwrap().to_owned(),
                    std::fs::read(&path).unwrap(),
                );
            }
        }
    }
    walk(dir, dir, &mut out);
    out
}
