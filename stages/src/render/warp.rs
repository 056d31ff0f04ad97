//! The inverse warp: every output pixel (i, j) samples the source at `A⁻¹·(i+0.5, j+0.5)` with
//! bilinear interpolation, from the level of an area-averaged 2× pyramid that matches the
//! warp's scale (anti-aliasing when shrinking).

use serde::{Deserialize, Serialize};

use super::geometry::Affine;

/// What a sample outside the source image reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "mode", content = "value")]
pub enum Border {
    /// A constant grey level (all three channels).
    Constant(u8),
    /// The nearest edge pixel.
    Replicate,
}

impl Default for Border {
    fn default() -> Self {
        Border::Constant(0)
    }
}

/// One RGB8 image level, row-major, 3 bytes per pixel.
#[derive(Debug, Clone)]
pub struct Level {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width × height × 3` bytes.
    pub data: Vec<u8>,
}

impl Level {
    /// Halve a level by area averaging. Level-(k+1) pixel (i, j) covers level-k pixels
    /// [2i, 2i+2)×[2j, 2j+2), so coordinates map exactly: level-(k+1) = level-k / 2. An odd
    /// edge averages only the pixels that exist.
    fn halved(&self) -> Level {
        let (w, h) = (self.width as usize, self.height as usize);
        let (hw, hh) = (w.div_ceil(2), h.div_ceil(2));
        let mut data = vec![0u8; hw * hh * 3];
        for j in 0..hh {
            let rows = [2 * j, (2 * j + 1).min(h - 1)];
            let nr = if 2 * j + 1 < h { 2 } else { 1 };
            for i in 0..hw {
                let cols = [2 * i, (2 * i + 1).min(w - 1)];
                let nc = if 2 * i + 1 < w { 2 } else { 1 };
                let count = (nr * nc) as u32;
                for c in 0..3 {
                    let mut sum = 0u32;
                    for &r in &rows[..nr] {
                        for &q in &cols[..nc] {
                            sum += self.data[(r * w + q) * 3 + c] as u32;
                        }
                    }
                    data[(j * hw + i) * 3 + c] = ((sum + count / 2) / count) as u8;
                }
            }
        }
        Level {
            width: hw as u32,
            height: hh as u32,
            data,
        }
    }
}

/// A source image with its area-averaged 2× pyramid, built lazily (only the levels a warp asks
/// for).
#[derive(Debug)]
pub struct Pyramid {
    levels: Vec<Level>,
}

impl Pyramid {
    /// Wrap a decoded RGB8 image as level 0. `data.len()` must be `width × height × 3`.
    pub fn new(width: u32, height: u32, data: Vec<u8>) -> Self {
        debug_assert_eq!(data.len(), width as usize * height as usize * 3);
        Pyramid {
            levels: vec![Level {
                width,
                height,
                data,
            }],
        }
    }

    /// Level 0 (the source image).
    pub fn base(&self) -> &Level {
        &self.levels[0]
    }

    /// Level `k` (each level halves the previous one), building missing levels; stops at 1×1.
    pub fn level(&mut self, k: usize) -> (usize, &Level) {
        while self.levels.len() <= k {
            let last = &self.levels[self.levels.len() - 1];
            if last.width <= 1 && last.height <= 1 {
                break;
            }
            let next = last.halved();
            self.levels.push(next);
        }
        let k = k.min(self.levels.len() - 1);
        (k, &self.levels[k])
    }
}

/// The pyramid level for a warp whose output has `scale` output pixels per source pixel: the
/// level whose pixel size is nearest (in log scale) to the output pixel, never finer than 0.
pub fn level_for_scale(scale: f64) -> usize {
    if scale.is_nan() || scale <= 0.0 || scale >= 1.0 {
        return 0;
    }
    let k = (1.0 / scale).log2().round();
    if k <= 0.0 { 0 } else { k as usize }
}

/// Render a `size`×`size` RGB8 crop: output pixel (i, j) = bilinear sample of the matching
/// pyramid level at `m⁻¹·(i+0.5, j+0.5)` (mapped to that level's coordinates by /2^k).
/// `m` maps source continuous coordinates to output continuous coordinates; it must be
/// invertible.
pub fn warp(pyramid: &mut Pyramid, m: &Affine, size: u32, border: Border) -> Option<Vec<u8>> {
    let inv = m.inverse()?;
    let (k, level) = pyramid.level(level_for_scale(m.scale()));
    let f = 1.0 / (1u64 << k) as f64;
    // Map output coords straight to level-k coords, and fold the −0.5 of the level's pixel
    // centres into the offset: the result is the fractional pixel index in the level.
    let [a, b, c, d, e, g] = inv.0;
    let (a, b, c, d, e, g) = (a * f, b * f, c * f - 0.5, d * f, e * f, g * f - 0.5);
    let (w, h) = (level.width as i64, level.height as i64);
    let src = &level.data;
    let fetch = |x: i64, y: i64, out: &mut [f32; 3], weight: f32| {
        let (x, y) = match border {
            Border::Replicate => (x.clamp(0, w - 1), y.clamp(0, h - 1)),
            Border::Constant(v) => {
                if x < 0 || y < 0 || x >= w || y >= h {
                    let v = v as f32 * weight;
                    out.iter_mut().for_each(|o| *o += v);
                    return;
                }
                (x, y)
            }
        };
        let p = ((y * w + x) * 3) as usize;
        for ch in 0..3 {
            out[ch] += src[p + ch] as f32 * weight;
        }
    };
    let n = size as usize;
    let mut out = vec![0u8; n * n * 3];
    for j in 0..n {
        let oy = j as f64 + 0.5;
        for i in 0..n {
            let ox = i as f64 + 0.5;
            let sx = a * ox + b * oy + c;
            let sy = d * ox + e * oy + g;
            let (x0, y0) = (sx.floor(), sy.floor());
            let (fx, fy) = ((sx - x0) as f32, (sy - y0) as f32);
            let (x0, y0) = (x0 as i64, y0 as i64);
            let mut acc = [0f32; 3];
            fetch(x0, y0, &mut acc, (1.0 - fx) * (1.0 - fy));
            fetch(x0 + 1, y0, &mut acc, fx * (1.0 - fy));
            fetch(x0, y0 + 1, &mut acc, (1.0 - fx) * fy);
            fetch(x0 + 1, y0 + 1, &mut acc, fx * fy);
            let p = (j * n + i) * 3;
            for ch in 0..3 {
                out[p + ch] = (acc[ch] + 0.5).clamp(0.0, 255.0) as u8;
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: u32, h: u32) -> Pyramid {
        let mut data = Vec::new();
        for y in 0..h {
            for x in 0..w {
                data.extend([x as u8, y as u8, 7]);
            }
        }
        Pyramid::new(w, h, data)
    }

    #[test]
    fn identity_warp_copies_pixels() {
        let mut p = gradient(16, 16);
        let out = warp(&mut p, &Affine::IDENTITY, 16, Border::Constant(0)).unwrap();
        assert_eq!(out, p.base().data);
    }

    #[test]
    fn integer_shift_and_constant_border() {
        let mut p = gradient(8, 8);
        let out = warp(
            &mut p,
            &Affine::translation(2.0, 0.0),
            8,
            Border::Constant(9),
        )
        .unwrap();
        // Output column 2 reads source column 0; columns 0–1 read outside.
        assert_eq!(&out[6..9], &[0, 0, 7]);
        assert_eq!(&out[0..3], &[9, 9, 9]);
        let out = warp(&mut p, &Affine::translation(2.0, 0.0), 8, Border::Replicate).unwrap();
        assert_eq!(&out[0..3], &[0, 0, 7]);
    }

    #[test]
    fn pyramid_levels_average_areas_and_handle_odd_sizes() {
        let mut p = gradient(5, 3);
        let (k, l1) = p.level(1);
        assert_eq!((k, l1.width, l1.height), (1, 3, 2));
        // Pixel (0,0) averages x ∈ {0,1}, y ∈ {0,1} → (0.5→1 rounded, 0.5→1); edge column 2
        // covers only x = 4.
        assert_eq!(&l1.data[0..3], &[1, 1, 7]);
        assert_eq!(&l1.data[6..9], &[4, 1, 7]);
        let (k, top) = p.level(10);
        assert_eq!((top.width, top.height), (1, 1));
        assert!(k < 10);
    }

    #[test]
    fn halving_warp_reads_level_one_exactly() {
        let mut p = gradient(32, 32);
        let out = warp(&mut p, &Affine::scaling(0.5), 16, Border::Constant(0)).unwrap();
        let (_, l1) = p.level(1);
        assert_eq!(out, l1.data);
        assert_eq!(level_for_scale(0.5), 1);
        assert_eq!(level_for_scale(0.3), 2);
        assert_eq!(level_for_scale(2.0), 0);
    }
}
