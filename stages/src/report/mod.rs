//! PNG plots of the shape statistics and the balancing (plotters, bitmap backend).
//!
//! Text needs a TrueType font registered at run time (plotters' `ab_glyph` backend has none
//! built in). [`fonts_available`] registers DejaVu Sans when the system has it; without it,
//! every plot is still drawn, only without captions and axis labels, so a missing font never
//! fails a stage.
//!
//! Plots are drawn into memory and written atomically (temporary file + fsync + rename).

mod histogram;
mod shapes;
mod thumbnails;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::style::FontStyle;

pub use histogram::plot_pose_histogram;
pub use shapes::plot_shape_modes;
pub use thumbnails::{BinExamples, ThumbnailStrip, plot_thumbnail_strip};

/// The font file loaded for plot text when it exists.
pub const FONT_PATH: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// The family name plot text asks for.
/// The font family every plot draws text in (registered by [`fonts_available`]).
pub const FAMILY: &str = "sans-serif";

/// Why a plot could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The atomic write (temporary file, fsync, rename) failed; the message names the file.
    #[error(transparent)]
    Write(#[from] manifests::Error),
    /// Drawing failed.
    #[error("{path}: drawing failed: {message}")]
    Draw {
        /// The plot being drawn.
        path: PathBuf,
        /// plotters' message.
        message: String,
    },
    /// PNG encoding failed.
    #[error("{path}: {source}")]
    Encode {
        /// The plot file.
        path: PathBuf,
        /// The image crate's error.
        source: image::ImageError,
    },
    /// Nothing to plot.
    #[error("{path}: nothing to plot: {reason}")]
    Empty {
        /// The plot file.
        path: PathBuf,
        /// What is missing.
        reason: &'static str,
    },
}

/// Register the plot font once per process; `true` if text can be drawn.
pub fn fonts_available() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| {
        let Ok(bytes) = std::fs::read(FONT_PATH) else {
            return false;
        };
        // plotters keeps fonts for the life of the process and asks for 'static data; this
        // runs once, so the leak is bounded by one font file.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font(FAMILY, FontStyle::Normal, bytes).is_ok()
    })
}

fn draw_error(path: &Path) -> impl Fn(String) -> ReportError + '_ {
    move |message| ReportError::Draw {
        path: path.to_owned(),
        message,
    }
}

/// Encode an RGB buffer as PNG and write it atomically.
pub fn save_rgb(path: &Path, width: u32, height: u32, rgb: Vec<u8>) -> Result<(), ReportError> {
    let image = image::RgbImage::from_raw(width, height, rgb).ok_or_else(|| ReportError::Draw {
        path: path.to_owned(),
        message: "pixel buffer does not match the image size".to_owned(),
    })?;
    let mut png = std::io::Cursor::new(Vec::new());
    image
        .write_to(&mut png, image::ImageFormat::Png)
        .map_err(|source| ReportError::Encode {
            path: path.to_owned(),
            source,
        })?;
    Ok(manifests::write_atomic(path, png.get_ref())?)
}

/// A short number for axis labels.
fn short(v: f64) -> String {
    if v == 0.0 {
        "0".to_owned()
    } else if v.abs() >= 0.01 && v.abs() < 1000.0 {
        format!("{v:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_owned()
    } else {
        format!("{v:.2e}")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Copy a test plot into `$WINGFLOW_KEEP_PLOTS` (if set) for a person to look at.
    pub(crate) fn keep(path: &Path) {
        if let (Some(dir), Some(name)) = (std::env::var_os("WINGFLOW_KEEP_PLOTS"), path.file_name())
        {
            std::fs::copy(path, Path::new(&dir).join(name)).expect("copies the plot");
        }
    }

    #[test]
    fn short_numbers_stay_short() {
        assert_eq!(short(0.0), "0");
        assert_eq!(short(0.25), "0.25");
        assert_eq!(short(-1.5), "-1.5");
        assert_eq!(short(0.0001234), "1.23e-4");
    }
}
