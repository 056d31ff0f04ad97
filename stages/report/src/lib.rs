//! Every PNG plot wingflow draws (plotters, bitmap backend): the pose histogram before and after
//! balancing, the shape modes, example faces per pose bin, CED curves ([`ced`]) and training
//! loss curves ([`loss_curve`]).
//!
//! Text needs a TrueType font registered at run time (plotters' `ab_glyph` backend has none
//! built in). [`fonts_available`] registers DejaVu Sans when the system has it; without it,
//! every plot is still drawn, only without captions and axis labels, so a missing font never
//! fails a stage.
//!
//! Plots are drawn into memory and written atomically (temporary file + fsync + rename).

pub mod ced;
mod histogram;
pub mod loss_curve;
mod modes;
mod thumbnails;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::style::FontStyle;

pub use histogram::plot_pose_histogram;
pub use modes::plot_shape_modes;
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
    /// An input of a plot (a training log) could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// An input of a plot is malformed.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the line or column.
        message: String,
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

    /// Visual check that signed pose bins are poses: synthetic faces drawn as dots, a strip
    /// of examples per bin written to `$WINGFLOW_KEEP_PLOTS`.
    #[test]
    #[ignore = "writes a picture for a person to look at"]
    fn demo_pose_bins_strip() {
        let scheme = contract::scheme::by_name("ibug68").expect("registered");
        let perm = &scheme.flip_permutation;
        let set = shapes::align::synthetic::shapes(perm, 2000, 4, 0.1, 0.0);
        // Roll is part of the synthetic placement; the strip shows it as well as yaw.
        let a = shapes::align::align_shapes(
            &set.shapes,
            68,
            &shapes::align::AlignParams::default(),
            Some(perm),
        )
        .expect("aligns");
        let f = shapes::pca::fit_shape_model(&a, perm, &shapes::pca::PcaParams::default())
            .expect("fits");
        let dir = tempfile::tempdir().expect("tempdir");
        let samples: Vec<shapes::balance::BalanceSample> = (0..2000)
            .map(|i| shapes::balance::BalanceSample {
                sample_id: format!("{i:04}"),
                split: shapes::balance::TRAIN.into(),
                photo: format!("{i:04}"),
                pose_coefficient: Some(f.coefficients[i]),
            })
            .collect();
        let params = shapes::balance::BalanceParams {
            val_fraction: 0.0,
            histogram: shapes::balance::HistogramOf::Signed,
            ..shapes::balance::BalanceParams::default()
        };
        let plan = shapes::balance::balance(&samples, &params).expect("balances");
        let edges = &plan.summary.bin_edges;
        let mut bins: Vec<crate::BinExamples> = edges
            .windows(2)
            .map(|w| crate::BinExamples {
                label: format!("{:.2} – {:.2}", w[0], w[1]),
                examples: Vec::new(),
            })
            .collect();
        for row in plan.rows.iter().filter(|r| r.replica == 0) {
            let i: usize = row.sample_id.parse().expect("numeric id");
            let bin = &mut bins[row.bin.expect("train") as usize];
            if bin.examples.len() == 6 {
                continue;
            }
            // Shifted into the image; mirror-axis points red, the two halves green and blue,
            // so a turn shows as the red points moving across.
            let raw = &set.shapes[136 * i..136 * (i + 1)];
            let b = faces::face::landmarks_bbox(raw).expect("points");
            let shape: Vec<f32> = raw
                .chunks_exact(2)
                .flat_map(|p| [p[0] - b.x + 10.0, p[1] - b.y + 10.0])
                .collect();
            let bbox = faces::face::landmarks_bbox(&shape).expect("points");
            let mut img = image::RgbImage::new((b.w + 20.0) as u32, (b.h + 20.0) as u32);
            let radius = (b.w.max(b.h) / 40.0).max(1.0) as i32;
            for (j, p) in shape.chunks_exact(2).enumerate() {
                let colour = match perm[j].cmp(&j) {
                    std::cmp::Ordering::Equal => [255, 40, 40],
                    std::cmp::Ordering::Greater => [40, 255, 40],
                    std::cmp::Ordering::Less => [80, 80, 255],
                };
                let centre = (p[0] as i32, p[1] as i32);
                imageproc::drawing::draw_filled_circle_mut(
                    &mut img,
                    centre,
                    radius,
                    image::Rgb(colour),
                );
            }
            let path = dir.path().join(format!("{i}.png"));
            img.save(&path).expect("writes");
            bin.examples.push((path, bbox));
        }
        let out = dir.path().join("pose_bins_strip.png");
        crate::plot_thumbnail_strip(&out, &bins, 72).expect("draws");
        keep(&out);
        let hist = dir.path().join("pose_bins_histogram.png");
        crate::plot_pose_histogram(&hist, &plan.summary).expect("draws");
        keep(&hist);
    }

    #[test]
    fn short_numbers_stay_short() {
        assert_eq!(short(0.0), "0");
        assert_eq!(short(0.25), "0.25");
        assert_eq!(short(-1.5), "-1.5");
        assert_eq!(short(0.0001234), "1.23e-4");
    }
}
