//! Cumulative error distribution (CED) curves: the fraction of faces whose NME is at most x.
//!
//! Drawn with plotters like the other plots, sharing their font registration
//! ([`fonts_available`]); without the font the curves are drawn without text.

use std::path::Path;

use crate::{FAMILY, ReportError, draw_error, fonts_available, save_rgb};
use plotters::prelude::*;

const WIDTH: u32 = 800;
const HEIGHT: u32 = 560;

/// One curve of a CED plot: a label and the per-face NMEs (fractions, not ×100).
#[derive(Debug, Clone, PartialEq)]
pub struct CedSeries {
    /// Legend text.
    pub label: String,
    /// NME of each face, as a fraction of the normaliser.
    pub nmes: Vec<f64>,
}

/// The CED of `nmes` at `x`: the fraction of faces with NME ≤ x.
pub fn ced_fraction(sorted_nmes: &[f64], x: f64) -> f64 {
    if sorted_nmes.is_empty() {
        return 0.0;
    }
    sorted_nmes.partition_point(|&e| e <= x) as f64 / sorted_nmes.len() as f64
}

/// Draw the CED of each series on [0, `max_nme`] (NME axis shown ×100, as papers do), with a
/// legend, into a PNG.
pub fn plot_ced(
    path: &Path,
    title: &str,
    series: &[CedSeries],
    max_nme: f64,
) -> Result<(), ReportError> {
    if series.iter().all(|s| s.nmes.is_empty())
        || max_nme.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater)
    {
        return Err(ReportError::Empty {
            path: path.to_owned(),
            reason: "no face errors",
        });
    }
    let text = fonts_available();
    let mut rgb = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (WIDTH, HEIGHT)).into_drawing_area();
        let draw = draw_error(path);
        let err = |e: DrawingAreaErrorKind<_>| draw(e.to_string());
        root.fill(&WHITE).map_err(err)?;
        let mut builder = ChartBuilder::on(&root);
        builder.margin(15);
        if text {
            builder
                .caption(title, (FAMILY, 20))
                .x_label_area_size(40)
                .y_label_area_size(50);
        }
        let x_max = 100.0 * max_nme;
        let mut chart = builder
            .build_cartesian_2d(0.0..x_max, 0.0..1.0)
            .map_err(err)?;
        if text {
            chart
                .configure_mesh()
                .x_desc("NME (×100)")
                .y_desc("fraction of faces")
                .label_style((FAMILY, 13))
                .draw()
                .map_err(err)?;
        }
        const STEPS: usize = 200;
        for (i, s) in series.iter().enumerate() {
            let mut sorted = s.nmes.clone();
            sorted.sort_by(f64::total_cmp);
            let colour = Palette99::pick(i).to_rgba().stroke_width(2);
            let points = (0..=STEPS).map(|k| {
                let x = max_nme * k as f64 / STEPS as f64;
                (100.0 * x, ced_fraction(&sorted, x))
            });
            let drawn = chart
                .draw_series(LineSeries::new(points, colour))
                .map_err(err)?;
            if text {
                drawn
                    .label(s.label.clone())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
            }
        }
        if text {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font((FAMILY, 13))
                .draw()
                .map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    save_rgb(path, WIDTH, HEIGHT, rgb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fraction_counts_faces_at_or_below() {
        let sorted = [0.01, 0.02, 0.02, 0.09];
        assert_eq!(ced_fraction(&sorted, 0.0), 0.0);
        assert_eq!(ced_fraction(&sorted, 0.02), 0.75);
        assert_eq!(ced_fraction(&sorted, 0.5), 1.0);
        assert_eq!(ced_fraction(&[], 0.5), 0.0);
    }

    #[test]
    fn plot_is_written_and_empty_input_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let png = dir.path().join("ced.png");
        let series = [
            CedSeries {
                label: "wing".into(),
                nmes: vec![0.01, 0.03, 0.05],
            },
            CedSeries {
                label: "l2".into(),
                nmes: vec![0.02, 0.06, 0.2],
            },
        ];
        plot_ced(&png, "test", &series, 0.1).unwrap();
        let img = image::open(&png).unwrap();
        assert_eq!((img.width(), img.height()), (WIDTH, HEIGHT));
        let empty = [CedSeries {
            label: "none".into(),
            nmes: vec![],
        }];
        assert!(plot_ced(&dir.path().join("e.png"), "t", &empty, 0.1).is_err());
    }
}
