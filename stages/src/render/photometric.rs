//! Photometric operations on a rendered RGB8 crop (after the warp, so they cost little): colour
//! factors, grey conversion, Gaussian blur, occlusion patches, JPEG re-compression.

use image::codecs::jpeg::JpegEncoder;
use image::{ExtendedColorType, ImageFormat};

use super::augment::Augmentation;

/// ITU-R BT.601 luma weights.
fn luma(p: &[f32]) -> f32 {
    0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]
}

/// Apply the photometric part of `aug` to a `size`×`size` RGB8 crop, in a fixed order:
/// brightness, contrast, saturation, grey, blur, occlusion, JPEG. Blur sigma is given in
/// 64×64-crop pixels and scaled to `size`.
pub fn apply(crop: &mut [u8], size: u32, aug: &Augmentation) -> Result<(), image::ImageError> {
    if !aug.has_photometric() {
        return Ok(());
    }
    let mut px: Vec<f32> = crop.iter().map(|&v| v as f32).collect();
    if aug.brightness != 1.0 {
        let b = aug.brightness as f32;
        px.iter_mut().for_each(|v| *v *= b);
    }
    if aug.contrast != 1.0 {
        let n = (px.len() / 3).max(1) as f32;
        let mean = px.chunks_exact(3).map(luma).sum::<f32>() / n;
        let c = aug.contrast as f32;
        px.iter_mut().for_each(|v| *v = mean + (*v - mean) * c);
    }
    if aug.saturation != 1.0 || aug.grey {
        let s = if aug.grey { 0.0 } else { aug.saturation as f32 };
        for p in px.chunks_exact_mut(3) {
            let y = luma(p);
            p.iter_mut().for_each(|v| *v = y + (*v - y) * s);
        }
    }
    if aug.blur_sigma > 0.0 {
        gaussian_blur(&mut px, size as usize, aug.blur_sigma * size as f64 / 64.0);
    }
    for (dst, v) in crop.iter_mut().zip(&px) {
        *dst = (v + 0.5).clamp(0.0, 255.0) as u8;
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

/// Separable Gaussian blur of an interleaved RGB `n`×`n` float image, edges replicated.
fn gaussian_blur(px: &mut [f32], n: usize, sigma: f64) {
    let radius = (3.0 * sigma).ceil().max(1.0) as i64;
    let mut kernel: Vec<f32> = (-radius..=radius)
        .map(|t| (-(t * t) as f64 / (2.0 * sigma * sigma)).exp() as f32)
        .collect();
    let total: f32 = kernel.iter().sum();
    kernel.iter_mut().for_each(|k| *k /= total);
    // Separable, whole rows at a time so the inner loops vectorise. Each output value still
    // sums its taps in ascending order from 0.0, so the bytes equal the per-pixel form's.
    let r = radius as usize;
    let row_len = n * 3;
    let last = n as i64 - 1;
    let mut tmp = vec![0f32; px.len()];
    // One row with its border replicated `r` pixels on each side.
    let mut padded = vec![0f32; (n + 2 * r) * 3];
    for y in 0..n {
        let row = &px[y * row_len..(y + 1) * row_len];
        for i in 0..r {
            padded[i * 3..i * 3 + 3].copy_from_slice(&row[..3]);
            let right = (r + n + i) * 3;
            padded[right..right + 3].copy_from_slice(&row[row_len - 3..]);
        }
        padded[r * 3..(r + n) * 3].copy_from_slice(row);
        let out = &mut tmp[y * row_len..(y + 1) * row_len];
        out.fill(0.0);
        for (t, &k) in kernel.iter().enumerate() {
            for (o, &v) in out.iter_mut().zip(&padded[t * 3..t * 3 + row_len]) {
                *o += v * k;
            }
        }
    }
    for y in 0..n {
        let out = &mut px[y * row_len..(y + 1) * row_len];
        out.fill(0.0);
        for (t, &k) in kernel.iter().enumerate() {
            let sy = (y as i64 + t as i64 - radius).clamp(0, last) as usize;
            for (o, &v) in out.iter_mut().zip(&tmp[sy * row_len..(sy + 1) * row_len]) {
                *o += v * k;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::augment::Occlusion;

    /// The plain per-pixel form the row-wise blur must equal bit for bit.
    fn per_pixel_blur(px: &mut [f32], n: usize, sigma: f64) {
        let radius = (3.0 * sigma).ceil().max(1.0) as i64;
        let mut kernel: Vec<f32> = (-radius..=radius)
            .map(|t| (-(t * t) as f64 / (2.0 * sigma * sigma)).exp() as f32)
            .collect();
        let total: f32 = kernel.iter().sum();
        kernel.iter_mut().for_each(|k| *k /= total);
        let last = n as i64 - 1;
        let mut tmp = vec![0f32; px.len()];
        for y in 0..n {
            for x in 0..n {
                for ch in 0..3 {
                    let mut acc = 0.0;
                    for (t, k) in (-radius..=radius).zip(&kernel) {
                        let sx = (x as i64 + t).clamp(0, last) as usize;
                        acc += px[(y * n + sx) * 3 + ch] * k;
                    }
                    tmp[(y * n + x) * 3 + ch] = acc;
                }
            }
        }
        for y in 0..n {
            for x in 0..n {
                for ch in 0..3 {
                    let mut acc = 0.0;
                    for (t, k) in (-radius..=radius).zip(&kernel) {
                        let sy = (y as i64 + t).clamp(0, last) as usize;
                        acc += tmp[(sy * n + x) * 3 + ch] * k;
                    }
                    px[(y * n + x) * 3 + ch] = acc;
                }
            }
        }
    }

    #[test]
    fn row_wise_blur_equals_the_per_pixel_form_bit_for_bit() {
        for (n, sigma) in [(1usize, 0.3), (7, 0.5), (64, 1.2), (128, 2.4), (9, 4.0)] {
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
