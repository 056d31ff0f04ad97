use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;

/// Encode RGB8 pixels as a JPEG with libjpeg-turbo (the `image` crate's encoder only writes
/// 4:4:4; cameras mostly write 4:2:0).
fn encode(rgb: &[u8], w: u32, h: u32, quality: i32, subsamp: tj::TJSAMP) -> Vec<u8> {
    encode_with(rgb, w, h, quality, subsamp, false)
}

/// [`encode`], progressive (several scans, tables between them) when asked.
fn encode_with(
    rgb: &[u8],
    w: u32,
    h: u32,
    quality: i32,
    subsamp: tj::TJSAMP,
    progressive: bool,
) -> Vec<u8> {
    // SAFETY: a fresh compressor; `rgb` holds w × h RGB pixels; the output buffer is allocated
    // by TurboJPEG, copied, then freed with tj3Free.
    unsafe {
        let handle = tj::tj3Init(tj::TJINIT_TJINIT_COMPRESS as c_int);
        assert!(!handle.is_null());
        assert_eq!(
            tj::tj3Set(handle, tj::TJPARAM_TJPARAM_QUALITY as c_int, quality),
            0
        );
        assert_eq!(
            tj::tj3Set(handle, tj::TJPARAM_TJPARAM_SUBSAMP as c_int, subsamp),
            0
        );
        assert_eq!(
            tj::tj3Set(
                handle,
                tj::TJPARAM_TJPARAM_PROGRESSIVE as c_int,
                c_int::from(progressive)
            ),
            0
        );
        let mut buf: *mut u8 = std::ptr::null_mut();
        let mut size: tj::size_t = 0;
        let rc = tj::tj3Compress8(
            handle,
            rgb.as_ptr(),
            w as c_int,
            0,
            h as c_int,
            tj::TJPF_TJPF_RGB as c_int,
            &mut buf,
            &mut size,
        );
        assert_eq!(rc, 0);
        let out = std::slice::from_raw_parts(buf, size as usize).to_vec();
        tj::tj3Free(buf.cast());
        tj::tj3Destroy(handle);
        out
    }
}

/// A smooth colour gradient (≈ 1 grey level per pixel along x, y and the diagonal).
fn gradient(w: u32, h: u32) -> Vec<u8> {
    let mut px = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            px.extend([
                (20 + x * 200 / w) as u8,
                (20 + y * 200 / h) as u8,
                (120 + (x + y) * 100 / (w + h)) as u8,
            ]);
        }
    }
    px
}

/// Texture with edges at every scale: blocks, stripes and noise (a hard case for the decoder's
/// region handling, which must not change a single value).
fn texture(w: u32, h: u32, seed: u64) -> Vec<u8> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut px = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            let block = ((x / 13 + y / 7) % 2) as u8 * 90;
            let stripe = ((x + 2 * y) % 9 < 3) as u8 * 60;
            px.extend([
                block + rng.gen_range(0..60),
                stripe + rng.gen_range(0..60),
                block / 2 + stripe + rng.gen_range(0..40),
            ]);
        }
    }
    px
}

fn source(bytes: Vec<u8>) -> SourceFile {
    SourceFile::from_bytes(Path::new("mem.jpg"), bytes)
}

fn whole(k: usize, w: u32, h: u32) -> PixelRect {
    PixelRect {
        x0: 0,
        y0: 0,
        x1: w.div_ceil(1 << k),
        y1: h.div_ceil(1 << k),
    }
}

#[test]
fn reduced_decode_has_the_pyramid_level_geometry() {
    // Odd sizes: the last pixel of a level covers a partial block at the image edge.
    let (w, h) = (203, 157);
    for subsamp in [tj::TJSAMP_TJSAMP_444, tj::TJSAMP_TJSAMP_420] {
        let file = source(encode(&gradient(w, h), w, h, 98, subsamp));
        let info = file
            .reduced_jpeg()
            .expect("a baseline JPEG allows reduced decoding");
        assert_eq!((info.width, info.height), (w, h));
        let mut full = file.decode_full().unwrap();
        for k in 1..=MAX_REDUCED_LEVEL {
            let mut reduced = file.decode_reduced(k, whole(k, w, h)).unwrap();
            let (got_k, r) = reduced.level(k);
            assert_eq!(got_k, k);
            let r = r.clone();
            let (_, f) = full.level(k);
            assert_eq!((r.width, r.height), (f.width, f.height), "level {k} size");
            assert_eq!((r.full_width, r.full_height), (f.width, f.height));
            let mut worst = 0;
            for (i, (a, b)) in r.data.iter().zip(&f.data).enumerate() {
                let d = a.abs_diff(*b);
                worst = worst.max(d);
                // A half-pixel shift would cost ≈ 2^(k−1) grey levels per axis on this
                // gradient; equal footprints leave only filter and rounding differences.
                let p = i / 3;
                assert!(
                    d <= 3,
                    "subsamp {subsamp} level {k} pixel ({}, {}) channel {}: {a} vs {b}",
                    p as u32 % r.width,
                    p as u32 / r.width,
                    i % 3
                );
            }
            assert!(worst <= 3);
        }
    }
}

#[test]
fn reduced_decode_is_centred_like_the_pyramid() {
    // Rows 0–31 ramp up, rows 32–63 ramp down (0.9 grey levels per source pixel). A sub-pixel
    // shift δ (in level-k pixels) of the reduced decode against the area-averaged level adds
    // +δ·slope to the mean difference on one ramp and −δ·slope on the other, while rounding
    // biases add the same to both: half the difference of the two means is the shift.
    let (w, h) = (256, 64);
    let mut px = Vec::new();
    for y in 0..h {
        for x in 0..w {
            let t = if y < h / 2 { x } else { w - 1 - x };
            let v = (t as f32 * 0.9 + 8.0) as u8;
            px.extend([v, v, v]);
        }
    }
    let file = source(encode(&px, w, h, 100, tj::TJSAMP_TJSAMP_420));
    let mut full = file.decode_full().unwrap();
    for k in 1..=MAX_REDUCED_LEVEL {
        let mut reduced = file.decode_reduced(k, whole(k, w, h)).unwrap();
        let r = reduced.level(k).1.clone();
        let f = full.level(k).1;
        let (n, rows) = (r.width as usize, r.height as usize);
        let mean = |ys: std::ops::Range<usize>| {
            let (mut sum, mut count) = (0f64, 0);
            for y in ys {
                // Interior columns only: edge blocks are flat (replicated), not ramped.
                for x in 2..n - 2 {
                    let p = (y * n + x) * 3;
                    sum += r.data[p] as f64 - f.data[p] as f64;
                    count += 1;
                }
            }
            sum / count as f64
        };
        let (up, down) = (mean(0..rows / 2), mean(rows / 2..rows));
        let slope = 0.9 * (1 << k) as f64;
        let shift = (up - down) / (2.0 * slope);
        assert!(
            shift.abs() < 0.05,
            "level {k}: shift {shift} px (means {up}, {down})"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn a_region_decode_equals_the_whole_decode_on_its_pixels(
        k in 1usize..=MAX_REDUCED_LEVEL,
        sub in 0usize..6,
        a in (0u32..1000, 0u32..1000, 1u32..1000, 1u32..1000),
    ) {
        let (w, h) = (301, 245);
        let subsamp = [
            tj::TJSAMP_TJSAMP_444, tj::TJSAMP_TJSAMP_420, tj::TJSAMP_TJSAMP_422,
            tj::TJSAMP_TJSAMP_440, tj::TJSAMP_TJSAMP_411, tj::TJSAMP_TJSAMP_GRAY,
        ][sub];
        let file = source(encode(&texture(w, h, 7), w, h, 90, subsamp));
        let all = whole(k, w, h);
        let x0 = a.0 % all.x1;
        let y0 = a.1 % all.y1;
        let region = PixelRect { x0, y0, x1: (x0 + a.2 % 60 + 1).min(all.x1), y1: (y0 + a.3 % 60 + 1).min(all.y1) };
        let part = file.decode_reduced(k, region).unwrap();
        let part = part.base();
        let full = file.decode_reduced(k, all).unwrap();
        let full = full.base();
        prop_assert_eq!((part.x0, part.y0), (region.x0, region.y0));
        prop_assert_eq!((part.x0 + part.width, part.y0 + part.height), (region.x1, region.y1));
        for y in 0..part.height {
            for x in 0..part.width {
                let p = ((y * part.width + x) * 3) as usize;
                let q = (((y + part.y0) * full.width + x + part.x0) * 3) as usize;
                prop_assert_eq!(&part.data[p..p + 3], &full.data[q..q + 3], "pixel ({}, {})", x + part.x0, y + part.y0);
            }
        }
    }
}

#[test]
fn pyramids_of_aligned_regions_equal_the_whole_pyramid() {
    // Levels above 3 are halved from the 1/8 decode; a region aligned as plan_decodes aligns
    // it must halve into exactly the pixels of the whole image's pyramid.
    let (w, h) = (517, 389);
    let file = source(encode(&texture(w, h, 3), w, h, 90, tj::TJSAMP_TJSAMP_420));
    let mut whole_p = file.decode_reduced(3, whole(3, w, h)).unwrap();
    let region = PixelRect {
        x0: 8,
        y0: 12,
        x1: 40,
        y1: whole(3, w, h).y1,
    };
    let mut part = file.decode_reduced(3, region).unwrap();
    for k in 4..=5 {
        let p = part.level(k).1.clone();
        let f = whole_p.level(k).1;
        for y in 0..p.height {
            for x in 0..p.width {
                let a = ((y * p.width + x) * 3) as usize;
                let b = (((y + p.y0) * f.width + x + p.x0) * 3) as usize;
                assert_eq!(&p.data[a..a + 3], &f.data[b..b + 3], "level {k} ({x}, {y})");
            }
        }
    }
}

#[test]
fn plan_serves_each_crop_by_its_own_level_and_covers_its_reach() {
    let (w, h) = (1000, 800);
    // Scales 1.0 (level 0), 0.4 (level 1), 0.1 (level 3), 0.03 (level 5 → 1/8 decode).
    let crop = |s: f64, cx: f64, cy: f64| {
        let m = Affine::translation(32.0, 32.0)
            .after(&Affine::scaling(s))
            .after(&Affine::rotation_deg(20.0))
            .after(&Affine::translation(-cx, -cy));
        (m, 64)
    };
    let crops = [
        crop(1.0, 500.0, 400.0),
        crop(0.4, 300.0, 300.0),
        crop(0.1, 700.0, 500.0),
        crop(0.03, 500.0, 400.0),
    ];
    let (requests, serving) = plan_decodes(&crops, w, h, true);
    assert_eq!(
        requests.iter().map(|r| r.level).collect::<Vec<_>>(),
        vec![0, 1, 3]
    );
    assert_eq!(serving, vec![Some(0), Some(1), Some(2), Some(2)]);
    // Every level-k pixel a crop reaches lies in its decode region (scaled to level k).
    for (i, &(m, size)) in crops.iter().enumerate() {
        let k = warp::level_for_scale(m.scale());
        let req = requests[serving[i].unwrap()];
        let region = req.region;
        let f = 1u32 << (k - req.level);
        let r = warp::reach(&m, size, k, w, h).unwrap();
        assert!(region.x0 <= r.x0 * f && region.y0 <= r.y0 * f);
        assert!(region.x1 >= (r.x1 * f).min(w.div_ceil(1 << req.level)));
        assert!(region.y1 >= (r.y1 * f).min(h.div_ceil(1 << req.level)));
        // Aligned for halving up to level 5: 2^(5−3) at level 3.
        if req.level == 3 {
            assert_eq!(region.x0 % 4, 0);
            assert_eq!(region.y0 % 4, 0);
        }
    }
    // Without reduced decoding, one full decode serves everything.
    let (requests, serving) = plan_decodes(&crops, w, h, false);
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].level, 0);
    // Aligned for halving up to level 5 (the 0.03-scale crop).
    let r = requests[0].region;
    assert_eq!((r.x0 % 32, r.y0 % 32), (0, 0));
    assert!(r.x1 % 32 == 0 || r.x1 == w);
    assert!(r.y1 % 32 == 0 || r.y1 == h);
    assert!(serving.iter().all(|s| *s == Some(0)));
}

#[test]
fn png_and_unsupported_files_use_the_full_decode() {
    let mut png = Vec::new();
    image::RgbImage::from_raw(4, 4, vec![9; 48])
        .unwrap()
        .write_to(&mut Cursor::new(&mut png), ImageFormat::Png)
        .unwrap();
    let file = source(png);
    assert!(file.reduced_jpeg().is_none());
    assert!(matches!(
        file.decode_reduced(1, whole(1, 4, 4)),
        Err(RenderError::Image { .. })
    ));
    assert_eq!(file.decode_full().unwrap().base().data, vec![9; 48]);
    // A truncated header is no JPEG we can reduce; the full decode reports the error.
    let bad = source(vec![0xFF, 0xD8, 0xFF, 0xE0, 0, 16]);
    assert!(bad.reduced_jpeg().is_none());
    assert!(bad.decode_full().is_err());
}

/// `bytes` with the SOF0 header's height and width replaced (what a corrupt or hostile header
/// declares; the data stays the small image's).
fn declare_size(mut bytes: Vec<u8>, w: u16, h: u16) -> Vec<u8> {
    let sof = bytes
        .windows(2)
        .position(|m| m == [0xFF, 0xC0])
        .expect("a baseline JPEG has SOF0");
    // FF C0, length (2), precision (1), height (2), width (2).
    bytes[sof + 5..sof + 7].copy_from_slice(&h.to_be_bytes());
    bytes[sof + 7..sof + 9].copy_from_slice(&w.to_be_bytes());
    bytes
}

/// Where the entropy-coded data of a one-scan JPEG lies: after the SOS segment, before EOI.
fn scan_data(bytes: &[u8]) -> std::ops::Range<usize> {
    let sos = bytes.windows(2).position(|m| m == [0xFF, 0xDA]).unwrap();
    let len = u16::from_be_bytes([bytes[sos + 2], bytes[sos + 3]]) as usize;
    sos + 2 + len..bytes.len() - 2
}

fn err_text<T: std::fmt::Debug>(r: Result<T>) -> String {
    r.unwrap_err().to_string()
}

#[test]
fn a_truncated_jpeg_fails_with_its_path_on_both_decode_paths() {
    let (w, h) = (160, 120);
    let bytes = encode(&texture(w, h, 5), w, h, 90, tj::TJSAMP_TJSAMP_420);
    let cut = SourceFile::from_bytes(
        Path::new("faces/cut.jpg"),
        bytes[..bytes.len() / 2].to_vec(),
    );
    assert!(cut.reduced_jpeg().is_some(), "the header is intact");
    let full = err_text(cut.decode_full());
    assert!(
        full.starts_with("faces/cut.jpg: ") && full.contains("Premature end of JPEG file"),
        "{full}"
    );
    // A region well above the cut still fails: the whole file is entropy-decoded.
    let top = PixelRect {
        x0: 0,
        y0: 0,
        x1: 8,
        y1: 4,
    };
    for k in 1..=MAX_REDUCED_LEVEL {
        let reduced = err_text(cut.decode_reduced(k, top));
        assert!(
            reduced.starts_with("faces/cut.jpg: ") && reduced.contains("truncated"),
            "{reduced}"
        );
    }
    // A PNG cut short fails in the `image` crate's decoder, with its path too.
    let mut png = Vec::new();
    image::RgbImage::from_raw(w, h, texture(w, h, 5))
        .unwrap()
        .write_to(&mut Cursor::new(&mut png), ImageFormat::Png)
        .unwrap();
    let cut_png = SourceFile::from_bytes(Path::new("cut.png"), png[..png.len() / 2].to_vec());
    assert!(err_text(cut_png.decode_full()).starts_with("cut.png: "));
}

#[test]
fn lost_scan_data_fails_and_harmless_warnings_are_counted() {
    let (w, h) = (96, 64);
    let clean = encode(&gradient(w, h), w, h, 95, tj::TJSAMP_TJSAMP_444);
    let scan = scan_data(&clean);
    // A marker in the middle of the scan: the rest of the segment is lost.
    let mut lost = clean.clone();
    let mid = (scan.start + scan.end) / 2;
    lost[mid..mid + 2].copy_from_slice(&[0xFF, 0xD9]);
    let lost = source(lost);
    assert!(err_text(lost.decode_full()).contains("premature end of data segment"));
    assert!(err_text(lost.decode_reduced(1, whole(1, w, h))).contains("corrupt"));

    // Bytes before a header marker: libjpeg-turbo warns, the image is whole.
    let dqt = clean.windows(2).position(|m| m == [0xFF, 0xDB]).unwrap();
    let mut extra = clean[..dqt].to_vec();
    extra.extend([0x00, 0x11, 0x22]);
    extra.extend(&clean[dqt..]);
    let (clean, extra) = (source(clean), source(extra));
    assert_eq!(
        extra.decode_full().unwrap().base().data,
        clean.decode_full().unwrap().base().data
    );
    assert_eq!(extra.decoder_warnings(), 1);
    for k in 1..=MAX_REDUCED_LEVEL {
        let region = whole(k, w, h);
        assert_eq!(
            extra.decode_reduced(k, region).unwrap().base().data,
            clean.decode_reduced(k, region).unwrap().base().data
        );
    }
    assert_eq!(extra.decoder_warnings(), 1 + MAX_REDUCED_LEVEL);
    assert_eq!(clean.decoder_warnings(), 0);
}

#[test]
fn only_warnings_that_keep_the_image_whole_are_harmless() {
    for harmless in [
        "Corrupt JPEG data: 3 extraneous bytes before marker 0xd9",
        "Warning: unknown JFIF revision number 3.01",
        "Unknown Adobe color transform code 7",
        "Corrupt JPEG data: bad ICC marker",
        "Invalid SOS parameters for sequential JPEG",
    ] {
        assert!(warning_is_harmless(harmless), "{harmless}");
    }
    for lost in [
        "Premature end of JPEG file",
        "Corrupt JPEG data: premature end of data segment",
        "Corrupt JPEG data: bad Huffman code",
        "Corrupt JPEG data: bad arithmetic code",
        "Corrupt JPEG data: found marker 0xd9 instead of RST3",
        "Inconsistent progression sequence for component 0 coefficient 1",
        "Bogus marker length",
    ] {
        assert!(!warning_is_harmless(lost), "{lost}");
    }
}

#[test]
fn declared_sizes_are_bounded_before_decoding() {
    let (w, h) = (64, 48);
    let small = encode(&gradient(w, h), w, h, 90, tj::TJSAMP_TJSAMP_420);
    let huge = SourceFile::from_bytes(
        Path::new("huge.jpg"),
        declare_size(small.clone(), 20000, 20000),
    );
    let info = huge.reduced_jpeg().unwrap();
    assert_eq!((info.width, info.height), (20000, 20000));
    let want = "huge.jpg: the image header declares 20000×20000 = 400000000 pixels, more than \
                [render] max_image_pixels = 100000000";
    assert_eq!(err_text(huge.decode_full()), want);
    assert_eq!(
        err_text(huge.decode_reduced(3, whole(3, 20000, 20000))),
        want
    );
    assert!(matches!(
        huge.decode_reduced(1, whole(1, 64, 64)),
        Err(RenderError::ImageTooLarge { .. })
    ));
    // The bound is a setting: exactly w × h pixels pass, one fewer fails, PNG included.
    let file = source(small).with_max_pixels(u64::from(w * h));
    assert!(file.decode_full().is_ok() && file.decode_reduced(1, whole(1, w, h)).is_ok());
    let file = file.with_max_pixels(u64::from(w * h) - 1);
    assert!(matches!(
        file.decode_full(),
        Err(RenderError::ImageTooLarge {
            width: 64,
            height: 48,
            limit: 3071,
            ..
        })
    ));
    let mut png = Vec::new();
    image::RgbImage::new(w, h)
        .write_to(&mut Cursor::new(&mut png), ImageFormat::Png)
        .unwrap();
    let png = SourceFile::from_bytes(Path::new("a.png"), png).with_max_pixels(100);
    assert!(err_text(png.decode_full()).contains("64×48 = 3072 pixels"));
}

#[test]
fn the_end_of_image_marker_is_found_past_every_scan() {
    let (w, h) = (120, 90);
    let px = texture(w, h, 9);
    for progressive in [false, true] {
        let bytes = encode_with(&px, w, h, 85, tj::TJSAMP_TJSAMP_420, progressive);
        let scans = bytes.windows(2).filter(|m| *m == [0xFF, 0xDA]).count();
        assert_eq!(scans > 1, progressive);
        assert!(reaches_end_of_image(&bytes));
        // Bytes after EOI (padding, appended data) do not matter.
        let mut padded = bytes.clone();
        padded.extend([0u8; 100]);
        assert!(reaches_end_of_image(&padded));
        // Cut anywhere (inside a header segment, a scan, between scans, in the EOI marker).
        for cut in [3, 20, bytes.len() / 3, bytes.len() / 2, bytes.len() - 1] {
            assert!(!reaches_end_of_image(&bytes[..cut]), "cut at {cut}");
        }
        let whole = source(bytes.clone());
        assert!(whole.decode_full().is_ok());
        let cut = source(bytes[..bytes.len() - 1].to_vec());
        assert!(err_text(cut.decode_full()).contains("Premature end of JPEG file"));
    }
}

#[test]
fn the_full_decode_gives_the_image_crates_pixels() {
    let (w, h) = (75, 50);
    let jpeg = encode(&texture(w, h, 2), w, h, 80, tj::TJSAMP_TJSAMP_420);
    let mut png = Vec::new();
    image::RgbImage::from_raw(w, h, texture(w, h, 3))
        .unwrap()
        .write_to(&mut Cursor::new(&mut png), ImageFormat::Png)
        .unwrap();
    for bytes in [jpeg, png] {
        let want = image::load_from_memory(&bytes).unwrap().into_rgb8();
        let got = source(bytes).decode_full().unwrap();
        assert_eq!((got.base().width, got.base().height), (w, h));
        assert_eq!(got.base().data, want.into_raw());
    }
}
