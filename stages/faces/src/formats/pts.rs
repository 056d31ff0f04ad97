//! The 300W / iBUG `.pts` format: `version: 1`, `n_points:  68`, `{`, one `x y` line per
//! point, `}`.
//!
//! Pixel convention: `.pts` values are MATLAB-style 1-based pixel centres (the centre of the
//! top-left pixel is (1, 1)); internal coordinates put it at (0.5, 0.5). So a reader subtracts
//! 0.5 and a writer adds 0.5.

use std::fmt::Write as _;
use std::io::BufReader;
use std::path::Path;

use super::{ReadError, parse_finite, quote, read_line_bounded};
use crate::VALUE_EXCERPT;
use crate::echo::excerpt_of_prefix;

/// Offset from internal coordinates to `.pts` values (`pts = internal + PTS_OFFSET`).
pub const PTS_OFFSET: f32 = 0.5;

/// The longest line a `.pts` file may have (its lines are a few dozen bytes): a longer one is
/// an error, and is read through without being held in memory.
pub const MAX_PTS_LINE: usize = 4096;

/// Serialise internal-convention points (x0, y0, x1, y1, …) as a `.pts` file body, with the
/// standard header, `decimals` decimals, and a final newline.
pub fn write_pts(xy: &[f32], decimals: usize) -> String {
    let n = xy.len() / 2;
    let mut out = String::with_capacity(32 + n * 24);
    out.push_str("version: 1\n");
    let _ = writeln!(out, "n_points:  {n}");
    out.push_str("{\n");
    for p in xy.chunks_exact(2) {
        let _ = writeln!(
            out,
            "{:.*} {:.*}",
            decimals,
            p[0] + PTS_OFFSET,
            decimals,
            p[1] + PTS_OFFSET
        );
    }
    out.push_str("}\n");
    out
}

/// The points of a `.pts` file in internal coordinates, and where they are in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct PtsShape {
    /// x0, y0, x1, y1, … with [`PTS_OFFSET`] already subtracted.
    pub xy: Vec<f32>,
    /// 1-based line of point 0 (point k is on line `first_point_line + k`).
    pub first_point_line: usize,
}

/// Read and parse a `.pts` file; see [`parse_pts`]. The file is read line by line, each line
/// held only up to [`MAX_PTS_LINE`] bytes, so a huge file (e.g. megabytes of NULs after the
/// closing brace) costs no memory and yields a short error.
pub fn read_pts(path: &Path, expected_points: usize) -> Result<PtsShape, ReadError> {
    let io = |source| ReadError::Io {
        path: path.into(),
        source,
    };
    let mut reader = BufReader::new(std::fs::File::open(path).map_err(io)?);
    let mut bytes = Vec::new();
    let mut number = 0;
    let lines = std::iter::from_fn(move || {
        let len = match read_line_bounded(&mut reader, &mut bytes, MAX_PTS_LINE) {
            Ok(Some(len)) => len,
            Ok(None) => return None,
            Err(source) => return Some(Err(io(source))),
        };
        number += 1;
        if len > MAX_PTS_LINE as u64 {
            return Some(Err(too_long(
                path,
                number,
                &String::from_utf8_lossy(&bytes),
                len,
            )));
        }
        Some(match std::str::from_utf8(&bytes) {
            Ok(text) => Ok((number, text.to_owned())),
            Err(_) => Err(syntax(path, number, "not valid UTF-8 text".to_owned())),
        })
    });
    parse_lines(lines, path, expected_points)
}

/// Parse the text of a `.pts` file strictly, expecting `expected_points` points.
///
/// Pixel rule: `.pts` values are 1-based pixel centres, so [`PTS_OFFSET`] is subtracted.
///
/// Accepted variations (all seen in the 300W release): any spacing after `n_points:`, CRLF
/// line endings, a missing final newline, trailing blank lines, integer or decimal values.
/// Everything else is an error naming `path` and the line: a missing `version:` or
/// `n_points:` header, a missing `{` or `}`, a point count that differs from the header or from
/// `expected_points`, a line that is not two numbers, `nan`/`inf` values, and a line longer
/// than [`MAX_PTS_LINE`] bytes. What the file holds is echoed as a bounded excerpt.
pub fn parse_pts(text: &str, path: &Path, expected_points: usize) -> Result<PtsShape, ReadError> {
    let lines = text.lines().enumerate().map(|(i, l)| {
        if l.len() > MAX_PTS_LINE {
            Err(too_long(path, i + 1, l, l.len() as u64))
        } else {
            Ok((i + 1, l.to_owned()))
        }
    });
    parse_lines(lines, path, expected_points)
}

/// The error of a line of `len` bytes, of which `kept` was read.
fn too_long(path: &Path, line: usize, kept: &str, len: u64) -> ReadError {
    syntax(
        path,
        line,
        format!(
            "a line of {len} bytes, longer than any line of a .pts file ({MAX_PTS_LINE}): `{}`",
            excerpt_of_prefix(kept, len, VALUE_EXCERPT)
        ),
    )
}

/// [`parse_pts`] over numbered lines (1-based; without line endings; an error ends parsing).
fn parse_lines(
    lines: impl Iterator<Item = Result<(usize, String), ReadError>>,
    path: &Path,
    expected_points: usize,
) -> Result<PtsShape, ReadError> {
    // `str::lines` and the bounded reader drop a "\r" before "\n"; the final line's "\r" (file
    // without a final newline) and the byte-order mark are trimmed here.
    let mut lines = lines.map(|line| {
        line.map(|(n, l)| {
            let l = if n == 1 {
                l.strip_prefix('\u{feff}').unwrap_or(&l)
            } else {
                &l
            };
            (n, l.trim().to_owned())
        })
    });
    let mut next = |what: &str, last: &mut usize| -> Result<(usize, String), ReadError> {
        match lines.next() {
            Some(Ok((n, l))) => {
                *last = n;
                Ok((n, l))
            }
            Some(Err(e)) => Err(e),
            None => Err(syntax(
                path,
                *last + 1,
                format!("file ends where {what} was expected"),
            )),
        }
    };
    let mut last = 0;
    let (n, version) = next("the `version:` header", &mut last)?;
    if !version.starts_with("version:") {
        return Err(syntax(
            path,
            n,
            format!(
                "expected the `version:` header, found `{}`",
                quote(&version)
            ),
        ));
    }
    let (n, header) = next("the `n_points:` header", &mut last)?;
    let count = header
        .strip_prefix("n_points:")
        .ok_or_else(|| {
            syntax(
                path,
                n,
                format!(
                    "expected the `n_points:` header, found `{}`",
                    quote(&header)
                ),
            )
        })?
        .trim();
    let count: usize = count.parse().map_err(|_| {
        syntax(
            path,
            n,
            format!("point count `{}` is not a whole number", quote(count)),
        )
    })?;
    if count != expected_points {
        return Err(syntax(
            path,
            n,
            format!("wrong point count: the header says {count}, the scheme has {expected_points}"),
        ));
    }
    let (n, brace) = next("`{`", &mut last)?;
    if brace != "{" {
        return Err(syntax(
            path,
            n,
            format!("expected `{{`, found `{}`", quote(&brace)),
        ));
    }
    let first_point_line = n + 1;
    let mut xy = Vec::with_capacity(2 * count);
    loop {
        let (n, line) = next("a point or `}`", &mut last)?;
        if line == "}" {
            break;
        }
        if xy.len() == 2 * count {
            return Err(syntax(
                path,
                n,
                format!("more than {count} points, or a missing `}}`"),
            ));
        }
        let mut fields = line.split_ascii_whitespace();
        let (Some(x), Some(y), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err(syntax(
                path,
                n,
                format!("expected two numbers `x y`, found `{}`", quote(&line)),
            ));
        };
        for v in [x, y] {
            let v = parse_finite(v).map_err(|p| syntax(path, n, p))?;
            xy.push((v - f64::from(PTS_OFFSET)) as f32);
        }
    }
    if xy.len() != 2 * count {
        return Err(syntax(
            path,
            last,
            format!(
                "wrong point count: the header says {count}, found {}",
                xy.len() / 2
            ),
        ));
    }
    for line in lines {
        let (n, extra) = line?;
        if !extra.is_empty() {
            return Err(syntax(
                path,
                n,
                format!("unexpected `{}` after the closing `}}`", quote(&extra)),
            ));
        }
    }
    Ok(PtsShape {
        xy,
        first_point_line,
    })
}

fn syntax(path: &Path, line: usize, problem: String) -> ReadError {
    ReadError::Syntax {
        path: path.into(),
        line,
        problem,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::test_support::mutated;
    use proptest::prelude::*;

    const P: &str = "f.pts";

    fn parse(text: &str, n: usize) -> Result<PtsShape, ReadError> {
        parse_pts(text, Path::new(P), n)
    }

    fn err(text: &str, n: usize) -> String {
        parse(text, n).unwrap_err().to_string()
    }

    #[test]
    fn every_layout_variant_parses_to_the_same_numbers() {
        let variants = [
            "version: 1\nn_points: 3\n{\n10 20\n30 40\n50 60\n}\n",
            "version: 1\nn_points:  3\n{\n10 20\n30 40\n50 60\n}\n",
            "version: 1\r\nn_points:  3\r\n{\r\n10 20\r\n30 40\r\n50 60\r\n}\r\n",
            "version: 1\nn_points:  3\n{\n10 20\n30 40\n50 60\n}",
            "version: 1\r\nn_points:  3\r\n{\r\n10 20\r\n30 40\r\n50 60\r\n}",
            "version: 1\nn_points:  3\n{\n10.000 20.000\n30.000 40.000\n50.000 60.000\n}\n",
            "version: 1\nn_points:  3\n{\n10.000000 20.000000\n30.000000 40.0\n50 60.000000\n}\n\n",
        ];
        for v in variants {
            let shape = parse(v, 3).unwrap_or_else(|e| panic!("{v:?}: {e}"));
            assert_eq!(shape.xy, vec![9.5, 19.5, 29.5, 39.5, 49.5, 59.5], "{v:?}");
            assert_eq!(shape.first_point_line, 4);
        }
    }

    #[test]
    fn written_files_read_back() {
        let xy = vec![0.25, 1.5, 100.125, 7.0];
        let back = parse(&write_pts(&xy, 6), 2).unwrap();
        assert_eq!(back.xy, xy);
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let cases = [
            (
                "version: 1\nn_points:  2\n{\n1 2\n}\n",
                2,
                "line 5",
                "found 1",
            ),
            (
                "version: 1\nn_points:  3\n{\n1 2\n3 4\n}\n",
                2,
                "line 2",
                "wrong point count",
            ),
            (
                "version: 1\nn_points:  2\n{\n1 2\n3 4\n5 6\n}\n",
                2,
                "line 6",
                "more than 2",
            ),
            (
                "version: 1\nn_points:  2\n{\n1 2\n3 x\n}\n",
                2,
                "line 5",
                "not a number",
            ),
            (
                "version: 1\nn_points:  2\n{\n1 2\n3 nan\n}\n",
                2,
                "line 5",
                "finite",
            ),
            (
                "version: 1\nn_points:  2\n{\ninf 2\n3 4\n}\n",
                2,
                "line 4",
                "finite",
            ),
            (
                "version: 1\nn_points:  2\n1 2\n3 4\n}\n",
                2,
                "line 3",
                "expected `{`",
            ),
            (
                "version: 1\nn_points:  2\n{\n1 2\n3 4\n",
                2,
                "line 6",
                "file ends",
            ),
            ("n_points:  2\n{\n1 2\n3 4\n}\n", 2, "line 1", "version"),
            ("version: 1\n{\n1 2\n3 4\n}\n", 2, "line 2", "n_points"),
            (
                "version: 1\nn_points:  2\n{\n1 2 3\n3 4\n}\n",
                2,
                "line 4",
                "two numbers",
            ),
            (
                "version: 1\nn_points:  2\n{\n1 2\n3 4\n}\nx\n",
                2,
                "line 7",
                "after the closing",
            ),
            ("", 2, "line 1", "file ends"),
        ];
        for (text, n, line, what) in cases {
            let e = err(text, n);
            assert!(e.starts_with(&format!("{P}, {line}:")), "{text:?}: {e}");
            assert!(e.contains(what), "{text:?}: {e}");
        }
    }

    #[test]
    fn invalid_utf8_is_reported_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.pts");
        std::fs::write(&path, b"version: 1\nn_points: 1\n{\n1 \xff\n}\n").unwrap();
        let e = read_pts(&path, 1).unwrap_err().to_string();
        assert!(e.contains("bad.pts, line 4") && e.contains("UTF-8"), "{e}");
    }

    #[test]
    fn megabytes_after_the_closing_brace_give_a_short_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nul.pts");
        let mut bytes = write_pts(&[1.0, 2.0, 3.0, 4.0], 3).into_bytes();
        bytes.extend(vec![0u8; 5_000_000]);
        std::fs::write(&path, &bytes).unwrap();
        let e = read_pts(&path, 2).unwrap_err().to_string();
        assert!(e.len() < 600, "{} bytes: {e}", e.len());
        assert!(
            e.contains("nul.pts, line 7: a line of 5000000 bytes, longer than any line")
                && e.contains("`\\0\\0\\0")
                && e.ends_with("…(5000000 bytes)`"),
            "{e}"
        );
        // A short run of NULs is echoed escaped; a long point line is cut.
        let text = format!("{}\0\0\n", write_pts(&[1.0, 2.0], 1));
        assert!(err(&text, 1).ends_with("line 6: unexpected `\\0\\0` after the closing `}`"));
        let long = format!("version: 1\nn_points: 1\n{{\n1 {}\n}}\n", "9".repeat(3000));
        let e = err(&long, 1);
        assert!(e.len() < 400 && e.contains("is not a finite number"), "{e}");
        let longer = format!("version: 1\nn_points: 1\n{{\n1 {}\n}}\n", "9".repeat(5000));
        assert!(err(&longer, 1).contains("line 4: a line of 5002 bytes"));
    }

    fn valid_text() -> String {
        let xy: Vec<f32> = (0..10).map(|i| i as f32 * 3.25).collect();
        write_pts(&xy, 3)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_text_never_panics(text in any::<String>()) {
            let _ = parse(&text, 5);
        }

        #[test]
        fn mutated_files_never_panic_and_errors_name_the_file(
            cut in 0usize..200,
            flips in proptest::collection::vec((0usize..200, any::<u8>()), 0..4),
            drop_line in proptest::option::of(0usize..10),
        ) {
            let bytes = mutated(&valid_text(), drop_line, &flips, cut);
            let text = String::from_utf8_lossy(&bytes);
            if let Err(e) = parse(&text, 5) {
                prop_assert!(e.to_string().starts_with("f.pts, line "), "{}", e);
            }
        }
    }
}
