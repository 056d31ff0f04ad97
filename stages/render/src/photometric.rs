//! Photometric operations on a rendered RGB8 crop (after the warp, so they cost little): colour
//! factors, grey conversion, Gaussian blur, occlusion patches, JPEG re-compression.

use super::augment::Augmentation;
use super::simd::dispatch_avx2;

/// ITU-R BT.601 luma weights.
const LUMA: [f32; 3] = [0.299, 0.587, 0.114];

/// Fractional bits of the colour map's fixed-point coefficients (a coefficient is off by at most
/// 2^-13, a channel by at most 0.1 grey level before the final rounding).
const COLOUR_BITS: u32 = 12;

/// The colour part of an augmentation as one affine map per pixel, `out = M·rgb + t·(1,1,1)`:
/// brightness `b` (scale), contrast `c` about the mean luma ȳ of the brightened crop, then
/// saturation `s` toward each pixel's luma (grey: `s = 0`). Composed, with `S = s·I + (1−s)·1·lᵀ`
/// (l the luma weights, which sum to 1): `M = c·b·S` and `t = (1−c)·b·ȳ₀`, ȳ₀ the original
/// crop's mean luma. Applied in fixed point (integer arithmetic: the same bytes on every
/// machine, and vectorisable).
struct ColourMap {
    /// `M · 2^12`, rounded.
    m: [[i32; 3]; 3],
    /// `t · 2^12` plus one half for the rounding, rounded.
    t: i32,
}

impl ColourMap {
    fn new(crop: &[u8], aug: &Augmentation) -> Option<Self> {
        let s = if aug.grey { 0.0 } else { aug.saturation };
        let (b, c) = (aug.brightness, aug.contrast);
        if b == 1.0 && c == 1.0 && s == 1.0 {
            return None;
        }
        let mean_luma = if c != 1.0 {
            // Integer channel sums are exact; only the final weighting rounds.
            let sums = dispatch_avx2!(channel_sums_avx2, channel_sums, (crop));
            let n = (crop.len() / 3).max(1) as f64;
            (0..3)
                .map(|ch| LUMA[ch] as f64 * sums[ch] as f64)
                .sum::<f64>()
                / n
        } else {
            0.0
        };
        let one = (1u32 << COLOUR_BITS) as f64;
        let mut m = [[0i32; 3]; 3];
        for (r, row) in m.iter_mut().enumerate() {
            for (q, v) in row.iter_mut().enumerate() {
                let diagonal = if r == q { s } else { 0.0 };
                *v = (c * b * (diagonal + (1.0 - s) * LUMA[q] as f64) * one).round() as i32;
            }
        }
        let t = ((1.0 - c) * b * mean_luma * one + one / 2.0).round() as i32;
        Some(ColourMap { m, t })
    }

    /// Map every pixel of `crop` in place, rounded and clamped to bytes.
    #[inline(always)]
    fn apply_to(&self, crop: &mut [u8]) {
        for p in crop.chunks_exact_mut(3) {
            let (r, g, b) = (p[0] as i32, p[1] as i32, p[2] as i32);
            for (ch, row) in self.m.iter().enumerate() {
                let v = (row[0] * r + row[1] * g + row[2] * b + self.t) >> COLOUR_BITS;
                p[ch] = v.clamp(0, 255) as u8;
            }
        }
    }

    /// [`Self::apply_to`] in AVX2 registers, eight pixels at a time, when every coefficient
    /// fits 16 bits (always, for colour factors up to about 2): a byte shuffle spreads the
    /// pixels' (red, green) and (blue, 0) into 16-bit pairs, and two `madd`s per channel form
    /// `m·rgb` in 32 bits. The same integers as [`Self::apply_to`], clamped by saturating packs.
    /// Larger coefficients take [`Self::apply_to`], compiled for AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn apply_to_avx2(&self, crop: &mut [u8]) {
        use std::arch::x86_64::*;
        let fits = |v: i32| i16::try_from(v).is_ok();
        if !self.m.iter().flatten().all(|&v| fits(v)) {
            self.apply_to(crop);
            return;
        }
        // Per channel, the weights of the (red, green) and (blue, 0) pairs.
        let pair = |a: i32, b: i32| (a & 0xffff) | (b << 16);
        let weights: [[__m256i; 2]; 3] = [0, 1, 2].map(|ch| {
            let row = self.m[ch];
            [
                _mm256_set1_epi32(pair(row[0], row[1])),
                _mm256_set1_epi32(pair(row[2], 0)),
            ]
        });
        let t = _mm256_set1_epi32(self.t);
        // Eight pixels (24 bytes) per step: bytes 0–11 in the low lane (a load at 0) and 12–23 in
        // the high lane (a load at 8, so they start at its byte 4).
        let z = -128i8; // A shuffle index with the high bit set writes 0.
        let red_green = _mm256_setr_epi8(
            0, z, 1, z, 3, z, 4, z, 6, z, 7, z, 9, z, 10, z, //
            4, z, 5, z, 7, z, 8, z, 10, z, 11, z, 13, z, 14, z,
        );
        let blue = _mm256_setr_epi8(
            2, z, z, z, 5, z, z, z, 8, z, z, z, 11, z, z, z, //
            6, z, z, z, 9, z, z, z, 12, z, z, z, 15, z, z, z,
        );
        // After the packs, per lane: red ×4, green ×4, blue ×4, blue ×4: back to RGB order.
        let interleave = _mm256_setr_epi8(
            0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11, z, z, z, z, //
            0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11, z, z, z, z,
        );
        let mut chunks = crop.chunks_exact_mut(24);
        for px in &mut chunks {
            // SAFETY: 16-byte loads at 0 and 8 of a 24-byte chunk.
            let v = unsafe {
                _mm256_set_m128i(
                    _mm_loadu_si128(px.as_ptr().add(8).cast()),
                    _mm_loadu_si128(px.as_ptr().cast()),
                )
            };
            let (rg, b) = (
                _mm256_shuffle_epi8(v, red_green),
                _mm256_shuffle_epi8(v, blue),
            );
            let mut out = [_mm256_setzero_si256(); 3];
            for (o, w) in out.iter_mut().zip(&weights) {
                let sum = _mm256_add_epi32(
                    _mm256_add_epi32(_mm256_madd_epi16(rg, w[0]), _mm256_madd_epi16(b, w[1])),
                    t,
                );
                *o = _mm256_srai_epi32::<{ COLOUR_BITS as i32 }>(sum);
            }
            // Saturating packs clamp to 0..=255, as `apply_to` does.
            let bytes = _mm256_packus_epi16(
                _mm256_packs_epi32(out[0], out[1]),
                _mm256_packs_epi32(out[2], out[2]),
            );
            let rgb = _mm256_shuffle_epi8(bytes, interleave);
            // SAFETY: 16 bytes at 0 (its last 4 are written again next), then 8 at 12 and 4 at
            // 20: all inside the 24-byte chunk, whose bytes were all loaded above.
            unsafe {
                let p = px.as_mut_ptr();
                _mm_storeu_si128(p.cast(), _mm256_castsi256_si128(rgb));
                let high = _mm256_extracti128_si256::<1>(rgb);
                _mm_storel_epi64(p.add(12).cast(), high);
                _mm_storeu_si32(p.add(20).cast(), _mm_srli_si128::<8>(high));
            }
        }
        self.apply_to(chunks.into_remainder());
    }

    /// [`Self::apply_to`] with the widest vector unit this CPU has.
    fn apply(&self, crop: &mut [u8]) {
        dispatch_avx2!(Self::apply_to_avx2, Self::apply_to, (self, crop));
    }
}

/// Per-channel sums of an interleaved RGB8 crop (exact integers).
fn channel_sums(crop: &[u8]) -> [u64; 3] {
    let mut sums = [0u64; 3];
    for p in crop.chunks_exact(3) {
        for ch in 0..3 {
            sums[ch] += p[ch] as u64;
        }
    }
    sums
}

/// [`channel_sums`] in AVX2 registers: per 48-byte block (16 pixels, three 16-byte vectors),
/// each channel's bytes are masked out and summed by `sad` against zero. The same integers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn channel_sums_avx2(crop: &[u8]) -> [u64; 3] {
    use std::arch::x86_64::*;
    const BLOCK: usize = 48;
    // masks[v][ch]: the bytes of channel ch in vector v of a block.
    let masks: [[__m128i; 3]; 3] = std::array::from_fn(|v| {
        std::array::from_fn(|ch| {
            let bytes: [u8; 16] =
                std::array::from_fn(|p| if (16 * v + p) % 3 == ch { 0xff } else { 0 });
            // SAFETY: reads the 16 bytes of `bytes`.
            unsafe { _mm_loadu_si128(bytes.as_ptr().cast()) }
        })
    });
    let zero = _mm_setzero_si128();
    let mut acc = [zero; 3];
    let blocks = crop.chunks_exact(BLOCK);
    let rest = blocks.remainder();
    for block in blocks {
        for (v, mask) in masks.iter().enumerate() {
            // SAFETY: 16 bytes at 16·v of a 48-byte block.
            let x = unsafe { _mm_loadu_si128(block.as_ptr().add(16 * v).cast()) };
            for ch in 0..3 {
                acc[ch] = _mm_add_epi64(acc[ch], _mm_sad_epu8(_mm_and_si128(x, mask[ch]), zero));
            }
        }
    }
    let tail = channel_sums(rest);
    std::array::from_fn(|ch| {
        let (low, high) = (_mm_cvtsi128_si64(acc[ch]), _mm_extract_epi64::<1>(acc[ch]));
        low as u64 + high as u64 + tail[ch]
    })
}

/// Apply the photometric part of `aug` to a `size`×`size` RGB8 crop, in a fixed order:
/// colour (brightness, contrast, saturation, grey; one fused pass, see [`ColourMap`], rounded
/// to bytes), blur (integer, see [`gaussian_blur`]), occlusion, JPEG. Blur sigma is given in
/// 64×64-crop pixels and scaled to `size`.
pub fn apply(crop: &mut [u8], size: u32, aug: &Augmentation) -> Result<(), image::ImageError> {
    if !aug.has_photometric() {
        return Ok(());
    }
    if let Some(map) = ColourMap::new(crop, aug) {
        map.apply(crop);
    }
    if aug.blur_sigma > 0.0 {
        gaussian_blur(crop, size as usize, aug.blur_sigma * size as f64 / 64.0);
    }
    let n = size as usize;
    for o in &aug.occlusions {
        let x0 = ((o.x * size as f32).round().max(0.0) as usize).min(n);
        let y0 = ((o.y * size as f32).round().max(0.0) as usize).min(n);
        let x1 = (((o.x + o.w) * size as f32).round().max(0.0) as usize).min(n);
        let y1 = (((o.y + o.h) * size as f32).round().max(0.0) as usize).min(n);
        for y in y0..y1 {
            for x in x0..x1 {
                crop[(y * n + x) * 3..(y * n + x) * 3 + 3].copy_from_slice(&o.rgb);
            }
        }
    }
    if let Some(q) = aug.jpeg_quality {
        super::recompress::recompress(crop, size, q)?;
    }
    Ok(())
}

/// Fractional bits of the blur weights: the weights of a kernel sum to exactly 2^8, so a
/// weighted sum of bytes stays within u16 (≤ 255 · 256) in either pass.
const BLUR_BITS: u32 = 8;

/// The half kernel of a Gaussian truncated at 3σ, in integer weights: `w[0]` for the centre,
/// `w[t]` for offsets ±t, with `w[0] + 2·Σ w[t] = 2^8` exactly (the centre takes the rounding
/// remainder, so flat regions stay flat).
fn half_kernel(sigma: f64) -> Vec<u16> {
    let radius = (3.0 * sigma).ceil().max(1.0) as i64;
    let gauss: Vec<f64> = (0..=radius)
        .map(|t| (-(t * t) as f64 / (2.0 * sigma * sigma)).exp())
        .collect();
    let total = gauss[0] + 2.0 * gauss[1..].iter().sum::<f64>();
    let one = 1i64 << BLUR_BITS;
    let mut w: Vec<i64> = gauss
        .iter()
        .map(|g| (g / total * one as f64).round() as i64)
        .collect();
    // Rounding can leave the centre too little; take it back from the outermost taps.
    let mut t = w.len() - 1;
    while t > 0 && one - 2 * w[1..].iter().sum::<i64>() < w[1] {
        if w[t] > 0 {
            w[t] -= 1;
        } else {
            t -= 1;
        }
    }
    w[0] = one - 2 * w[1..].iter().sum::<i64>();
    // Drop the taps that rounded to zero (they add nothing).
    while w.len() > 1 && w[w.len() - 1] == 0 {
        w.pop();
    }
    w.into_iter().map(|v| v as u16).collect()
}

/// Outputs computed together by the blur taps: one accumulator of 32 u16 lanes (two AVX2
/// registers) stays in registers across all taps, and is stored once.
const BLOCK: usize = 32;

/// A weighted sum of bytes with weights summing to 2^8 (at most 255 · 2^8), rounded to a byte.
#[inline(always)]
fn round_to_byte(sum: u16) -> u8 {
    // ≤ 65280 + 128: no overflow.
    ((sum + (1 << (BLUR_BITS - 1))) >> BLUR_BITS) as u8
}

/// One pass of the blur along a flat run of bytes: with r = `w.len() − 1`,
/// `out[k] = w[0]·s[c+k] + Σ_t w[t]·(s[c+k−t·d] + s[c+k+t·d])`, rounded to a byte, where `s` is
/// `src`, `c` is `centre` and `d` the distance between taps (3 along a row of RGB pixels, the
/// row length across rows). Every tap must lie in `src`. The sum is at most 255 · 2^8: u16
/// lanes hold it.
#[inline(always)]
fn taps(out: &mut [u8], src: &[u8], centre: usize, d: usize, w: &[u16]) {
    let reach = (w.len() - 1) * d;
    assert!(centre >= reach && centre + out.len() + reach <= src.len());
    let blocks = out.len() / BLOCK;
    for b in 0..blocks {
        let mut acc = [0u16; BLOCK];
        // SAFETY: the taps of outputs [b·BLOCK, (b+1)·BLOCK) read src[c + b·BLOCK − reach ..
        // c + (b+1)·BLOCK + reach), inside `src` by the assertion above. Raw reads: the checked
        // slices cost two bounds tests per tap and block, as much as the arithmetic.
        unsafe {
            let p = src.as_ptr().add(centre + b * BLOCK);
            for (l, a) in acc.iter_mut().enumerate() {
                *a = w[0] * *p.add(l) as u16;
            }
            for (t, &wt) in w.iter().enumerate().skip(1) {
                let (lo, hi) = (p.sub(t * d), p.add(t * d));
                for (l, a) in acc.iter_mut().enumerate() {
                    *a += wt * (*lo.add(l) as u16 + *hi.add(l) as u16);
                }
            }
        }
        // Rounded into an array first: written straight into `out`, the compiler stored the
        // bytes one at a time.
        let mut bytes = [0u8; BLOCK];
        for (o, &a) in bytes.iter_mut().zip(&acc) {
            *o = round_to_byte(a);
        }
        out[b * BLOCK..(b + 1) * BLOCK].copy_from_slice(&bytes);
    }
    for (k, o) in out.iter_mut().enumerate().skip(blocks * BLOCK) {
        let at = centre + k;
        let sum = (1..w.len()).fold(w[0] * src[at] as u16, |sum, t| {
            sum + w[t] * (src[at - t * d] as u16 + src[at + t * d] as u16)
        });
        *o = round_to_byte(sum);
    }
}

/// Separable Gaussian blur of an interleaved RGB8 `n`×`n` image in place, edges replicated, in
/// integer arithmetic (weights of 1/2^8, see [`half_kernel`]; each pass rounds to bytes, so
/// both run in 16-bit lanes).
fn gaussian_blur(px: &mut [u8], n: usize, sigma: f64) {
    let w = half_kernel(sigma);
    if w.len() == 1 {
        return; // All weight on the centre: the blur is the identity.
    }
    dispatch_avx2!(blur_avx2, blur_baseline, (px, n, &w));
}

/// [`gaussian_blur`] with the half kernel `w` (at least one side tap). The horizontal pass
/// writes its rows into a byte image with r = `w.len() − 1` copies of its first and last rows
/// above and below (the replicated edge), so that the vertical pass is one run of [`taps`] over
/// the whole image, back into `px`.
#[inline(always)]
fn blur_with(px: &mut [u8], n: usize, w: &[u16]) {
    let r = w.len() - 1;
    let row_len = n * 3;
    let mut tmp = vec![0u8; (n + 2 * r) * row_len];
    // Horizontal: one row at a time, with its edge pixels replicated r times on each side.
    let mut padded = vec![0u8; (n + 2 * r) * 3];
    for (row, out) in px
        .chunks_exact(row_len)
        .zip(tmp[r * row_len..].chunks_exact_mut(row_len))
    {
        for i in 0..r {
            padded[i * 3..i * 3 + 3].copy_from_slice(&row[..3]);
            padded[(r + n + i) * 3..(r + n + i) * 3 + 3].copy_from_slice(&row[row_len - 3..]);
        }
        padded[r * 3..(r + n) * 3].copy_from_slice(row);
        taps(out, &padded, r * 3, 3, w);
    }
    // The rows beyond the edges.
    let (top, bottom) = (r * row_len, (r + n - 1) * row_len);
    for i in 0..r {
        tmp.copy_within(top..top + row_len, i * row_len);
        tmp.copy_within(bottom..bottom + row_len, (r + n + i) * row_len);
    }
    // Vertical: every output row at once.
    taps(px, &tmp, r * row_len, row_len, w);
}

/// [`blur_with`] with the kernel's length known to the compiler for radii up to 12 (σ up to 4
/// crop pixels), so that the tap loops unroll and their weights stay in registers; longer
/// kernels take the general loop. The same arithmetic either way.
#[inline(always)]
fn blur_unrolled(px: &mut [u8], n: usize, w: &[u16]) {
    macro_rules! fixed {
        ($($len:literal)*) => {
            match w.len() {
                $($len => blur_with(px, n, <&[u16; $len]>::try_from(w).unwrap()),)*
                _ => blur_with(px, n, w),
            }
        };
    }
    fixed!(2 3 4 5 6 7 8 9 10 11 12 13)
}

fn blur_baseline(px: &mut [u8], n: usize, w: &[u16]) {
    blur_unrolled(px, n, w);
}

/// [`blur_unrolled`] compiled for AVX2 (integer arithmetic: the same bytes).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn blur_avx2(px: &mut [u8], n: usize, w: &[u16]) {
    blur_unrolled(px, n, w);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::augment::Occlusion;
    use crate::simd::has_avx2;

    /// The plain per-pixel form of the integer blur: each pass rounds to bytes.
    fn per_pixel_blur(px: &mut [u8], n: usize, sigma: f64) {
        let w = half_kernel(sigma);
        let r = (w.len() - 1) as i64;
        let last = n as i64 - 1;
        let at = |v: i64| v.clamp(0, last) as usize;
        let mut tmp = vec![0u32; px.len()];
        for y in 0..n {
            for x in 0..n {
                for ch in 0..3 {
                    let v = |sx: i64| px[(y * n + at(sx)) * 3 + ch] as u32;
                    let mut acc = 0;
                    for t in -r..=r {
                        acc += w[t.unsigned_abs() as usize] as u32 * v(x as i64 + t);
                    }
                    tmp[(y * n + x) * 3 + ch] = (acc + 128) >> 8;
                }
            }
        }
        for y in 0..n {
            for x in 0..n {
                for ch in 0..3 {
                    let v = |sy: i64| tmp[(at(sy) * n + x) * 3 + ch];
                    let mut acc = 0;
                    for t in -r..=r {
                        acc += w[t.unsigned_abs() as usize] as u32 * v(y as i64 + t);
                    }
                    px[(y * n + x) * 3 + ch] = ((acc + 128) >> 8) as u8;
                }
            }
        }
    }

    #[test]
    fn row_wise_blur_equals_the_per_pixel_form() {
        for (n, sigma) in [
            (1usize, 0.3),
            (7, 0.5),
            (64, 1.2),
            (128, 2.4),
            (9, 4.0),
            (13, 1.0),
        ] {
            let original: Vec<u8> = (0..n * n * 3).map(|i| ((i * 7919) % 256) as u8).collect();
            let (mut fast, mut slow) = (original.clone(), original);
            gaussian_blur(&mut fast, n, sigma);
            per_pixel_blur(&mut slow, n, sigma);
            assert_eq!(fast, slow, "n {n}, sigma {sigma}");
        }
    }

    #[test]
    fn kernels_sum_to_one_and_keep_flat_regions_flat() {
        for sigma in [0.1, 0.3, 0.6, 1.0, 1.5, 2.4, 4.0, 8.0] {
            let w = half_kernel(sigma);
            let total: u32 = w[0] as u32 + 2 * w[1..].iter().map(|&v| v as u32).sum::<u32>();
            assert_eq!(total, 256, "sigma {sigma}: {w:?}");
            assert!(w.windows(2).all(|p| p[0] >= p[1]), "sigma {sigma}: {w:?}");
            let mut flat = vec![201u8; 10 * 10 * 3];
            gaussian_blur(&mut flat, 10, sigma);
            assert!(flat.iter().all(|&v| v == 201), "sigma {sigma}");
        }
    }

    #[test]
    fn baseline_and_avx2_blurs_agree() {
        // Sizes with and without a partial block of taps; kernels unrolled by length (σ up
        // to 2.7) and one longer than the unrolled lengths (σ = 5: the general loop).
        for (n, sigma) in [(5, 0.6), (64, 1.0), (67, 2.4), (128, 2.7), (40, 5.0)] {
            let w = half_kernel(sigma);
            assert_eq!(
                w.len() > 13,
                sigma == 5.0,
                "sigma {sigma}: {} taps",
                w.len()
            );
            let data: Vec<u8> = (0..n * n * 3)
                .map(|i| ((i * 37 + i / 7) % 256) as u8)
                .collect();
            let (mut a, mut b) = (data.clone(), data.clone());
            blur_baseline(&mut a, n, &w);
            if has_avx2() {
                // SAFETY: checked just above.
                unsafe { blur_avx2(&mut b, n, &w) };
                assert_eq!(a, b, "n {n}, sigma {sigma}");
            }
            assert_ne!(a, data, "the blur changed nothing (n {n})");
        }
    }

    #[test]
    fn baseline_and_avx2_channel_sums_and_colour_maps_agree() {
        if !has_avx2() {
            return;
        }
        // Crop sizes below and above one 48-byte block of the AVX2 sums, with and without a
        // partial block; maps that clamp at both ends, negative coefficients (saturation > 1),
        // grey, and very large coefficients.
        let maps = [
            (1.2, 0.8, 1.3, false),
            (0.6, 1.4, 0.0, false),
            (1.25, 1.25, 1.0, true),
            (0.9, 1.0, 1.6, false),
            (3.0, 2.5, 1.5, false),
        ];
        for n in [1usize, 3, 4, 6, 7, 64, 67, 128] {
            let crop: Vec<u8> = (0..n * n * 3)
                .map(|i| ((i * 37 + i / 7 + i * i % 11) % 256) as u8)
                .collect();
            let sums = channel_sums(&crop);
            // SAFETY: checked above.
            assert_eq!(sums, unsafe { channel_sums_avx2(&crop) }, "n {n}");
            for (brightness, contrast, saturation, grey) in maps {
                let aug = Augmentation {
                    brightness,
                    contrast,
                    saturation,
                    grey,
                    ..Augmentation::identity()
                };
                let map = ColourMap::new(&crop, &aug).unwrap();
                let (mut a, mut b) = (crop.clone(), crop.clone());
                map.apply_to(&mut a);
                // SAFETY: checked above.
                unsafe { map.apply_to_avx2(&mut b) };
                assert_eq!(a, b, "n {n}, map {:?}", map.m);
            }
        }
    }

    #[test]
    fn fused_colour_map_matches_the_sequential_definition() {
        let crop = checker(6);
        let aug = Augmentation {
            brightness: 1.2,
            contrast: 0.8,
            saturation: 1.3,
            ..Augmentation::identity()
        };
        let mut fused = crop.clone();
        ColourMap::new(&crop, &aug).unwrap().apply(&mut fused);
        // Brightness, then contrast about the brightened mean luma, then saturation, in f64.
        let px: Vec<f64> = crop.iter().map(|&v| v as f64 * 1.2).collect();
        let luma =
            |p: &[f64]| LUMA[0] as f64 * p[0] + LUMA[1] as f64 * p[1] + LUMA[2] as f64 * p[2];
        let mean = px.chunks_exact(3).map(luma).sum::<f64>() / 36.0;
        for (p, q) in px.chunks_exact(3).zip(fused.chunks_exact(3)) {
            let c: Vec<f64> = p.iter().map(|v| mean + (v - mean) * 0.8).collect();
            let y = luma(&c);
            for ch in 0..3 {
                let expected = (y + (c[ch] - y) * 1.3).clamp(0.0, 255.0);
                assert!(
                    (q[ch] as f64 - expected).abs() <= 0.6,
                    "{q:?} vs {expected}"
                );
            }
        }
    }

    fn checker(n: usize) -> Vec<u8> {
        (0..n * n)
            .flat_map(|i| {
                if (i / n + i % n).is_multiple_of(2) {
                    [200, 100, 50]
                } else {
                    [20, 40, 60]
                }
            })
            .collect()
    }

    #[test]
    fn identity_changes_nothing() {
        let mut crop = checker(8);
        apply(&mut crop, 8, &Augmentation::identity()).unwrap();
        assert_eq!(crop, checker(8));
    }

    #[test]
    fn grey_makes_channels_equal_and_blur_smooths() {
        let mut crop = checker(8);
        let aug = Augmentation {
            grey: true,
            ..Augmentation::identity()
        };
        apply(&mut crop, 8, &aug).unwrap();
        assert!(crop.chunks_exact(3).all(|p| p[0] == p[1] && p[1] == p[2]));
        let mut crop = checker(64);
        let aug = Augmentation {
            blur_sigma: 2.0,
            ..Augmentation::identity()
        };
        apply(&mut crop, 64, &aug).unwrap();
        // Away from the replicated edges the period-2 checker is flattened.
        let inner: Vec<u8> = (8..56)
            .flat_map(|y| (8..56).map(move |x| (y, x)))
            .map(|(y, x)| crop[(y * 64 + x) * 3])
            .collect();
        let spread = inner.iter().max().unwrap() - inner.iter().min().unwrap();
        assert!(spread < 40, "blur left a spread of {spread}");
    }

    #[test]
    fn occlusion_fills_its_rect_and_jpeg_keeps_size() {
        let mut crop = checker(10);
        let o = Occlusion {
            x: 0.2,
            y: 0.3,
            w: 0.5,
            h: 0.2,
            rgb: [1, 2, 3],
        };
        let aug = Augmentation {
            occlusions: vec![o],
            ..Augmentation::identity()
        };
        apply(&mut crop, 10, &aug).unwrap();
        assert_eq!(&crop[(3 * 10 + 2) * 3..(3 * 10 + 2) * 3 + 3], &[1, 2, 3]);
        assert_eq!(&crop[(4 * 10 + 6) * 3..(4 * 10 + 6) * 3 + 3], &[1, 2, 3]);
        assert_ne!(&crop[(5 * 10 + 2) * 3..(5 * 10 + 2) * 3 + 3], &[1, 2, 3]);
        let aug = Augmentation {
            jpeg_quality: Some(30),
            ..Augmentation::identity()
        };
        let before = crop.clone();
        apply(&mut crop, 10, &aug).unwrap();
        assert_eq!(crop.len(), before.len());
        assert_ne!(crop, before);
    }
}
