//! Source decoding for the render stage: a full decode (any format the `image` crate reads)
//! into pyramid level 0, or, for JPEG files, a reduced-resolution decode straight into pyramid
//! level k ∈ {1, 2, 3} of only the region the crops can reach.
//!
//! Why this is exact: libjpeg-turbo's scaled IDCT turns each 8×8 block into a (8/2^k)² block,
//! so output pixel (i, j) of a 1/2^k decode is a low-pass value of source pixels
//! [2^k·i, 2^k·(i+1))×[2^k·j, 2^k·(j+1)) — the same footprint as the area-averaged pyramid's
//! level k (whose size is also ⌈W/2^k⌉×⌈H/2^k⌉), so warp coordinates need no correction. At 1/8
//! it is the block's DC term: the block mean. The values differ from box averages by the
//! filter shape (a few grey levels on smooth content, see the tests), not by position.
//!
//! Which crop reads which decode is a function of that crop alone (its warp level), never of
//! the other crops of the image, so a sample's bytes do not depend on which shards a run (or a
//! worker) renders. Levels coarser than 3 are halved from the 1/8 decode, whose region is
//! aligned so that halving groups the same pixels as the full pyramid would.
//!
//! Damaged files fail, with their path, on both paths: libjpeg-turbo reports a truncated or
//! corrupt entropy-coded segment as a *warning* and fills the rest with grey (the `image`
//! crate's decoder does the same silently), so warnings that mean lost image data are errors
//! here ([`warning_is_harmless`]); the others (e.g. extraneous bytes before a marker, common in
//! real web JPEGs) are counted ([`SourceFile::decoder_warnings`]). A JPEG whose data does not
//! reach its end-of-image marker is refused before either decode (a reduced decode stops
//! reading below its region, so a cut there would go unseen); a reduced decode sees data lost
//! in or above its region; before a full decode of a JPEG, libjpeg-turbo decodes the whole file
//! at 1/8 scale to check its data. The size a header declares is bounded before anything is
//! decoded ([`SourceFile::with_max_pixels`], `[render] max_image_pixels`).

use std::ffi::{CStr, c_int};
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use image::error::{DecodingError, ImageFormatHint};
use image::{DynamicImage, ImageDecoder as _, ImageError, ImageFormat};
use turbojpeg_sys as tj;

use super::geometry::Affine;
use super::shard::io_err;
use super::warp::{self, Level, PixelRect, Pyramid};
use super::{DEFAULT_MAX_IMAGE_PIXELS, RenderError, Result};

/// The coarsest pyramid level a JPEG decoder produces directly (1/8 scale: the DC term).
pub const MAX_REDUCED_LEVEL: usize = 3;

/// What a JPEG header says, for a file libjpeg-turbo can decode at reduced resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JpegInfo {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Width of an iMCU (8 × the largest horizontal sampling factor) in source pixels: a
    /// region decode must start on a multiple of its scaled value.
    pub imcu_width: u32,
    /// Height of an iMCU in source pixels.
    pub imcu_height: u32,
}

/// What a JPEG header says, for any JPEG libjpeg-turbo reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct JpegHeader {
    width: u32,
    height: u32,
    /// TurboJPEG colour space code (`TJCS_*`).
    colorspace: c_int,
    /// TurboJPEG subsampling code (`TJSAMP_*`; −1 when unknown).
    subsamp: c_int,
    /// Bits per sample (8, 12 or 16).
    precision: c_int,
    lossless: bool,
    /// Whether the data runs to the end-of-image marker ([`reaches_end_of_image`]).
    complete: bool,
}

impl JpegHeader {
    /// The header as [`JpegInfo`] when it allows a reduced decode: 8-bit, lossy, grey, YCbCr or
    /// RGB (not CMYK, not lossless, not 12-bit).
    fn reducible(&self) -> Option<JpegInfo> {
        let supported_colour = [tj::TJCS_TJCS_RGB, tj::TJCS_TJCS_YCbCr, tj::TJCS_TJCS_GRAY]
            .iter()
            .any(|&cs| cs as c_int == self.colorspace);
        let subsamp = usize::try_from(self.subsamp).ok()?;
        if !supported_colour
            || self.precision != 8
            || self.lossless
            || self.width == 0
            || self.height == 0
        {
            return None;
        }
        Some(JpegInfo {
            width: self.width,
            height: self.height,
            imcu_width: *IMCU_WIDTH.get(subsamp)?,
            imcu_height: *IMCU_HEIGHT.get(subsamp)?,
        })
    }
}

/// A source image file read into memory, with its JPEG header when libjpeg-turbo reads one,
/// the most pixels a header may declare, and the count of harmless decoder warnings so far.
#[derive(Debug)]
pub struct SourceFile {
    path: PathBuf,
    bytes: Vec<u8>,
    header: Option<JpegHeader>,
    max_pixels: u64,
    warnings: AtomicUsize,
}

/// Whether a libjpeg-turbo warning leaves the image intact. Warnings that mean lost or wrong
/// image data — the file ends early (`JWRN_JPEG_EOF` "Premature end of JPEG file"), an
/// entropy-coded segment ends early (`JWRN_HIT_MARKER`), a bad Huffman or arithmetic code,
/// a marker where a restart marker belongs (`JWRN_MUST_RESYNC`), an inconsistent progression
/// (`JWRN_BOGUS_PROGRESSION`) — and any message not listed here are not harmless. Harmless:
/// extraneous bytes before a marker (`JWRN_EXTRANEOUS_DATA`), an unknown JFIF revision, an
/// unknown Adobe transform code, a bad ICC marker (the profile is not used), SOS parameters a
/// sequential JPEG ignores (`JWRN_NOT_SEQUENTIAL`). An allow-list, because after a warning
/// TurboJPEG reports a later fatal error with the warning code too.
fn warning_is_harmless(message: &str) -> bool {
    let extraneous = message
        .strip_prefix("Corrupt JPEG data: ")
        .is_some_and(|m| m.contains(" extraneous bytes before marker 0x"));
    extraneous
        || [
            "Warning: unknown JFIF revision number",
            "Unknown Adobe color transform code",
            "Corrupt JPEG data: bad ICC marker",
            "Invalid SOS parameters for sequential JPEG",
        ]
        .iter()
        .any(|p| message.starts_with(p))
}

/// An owned TurboJPEG decompressor handle.
struct Decompressor(tj::tjhandle);

impl Decompressor {
    fn new() -> std::result::Result<Self, String> {
        // SAFETY: tj3Init has no preconditions; a null result is an allocation failure.
        let handle = unsafe { tj::tj3Init(tj::TJINIT_TJINIT_DECOMPRESS as c_int) };
        if handle.is_null() {
            return Err("cannot create a TurboJPEG decompressor".to_owned());
        }
        Ok(Decompressor(handle))
    }

    /// Turn a TurboJPEG return code into `Ok(None)` (success), `Ok(Some(message))` (a warning
    /// that leaves the image intact, [`warning_is_harmless`]) or `Err(message)` (a fatal error,
    /// or a warning that means lost image data).
    fn check(&self, rc: c_int) -> std::result::Result<Option<String>, String> {
        if rc == 0 {
            return Ok(None);
        }
        // SAFETY: the handle is valid; the error string is NUL-terminated and owned by it.
        let (code, msg) = unsafe {
            (
                tj::tj3GetErrorCode(self.0),
                CStr::from_ptr(tj::tj3GetErrorStr(self.0))
                    .to_string_lossy()
                    .into_owned(),
            )
        };
        if code == tj::TJERR_TJERR_WARNING as c_int && warning_is_harmless(&msg) {
            return Ok(Some(msg));
        }
        if code == tj::TJERR_TJERR_WARNING as c_int {
            return Err(format!(
                "{msg} (the file is truncated or its image data is corrupt)"
            ));
        }
        Err(msg)
    }

    fn get(&self, param: tj::TJPARAM) -> c_int {
        // SAFETY: the handle is valid; unknown parameters return −1.
        unsafe { tj::tj3Get(self.0, param as c_int) }
    }

    /// Read the header of `bytes` into the handle (see [`Decompressor::check`]).
    fn read_header(&self, bytes: &[u8]) -> std::result::Result<Option<String>, String> {
        // SAFETY: the pointer and length describe a live slice that TurboJPEG only reads.
        self.check(unsafe {
            tj::tj3DecompressHeader(self.0, bytes.as_ptr(), bytes.len() as tj::size_t)
        })
    }
}

impl Drop for Decompressor {
    fn drop(&mut self) {
        // SAFETY: the handle came from tj3Init and is destroyed once.
        unsafe { tj::tj3Destroy(self.0) }
    }
}

/// iMCU width in pixels by TurboJPEG subsampling code (444, 422, 420, grey, 440, 411, 441):
/// `tjMCUWidth` of turbojpeg.h, a header-only table the library does not export.
const IMCU_WIDTH: [u32; 7] = [8, 16, 16, 8, 8, 32, 8];
/// iMCU height in pixels by TurboJPEG subsampling code (`tjMCUHeight`).
const IMCU_HEIGHT: [u32; 7] = [8, 8, 16, 8, 16, 8, 32];

fn is_jpeg(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0xFF, 0xD8, 0xFF])
}

/// The header of a JPEG that libjpeg-turbo reads, or `None`.
fn jpeg_header(bytes: &[u8]) -> Option<JpegHeader> {
    if !is_jpeg(bytes) {
        return None;
    }
    let d = Decompressor::new().ok()?;
    d.read_header(bytes).ok()?;
    Some(JpegHeader {
        width: u32::try_from(d.get(tj::TJPARAM_TJPARAM_JPEGWIDTH)).ok()?,
        height: u32::try_from(d.get(tj::TJPARAM_TJPARAM_JPEGHEIGHT)).ok()?,
        colorspace: d.get(tj::TJPARAM_TJPARAM_COLORSPACE),
        subsamp: d.get(tj::TJPARAM_TJPARAM_SUBSAMP),
        precision: d.get(tj::TJPARAM_TJPARAM_PRECISION),
        lossless: d.get(tj::TJPARAM_TJPARAM_LOSSLESS) != 0,
        complete: reaches_end_of_image(bytes),
    })
}

/// Whether a JPEG's data runs to its end-of-image marker: the marker segments are walked by
/// their lengths up to the first scan, then the entropy-coded data (stuffed zeros, fill bytes,
/// restart markers, and the segments between the scans of a progressive file) up to EOI. A
/// file cut short has none. (A reduced decode stops reading below its region, so this is what
/// finds a cut there.)
fn reaches_end_of_image(bytes: &[u8]) -> bool {
    let mut i = 2;
    while let Some(at) = bytes
        .get(i..)
        .and_then(|b| b.iter().position(|&b| b == 0xFF))
    {
        i += at;
        match bytes.get(i + 1) {
            None => return false,
            Some(0xD9) => return true,
            // A fill byte (the next one may start a marker).
            Some(0xFF) => i += 1,
            // A stuffed zero, TEM, SOI or a restart marker: no length follows.
            Some(0x00 | 0x01 | 0xD0..=0xD8) => i += 2,
            Some(_) => {
                let Some(len) = bytes.get(i + 2..i + 4) else {
                    return false;
                };
                i += 2 + usize::from(u16::from_be_bytes([len[0], len[1]]));
            }
        }
    }
    false
}

fn decoding_error(path: &Path, msg: String) -> RenderError {
    RenderError::Image {
        path: path.to_owned(),
        source: ImageError::Decoding(DecodingError::new(
            ImageFormatHint::Exact(ImageFormat::Jpeg),
            msg,
        )),
    }
}

impl SourceFile {
    /// Read a source image file and, when it is a JPEG, its header. Headers may declare up to
    /// [`DEFAULT_MAX_IMAGE_PIXELS`] pixels ([`SourceFile::with_max_pixels`] sets another bound).
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(io_err(path))?;
        Ok(SourceFile::from_bytes(path, bytes))
    }

    /// A source image already in memory; `path` names it in errors.
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Self {
        let header = jpeg_header(&bytes);
        SourceFile {
            path: path.to_owned(),
            bytes,
            header,
            max_pixels: DEFAULT_MAX_IMAGE_PIXELS,
            warnings: AtomicUsize::new(0),
        }
    }

    /// The same file, whose decodes refuse a header that declares more than `max_pixels`
    /// pixels (`[render] max_image_pixels`), before any pixel is decoded.
    pub fn with_max_pixels(self, max_pixels: u64) -> Self {
        SourceFile { max_pixels, ..self }
    }

    /// The JPEG header, when the file allows a reduced decode.
    pub fn reduced_jpeg(&self) -> Option<JpegInfo> {
        self.header.as_ref().and_then(JpegHeader::reducible)
    }

    /// Harmless libjpeg-turbo warnings raised by this file's decodes so far (e.g. extraneous
    /// bytes before a marker); warnings that mean lost image data fail the decode instead.
    pub fn decoder_warnings(&self) -> usize {
        self.warnings.load(Ordering::Relaxed)
    }

    /// Refuse a header that declares more pixels than the bound.
    fn check_size(&self, width: u32, height: u32) -> Result<()> {
        if u64::from(width) * u64::from(height) > self.max_pixels {
            return Err(RenderError::ImageTooLarge {
                path: self.path.clone(),
                width,
                height,
                limit: self.max_pixels,
            });
        }
        Ok(())
    }

    /// Refuse a JPEG whose data does not reach its end-of-image marker (cut short).
    fn check_complete(&self, header: &JpegHeader) -> Result<()> {
        if header.complete {
            return Ok(());
        }
        Err(decoding_error(
            &self.path,
            "Premature end of JPEG file: its data ends before the end-of-image marker (the file \
             is truncated)"
                .to_owned(),
        ))
    }

    /// Count a harmless warning, or turn an error message into the decode error of this file.
    fn outcome(&self, result: std::result::Result<Option<String>, String>) -> Result<()> {
        match result {
            Ok(None) => Ok(()),
            Ok(Some(_warning)) => {
                self.warnings.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(msg) => Err(decoding_error(&self.path, msg)),
        }
    }

    /// Run libjpeg-turbo's entropy decoder over every scan of a lossy 8-bit JPEG (a 1/8-scale
    /// decode, grey or CMYK, whose pixels are dropped), so that a truncated or corrupt file
    /// fails before the `image` crate's decoder, which fills lost data with grey, decodes it.
    /// Other JPEGs (12-bit, lossless) are left to that decoder.
    fn check_jpeg_data(&self, header: &JpegHeader) -> Result<()> {
        if header.precision != 8 || header.lossless {
            return Ok(());
        }
        let cmyk = [tj::TJCS_TJCS_CMYK, tj::TJCS_TJCS_YCCK]
            .iter()
            .any(|&cs| cs as c_int == header.colorspace);
        let (format, channels) = if cmyk {
            (tj::TJPF_TJPF_CMYK, 4)
        } else {
            (tj::TJPF_TJPF_GRAY, 1)
        };
        let (w, h) = (header.width.div_ceil(8), header.height.div_ceil(8));
        let mut pixels = vec![0u8; w as usize * h as usize * channels];
        let d = Decompressor::new().map_err(|m| decoding_error(&self.path, m))?;
        // TurboJPEG forgets the header after reading it, so the decompression reads it again
        // and reports its warnings: count those only.
        self.outcome(d.read_header(&self.bytes).map(|_| None))?;
        let factor = tj::tjscalingfactor { num: 1, denom: 8 };
        // SAFETY: the handle is valid.
        self.outcome(d.check(unsafe { tj::tj3SetScalingFactor(d.0, factor) }))?;
        // SAFETY: the handle is valid and has read the header; `pixels` holds the ⌈W/8⌉ ×
        // ⌈H/8⌉ pixels of `channels` bytes that a 1/8 decode writes (pitch 0 = tightly packed),
        // and the JPEG bytes outlive the call.
        let rc = unsafe {
            tj::tj3Decompress8(
                d.0,
                self.bytes.as_ptr(),
                self.bytes.len() as tj::size_t,
                pixels.as_mut_ptr(),
                0,
                format as c_int,
            )
        };
        self.outcome(d.check(rc))
    }

    /// Decode the whole image at full resolution with the `image` crate (any format it reads)
    /// as pyramid level 0. The declared size is checked first, and a JPEG's data
    /// ([`SourceFile::check_jpeg_data`]).
    pub fn decode_full(&self) -> Result<Pyramid> {
        let image_err = |source| RenderError::Image {
            path: self.path.clone(),
            source,
        };
        let mut decoder = image::ImageReader::new(Cursor::new(&self.bytes))
            .with_guessed_format()
            .map_err(io_err(&self.path))?
            .into_decoder()
            .map_err(image_err)?;
        let (w, h) = decoder.dimensions();
        self.check_size(w, h)?;
        if let Some(header) = &self.header {
            // libjpeg-turbo's reading of the header bounds its own (checking) decode.
            self.check_size(header.width, header.height)?;
            self.check_complete(header)?;
            self.check_jpeg_data(header)?;
        }
        // The allocation limit `ImageReader::decode` applies.
        let mut limits = image::Limits::default();
        limits.reserve(decoder.total_bytes()).map_err(image_err)?;
        decoder.set_limits(limits).map_err(image_err)?;
        let decoded = DynamicImage::from_decoder(decoder)
            .map_err(image_err)?
            .into_rgb8();
        let (w, h) = decoded.dimensions();
        Ok(Pyramid::new(w, h, decoded.into_raw()))
    }

    /// Decode `region` (in level-`k` pixels, `1 ≤ k ≤ 3`; clamped into the level, never empty)
    /// of the JPEG at 1/2^k resolution as the finest level of a pyramid. Every returned pixel
    /// equals the same pixel of a whole-image decode at that scale.
    pub fn decode_reduced(&self, k: usize, region: PixelRect) -> Result<Pyramid> {
        let (header, info) = self
            .header
            .as_ref()
            .and_then(|h| Some((h, h.reducible()?)))
            .ok_or_else(|| {
                decoding_error(
                    &self.path,
                    "not a JPEG that allows a reduced decode".to_owned(),
                )
            })?;
        if !(1..=MAX_REDUCED_LEVEL).contains(&k) {
            return Err(RenderError::Config(format!(
                "reduced decode level {k} is outside 1..={MAX_REDUCED_LEVEL}"
            )));
        }
        self.check_size(info.width, info.height)?;
        self.check_complete(header)?;
        let denom = 1u32 << k;
        let (fw, fh) = (info.width.div_ceil(denom), info.height.div_ceil(denom));
        let x0 = region.x0.min(fw - 1);
        let y0 = region.y0.min(fh - 1);
        let x1 = region.x1.clamp(x0 + 1, fw);
        let y1 = region.y1.clamp(y0 + 1, fh);
        // Chroma upsampling treats the decoded rectangle's edges as image edges, so pixels
        // within about one iMCU of them can differ from a whole decode: decode one scaled iMCU
        // (+1) more on every side, left edge on the iMCU grid, and keep only the request.
        let (mx, my) = (
            info.imcu_width.div_ceil(denom) + 1,
            info.imcu_height.div_ceil(denom) + 1,
        );
        let align = info.imcu_width.div_ceil(denom);
        let dx0 = x0.saturating_sub(mx) / align * align;
        let dy0 = y0.saturating_sub(my);
        let (dx1, dy1) = ((x1 + mx).min(fw), (y1 + my).min(fh));
        let (dw, dh) = (dx1 - dx0, dy1 - dy0);
        let d = Decompressor::new().map_err(|m| decoding_error(&self.path, m))?;
        let mut decoded = vec![0u8; dw as usize * dh as usize * 3];
        // TurboJPEG forgets the header after reading it, so the decompression reads it again
        // and reports its warnings: count those only.
        self.outcome(d.read_header(&self.bytes).map(|_| None))?;
        let factor = tj::tjscalingfactor {
            num: 1,
            denom: denom as c_int,
        };
        let crop = tj::tjregion {
            x: dx0 as c_int,
            y: dy0 as c_int,
            w: dw as c_int,
            h: dh as c_int,
        };
        // SAFETY: the handle is valid and has read the header (the cropping region is checked
        // against the scaled size).
        unsafe {
            self.outcome(d.check(tj::tj3SetScalingFactor(d.0, factor)))?;
            self.outcome(d.check(tj::tj3SetCroppingRegion(d.0, crop)))?;
        }
        // SAFETY: `decoded` holds exactly dw × dh RGB pixels, the size TurboJPEG writes for
        // this scaling and crop (pitch 0 = tightly packed), and the JPEG bytes outlive the
        // call. Data lost in or above the region is reported (the rows above it go through the
        // entropy decoder); the rows below are not read.
        let rc = unsafe {
            tj::tj3Decompress8(
                d.0,
                self.bytes.as_ptr(),
                self.bytes.len() as tj::size_t,
                decoded.as_mut_ptr(),
                0,
                tj::TJPF_TJPF_RGB as c_int,
            )
        };
        self.outcome(d.check(rc))?;
        let (w, h) = (x1 - x0, y1 - y0);
        let row = w as usize * 3;
        let mut data = Vec::with_capacity(row * h as usize);
        for y in y0..y1 {
            let start = ((y - dy0) as usize * dw as usize + (x0 - dx0) as usize) * 3;
            data.extend_from_slice(&decoded[start..start + row]);
        }
        Ok(Pyramid::from_level(
            k,
            Level {
                width: w,
                height: h,
                x0,
                y0,
                full_width: fw,
                full_height: fh,
                data,
            },
        ))
    }
}

/// One decode of a source image: the pyramid level it produces and the region of that level
/// its crops need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeRequest {
    /// Pyramid level of the decode: 0 = full decode, 1..=3 = a 1/2^level JPEG decode.
    pub level: usize,
    /// The region of that level the crops reach, aligned for halving: what a reduced decode
    /// decodes, and what a full decode's coarser levels are built from
    /// ([`Pyramid::limit_halving`]).
    pub region: PixelRect,
}

impl DecodeRequest {
    /// Run the decode: the whole image at full resolution (coarser levels limited to the
    /// region), or the region at 1/2^level.
    pub fn decode(&self, file: &SourceFile) -> Result<Pyramid> {
        if self.level == 0 {
            let mut p = file.decode_full()?;
            p.limit_halving(self.region);
            Ok(p)
        } else {
            file.decode_reduced(self.level, self.region)
        }
    }
}

/// Plan the decodes of one source image of `width`×`height` pixels for its crops, given as
/// (crop matrix, crop side). With `reduced`, a crop whose warp reads pyramid level k ≥ 1 is
/// served by a 1/2^min(k, 3) decode of the region its crops reach; otherwise by the full
/// decode (whose coarser levels are built only over the region its crops reach). Returns the requests and, per crop, the index of the request serving it (`None` for
/// a singular matrix, which no decode can serve).
pub fn plan_decodes(
    crops: &[(Affine, u32)],
    width: u32,
    height: u32,
    reduced: bool,
) -> (Vec<DecodeRequest>, Vec<Option<usize>>) {
    // Per decode level: the coarsest warp level it serves and the union of reached pixels.
    let mut groups: [Option<(usize, PixelRect)>; MAX_REDUCED_LEVEL + 1] = [None; 4];
    let mut serving = Vec::with_capacity(crops.len());
    for &(m, size) in crops {
        let k = warp::level_for_scale(m.scale());
        let s = if reduced { k.min(MAX_REDUCED_LEVEL) } else { 0 };
        let Some(rect) = warp::reach(&m, size, k, width, height) else {
            serving.push(None);
            continue;
        };
        // The level-k rectangle in level-s pixels (each level-k pixel is 2^(k−s) of them).
        let f = 1u64 << (k - s).min(32);
        let (fw, fh) = (
            width.div_ceil(1 << s) as u64,
            height.div_ceil(1 << s) as u64,
        );
        let scaled = PixelRect {
            x0: (rect.x0 as u64 * f).min(fw - 1) as u32,
            y0: (rect.y0 as u64 * f).min(fh - 1) as u32,
            x1: (rect.x1 as u64 * f).min(fw) as u32,
            y1: (rect.y1 as u64 * f).min(fh) as u32,
        };
        groups[s] = Some(match groups[s] {
            None => (k, scaled),
            Some((top, r)) => (top.max(k), r.union(&scaled)),
        });
        serving.push(Some(s));
    }
    let mut requests = Vec::new();
    let mut index_of = [usize::MAX; MAX_REDUCED_LEVEL + 1];
    for (s, group) in groups.iter().enumerate() {
        let Some((top, rect)) = group else { continue };
        index_of[s] = requests.len();
        let (fw, fh) = (width.div_ceil(1 << s), height.div_ceil(1 << s));
        // Align to the grid of the coarsest level built from this decode, so that every
        // halving groups the same pixels as the whole image's pyramid (a region edge inside
        // the image falls on an even pixel of every level up to `top`).
        let a = 1u32 << (top - s).min(31);
        let region = PixelRect {
            x0: rect.x0 / a * a,
            y0: rect.y0 / a * a,
            x1: rect.x1.div_ceil(a).saturating_mul(a).min(fw),
            y1: rect.y1.div_ceil(a).saturating_mul(a).min(fh),
        };
        requests.push(DecodeRequest { level: s, region });
    }
    let serving = serving
        .into_iter()
        .map(|s| s.map(|s| index_of[s]))
        .collect();
    (requests, serving)
}

#[cfg(test)]
mod tests;
