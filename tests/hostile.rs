//! Hostile input through the CLI (issue #28): damaged and oversized images, folder links and
//! loops in a source tree, an output folder inside a source folder, huge binary junk in an
//! annotation file, file names that are not UTF-8.

use std::os::unix::ffi::OsStringExt as _;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{fails, ok, project_300w, stdout, wingflow};

/// At most this much stderr or report for any hostile input.
const SMALL: usize = 64 << 10;

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

/// The files recorded as ingest's inputs in `<root>/out/wingflow.lock` (or `output`).
fn ingest_inputs(output: &Path) -> Vec<String> {
    let lock: serde_json::Value =
        serde_json::from_slice(&std::fs::read(output.join("wingflow.lock")).unwrap()).unwrap();
    lock["stages"]["ingest"]["inputs"]
        .as_object()
        .expect("ingest has run")
        .keys()
        .cloned()
        .collect()
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
    assert!(text.contains("max_image_pixels = 100000000\n"), "{text}");
    let with_bound = |n: u64| {
        text.replace(
            "max_image_pixels = 100000000\n",
            &format!("max_image_pixels = {n}\n"),
        )
    };
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

#[test]
fn megabytes_of_nuls_in_a_pts_file_give_a_short_error_and_report() {
    let tmp = tempfile::tempdir().unwrap();
    let config = project_300w(tmp.path(), 40, "");
    let pts = tmp.path().join("data/300w/afw/synth_000002.pts");
    let mut bytes = std::fs::read(&pts).unwrap();
    bytes.extend(vec![0u8; 5_000_000]);
    std::fs::write(&pts, &bytes).unwrap();
    let err = fails(&mut run_until(&config, "ingest"));
    assert!(err.len() < SMALL, "{} bytes of stderr", err.len());
    assert!(
        err.contains(&format!(
            "{}, line 73: a line of 5000000 bytes",
            pts.display()
        )) && err.contains("…(5000000 bytes)"),
        "{err}"
    );

    set_line(&config, "on_invalid =", "on_invalid = \"skip\"");
    let out = ok(&mut run_until(&config, "ingest"));
    assert!(out.stderr.len() < SMALL && out.stdout.len() < SMALL);
    let report = std::fs::read(tmp.path().join("out/ingest-report.json")).unwrap();
    assert!(report.len() < SMALL, "{} bytes of report", report.len());
    let report: serde_json::Value = serde_json::from_slice(&report).unwrap();
    assert_eq!(report["faces"], 39);
    let skipped = &report["skipped"][0];
    assert_eq!(skipped["file"], pts.to_str().unwrap());
    assert!(
        skipped["reason"]
            .as_str()
            .unwrap()
            .contains("…(5000000 bytes)")
    );
}

#[test]
fn a_file_name_that_is_not_utf8_is_listed_escaped_in_the_skip_report() {
    let tmp = tempfile::tempdir().unwrap();
    let config = project_300w(tmp.path(), 40, "");
    set_line(&config, "on_invalid =", "on_invalid = \"skip\"");
    let afw = tmp.path().join("data/300w/afw");
    for ext in ["pts", "jpg"] {
        let mut name = b"bad\xff.".to_vec();
        name.extend(ext.as_bytes());
        let name = PathBuf::from(std::ffi::OsString::from_vec(name));
        std::fs::copy(afw.join(format!("synth_000003.{ext}")), afw.join(name)).unwrap();
    }
    ok(&mut run_until(&config, "ingest"));
    let report = std::fs::read_to_string(tmp.path().join("out/ingest-report.json")).unwrap();
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert_eq!(report["faces"], 40);
    let skipped = &report["skipped"][0];
    assert_eq!(
        skipped["file"],
        format!("{}/bad\\xff.pts", afw.display()).as_str()
    );
    assert!(
        skipped["reason"]
            .as_str()
            .unwrap()
            .contains("bad\\xff.pts, whole file: file name is not valid UTF-8"),
        "{skipped}"
    );
}
#[test]
fn source_walks_follow_no_folder_links_and_never_loop() {
    let tmp = tempfile::tempdir().unwrap();
    let config = project_300w(tmp.path(), 40, "");
    let data = tmp.path().join("data/300w");
    symlink("/usr/share", data.join("afw/extra")).unwrap();
    symlink("/", data.join("helen/trainset/root")).unwrap();
    symlink(data.join("lfpw"), data.join("lfpw/trainset/loop")).unwrap();
    // Links to files still work: a face whose .pts and image are links.
    symlink(
        data.join("afw/synth_000000.pts"),
        data.join("afw/linked.pts"),
    )
    .unwrap();
    symlink(
        data.join("afw/synth_000000.jpg"),
        data.join("afw/linked.jpg"),
    )
    .unwrap();
    let out = stdout(&ok(&mut run_until(&config, "ingest")));
    assert!(out.contains("faces=41"), "{out}");
    let inputs = ingest_inputs(&tmp.path().join("out"));
    assert_eq!(inputs.len(), 2 * 41 + 1, "{inputs:#?}");
    for link in ["afw/extra/", "helen/trainset/root/", "lfpw/trainset/loop/"] {
        assert!(
            !inputs.iter().any(|p| p.contains(link)),
            "{link} was walked: {inputs:#?}"
        );
    }
    assert!(inputs.iter().any(|p| p.ends_with("afw/linked.pts")));
}

#[test]
fn an_output_folder_inside_a_source_folder_is_no_input() {
    let tmp = tempfile::tempdir().unwrap();
    let config = project_300w(tmp.path(), 40, "");
    set_line(&config, "output =", "output = \"data/300w/afw/out\"");
    for _ in 0..2 {
        ok(&mut run_until(&config, "render"));
    }
    let output = tmp.path().join("data/300w/afw/out");
    assert!(
        ingest_inputs(&output)
            .iter()
            .all(|p| !p.contains("afw/out/")),
    );
    assert!(status_of(&config, "ingest").contains("fresh"));
    // A new face still makes ingest stale.
    let afw = tmp.path().join("data/300w/afw");
    for ext in ["pts", "jpg"] {
        std::fs::copy(
            afw.join(format!("synth_000000.{ext}")),
            afw.join(format!("copy.{ext}")),
        )
        .unwrap();
    }
    let status = status_of(&config, "ingest");
    assert!(
        status.contains("stale") && status.contains("afw/copy."),
        "{status}"
    );
}
