//! Photometric operations on a rendered RGB8 crop (after the warp, so they cost little): colour
//! factors, grey conversion, Gaussian blur, occlusion patches, JPEG re-compression.

use image::codecs::jpeg::JpegEncoder;
use image::{ExtendedColorType, ImageFormat};

use super::augment::Augmentation;

/// ITU-R BT.601 luma weights.
const LUMA: [f32; 3] = [0.299, 0.587, 0.114];

/// The colour part of an augmentation as one affine map per pixel, `out = M·rgb + t·(1,1,1)`:
/// brightness `b` (scale), contrast `c` about the mean luma ȳ of the brightened crop, then
/// saturation `s` toward each pixel's luma (grey: `s = 0`). Composed, with `S = s·I + (1−s)·1·lᵀ`
/// (l the luma weights, which sum to 1): `M = c·b·S` and `t = (1−c)·b·ȳ₀`, ȳ₀ the original
/// crop's mean luma.
struct ColourMap {
    m: [[f32; 3]; 3],
    t: f32,
}

impl ColourMap {
    fn new(crop: &[u8], aug: &Augmentation) -> Option<Self> {
        let s = if aug.grey { 0.0 } else { aug.saturation as f32 };
        let (b, c) = (aug.brightness as f32, aug.contrast as f32);
        if b == 1.0 && c == 1.0 && s == 1.0 {
            return None;
        }
        let mean_luma = if c != 1.0 {
            // Integer channel sums are exact; only the final weighting rounds.
            let mut sums = [0u64; 3];
            for p in crop.chunks_exact(3) {
                for ch in 0..3 {
                    sums[ch] += p[ch] as u64;
                }
            }
            let n = (crop.len() / 3).max(1) as f64;
            (0..3)
                .map(|ch| LUMA[ch] as f64 * sums[ch] as f64)
                .sum::<f64>() as f32
                / n as f32
        } else {
            0.0
        };
        let mut m = [[0f32; 3]; 3];
        for (r, row) in m.iter_mut().enumerate() {
            for (q, v) in row.iter_mut().enumerate() {
                let diagonal = if r == q { s } else { 0.0 };
                *v = c * b * (diagonal + (1.0 - s) * LUMA[q]);
            }
        }
        Some(ColourMap {
            m,
            t: (1.0 - c) * b * mean_luma,
        })
    }

    #[inline(always)]
    fn apply(&self, p: &[u8]) -> [f32; 3] {
        let (r, g, b) = (p[0] as f32, p[1] as f32, p[2] as f32);
        let mut out = [0f32; 3];
        for (o, row) in out.iter_mut().zip(&self.m) {
            *o = row[0] * r + row[1] * g + row[2] * b + self.t;
        }
        out
    }
}

/// Round and clamp a float channel value to a byte.
#[inline(always)]
fn to_byte(v: f32) -> u8 {
    (v + 0.5).clamp(0.0, 255.0) as u8
}

/// Apply the photometric part of `aug` to a `size`×`size` RGB8 crop, in a fixed order:
/// colour (brightness, contrast, saturation, grey; one fused pass, see [`ColourMap`]), blur,
/// occlusion, JPEG. Blur sigma is given in 64×64-crop pixels and scaled to `size`.
pub fn apply(crop: &mut [u8], size: u32, aug: &Augmentation) -> Result<(), image::ImageError> {
    if !aug.has_photometric() {
        return Ok(());
    }
    let colour = ColourMap::new(crop, aug);
    if aug.blur_sigma > 0.0 {
        let mut px: Vec<f32> = match &colour {
            Some(map) => crop.chunks_exact(3).flat_map(|p| map.apply(p)).collect(),
            None => crop.iter().map(|&v| v as f32).collect(),
        };
        gaussian_blur(&mut px, size as usize, aug.blur_sigma * size as f64 / 64.0);
        for (dst, &v) in crop.iter_mut().zip(&px) {
            *dst = to_byte(v);
        }
    } else if let Some(map) = &colour {
        for p in crop.chunks_exact_mut(3) {
            let v = map.apply(p);
            for ch in 0..3 {
                p[ch] = to_byte(v[ch]);
            }
        }
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
        let mut encoded = Vec::new();
        JpegEncoder::new_with_quality(&mut encoded, q).encode(
            crop,
            size,
            size,
            ExtendedColorType::Rgb8,
        )?;
        let decoded = image::load_from_memory_with_format(&encoded, ImageFormat::Jpeg)?.to_rgb8();
        crop.copy_from_slice(decoded.as_raw());
    }
    Ok(())
}

/// The normalised half kernel of a Gaussian: `k[0]` for the centre, `k[t]` for offsets ±t,
/// truncated at 3σ.
fn half_kernel(sigma: f64) -> Vec<f32> {
    let radius = (3.0 * sigma).ceil().max(1.0) as i64;
    let full: Vec<f64> = (0..=radius)
        .map(|t| (-(t * t) as f64 / (2.0 * sigma * sigma)).exp())
        .collect();
    let total = full[0] + 2.0 * full[1..].iter().sum::<f64>();
    full.iter().map(|&k| (k / total) as f32).collect()
}

/// `out[i] = k[0]·rows[r][i] + Σ_t k[t]·(rows[r−t][i] + rows[r+t][i])` for a symmetric kernel of
/// radius r = `k.len() − 1` (`rows` holds the 2r + 1 tap slices, each as long as `out`). One
/// whole-row pass per tap pair (plain zipped loops, which the compiler vectorises; the row stays
/// in L1). Every element adds its taps in the same order, so vectorisation cannot change a bit.
#[inline(always)]
fn symmetric_taps(out: &mut [f32], rows: &[&[f32]], k: &[f32]) {
    let r = k.len() - 1;
    let len = out.len();
    for (o, &c) in out.iter_mut().zip(&rows[r][..len]) {
        *o = k[0] * c;
    }
    for t in 1..=r {
        let kt = k[t];
        let pairs = rows[r - t][..len].iter().zip(&rows[r + t][..len]);
        for (o, (&lo, &hi)) in out.iter_mut().zip(pairs) {
            *o += kt * (lo + hi);
        }
    }
}

/// [`symmetric_taps`] compiled for AVX2 (8 lanes per instruction). No FMA: the products and
/// sums round exactly as in the baseline build, so the bytes are the same on every machine.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn symmetric_taps_avx2(out: &mut [f32], rows: &[&[f32]], k: &[f32]) {
    symmetric_taps(out, rows, k);
}

/// [`symmetric_taps`] with the widest vector unit this CPU has.
fn convolve(out: &mut [f32], rows: &[&[f32]], k: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { symmetric_taps_avx2(out, rows, k) };
    }
    symmetric_taps(out, rows, k);
}

/// Separable Gaussian blur of an interleaved RGB `n`×`n` float image, edges replicated.
fn gaussian_blur(px: &mut [f32], n: usize, sigma: f64) {
    let k = half_kernel(sigma);
    let r = k.len() - 1;
    let row_len = n * 3;
    let mut tmp = vec![0f32; px.len()];
    // Horizontal: one row at a time, with its border replicated `r` pixels on each side.
    let mut padded = vec![0f32; (n + 2 * r) * 3];
    for y in 0..n {
        let row = &px[y * row_len..(y + 1) * row_len];
        for i in 0..r {
            padded[i * 3..i * 3 + 3].copy_from_slice(&row[..3]);
            let right = (r + n + i) * 3;
            padded[right..right + 3].copy_from_slice(&row[row_len - 3..]);
        }
        padded[r * 3..(r + n) * 3].copy_from_slice(row);
        let rows: Vec<&[f32]> = (0..=2 * r)
            .map(|t| &padded[t * 3..t * 3 + row_len])
            .collect();
        convolve(&mut tmp[y * row_len..(y + 1) * row_len], &rows, &k);
    }
    // Vertical: whole rows, the rows beyond the edges replicated.
    let last = n as i64 - 1;
    let mut rows: Vec<&[f32]> = Vec::with_capacity(2 * r + 1);
    for y in 0..n {
        rows.clear();
        rows.extend((0..=2 * r).map(|t| {
            let sy = (y as i64 + t as i64 - r as i64).clamp(0, last) as usize;
            &tmp[sy * row_len..(sy + 1) * row_len]
        }));
        convolve(&mut px[y * row_len..(y + 1) * row_len], &rows, &k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::augment::Occlusion;

    /// The plain per-pixel form the row-wise, vectorised blur must equal bit for bit.
    fn per_pixel_blur(px: &mut [f32], n: usize, sigma: f64) {
        let k = half_kernel(sigma);
        let r = (k.len() - 1) as i64;
        let last = n as i64 - 1;
        let at = |v: i64| v.clamp(0, last) as usize;
        let mut tmp = vec![0f32; px.len()];
        for y in 0..n {
            for x in 0..n {
                for ch in 0..3 {
                    let v = |sx: i64| px[(y * n + at(sx)) * 3 + ch];
                    let mut acc = k[0] * v(x as i64);
                    for t in 1..=r {
                        acc += k[t as usize] * (v(x as i64 - t) + v(x as i64 + t));
                    }
                    tmp[(y * n + x) * 3 + ch] = acc;
                }
            }
        }
        for y in 0..n {
            for x in 0..n {
                for ch in 0..3 {
                    let v = |sy: i64| tmp[(at(sy) * n + x) * 3 + ch];
                    let mut acc = k[0] * v(y as i64);
                    for t in 1..=r {
                        acc += k[t as usize] * (v(y as i64 - t) + v(y as i64 + t));
                    }
                    px[(y * n + x) * 3 + ch] = acc;
                }
            }
        }
    }

    #[test]
    fn row_wise_blur_equals_the_per_pixel_form_bit_for_bit() {
        for (n, sigma) in [
            (1usize, 0.3),
            (7, 0.5),
            (64, 1.2),
            (128, 2.4),
            (9, 4.0),
            (13, 1.0),
        ] {
            let original: Vec<f32> = (0..n * n * 3).map(|i| ((i * 7919) % 256) as f32).collect();
            let (mut fast, mut slow) = (original.clone(), original);
            gaussian_blur(&mut fast, n, sigma);
            per_pixel_blur(&mut slow, n, sigma);
            assert!(
                fast.iter()
                    .zip(&slow)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "n {n}, sigma {sigma}"
            );
        }
    }

    #[test]
    fn baseline_and_avx2_taps_agree_bit_for_bit() {
        let k = half_kernel(2.4);
        let data: Vec<f32> = (0..500).map(|i| ((i * 37) % 251) as f32 * 0.731).collect();
        let rows: Vec<&[f32]> = (0..k.len() * 2 - 1)
            .map(|t| &data[t * 3..t * 3 + 363])
            .collect();
        let (mut a, mut b) = (vec![0f32; 363], vec![0f32; 363]);
        symmetric_taps(&mut a, &rows, &k);
        convolve(&mut b, &rows, &k);
        assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
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
        let map = ColourMap::new(&crop, &aug).unwrap();
        // Brightness, then contrast about the brightened mean luma, then saturation.
        let px: Vec<f32> = crop.iter().map(|&v| v as f32 * 1.2).collect();
        let luma = |p: &[f32]| LUMA[0] * p[0] + LUMA[1] * p[1] + LUMA[2] * p[2];
        let mean = px.chunks_exact(3).map(luma).sum::<f32>() / 36.0;
        for (p, q) in px.chunks_exact(3).zip(crop.chunks_exact(3)) {
            let c: Vec<f32> = p.iter().map(|v| mean + (v - mean) * 0.8).collect();
            let y = luma(&c);
            let fused = map.apply(q);
            for ch in 0..3 {
                let expected = y + (c[ch] - y) * 1.3;
                assert!(
                    (fused[ch] - expected).abs() < 1e-3,
                    "{fused:?} vs {expected}"
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
