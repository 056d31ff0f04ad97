//! JPEG re-compression of a crop, the photometric augmentation's last step: the crop is written
//! as a baseline JPEG at quality `q` and decoded again, so that it carries real JPEG artefacts.
//!
//! The writer is this module's own and writes, byte for byte, what the `image` crate's
//! `JpegEncoder` writes (JFIF, 4:4:4, the standard tables of ITU T.81 Annex K scaled by the
//! libjpeg quality rule, the libjpeg integer forward DCT, one scan); the unit tests compare the
//! two on every quality. The crops keep their bytes and the write is 2–3× faster: the `image`
//! crate's encoder (per-pixel accessors, a write call per byte, a `roundf` call per coefficient)
//! was about a quarter of the render stage's time at 8 augmentation epochs on the demo
//! (`bench/README.md`). The decoder is the `image` crate's, as before.
//!
//! The forward DCT follows `jfdctint.c` of the Independent JPEG Group's libjpeg 9 (this software
//! is based in part on the work of the Independent JPEG Group), as the `image` crate's does,
//! including its rounding constants; here the eight rows (then columns) of a block go through it
//! side by side, as lanes of one vector.

use std::io::Cursor;
use std::ops::{Add, Mul, Shl, Shr, Sub};

use image::codecs::jpeg::JpegDecoder;
use image::error::{DecodingError, ImageFormatHint};
use image::{ColorType, ImageDecoder, ImageError, ImageFormat};

use super::simd::dispatch_avx2;

/// Write `rgb` (`size`×`size` RGB8) as a JPEG of quality `quality` (1–100) and decode it back
/// into `rgb`.
pub fn recompress(rgb: &mut [u8], size: u32, quality: u8) -> Result<(), ImageError> {
    let encoded = encode(rgb, size, size, quality);
    let decoder = JpegDecoder::new(Cursor::new(&encoded))?;
    if decoder.dimensions() != (size, size) || decoder.color_type() != ColorType::Rgb8 {
        return Err(ImageError::Decoding(DecodingError::new(
            ImageFormatHint::Exact(ImageFormat::Jpeg),
            format!(
                "re-compressed {size}×{size} RGB crop decoded as {:?} {:?}",
                decoder.dimensions(),
                decoder.color_type()
            ),
        )));
    }
    decoder.read_image(rgb)
}

/// The luminance quantisation table of T.81 Annex K (K.1), natural order: quality 50.
#[rustfmt::skip]
const LUMA_QUANT: [u8; 64] = [
    16, 11, 10, 16, 24, 40, 51, 61,
    12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77,
    24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99,
];

/// The chrominance quantisation table of T.81 Annex K (K.2), natural order.
#[rustfmt::skip]
const CHROMA_QUANT: [u8; 64] = [
    17, 18, 24, 47, 99, 99, 99, 99,
    18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
];

/// `ZIGZAG[k]`: the natural (row-major) index of the `k`-th coefficient in zigzag order.
#[rustfmt::skip]
const ZIGZAG: [u8; 64] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5,
    12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14, 21, 28,
    35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51,
    58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
];

/// A Huffman table as a DHT segment gives it: how many codes have each length 1–16, and the
/// symbols in code order.
struct HuffmanSpec {
    counts: [u8; 16],
    symbols: &'static [u8],
}

/// T.81 Table K.3: luminance DC differences.
const LUMA_DC: HuffmanSpec = HuffmanSpec {
    counts: [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0],
    symbols: &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
};

/// T.81 Table K.4: chrominance DC differences.
const CHROMA_DC: HuffmanSpec = HuffmanSpec {
    counts: [0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0],
    symbols: &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
};

/// T.81 Table K.5: luminance AC coefficients (run/size symbols).
const LUMA_AC: HuffmanSpec = HuffmanSpec {
    counts: [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7d],
    symbols: &[
        0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61,
        0x07, 0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xa1, 0x08, 0x23, 0x42, 0xb1, 0xc1, 0x15, 0x52,
        0xd1, 0xf0, 0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0a, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x25,
        0x26, 0x27, 0x28, 0x29, 0x2a, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45,
        0x46, 0x47, 0x48, 0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64,
        0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x83,
        0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99,
        0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6,
        0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3,
        0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe1, 0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8,
        0xe9, 0xea, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa,
    ],
};

/// T.81 Table K.6: chrominance AC coefficients (run/size symbols).
const CHROMA_AC: HuffmanSpec = HuffmanSpec {
    counts: [0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77],
    symbols: &[
        0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07, 0x61,
        0x71, 0x13, 0x22, 0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xa1, 0xb1, 0xc1, 0x09, 0x23, 0x33,
        0x52, 0xf0, 0x15, 0x62, 0x72, 0xd1, 0x0a, 0x16, 0x24, 0x34, 0xe1, 0x25, 0xf1, 0x17, 0x18,
        0x19, 0x1a, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44,
        0x45, 0x46, 0x47, 0x48, 0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63,
        0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a,
        0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97,
        0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4,
        0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca,
        0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7,
        0xe8, 0xe9, 0xea, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa,
    ],
};

/// The canonical codes of a [`HuffmanSpec`] (T.81 Annex C), by symbol: `(length, code)`.
struct HuffmanCodes([(u8, u16); 256]);

impl HuffmanCodes {
    const fn new(spec: &HuffmanSpec) -> Self {
        let mut codes = [(0u8, 0u16); 256];
        let (mut code, mut next) = (0u16, 0usize);
        let mut length = 1;
        while length <= 16 {
            let mut i = 0;
            while i < spec.counts[length - 1] {
                codes[spec.symbols[next] as usize] = (length as u8, code);
                code += 1;
                next += 1;
                i += 1;
            }
            code <<= 1;
            length += 1;
        }
        HuffmanCodes(codes)
    }
}

const LUMA_DC_CODES: HuffmanCodes = HuffmanCodes::new(&LUMA_DC);
const LUMA_AC_CODES: HuffmanCodes = HuffmanCodes::new(&LUMA_AC);
const CHROMA_DC_CODES: HuffmanCodes = HuffmanCodes::new(&CHROMA_DC);
const CHROMA_AC_CODES: HuffmanCodes = HuffmanCodes::new(&CHROMA_AC);

/// The quantisation tables (luma, chroma) of `quality`, natural order: the Annex K tables scaled
/// by libjpeg's rule (`5000 / q` below 50, `200 − 2q` from 50), each entry clamped to 1–255.
fn quant_tables(quality: u8) -> [[u8; 64]; 2] {
    let q = u32::from(quality.clamp(1, 100));
    let scale = if q < 50 { 5000 / q } else { 200 - 2 * q };
    [LUMA_QUANT, CHROMA_QUANT]
        .map(|table| table.map(|v| ((u32::from(v) * scale + 50) / 100).clamp(1, 255) as u8))
}

/// Append marker segment `marker` with `payload` (its length field counts itself).
fn segment(out: &mut Vec<u8>, marker: u8, payload: &[u8]) {
    out.extend_from_slice(&[0xff, marker]);
    out.extend_from_slice(&(payload.len() as u16 + 2).to_be_bytes());
    out.extend_from_slice(payload);
}

/// SOI, the JFIF segment (version 1.2, aspect ratio 1:1), SOF0 (8-bit, three components
/// sampled 1×1: Y with table 0, Cb and Cr with table 1), both quantisation tables, the four
/// Annex K Huffman tables and the scan header.
fn write_header(out: &mut Vec<u8>, width: u16, height: u16, quant: &[[u8; 64]; 2]) {
    out.extend_from_slice(&[0xff, 0xd8]);
    segment(out, 0xe0, b"JFIF\0\x01\x02\x00\x00\x01\x00\x01\x00\x00");
    let [h1, h0] = height.to_be_bytes();
    let [w1, w0] = width.to_be_bytes();
    segment(
        out,
        0xc0,
        &[8, h1, h0, w1, w0, 3, 1, 0x11, 0, 2, 0x11, 1, 3, 0x11, 1],
    );
    for (id, table) in quant.iter().enumerate() {
        let mut payload = vec![id as u8];
        payload.extend(ZIGZAG.iter().map(|&k| table[k as usize]));
        segment(out, 0xdb, &payload);
    }
    for (class_and_id, spec) in [
        (0x00, &LUMA_DC),
        (0x10, &LUMA_AC),
        (0x01, &CHROMA_DC),
        (0x11, &CHROMA_AC),
    ] {
        let mut payload = vec![class_and_id];
        payload.extend_from_slice(&spec.counts);
        payload.extend_from_slice(spec.symbols);
        segment(out, 0xc4, &payload);
    }
    segment(out, 0xda, &[3, 1, 0x00, 2, 0x11, 3, 0x11, 0, 63, 0]);
}

/// The entropy-coded scan: bits most significant first, a 0x00 stuffed after every 0xff byte.
struct BitWriter {
    out: Vec<u8>,
    /// Pending bits, in the low `pending` bits (fewer than 32 between calls).
    bits: u64,
    pending: u32,
}

impl BitWriter {
    /// Append the low `count` bits of `value` (`count` ≤ 32).
    #[inline(always)]
    fn put(&mut self, value: u32, count: u32) {
        self.bits = (self.bits << count) | u64::from(value);
        self.pending += count;
        if self.pending >= 32 {
            self.pending -= 32;
            let word = ((self.bits >> self.pending) as u32).to_be_bytes();
            if word.contains(&0xff) {
                for byte in word {
                    self.push_byte(byte);
                }
            } else {
                self.out.extend_from_slice(&word);
            }
            self.bits &= (1 << self.pending) - 1;
        }
    }

    /// One byte of the scan, stuffed.
    #[inline(always)]
    fn push_byte(&mut self, byte: u8) {
        self.out.push(byte);
        if byte == 0xff {
            self.out.push(0);
        }
    }

    /// A Huffman symbol followed by `extra` (`extra_bits` wide).
    #[inline(always)]
    fn symbol(&mut self, codes: &HuffmanCodes, symbol: u8, extra: u32, extra_bits: u32) {
        let (length, code) = codes.0[symbol as usize];
        self.put(
            (u32::from(code) << extra_bits) | extra,
            u32::from(length) + extra_bits,
        );
    }

    /// The whole bytes still pending, then the last bits filled with 1s to a byte.
    fn finish(mut self) -> Vec<u8> {
        while self.pending >= 8 {
            self.pending -= 8;
            self.push_byte((self.bits >> self.pending) as u8);
        }
        if self.pending > 0 {
            let fill = 8 - self.pending;
            self.push_byte(((self.bits << fill) as u8) | ((1 << fill) - 1));
        }
        self.out
    }
}

/// A coefficient's magnitude category (its bit length) and the bits that follow its symbol:
/// the value itself when positive, its ones' complement when negative.
#[inline(always)]
fn category(value: i32) -> (u32, u32) {
    let size = 32 - value.unsigned_abs().leading_zeros();
    let bits = if value < 0 { value - 1 } else { value };
    (size, bits as u32 & ((1u32 << size) - 1))
}

/// Entropy-code one quantised block in zigzag order: the DC difference from `previous_dc`,
/// then the AC coefficients as run/size symbols (ZRL for runs over 15 zeros, EOB unless the
/// last coefficient is non-zero). Only the non-zero coefficients are visited (a bit mask).
#[inline(always)]
fn encode_block(
    writer: &mut BitWriter,
    zigzag: &[i32; 64],
    previous_dc: &mut i32,
    dc: &HuffmanCodes,
    ac: &HuffmanCodes,
) {
    let (size, extra) = category(zigzag[0] - *previous_dc);
    *previous_dc = zigzag[0];
    writer.symbol(dc, size as u8, extra, size);
    let mut nonzero = zigzag
        .iter()
        .enumerate()
        .skip(1)
        .fold(0u64, |mask, (k, &v)| mask | (u64::from(v != 0) << k));
    let mut last = 0;
    while nonzero != 0 {
        let k = nonzero.trailing_zeros();
        nonzero &= nonzero - 1;
        let mut run = k - last - 1;
        while run > 15 {
            writer.symbol(ac, 0xf0, 0, 0);
            run -= 16;
        }
        let (size, extra) = category(zigzag[k as usize]);
        writer.symbol(ac, ((run << 4) | size) as u8, extra, size);
        last = k;
    }
    if last != 63 {
        writer.symbol(ac, 0x00, 0, 0);
    }
}

/// Eight `i32` lanes: one value of each of a block's eight rows (or columns), so that the DCT
/// works on all eight at once (the compiler keeps a value in one AVX2 register).
#[derive(Clone, Copy)]
#[repr(transparent)]
struct Lanes([i32; 8]);

impl Add for Lanes {
    type Output = Lanes;
    #[inline(always)]
    fn add(self, other: Lanes) -> Lanes {
        Lanes(std::array::from_fn(|i| self.0[i] + other.0[i]))
    }
}

impl Add<i32> for Lanes {
    type Output = Lanes;
    #[inline(always)]
    fn add(self, other: i32) -> Lanes {
        Lanes(self.0.map(|v| v + other))
    }
}

impl Sub for Lanes {
    type Output = Lanes;
    #[inline(always)]
    fn sub(self, other: Lanes) -> Lanes {
        Lanes(std::array::from_fn(|i| self.0[i] - other.0[i]))
    }
}

impl Mul<i32> for Lanes {
    type Output = Lanes;
    #[inline(always)]
    fn mul(self, factor: i32) -> Lanes {
        Lanes(self.0.map(|v| v * factor))
    }
}

impl Shl<u32> for Lanes {
    type Output = Lanes;
    #[inline(always)]
    fn shl(self, bits: u32) -> Lanes {
        Lanes(self.0.map(|v| v << bits))
    }
}

impl Shr<u32> for Lanes {
    type Output = Lanes;
    #[inline(always)]
    fn shr(self, bits: u32) -> Lanes {
        Lanes(self.0.map(|v| v >> bits))
    }
}

/// Fixed-point fractional bits of the DCT's multipliers.
const CONST_BITS: u32 = 13;
/// Extra bits the first pass keeps for the second.
const PASS1_BITS: u32 = 2;

/// The rotations of one 1-D pass: from the even differences `t12`, `t13` and the odd
/// differences `d`, outputs 2 and 6, then 1, 3, 5, 7, each rounded by its `round` term and
/// shifted right by `shift`.
#[inline(always)]
fn rotate(
    t12: Lanes,
    t13: Lanes,
    d: [Lanes; 4],
    even_round: i32,
    odd_round: i32,
    shift: u32,
) -> [Lanes; 6] {
    let z1 = (t12 + t13) * 4433 + even_round; // 0.541196100
    let out2 = (z1 + t12 * 6270) >> shift; // 0.765366865
    let out6 = (z1 - t13 * 15137) >> shift; // 1.847759065
    let [d0, d1, d2, d3] = d;
    let (e12, e13) = (d0 + d2, d1 + d3);
    let z1 = (e12 + e13) * 9633 + odd_round; // 1.175875602
    let e12 = e12 * -3196 + z1; // 0.390180644
    let e13 = e13 * -16069 + z1; // 1.961570560
    let z1 = (d0 + d3) * -7373; // 0.899976223
    let out1 = (d0 * 12299 + z1 + e12) >> shift; // 1.501321110
    let out7 = (d3 * 2446 + z1 + e13) >> shift; // 0.298631336
    let z1 = (d1 + d2) * -20995; // 2.562915447
    let out3 = (d1 * 25172 + z1 + e13) >> shift; // 3.072711026
    let out5 = (d2 * 16819 + z1 + e12) >> shift; // 2.053119869
    [out2, out6, out1, out3, out5, out7]
}

/// The forward DCT of an 8×8 block of samples (row-major), level shift included: the result
/// is the true DCT scaled by 8, row-major. `transpose` turns eight rows of lanes into eight
/// columns (see [`transpose_avx2`]).
#[inline(always)]
fn fdct(samples: &[u8; 64], transpose: impl Fn([Lanes; 8]) -> [Lanes; 8]) -> [i32; 64] {
    let rows: [Lanes; 8] =
        std::array::from_fn(|r| Lanes(std::array::from_fn(|c| i32::from(samples[r * 8 + c]))));
    // Pass 1, along rows: lane r of x[k] is sample (r, k).
    let round = 1 << (CONST_BITS - PASS1_BITS - 1);
    let first = pass(
        transpose(rows),
        |t10, t11| {
            (
                (t10 + t11 + -8 * 128) << PASS1_BITS,
                (t10 - t11) << PASS1_BITS,
            )
        },
        (round, round, CONST_BITS - PASS1_BITS),
    );
    // Pass 2, along columns: lane c of y[j] is pass 1's value (j, c). libjpeg rounds the even
    // part here; the odd part keeps pass 1's rounding term, as the `image` crate's
    // translation does.
    let second = pass(
        transpose(first),
        |t10, t11| {
            let t10 = t10 + (1 << (PASS1_BITS - 1));
            ((t10 + t11) >> PASS1_BITS, (t10 - t11) >> PASS1_BITS)
        },
        (
            1 << (CONST_BITS + PASS1_BITS - 1),
            1 << (CONST_BITS - PASS1_BITS - 1),
            CONST_BITS + PASS1_BITS,
        ),
    );
    let mut out = [0; 64];
    for (j, lanes) in second.iter().enumerate() {
        out[j * 8..j * 8 + 8].copy_from_slice(&lanes.0);
    }
    out
}

/// Eight rows of lanes as eight columns: lane `r` of output `c` is lane `c` of input `r`.
#[inline(always)]
fn transpose(rows: [Lanes; 8]) -> [Lanes; 8] {
    std::array::from_fn(|c| Lanes(std::array::from_fn(|r| rows[r].0[c])))
}

/// [`transpose`] in AVX2 registers: 32-bit, then 64-bit interleaves, then 128-bit halves.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
fn transpose_avx2(rows: [Lanes; 8]) -> [Lanes; 8] {
    use std::arch::x86_64::*;
    // SAFETY: `Lanes` and `__m256i` are both 32 plain bytes.
    unsafe {
        let r: [__m256i; 8] = std::mem::transmute(rows);
        let a = [
            _mm256_unpacklo_epi32(r[0], r[1]),
            _mm256_unpackhi_epi32(r[0], r[1]),
            _mm256_unpacklo_epi32(r[2], r[3]),
            _mm256_unpackhi_epi32(r[2], r[3]),
            _mm256_unpacklo_epi32(r[4], r[5]),
            _mm256_unpackhi_epi32(r[4], r[5]),
            _mm256_unpacklo_epi32(r[6], r[7]),
            _mm256_unpackhi_epi32(r[6], r[7]),
        ];
        let b = [
            _mm256_unpacklo_epi64(a[0], a[2]),
            _mm256_unpackhi_epi64(a[0], a[2]),
            _mm256_unpacklo_epi64(a[1], a[3]),
            _mm256_unpackhi_epi64(a[1], a[3]),
            _mm256_unpacklo_epi64(a[4], a[6]),
            _mm256_unpackhi_epi64(a[4], a[6]),
            _mm256_unpacklo_epi64(a[5], a[7]),
            _mm256_unpackhi_epi64(a[5], a[7]),
        ];
        let columns = [
            _mm256_permute2x128_si256::<0x20>(b[0], b[4]),
            _mm256_permute2x128_si256::<0x20>(b[1], b[5]),
            _mm256_permute2x128_si256::<0x20>(b[2], b[6]),
            _mm256_permute2x128_si256::<0x20>(b[3], b[7]),
            _mm256_permute2x128_si256::<0x31>(b[0], b[4]),
            _mm256_permute2x128_si256::<0x31>(b[1], b[5]),
            _mm256_permute2x128_si256::<0x31>(b[2], b[6]),
            _mm256_permute2x128_si256::<0x31>(b[3], b[7]),
        ];
        std::mem::transmute::<[__m256i; 8], [Lanes; 8]>(columns)
    }
}

/// One 1-D pass over eight lanes: `dc_and_4` makes outputs 0 and 4 from `t10`, `t11`;
/// `(even_round, odd_round, shift)` go to [`rotate`]. Output `k` is frequency `k`.
#[inline(always)]
fn pass(
    x: [Lanes; 8],
    dc_and_4: impl Fn(Lanes, Lanes) -> (Lanes, Lanes),
    (even_round, odd_round, shift): (i32, i32, u32),
) -> [Lanes; 8] {
    let (t0, t1, t2, t3) = (x[0] + x[7], x[1] + x[6], x[2] + x[5], x[3] + x[4]);
    let d = [x[0] - x[7], x[1] - x[6], x[2] - x[5], x[3] - x[4]];
    let (out0, out4) = dc_and_4(t0 + t3, t1 + t2);
    let [out2, out6, out1, out3, out5, out7] =
        rotate(t0 - t3, t1 - t2, d, even_round, odd_round, shift);
    [out0, out1, out2, out3, out4, out5, out6, out7]
}

/// The quantised coefficients of a block's DCT `coefficients` (scaled by 8, natural order), in
/// zigzag order: `(c / 8) / q` rounded half away from zero, in `f32` as the `image` crate
/// computes it.
#[inline(always)]
fn quantise(coefficients: &[i32; 64], divisors: &[f32; 64]) -> [i32; 64] {
    let natural: [i32; 64] = std::array::from_fn(|i| {
        let q = ((coefficients[i] / 8) as f32 / divisors[i]).round();
        // SAFETY: |c / 8| < 2^13 and q ≥ 1, so `q` is finite and well inside i32.
        unsafe { q.to_int_unchecked::<i32>() }
    });
    ZIGZAG.map(|k| natural[k as usize])
}

/// BT.601 full-range RGB → YCbCr in 16-bit fixed point, rounded (the `image` crate's
/// coefficients).
#[inline(always)]
fn ycbcr(r: i32, g: i32, b: i32) -> [u8; 3] {
    const HALF: i32 = (1 << 15) - 1;
    const BIAS: i32 = (128 << 16) + HALF;
    let y = (19595 * r + 38469 * g + 7471 * b + HALF) >> 16;
    let cb = (-11059 * r - 21709 * g + 32768 * b + BIAS) >> 16;
    let cr = (32768 * r - 27439 * g - 5329 * b + BIAS) >> 16;
    [y as u8, cb as u8, cr as u8]
}

/// The Y, Cb and Cr planes of a `width`×`height` RGB8 image, each `padded_width` wide and
/// padded to whole blocks by repeating the last column and row.
#[inline(always)]
fn planes(rgb: &[u8], width: usize, height: usize) -> ([Vec<u8>; 3], usize) {
    let (padded_width, padded_height) = (width.div_ceil(8) * 8, height.div_ceil(8) * 8);
    let mut planes: [Vec<u8>; 3] = std::array::from_fn(|_| vec![0; padded_width * padded_height]);
    for y in 0..padded_height {
        let source = &rgb[y.min(height - 1) * width * 3..][..width * 3];
        let [py, pb, pr] = &mut planes;
        let start = y * padded_width;
        let rows = (
            &mut py[start..start + width],
            &mut pb[start..start + width],
            &mut pr[start..start + width],
        );
        for (i, pixel) in source.chunks_exact(3).enumerate() {
            let [l, b, r] = ycbcr(
                i32::from(pixel[0]),
                i32::from(pixel[1]),
                i32::from(pixel[2]),
            );
            (rows.0[i], rows.1[i], rows.2[i]) = (l, b, r);
        }
        for plane in &mut planes {
            let edge = plane[start + width - 1];
            plane[start + width..start + padded_width].fill(edge);
        }
    }
    (planes, padded_width)
}

/// The scan of a `width`×`height` RGB8 image: blocks left to right, top to bottom, a block
/// past the right or bottom edge repeating the edge pixels; per block Y, Cb, Cr.
#[inline(always)]
fn encode_scan(
    writer: &mut BitWriter,
    rgb: &[u8],
    width: usize,
    height: usize,
    divisors: &[[f32; 64]; 2],
    transpose: impl Fn([Lanes; 8]) -> [Lanes; 8] + Copy,
) {
    let (planes, stride) = planes(rgb, width, height);
    let mut previous_dc = [0i32; 3];
    for by in (0..height).step_by(8) {
        for bx in (0..width).step_by(8) {
            for (component, plane) in planes.iter().enumerate() {
                let mut samples = [0u8; 64];
                for (r, row) in samples.chunks_exact_mut(8).enumerate() {
                    let start = (by + r) * stride + bx;
                    row.copy_from_slice(&plane[start..start + 8]);
                }
                let chroma = usize::from(component > 0);
                let block = quantise(&fdct(&samples, transpose), &divisors[chroma]);
                let (dc, ac) = if chroma == 0 {
                    (&LUMA_DC_CODES, &LUMA_AC_CODES)
                } else {
                    (&CHROMA_DC_CODES, &CHROMA_AC_CODES)
                };
                encode_block(writer, &block, &mut previous_dc[component], dc, ac);
            }
        }
    }
}

/// [`encode_scan`] compiled for AVX2 (integer DCT and correctly rounded `f32`: the same bytes).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn encode_scan_avx2(
    writer: &mut BitWriter,
    rgb: &[u8],
    width: usize,
    height: usize,
    divisors: &[[f32; 64]; 2],
) {
    encode_scan(writer, rgb, width, height, divisors, |rows| {
        transpose_avx2(rows)
    });
}

/// [`encode_scan`] for CPUs without AVX2.
fn encode_scan_baseline(
    writer: &mut BitWriter,
    rgb: &[u8],
    width: usize,
    height: usize,
    divisors: &[[f32; 64]; 2],
) {
    encode_scan(writer, rgb, width, height, divisors, transpose);
}

/// `rgb` (`width`×`height` RGB8, both 1–65535) as a baseline JPEG of `quality`: the bytes the
/// `image` crate's `JpegEncoder::new_with_quality(…, quality)` writes for it.
pub(crate) fn encode(rgb: &[u8], width: u32, height: u32, quality: u8) -> Vec<u8> {
    assert_eq!(
        rgb.len(),
        width as usize * height as usize * 3,
        "RGB8 buffer size"
    );
    let quant = quant_tables(quality);
    let mut writer = BitWriter {
        out: Vec::with_capacity(1024 + rgb.len() / 4),
        bits: 0,
        pending: 0,
    };
    write_header(&mut writer.out, width as u16, height as u16, &quant);
    let divisors = quant.map(|table| table.map(f32::from));
    let (w, h) = (width as usize, height as usize);
    dispatch_avx2!(
        encode_scan_avx2,
        encode_scan_baseline,
        (&mut writer, rgb, w, h, &divisors)
    );
    let mut out = writer.finish();
    out.extend_from_slice(&[0xff, 0xd9]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::ExtendedColorType;
    use image::codecs::jpeg::JpegEncoder;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// What the `image` crate writes for the same image.
    fn reference(rgb: &[u8], width: u32, height: u32, quality: u8) -> Vec<u8> {
        let mut out = Vec::new();
        JpegEncoder::new_with_quality(&mut out, quality)
            .encode(rgb, width, height, ExtendedColorType::Rgb8)
            .unwrap();
        out
    }

    /// A smooth gradient with noise of amplitude `noise` (0 = flat regions, 255 = pure noise):
    /// long zero runs and many coefficients both occur.
    fn test_image(width: u32, height: u32, noise: u8, seed: u64) -> Vec<u8> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut rgb = Vec::with_capacity((width * height * 3) as usize);
        for y in 0..height {
            for x in 0..width {
                for ch in 0..3u32 {
                    let base = (x * 255 / width.max(1) + ch * 60 + y * 2) % 256;
                    let jitter = if noise == 0 {
                        0
                    } else {
                        rng.gen_range(0..=noise)
                    };
                    rgb.push((base as u8).wrapping_add(jitter));
                }
            }
        }
        rgb
    }

    #[test]
    fn every_quality_writes_the_image_crates_bytes() {
        for quality in 1..=100u8 {
            for (size, noise) in [(64, 0), (64, 40), (128, 255)] {
                let rgb = test_image(size, size, noise, u64::from(quality));
                assert!(
                    encode(&rgb, size, size, quality) == reference(&rgb, size, size, quality),
                    "quality {quality}, {size}², noise {noise}"
                );
            }
        }
    }

    #[test]
    fn sizes_off_the_block_grid_repeat_the_edge_like_the_image_crate() {
        for (width, height) in [(1, 1), (7, 9), (13, 64), (100, 3), (130, 127)] {
            for quality in [5, 50, 95] {
                let rgb = test_image(width, height, 90, 7);
                assert!(
                    encode(&rgb, width, height, quality) == reference(&rgb, width, height, quality),
                    "{width}×{height}, quality {quality}"
                );
            }
        }
    }

    #[test]
    fn extreme_colours_and_long_zero_runs_match_too() {
        // Saturated primaries (the colour conversion's ends), a single bright pixel in black
        // (runs over 15 zeros, ZRL), and 0xff bytes in the scan (stuffing).
        let mut images = vec![];
        for colour in [
            [255, 0, 0],
            [0, 255, 0],
            [0, 0, 255],
            [255, 255, 255],
            [0, 0, 0],
        ] {
            images.push(colour.repeat(64 * 64));
        }
        let mut dot = vec![0u8; 64 * 64 * 3];
        dot[(9 * 64 + 13) * 3..(9 * 64 + 13) * 3 + 3].copy_from_slice(&[255, 255, 255]);
        images.push(dot);
        for rgb in &images {
            for quality in [1, 40, 95, 100] {
                assert!(encode(rgb, 64, 64, quality) == reference(rgb, 64, 64, quality));
            }
        }
    }

    #[test]
    fn the_baseline_build_writes_the_avx2_builds_bytes() {
        let rgb = test_image(64, 64, 120, 3);
        let quant = quant_tables(60);
        let divisors = quant.map(|table| table.map(f32::from));
        let scan = |fast: bool| {
            let mut writer = BitWriter {
                out: Vec::new(),
                bits: 0,
                pending: 0,
            };
            if fast && crate::simd::has_avx2() {
                // SAFETY: AVX2 is present, checked just above.
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    encode_scan_avx2(&mut writer, &rgb, 64, 64, &divisors)
                };
            } else {
                encode_scan_baseline(&mut writer, &rgb, 64, 64, &divisors);
            }
            writer.finish()
        };
        assert_eq!(scan(true), scan(false));
    }

    #[test]
    fn recompression_decodes_what_the_image_crate_wrote() {
        for quality in [30, 60, 95] {
            let original = test_image(64, 64, 60, 11);
            let mut crop = original.clone();
            recompress(&mut crop, 64, quality).unwrap();
            let expected = image::load_from_memory_with_format(
                &reference(&original, 64, 64, quality),
                ImageFormat::Jpeg,
            )
            .unwrap()
            .to_rgb8();
            assert_eq!(crop, expected.into_raw());
            assert_ne!(crop, original, "JPEG at quality {quality} changes the crop");
        }
    }
}
