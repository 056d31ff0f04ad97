//! The 300W / iBUG `.pts` format: `version: 1`, `n_points:  68`, `{`, one `x y` line per
//! point, `}`.
//!
//! Pixel convention: `.pts` values are MATLAB-style 1-based pixel centres (the centre of the
//! top-left pixel is (1, 1)); internal coordinates put it at (0.5, 0.5). So a reader subtracts
//! 0.5 and a writer adds 0.5.

use std::fmt::Write as _;

/// Offset from internal coordinates to `.pts` values (`pts = internal + PTS_OFFSET`).
pub const PTS_OFFSET: f32 = 0.5;

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
