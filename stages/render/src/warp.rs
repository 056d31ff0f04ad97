//! The inverse warp: every output pixel (i, j) samples the source at `A⁻¹·(i+0.5, j+0.5)` with
//! bilinear interpolation, from the level of an area-averaged 2× pyramid that matches the
//! warp's scale (anti-aliasing when shrinking).

use serde::{Deserialize, Serialize};

use super::geometry::Affine;
use super::simd::dispatch_avx2;

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

/// One RGB8 image level, row-major, 3 bytes per pixel: the whole level of the source image, or
/// a rectangle of it (a region decode). Level-k pixel (i, j) covers level-0 pixels
/// [2^k·i, 2^k·(i+1))×[2^k·j, 2^k·(j+1)).
#[derive(Debug, Clone)]
pub struct Level {
    /// Width of the stored rectangle in pixels.
    pub width: u32,
    /// Height of the stored rectangle in pixels.
    pub height: u32,
    /// Left edge of the stored rectangle in the level's pixel grid (0 for a whole level).
    pub x0: u32,
    /// Top edge of the stored rectangle in the level's pixel grid (0 for a whole level).
    pub y0: u32,
    /// Width of the whole level (⌈source width / 2^k⌉): where the image ends for the border.
    pub full_width: u32,
    /// Height of the whole level (⌈source height / 2^k⌉).
    pub full_height: u32,
    /// `width × height × 3` bytes.
    pub data: Vec<u8>,
}

impl Level {
    /// A whole level of `width × height` pixels.
    pub fn whole(width: u32, height: u32, data: Vec<u8>) -> Self {
        Level {
            width,
            height,
            x0: 0,
            y0: 0,
            full_width: width,
            full_height: height,
            data,
        }
    }

    /// Halve the part of a level inside `within` (global pixels of this level; the whole
    /// stored rectangle when `None`) by area averaging. Level-(k+1) pixel (i, j) covers level-k
    /// pixels [2i, 2i+2)×[2j, 2j+2), so coordinates map exactly: level-(k+1) = level-k / 2. A
    /// pixel at an odd image edge (or at a stored edge that is not 2-aligned) averages only the
    /// pixels that exist; regions are aligned so that this happens only at the image's edges.
    fn halved(&self, within: Option<PixelRect>) -> Level {
        let (w, h) = (self.width as usize, self.height as usize);
        let (x0, y0) = (self.x0 as usize, self.y0 as usize);
        let (mut rx0, mut ry0, mut rx1, mut ry1) = (x0, y0, x0 + w, y0 + h);
        if let Some(r) = within {
            rx0 = (r.x0 as usize).clamp(x0, x0 + w - 1);
            ry0 = (r.y0 as usize).clamp(y0, y0 + h - 1);
            rx1 = (r.x1 as usize).clamp(rx0 + 1, x0 + w);
            ry1 = (r.y1 as usize).clamp(ry0 + 1, y0 + h);
        }
        // Global level-(k+1) rectangle touched by the level-k rectangle.
        let (hx0, hy0) = (rx0 / 2, ry0 / 2);
        let (hx1, hy1) = (rx1.div_ceil(2), ry1.div_ceil(2));
        let (hw, hh) = (hx1 - hx0, hy1 - hy0);
        let mut data = vec![0u8; hw * hh * 3];
        let stride = w * 3;
        // Output columns whose 2×2 block lies wholly in the stored columns: [i_lo, i_hi).
        let i_lo = (x0.div_ceil(2).saturating_sub(hx0)).min(hw);
        let i_hi = ((x0 + w) / 2).saturating_sub(hx0).clamp(i_lo, hw);
        for j in 0..hh {
            // Local level-k rows of this output row, clipped to the stored pixels.
            let r0 = (2 * (hy0 + j)).max(y0) - y0;
            let r1 = (2 * (hy0 + j) + 2).min(y0 + h) - y0;
            let out = &mut data[j * hw * 3..(j + 1) * hw * 3];
            // A block clipped by an edge averages only the pixels that exist.
            let partial = |i: usize, out: &mut [u8]| {
                let c0 = (2 * (hx0 + i)).max(x0) - x0;
                let c1 = (2 * (hx0 + i) + 2).min(x0 + w) - x0;
                let count = ((r1 - r0) * (c1 - c0)) as u32;
                for c in 0..3 {
                    let mut sum = 0u32;
                    for r in r0..r1 {
                        for q in c0..c1 {
                            sum += self.data[(r * w + q) * 3 + c] as u32;
                        }
                    }
                    out[i * 3 + c] = ((sum + count / 2) / count) as u8;
                }
            };
            if r1 - r0 < 2 || i_lo == i_hi {
                (0..hw).for_each(|i| partial(i, out));
                continue;
            }
            (0..i_lo).for_each(|i| partial(i, out));
            (i_hi..hw).for_each(|i| partial(i, out));
            // The common case, whole 2×2 blocks: a straight pass over two rows.
            let first = (2 * (hx0 + i_lo) - x0) * 3;
            let len = (i_hi - i_lo) * 6;
            let top = &self.data[r0 * stride + first..r0 * stride + first + len];
            let bottom = &self.data[(r0 + 1) * stride + first..(r0 + 1) * stride + first + len];
            let dst = &mut out[i_lo * 3..i_hi * 3];
            for ((o, a), b) in dst
                .chunks_exact_mut(3)
                .zip(top.chunks_exact(6))
                .zip(bottom.chunks_exact(6))
            {
                for c in 0..3 {
                    let sum = a[c] as u16 + a[c + 3] as u16 + b[c] as u16 + b[c + 3] as u16;
                    o[c] = ((sum + 2) >> 2) as u8;
                }
            }
        }
        Level {
            width: hw as u32,
            height: hh as u32,
            x0: hx0 as u32,
            y0: hy0 as u32,
            full_width: self.full_width.div_ceil(2),
            full_height: self.full_height.div_ceil(2),
            data,
        }
    }
}

/// A source image with its area-averaged 2× pyramid, built lazily (only the levels a warp asks
/// for). The first stored level is level 0 (a full decode) or a coarser level straight from a
/// reduced-resolution decode ([`super::decode`]); finer levels are then not available.
#[derive(Debug)]
pub struct Pyramid {
    /// Index of `levels[0]`.
    first: usize,
    levels: Vec<Level>,
    /// The part of the finest level that coarser levels are built from (all when `None`).
    halving_region: Option<PixelRect>,
}

impl Pyramid {
    /// Wrap a decoded RGB8 image as level 0. `data.len()` must be `width × height × 3`.
    pub fn new(width: u32, height: u32, data: Vec<u8>) -> Self {
        assert_eq!(data.len(), width as usize * height as usize * 3);
        Pyramid::from_level(0, Level::whole(width, height, data))
    }

    /// A pyramid whose finest level is `level` (index `k`), e.g. a 1/2^k-scaled region decode.
    pub fn from_level(k: usize, level: Level) -> Self {
        assert_eq!(
            level.data.len(),
            level.width as usize * level.height as usize * 3
        );
        Pyramid {
            first: k,
            levels: vec![level],
            halving_region: None,
        }
    }

    /// Build coarser levels only from `region` of the finest level (its global pixels): the
    /// coarser levels then hold only what that region covers. For the values to equal those
    /// of the whole image's pyramid up to level `first + t`, the region's edges must be
    /// multiples of 2^t or the image's edges ([`super::decode::plan_decodes`] aligns them so).
    pub fn limit_halving(&mut self, region: PixelRect) {
        self.halving_region = Some(region);
        self.levels.truncate(1);
    }

    /// Index of the finest level this pyramid holds.
    pub fn first_level(&self) -> usize {
        self.first
    }

    /// The finest level this pyramid holds (level 0 for a full decode).
    pub fn base(&self) -> &Level {
        &self.levels[0]
    }

    /// Level `k` (each level halves the previous one), building missing levels. Returns the
    /// level actually used: never finer than [`Self::first_level`], and it stops at 1×1.
    pub fn level(&mut self, k: usize) -> (usize, &Level) {
        let k = k.max(self.first) - self.first;
        while self.levels.len() <= k {
            let last = &self.levels[self.levels.len() - 1];
            if last.full_width <= 1 && last.full_height <= 1 {
                break;
            }
            let within = if self.levels.len() == 1 {
                self.halving_region
            } else {
                None
            };
            let next = last.halved(within);
            self.levels.push(next);
        }
        let k = k.min(self.levels.len() - 1);
        (self.first + k, &self.levels[k])
    }
}

/// A rectangle of pixels [x0, x1)×[y0, y1) in some level's pixel grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PixelRect {
    /// Left edge (inclusive).
    pub x0: u32,
    /// Top edge (inclusive).
    pub y0: u32,
    /// Right edge (exclusive).
    pub x1: u32,
    /// Bottom edge (exclusive).
    pub y1: u32,
}

impl PixelRect {
    /// The smallest rectangle holding both.
    pub fn union(&self, other: &PixelRect) -> PixelRect {
        PixelRect {
            x0: self.x0.min(other.x0),
            y0: self.y0.min(other.y0),
            x1: self.x1.max(other.x1),
            y1: self.y1.max(other.y1),
        }
    }
}

/// The pixels of pyramid level `k` that [`warp`] may read for a `size`×`size` crop by `m` of a
/// `width`×`height` source: the bilinear taps of every output pixel, one pixel of slack for
/// rounding, clamped into the level (never empty, so that the clamped reads of
/// [`Border::Replicate`] stay inside). `None` when `m` is singular.
pub fn reach(m: &Affine, size: u32, k: usize, width: u32, height: u32) -> Option<PixelRect> {
    let inv = m.inverse()?;
    let f = 1.0 / (1u64 << k) as f64;
    let (fw, fh) = (
        width.div_ceil(1 << k.min(31)) as i64,
        height.div_ceil(1 << k.min(31)) as i64,
    );
    if fw == 0 || fh == 0 {
        return None;
    }
    let lo = 0.5;
    let hi = size as f64 - 0.5;
    let (mut xmin, mut xmax, mut ymin, mut ymax) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    // The sample grid is the square [0.5, size − 0.5]²; its image under an affine map is the
    // parallelogram spanned by the corners' images.
    for (ox, oy) in [(lo, lo), (hi, lo), (lo, hi), (hi, hi)] {
        let (sx, sy) = inv.apply(ox, oy);
        let (x, y) = (sx * f - 0.5, sy * f - 0.5);
        xmin = xmin.min(x);
        xmax = xmax.max(x);
        ymin = ymin.min(y);
        ymax = ymax.max(y);
    }
    if !(xmin.is_finite() && xmax.is_finite() && ymin.is_finite() && ymax.is_finite()) {
        return None;
    }
    // Taps floor(v) and floor(v) + 1, one more on each side for rounding: [⌊min⌋−1, ⌊max⌋+3).
    let clamp = |lo: f64, hi: f64, n: i64| {
        let a = (lo.floor() as i64 - 1).clamp(0, n - 1);
        let b = (hi.floor() as i64 + 3).clamp(a + 1, n);
        (a as u32, b as u32)
    };
    let (x0, x1) = clamp(xmin, xmax, fw);
    let (y0, y1) = clamp(ymin, ymax, fh);
    Some(PixelRect { x0, y0, x1, y1 })
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

/// ⌊v⌋ as an integer, without `f64::floor`: on the x86-64 baseline (no SSE4.1) that is a libm
/// call. Equal to `v.floor() as i64` for every finite v within the i64 range.
#[inline]
fn floor(v: f64) -> i64 {
    let t = v as i64;
    t - ((t as f64) > v) as i64
}

/// Fractional bits of the warp's fixed-point source coordinates.
const COORD_BITS: u32 = 32;
/// Bits of the bilinear weights: sub-pixel positions are resolved to 1/2^7 pixel (the rounding
/// moves a sample by at most 1/256 px, far below the exactness tests' 0.5 px). Seven bits keep
/// every product of two weights (≤ 2^14) within a signed 16-bit lane, for the AVX2 blend.
const WEIGHT_BITS: u32 = 7;
const WEIGHT_ONE: u32 = 1 << WEIGHT_BITS;

/// `v · 2^COORD_BITS`, floored: a source coordinate in fixed point.
#[inline]
fn to_fixed(v: f64) -> i64 {
    floor(v * (1u64 << COORD_BITS) as f64)
}

/// Bilinear blend of four RGB taps with integer weights `fx`, `fy` ∈ [0, 2^7): exact integer
/// arithmetic, so every machine computes the same bytes.
#[inline(always)]
fn blend(t00: [u32; 3], t10: [u32; 3], t01: [u32; 3], t11: [u32; 3], fx: u32, fy: u32) -> [u8; 3] {
    let (gx, gy) = (WEIGHT_ONE - fx, WEIGHT_ONE - fy);
    let half = 1 << (2 * WEIGHT_BITS - 1);
    let mut out = [0u8; 3];
    for ch in 0..3 {
        let top = t00[ch] * gx + t10[ch] * fx;
        let bottom = t01[ch] * gx + t11[ch] * fx;
        // ≤ 255 · 2^14: the shifted value always fits a byte.
        out[ch] = ((top * gy + bottom * fy + half) >> (2 * WEIGHT_BITS)) as u8;
    }
    out
}

/// Render a `size`×`size` RGB8 crop: output pixel (i, j) = bilinear sample of the matching
/// pyramid level at `m⁻¹·(i+0.5, j+0.5)` (mapped to that level's coordinates by /2^k).
/// `m` maps source continuous coordinates to output continuous coordinates; it must be
/// invertible.
///
/// Each row's start is computed in f64 and the row is walked in 32.32 fixed point (drift below
/// 1e-7 px over a row); the blend is integer with 7-bit weights. Integer arithmetic makes the
/// bytes independent of the machine and of the instruction set (an AVX2 build blends a pixel's
/// four taps in one register; a test checks it against the baseline build).
pub fn warp(pyramid: &mut Pyramid, m: &Affine, size: u32, border: Border) -> Option<Vec<u8>> {
    let inv = m.inverse()?;
    let (k, level) = pyramid.level(level_for_scale(m.scale()));
    let sampler = Sampler::new(level, k, &inv, border);
    let n = size as usize;
    let mut out = vec![0u8; n * n * 3];
    dispatch_avx2!(
        Sampler::fill_avx2,
        Sampler::fill_baseline,
        (&sampler, &mut out, n)
    );
    Some(out)
}

/// One warp's source level and inverse map, in the level's local pixel indices.
struct Sampler<'a> {
    /// The stored pixels (RGB8, `w`×`h`).
    src: &'a [u8],
    w: i64,
    h: i64,
    /// The whole image's extent `[x0, y0, x1, y1)` in local indices (beyond it: the border).
    image: [i64; 4],
    border: Border,
    /// Output pixel coordinates → fractional local pixel index: `x = a·u + b·v + c`,
    /// `y = d·u + e·v + g`.
    inv: [f64; 6],
}

impl<'a> Sampler<'a> {
    /// Sample `level` (of pyramid level `k`) through `inv`, the inverse of the warp's matrix
    /// (output continuous coordinates → source level-0 continuous coordinates).
    fn new(level: &'a Level, k: usize, inv: &Affine, border: Border) -> Self {
        let f = 1.0 / (1u64 << k) as f64;
        // Map output coords straight to level-k coords, and fold the −0.5 of the level's pixel
        // centres into the offset: the result is the fractional pixel index in the level. The
        // stored rectangle starts at (x0, y0) of the level: shift into its local indices.
        let [a, b, c, d, e, g] = inv.0;
        let (ox0, oy0) = (level.x0 as f64, level.y0 as f64);
        Sampler {
            src: &level.data,
            w: level.width as i64,
            h: level.height as i64,
            // The image's extent in local indices (the border lies outside it, not outside the
            // stored region).
            image: [
                -(level.x0 as i64),
                -(level.y0 as i64),
                level.full_width as i64 - level.x0 as i64,
                level.full_height as i64 - level.y0 as i64,
            ],
            border,
            inv: [
                a * f,
                b * f,
                c * f - 0.5 - ox0,
                d * f,
                e * f,
                g * f - 0.5 - oy0,
            ],
        }
    }

    /// The value of one tap, border rules applied.
    #[inline(always)]
    fn fetch(&self, x: i64, y: i64) -> [u32; 3] {
        let [bx0, by0, bx1, by1] = self.image;
        if let Border::Constant(v) = self.border
            && (x < bx0 || y < by0 || x >= bx1 || y >= by1)
        {
            return [v as u32; 3];
        }
        // Replicate clamps to the image's edge; a region decode holds every pixel a warp can
        // reach (see [`reach`]), so clamping into it changes nothing and only guards indices.
        let (x, y) = (x.clamp(0, self.w - 1), y.clamp(0, self.h - 1));
        let p = ((y * self.w + x) * 3) as usize;
        [
            self.src[p] as u32,
            self.src[p + 1] as u32,
            self.src[p + 2] as u32,
        ]
    }

    /// Fill the `n`×`n` RGB8 `out`. `SIMD` selects the AVX2 blend of interior pixels (only
    /// from [`Self::fill_avx2`]); both blends compute the same integers.
    #[inline(always)]
    fn fill<const SIMD: bool>(&self, out: &mut [u8], n: usize) {
        let [a, b, c, d, e, g] = self.inv;
        let (w, h) = (self.w, self.h);
        let (step_x, step_y) = (to_fixed(a), to_fixed(d));
        // Whether the four taps of the pixel at fixed-point position (x, y) lie in the stored
        // pixels. The stored rectangle is convex and a row's positions are exactly
        // `start + i·step`, so a row whose first and last pixels pass has every pixel inside.
        let inside = |x: i64, y: i64| {
            let (x0, y0) = (x >> COORD_BITS, y >> COORD_BITS);
            x0 >= 0 && y0 >= 0 && x0 + 1 < w && y0 + 1 < h
        };
        if n == 0 {
            return; // An empty crop.
        }
        let last = (n - 1) as i64;
        for (j, row) in out.chunks_exact_mut(n * 3).enumerate() {
            let oy = j as f64 + 0.5;
            let (x, y) = (
                to_fixed(a * 0.5 + b * oy + c),
                to_fixed(d * 0.5 + e * oy + g),
            );
            let row_inside = inside(x, y) && inside(x + last * step_x, y + last * step_y);
            #[cfg(target_arch = "x86_64")]
            if SIMD && row_inside {
                // SAFETY: only reached from `fill_avx2`, on a CPU with AVX2.
                unsafe { self.inside_row_avx2(row, x, y, step_x, step_y) };
                continue;
            }
            self.row(row, x, y, step_x, step_y, row_inside);
        }
    }

    /// The fixed-point position → (x0, y0) of its top-left tap and the weights (fx, fy).
    #[inline(always)]
    fn tap(&self, x: i64, y: i64) -> (i64, i64, u32, u32) {
        let frac_shift = COORD_BITS - WEIGHT_BITS;
        let fx = ((x >> frac_shift) as u32) & (WEIGHT_ONE - 1);
        let fy = ((y >> frac_shift) as u32) & (WEIGHT_ONE - 1);
        (x >> COORD_BITS, y >> COORD_BITS, fx, fy)
    }

    /// One output row from fixed-point start (x, y), scalar blend; `all_inside` (every pixel's
    /// taps are stored pixels) skips the border test.
    #[inline(always)]
    fn row(&self, row: &mut [u8], mut x: i64, mut y: i64, sx: i64, sy: i64, all_inside: bool) {
        let (w, h) = (self.w, self.h);
        let stride = (w * 3) as usize;
        for px in row.chunks_exact_mut(3) {
            let (x0, y0, fx, fy) = self.tap(x, y);
            x += sx;
            y += sy;
            // Taps inside the stored pixels (the common case) are read without border logic;
            // every path blends with the same arithmetic, so a pixel's value never depends on
            // how large the stored region is.
            let rgb = if all_inside || (x0 >= 0 && y0 >= 0 && x0 + 1 < w && y0 + 1 < h) {
                let q = (y0 * w + x0) as usize * 3;
                let top = &self.src[q..q + 6];
                let bottom = &self.src[q + stride..q + stride + 6];
                let tap = |s: &[u8], o: usize| [s[o] as u32, s[o + 1] as u32, s[o + 2] as u32];
                blend(
                    tap(top, 0),
                    tap(top, 3),
                    tap(bottom, 0),
                    tap(bottom, 3),
                    fx,
                    fy,
                )
            } else {
                blend(
                    self.fetch(x0, y0),
                    self.fetch(x0 + 1, y0),
                    self.fetch(x0, y0 + 1),
                    self.fetch(x0 + 1, y0 + 1),
                    fx,
                    fy,
                )
            };
            px.copy_from_slice(&rgb);
        }
    }

    /// [`Self::row`] for a row whose taps are all stored pixels, with the AVX2 blends: eight
    /// pixels at a time ([`Groups`]) while at least 28 bytes of the row are left, then one at a
    /// time ([`blend_avx2`]). A pixel whose 8-byte loads would run past the stored data (the
    /// last pixels of the bottom rows) takes the scalar blend.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    #[inline]
    fn inside_row_avx2(&self, row: &mut [u8], mut x: i64, mut y: i64, sx: i64, sy: i64) {
        let stride = (self.w * 3) as usize;
        let len = row.len();
        let load = |at: usize| u64::from_le_bytes(self.src[at..at + 8].try_into().unwrap());
        let mut start = 0;
        if let Some(mut groups) = Groups::new(self, x, y, sx, sy) {
            // A group writes 4 bytes past its 8 pixels (overwritten by what follows).
            while start + GROUP * 3 + 4 <= len {
                if !groups.fill(self, &mut row[start..start + GROUP * 3 + 4]) {
                    break;
                }
                start += GROUP * 3;
            }
            x += (start / 3) as i64 * sx;
            y += (start / 3) as i64 * sy;
        }
        for o in (start..len).step_by(3) {
            let (x0, y0, fx, fy) = self.tap(x, y);
            let q = (y0 * self.w + x0) as usize * 3;
            if q + stride + 8 > self.src.len() {
                self.row(&mut row[o..o + 3], x, y, sx, sy, true);
            } else {
                let rgb = blend_avx2(load(q), load(q + stride), fx, fy).to_le_bytes();
                // Four bytes at once where the row has room: the fourth is the next pixel's
                // first, written over next.
                if o + 4 <= len {
                    row[o..o + 4].copy_from_slice(&rgb);
                } else {
                    row[o..o + 3].copy_from_slice(&rgb[..3]);
                }
            }
            x += sx;
            y += sy;
        }
    }

    fn fill_baseline(&self, out: &mut [u8], n: usize) {
        self.fill::<false>(out, n);
    }

    /// [`Self::fill`] with the AVX2 blend.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn fill_avx2(&self, out: &mut [u8], n: usize) {
        self.fill::<true>(out, n);
    }
}

/// Output pixels blended together by [`Groups`].
const GROUP: usize = 8;

/// The AVX2 blend of eight pixels of an inside row at a time. A byte shuffle pairs each
/// channel's left and right taps as 16-bit values, and one `madd` per row multiplies them by the
/// pixel's weight products (`gx·gy`, `fx·gy` for the top row; at most 2^14, so a signed 16-bit
/// lane holds them) and adds the pair: the two rows' sums are the four-tap sum of [`blend`],
/// exactly, so the bytes are the same.
#[cfg(target_arch = "x86_64")]
struct Groups {
    /// Fixed-point x of the group's pixels 0–3 and 4–7 (64-bit lanes).
    x: [std::arch::x86_64::__m256i; 2],
    y: [std::arch::x86_64::__m256i; 2],
    /// The step from one group to the next, x and y.
    step: [std::arch::x86_64::__m256i; 2],
}

#[cfg(target_arch = "x86_64")]
impl Groups {
    /// Groups from the row's first pixel at fixed point (x, y), step (sx, sy); `None` where
    /// the indices leave what 32-bit lanes hold.
    #[target_feature(enable = "avx2")]
    fn new(s: &Sampler, x: i64, y: i64, sx: i64, sy: i64) -> Option<Self> {
        use std::arch::x86_64::*;
        // 32-bit byte offsets and (index << 7 | weight) values.
        if s.src.len() >= i32::MAX as usize || s.w.max(s.h) >= 1 << 22 {
            return None;
        }
        let lanes = |v: i64, step: i64| {
            [
                _mm256_setr_epi64x(v, v + step, v + 2 * step, v + 3 * step),
                _mm256_setr_epi64x(v + 4 * step, v + 5 * step, v + 6 * step, v + 7 * step),
            ]
        };
        Some(Groups {
            x: lanes(x, sx),
            y: lanes(y, sy),
            step: [
                _mm256_set1_epi64x(GROUP as i64 * sx),
                _mm256_set1_epi64x(GROUP as i64 * sy),
            ],
        })
    }

    /// Blend the next 8 pixels into `out` (24 bytes, plus 4 that are written over with
    /// anything) and step on; `false`, writing nothing and not stepping, where a pixel's
    /// 8-byte loads would leave the stored data (the caller blends those pixels one by one).
    #[target_feature(enable = "avx2")]
    fn fill(&mut self, s: &Sampler, out: &mut [u8]) -> bool {
        use std::arch::x86_64::*;
        assert!(out.len() >= GROUP * 3 + 4);
        // (index << 7 | weight) of each pixel, as 8 lanes of 32 bits: the fixed-point values
        // shifted down by COORD_BITS − WEIGHT_BITS (non-negative: the row's taps are inside).
        let (px, py) = (
            low_dwords(
                self.x
                    .map(|v| _mm256_srli_epi64::<{ (COORD_BITS - WEIGHT_BITS) as i32 }>(v)),
            ),
            low_dwords(
                self.y
                    .map(|v| _mm256_srli_epi64::<{ (COORD_BITS - WEIGHT_BITS) as i32 }>(v)),
            ),
        );
        let mask = _mm256_set1_epi32((WEIGHT_ONE - 1) as i32);
        let (x0, fx) = (
            _mm256_srli_epi32::<{ WEIGHT_BITS as i32 }>(px),
            _mm256_and_si256(px, mask),
        );
        let (y0, fy) = (
            _mm256_srli_epi32::<{ WEIGHT_BITS as i32 }>(py),
            _mm256_and_si256(py, mask),
        );
        let index = _mm256_add_epi32(_mm256_mullo_epi32(y0, _mm256_set1_epi32(s.w as i32)), x0);
        let q = _mm256_add_epi32(index, _mm256_add_epi32(index, index));
        // The bottom row's 8-byte load ends at q + stride + 8.
        let stride = (s.w * 3) as i32;
        let last_start = s.src.len() as i32 - stride - 8;
        if _mm256_movemask_epi8(_mm256_cmpgt_epi32(q, _mm256_set1_epi32(last_start))) != 0 {
            return false;
        }
        // Each pixel's two 8-byte loads (top and bottom row, from the left tap on), four pixels
        // to a register: 64-bit loads are cheaper here than AVX2 gathers of the four taps.
        let mut offsets = [0i32; GROUP];
        // SAFETY: stores 32 bytes into `offsets`.
        unsafe { _mm256_storeu_si256(offsets.as_mut_ptr().cast(), q) };
        let src = s.src.as_ptr();
        // SAFETY: every q + stride + 8 ≤ src.len(), checked above: the loads (8 bytes at q and
        // at q + stride) lie inside `src`.
        let two = |a: i32, b: i32| unsafe {
            let low = _mm_loadl_epi64(src.add(a as usize).cast());
            _mm_castpd_si128(_mm_loadh_pd(
                _mm_castsi128_pd(low),
                src.add(b as usize).cast(),
            ))
        };
        // Pixels (0, 1 | 4, 5) in one register and (2, 3 | 6, 7) in the other: after the two
        // packs below, each 128-bit lane then holds four consecutive pixels.
        let four = |p: [usize; 4], row: i32| {
            let o = |j: usize| offsets[p[j]] + row;
            _mm256_set_m128i(two(o(2), o(3)), two(o(0), o(1)))
        };
        let (first, second) = ([0, 1, 4, 5], [2, 3, 6, 7]);
        let top = [four(first, 0), four(second, 0)];
        let bottom = [four(first, stride), four(second, stride)];
        // Per pixel, the 16-bit weight pairs of its left and right taps: (gx·gy, fx·gy) for the
        // top row and (gx·fy, fx·fy) for the bottom one, each at most 2^14.
        let one = _mm256_set1_epi32(WEIGHT_ONE as i32);
        let (gx, gy) = (_mm256_sub_epi32(one, fx), _mm256_sub_epi32(one, fy));
        let pair = |left: __m256i, right: __m256i, row: __m256i| {
            _mm256_or_si256(
                _mm256_mullo_epi16(left, row),
                _mm256_slli_epi32::<16>(_mm256_mullo_epi16(right, row)),
            )
        };
        let (w_top, w_bottom) = (pair(gx, fx, gy), pair(gx, fx, fy));
        // A lane holds two pixels' loads (a, b): the weights go in the order (a, b, a, b).
        let spread = [
            _mm256_setr_epi32(0, 1, 0, 1, 4, 5, 4, 5),
            _mm256_setr_epi32(2, 3, 2, 3, 6, 7, 6, 7),
        ];
        // Each channel's (left, right) taps of pixels a and b as 16-bit pairs: red and green
        // of both pixels in one register, blue in another.
        let z = -128i8; // A shuffle index with the high bit set writes 0.
        let red_green = _mm256_setr_epi8(
            0, z, 3, z, 8, z, 11, z, 1, z, 4, z, 9, z, 12, z, //
            0, z, 3, z, 8, z, 11, z, 1, z, 4, z, 9, z, 12, z,
        );
        let blue = _mm256_setr_epi8(
            2, z, 5, z, 10, z, 13, z, z, z, z, z, z, z, z, z, //
            2, z, 5, z, 10, z, 13, z, z, z, z, z, z, z, z, z,
        );
        let half = _mm256_set1_epi32(1 << (2 * WEIGHT_BITS - 1));
        // Words per lane (pixels a, b): R R G G B B 0 0. (Loops, not closures: the compiler did
        // not inline those.)
        let mut words = [_mm256_setzero_si256(); 2];
        for (h, words) in words.iter_mut().enumerate() {
            let wt = _mm256_permutevar8x32_epi32(w_top, spread[h]);
            let wb = _mm256_permutevar8x32_epi32(w_bottom, spread[h]);
            let mut planes = [red_green, blue];
            for channels in &mut planes {
                let sum = _mm256_add_epi32(
                    _mm256_madd_epi16(_mm256_shuffle_epi8(top[h], *channels), wt),
                    _mm256_madd_epi16(_mm256_shuffle_epi8(bottom[h], *channels), wb),
                );
                // ≤ 255 · 2^14 before the shift: each value fits a byte.
                *channels =
                    _mm256_srli_epi32::<{ 2 * WEIGHT_BITS as i32 }>(_mm256_add_epi32(sum, half));
            }
            *words = _mm256_packus_epi32(planes[0], planes[1]);
        }
        // Bytes: per lane, the planes of four consecutive pixels, interleaved into RGB by the
        // last shuffle.
        let planes = _mm256_packus_epi16(words[0], words[1]);
        let interleave = _mm256_setr_epi8(
            0, 2, 4, 1, 3, 5, 8, 10, 12, 9, 11, 13, z, z, z, z, //
            0, 2, 4, 1, 3, 5, 8, 10, 12, 9, 11, 13, z, z, z, z,
        );
        let packed = _mm256_shuffle_epi8(planes, interleave);
        // SAFETY: `out` holds at least 28 bytes (asserted above): 16 at 0 and 16 at 12.
        unsafe {
            _mm_storeu_si128(out.as_mut_ptr().cast(), _mm256_castsi256_si128(packed));
            _mm_storeu_si128(
                out.as_mut_ptr().add(12).cast(),
                _mm256_extracti128_si256::<1>(packed),
            );
        }
        for (v, step) in [(&mut self.x, self.step[0]), (&mut self.y, self.step[1])] {
            v[0] = _mm256_add_epi64(v[0], step);
            v[1] = _mm256_add_epi64(v[1], step);
        }
        true
    }
}

/// The low 32 bits of the eight 64-bit lanes of `v`, in order.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn low_dwords(v: [std::arch::x86_64::__m256i; 2]) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    let order = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    let low = _mm256_permutevar8x32_epi32(v[0], order);
    let high = _mm256_permutevar8x32_epi32(v[1], order);
    _mm256_permute2x128_si256::<0x20>(low, high)
}

/// [`blend`] in AVX2 registers. `top` and `bottom` hold 8 source bytes from the left tap on (two
/// RGB pixels and 2 unused bytes, little-endian). The top row goes in the low 128-bit lane and
/// the bottom row in the high lane; a byte shuffle pairs each channel's left and right taps as
/// 16-bit values, one `madd` forms `left·(256−fx) + right·fx` per channel and row (32-bit), one
/// multiply weights the rows by `256−fy` and `fy`, and the lanes are summed, rounded and shifted.
/// Returns the blended RGB in the low 3 bytes. The same integers as [`blend`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
fn blend_avx2(top: u64, bottom: u64, fx: u32, fy: u32) -> u32 {
    use std::arch::x86_64::*;
    let (gx, gy) = (WEIGHT_ONE - fx, WEIGHT_ONE - fy);
    let z = -128i8; // A shuffle index with the high bit set writes 0.
    let pairs = _mm256_setr_epi8(
        0, z, 3, z, 1, z, 4, z, 2, z, 5, z, z, z, z, z, //
        0, z, 3, z, 1, z, 4, z, 2, z, 5, z, z, z, z, z,
    );
    let rows = _mm256_set_m128i(
        _mm_cvtsi64_si128(bottom as i64),
        _mm_cvtsi64_si128(top as i64),
    );
    let taps = _mm256_shuffle_epi8(rows, pairs);
    let horizontal = _mm256_madd_epi16(taps, _mm256_set1_epi32((gx | fx << 16) as i32));
    let vertical_weights = _mm256_set_m128i(_mm_set1_epi32(fy as i32), _mm_set1_epi32(gy as i32));
    let weighted = _mm256_mullo_epi32(horizontal, vertical_weights);
    let sum = _mm_add_epi32(
        _mm256_castsi256_si128(weighted),
        _mm256_extracti128_si256::<1>(weighted),
    );
    let half = _mm_set1_epi32(1 << (2 * WEIGHT_BITS - 1));
    let shifted = _mm_srli_epi32::<{ 2 * WEIGHT_BITS as i32 }>(_mm_add_epi32(sum, half));
    // Each 32-bit lane is ≤ 255: take its low byte.
    let bytes = _mm_shuffle_epi8(
        shifted,
        _mm_setr_epi8(0, 4, 8, z, z, z, z, z, z, z, z, z, z, z, z, z),
    );
    _mm_cvtsi128_si32(bytes) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::has_avx2;
    use proptest::prelude::*;

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
    fn fast_floor_is_floor() {
        for v in [
            -2.5, -2.0, -1e-9, 0.0, 1e-9, 0.5, 1.0, 3.999_999, 1e12, -1e12,
        ] {
            assert_eq!(floor(v), v.floor() as i64, "{v}");
        }
    }

    /// The baseline and AVX2 fills of one warp (the AVX2 one only where the CPU has it).
    fn both_fills(level: &Level, k: usize, m: &Affine, border: Border, size: usize) {
        let sampler = Sampler::new(level, k, &m.inverse().unwrap(), border);
        let mut baseline = vec![0u8; size * size * 3];
        sampler.fill_baseline(&mut baseline, size);
        if has_avx2() {
            let mut fast = vec![0u8; baseline.len()];
            // SAFETY: checked just above.
            unsafe { sampler.fill_avx2(&mut fast, size) };
            assert_eq!(fast, baseline, "{m:?}, {border:?}, size {size}");
        }
    }

    #[test]
    fn warp_matches_its_baseline_fill() {
        // A noisy source; rotations, shrinks and shifts that cross every edge; both borders.
        let (w, h) = (41u32, 37u32);
        let data: Vec<u8> = (0..w * h * 3)
            .map(|i| ((i * 97 + i / 5) % 256) as u8)
            .collect();
        let mut p = Pyramid::new(w, h, data);
        for (angle, scale, border) in [
            (0.3, 1.0, Border::Replicate),
            (-0.7, 0.8, Border::Constant(17)),
            (2.0, 1.3, Border::Replicate),
            (0.05, 0.55, Border::Constant(0)),
        ] {
            let (c, s) = (f64::cos(angle) * scale, f64::sin(angle) * scale);
            let m = Affine([c, -s, 3.0, s, c, -4.0]);
            let out = warp(&mut p, &m, 40, border).unwrap();
            let (k, level) = p.level(level_for_scale(m.scale()));
            let sampler = Sampler::new(level, k, &m.inverse().unwrap(), border);
            let mut baseline = vec![0u8; out.len()];
            sampler.fill_baseline(&mut baseline, 40);
            assert_eq!(out, baseline, "angle {angle}, scale {scale}");
            both_fills(level, k, &m, border, 40);
        }
    }

    proptest! {
        /// Any affine, on a stored region with offsets inside a larger level, either border:
        /// the AVX2 fill writes the baseline's bytes.
        #[test]
        fn avx2_fill_equals_baseline(
            (w, h) in (2u32..30, 2u32..30),
            (x0, y0, extra) in (0u32..6, 0u32..6, 0u32..4),
            angle in -3.2f64..3.2,
            scale in 0.3f64..2.5,
            (tx, ty) in (-20.0f64..20.0, -20.0f64..20.0),
            size in 1usize..40,
            constant in proptest::option::of(0u8..=255),
            seed in 0u32..1000,
        ) {
            let data: Vec<u8> = (0..w * h * 3).map(|i| ((i * 131 + seed) % 251) as u8).collect();
            let level = Level {
                width: w,
                height: h,
                x0,
                y0,
                full_width: x0 + w + extra,
                full_height: y0 + h + extra,
                data,
            };
            let (c, s) = (angle.cos() * scale, angle.sin() * scale);
            let border = constant.map_or(Border::Replicate, Border::Constant);
            both_fills(&level, 0, &Affine([c, -s, tx, s, c, ty]), border, size);
        }
    }

    proptest! {
        /// Larger regions and crops, where most rows are inside and blended eight pixels at a
        /// time ([`Groups`]), including groups that stop near the data's end.
        #[test]
        fn avx2_group_fill_equals_baseline(
            (w, h) in (16u32..160, 16u32..160),
            angle in -3.2f64..3.2,
            scale in 0.4f64..3.0,
            (tx, ty) in (-10.0f64..40.0, -10.0f64..40.0),
            size in 9usize..96,
            seed in 0u32..1000,
        ) {
            let data: Vec<u8> = (0..w * h * 3).map(|i| ((i * 131 + seed) % 251) as u8).collect();
            let level = Level::whole(w, h, data);
            let (c, s) = (angle.cos() * scale, angle.sin() * scale);
            both_fills(&level, 0, &Affine([c, -s, tx, s, c, ty]), Border::Constant(3), size);
        }
    }

    #[test]
    fn identity_warp_copies_pixels() {
        let mut p = gradient(16, 16);
        let out = warp(&mut p, &Affine::IDENTITY, 16, Border::Constant(0)).unwrap();
        assert_eq!(out, p.base().data);
        let empty = warp(&mut p, &Affine::IDENTITY, 0, Border::Constant(0)).unwrap();
        assert!(empty.is_empty());
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

    /// Level-(k+1) pixel (i, j) by definition: the rounded mean of the level-k pixels of
    /// [2i, 2i+2)×[2j, 2j+2) that the stored rectangle holds.
    fn naive_halved(l: &Level, within: Option<PixelRect>) -> Level {
        let halved = l.halved(within);
        let mut expected = Vec::new();
        for j in 0..halved.height as usize {
            for i in 0..halved.width as usize {
                let (gx, gy) = (2 * (halved.x0 as usize + i), 2 * (halved.y0 as usize + j));
                for c in 0..3 {
                    let (mut sum, mut count) = (0u32, 0u32);
                    for y in gy..gy + 2 {
                        for x in gx..gx + 2 {
                            let (lx, ly) =
                                (x.wrapping_sub(l.x0 as usize), y.wrapping_sub(l.y0 as usize));
                            if lx < l.width as usize && ly < l.height as usize {
                                sum += l.data[(ly * l.width as usize + lx) * 3 + c] as u32;
                                count += 1;
                            }
                        }
                    }
                    expected.push(((sum + count / 2) / count) as u8);
                }
            }
        }
        Level {
            data: expected,
            ..halved
        }
    }

    #[test]
    fn halving_equals_the_area_mean_for_odd_offsets_sizes_and_regions() {
        for (w, h, x0, y0) in [
            (9u32, 7u32, 0u32, 0u32),
            (10, 6, 3, 5),
            (1, 1, 4, 4),
            (13, 2, 1, 0),
        ] {
            let data: Vec<u8> = (0..w * h * 3).map(|v| (v * 97 % 251) as u8).collect();
            let level = Level {
                width: w,
                height: h,
                x0,
                y0,
                full_width: x0 + w + 1,
                full_height: y0 + h,
                data,
            };
            for within in [
                None,
                Some(PixelRect {
                    x0: x0 + 1,
                    y0,
                    x1: x0 + w,
                    y1: y0 + h,
                }),
                Some(PixelRect {
                    x0: x0 + 2,
                    y0: y0 + 1,
                    x1: x0 + w - 1,
                    y1: y0 + h,
                }),
            ] {
                let fast = level.halved(within);
                let slow = naive_halved(&level, within);
                assert_eq!(
                    (fast.x0, fast.y0, fast.width, fast.height),
                    (slow.x0, slow.y0, slow.width, slow.height)
                );
                assert_eq!(fast.data, slow.data, "{w}×{h} at ({x0},{y0}), {within:?}");
            }
        }
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
