//! Hostile input through the CLI (issue #28): damaged and oversized images.

use std::path::Path;
use std::process::Command;

use crate::common::{fails, ok, project_300w, stdout, wingflow};

/// `wingflow run --config CONFIG --until STAGE`.
fn run_until(config: &Path, stage: &str) -> Command {
    let mut cmd = wingflow();
    cmd.arg("run")
        .arg("--config")
        .arg(config)
        .args(["--until", stage]);
    cmd
}

/// Replace the line of `config` that starts with `prefix` by `line`.
fn set_line(config: &Path, prefix: &str, line: &str) {
    let text = std::fs::read_to_string(config).unwrap();
    assert!(
        text.lines().any(|l| l.starts_with(prefix)),
        "no `{prefix}` in\n{text}"
    );
    let mut done = false;
    let lines: Vec<&str> = text
        .lines()
        .map(|l| {
            if l.starts_with(prefix) && !done {
                done = true;
                line
            } else {
                l
            }
        })
        .collect();
    std::fs::write(config, lines.join("\n") + "\n").unwrap();
}

/// The status line of `stage`.
fn status_of(config: &Path, stage: &str) -> String {
    let out = stdout(&ok(wingflow().arg("status").arg("--config").arg(config)));
    out.lines()
        .find(|l| l.split_whitespace().next() == Some(stage))
        .unwrap_or_else(|| panic!("no `{stage}` in\n{out}"))
        .to_owned()
}

#[test]
fn a_truncated_jpeg_fails_the_render_with_its_path_on_both_decode_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let config = project_300w(tmp.path(), 40, "");
    let jpg = tmp.path().join("data/300w/afw/synth_000000.jpg");
    let bytes = std::fs::read(&jpg).unwrap();
    std::fs::write(&jpg, &bytes[..bytes.len() / 2]).unwrap();
    for reduced in ["true", "false"] {
        set_line(
            &config,
            "reduced_decode =",
            &format!("reduced_decode = {reduced}"),
        );
        let err = fails(&mut run_until(&config, "render"));
        assert!(
            err.contains(&format!("{}: ", jpg.display()))
                && err.contains("Premature end of JPEG file"),
            "reduced_decode = {reduced}:\n{err}"
        );
    }
}

#[test]
fn a_header_declaring_a_huge_image_is_refused_before_decoding() {
    let tmp = tempfile::tempdir().unwrap();
    let config = project_300w(tmp.path(), 40, "");
    ok(&mut run_until(&config, "render"));
    // The bound changes no pixel: setting it leaves every stage fresh.
    let text = std::fs::read_to_string(&config).unwrap();
    let with_bound =
        |n: u64| text.replace("[render]\n", &format!("[render]\nmax_image_pixels = {n}\n"));
    std::fs::write(&config, with_bound(200_000_000)).unwrap();
    assert!(status_of(&config, "render").contains("fresh"));

    // SOF0: FF C0, length, precision, then height and width.
    let jpg = tmp.path().join("data/300w/afw/synth_000001.jpg");
    let mut bytes = std::fs::read(&jpg).unwrap();
    let sof = bytes.windows(2).position(|m| m == [0xFF, 0xC0]).unwrap();
    bytes[sof + 5..sof + 9].copy_from_slice(&[0x4E, 0x20, 0x4E, 0x20]);
    std::fs::write(&jpg, &bytes).unwrap();
    std::fs::write(&config, &text).unwrap();
    for reduced in ["true", "false"] {
        set_line(
            &config,
            "reduced_decode =",
            &format!("reduced_decode = {reduced}"),
        );
        let err = fails(&mut run_until(&config, "render"));
        assert!(
            err.contains(&format!(
                "{}: the image header declares 20000×20000 = 400000000 pixels, more than \
                 [render] max_image_pixels = 100000000",
                jpg.display()
            )),
            "reduced_decode = {reduced}:\n{err}"
        );
    }
    // Above a raised bound, the missing data fails the decode instead of rendering garbage.
    std::fs::write(&config, with_bound(500_000_000)).unwrap();
    for reduced in ["true", "false"] {
        set_line(
            &config,
            "reduced_decode =",
            &format!("reduced_decode = {reduced}"),
        );
        let err = fails(&mut run_until(&config, "render"));
        assert!(
            err.contains(&format!("{}: ", jpg.display())) && err.contains("corrupt"),
            "reduced_decode = {reduced}:\n{err}"
        );
    }
    std::fs::write(&config, with_bound(0)).unwrap();
    let err = fails(&mut run_until(&config, "render"));
    assert!(err.contains("render.max_image_pixels"), "{err}");
}
