//! The pose histogram before and after balancing.

use std::path::Path;

use plotters::prelude::*;

use super::{FAMILY, ReportError, draw_error, fonts_available, save_rgb, short};
use shapes::plan_table::BalanceSummary;

const WIDTH: u32 = 1000;
const HEIGHT: u32 = 450;

/// Two bar charts side by side: training samples per pose bin before balancing and training
/// rows per bin after it, on the same count axis, with the bin edges as x ticks.
pub fn plot_pose_histogram(path: &Path, summary: &BalanceSummary) -> Result<(), ReportError> {
    draw(path, summary, fonts_available())
}

fn draw(path: &Path, summary: &BalanceSummary, text: bool) -> Result<(), ReportError> {
    let edges = &summary.bin_edges;
    if edges.len() < 2 || summary.counts_before.len() + 1 != edges.len() {
        return Err(ReportError::Empty {
            path: path.to_owned(),
            reason: "no training histogram",
        });
    }
    let mut rgb = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (WIDTH, HEIGHT)).into_drawing_area();
        let err = |e: DrawingAreaErrorKind<_>| draw_error(path)(e.to_string());
        root.fill(&WHITE).map_err(err)?;
        let top = summary
            .counts_before
            .iter()
            .chain(&summary.counts_after)
            .max()
            .copied();
        let top = top.unwrap_or(1).max(1) as f64 * 1.08;
        // The x axis counts bins (equal width, so it is linear in the coefficient) and the
        // tick labels show the edges; plotters' f64 axes cannot take custom key points.
        let bins = (edges.len() - 1) as i32;
        let what = if summary.histogram_of_absolute {
            "|pose coefficient|"
        } else {
            "pose coefficient"
        };
        let panels = root.split_evenly((1, 2));
        for (area, (title, counts)) in panels.iter().zip([
            ("before balancing (samples)", &summary.counts_before),
            ("after balancing (rows)", &summary.counts_after),
        ]) {
            let mut builder = ChartBuilder::on(area);
            builder.margin(12);
            if text {
                builder
                    .caption(title, (FAMILY, 20))
                    .x_label_area_size(40)
                    .y_label_area_size(55);
            }
            let mut chart = builder.build_cartesian_2d(0..bins, 0.0..top).map_err(err)?;
            // Without a font there is no mesh: its labels are text.
            if text {
                let formatter = |k: &i32| short(edges[(*k).clamp(0, bins) as usize]);
                let counts = |v: &f64| format!("{v:.0}");
                chart
                    .configure_mesh()
                    .disable_x_mesh()
                    .x_labels(edges.len())
                    .x_label_formatter(&formatter)
                    .y_label_formatter(&counts)
                    .x_desc(what)
                    .y_desc("count")
                    .label_style((FAMILY, 12))
                    .draw()
                    .map_err(err)?;
            }
            // Filled bars, then their outlines over them.
            for style in [BLUE.mix(0.6).filled(), BLACK.stroke_width(1)] {
                let bars = counts
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| **c > 0)
                    .map(|(k, &c)| {
                        Rectangle::new([(k as i32, 0.0), (k as i32 + 1, c as f64)], style)
                    });
                chart.draw_series(bars).map_err(err)?;
            }
        }
        root.present().map_err(err)?;
    }
    save_rgb(path, WIDTH, HEIGHT, rgb)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shapes::plan::ShardCounts;

    pub(crate) fn summary() -> BalanceSummary {
        BalanceSummary {
            histogram_of_absolute: true,
            bin_edges: (0..=9).map(|k| f64::from(k) * 0.05).collect(),
            counts_before: vec![900, 600, 300, 150, 0, 40, 20, 8, 3],
            counts_after: vec![900, 1200, 900, 900, 0, 880, 900, 896, 900],
            replication: vec![1, 2, 3, 6, 0, 22, 45, 112, 300],
            val_carved: 0,
            test_carved: None,
            rows_per_split: vec![],
            bytes_per_sample_stage1: 1,
            bytes_per_sample_stage2: 1,
            target_shard_bytes: 1,
            shard_counts: ShardCounts {
                stage1: vec![],
                stage2: vec![],
            },
        }
    }

    #[test]
    fn draws_with_and_without_text() {
        let dir = tempfile::tempdir().expect("tempdir");
        for text in [true, false] {
            if text && !fonts_available() {
                continue;
            }
            let path = dir.path().join(format!("pose_histogram_{text}.png"));
            draw(&path, &summary(), text).expect("draws");
            crate::tests::keep(&path);
            let img = image::open(&path).expect("PNG").to_rgb8();
            assert_eq!(img.dimensions(), (WIDTH, HEIGHT));
            // Some bar pixels are blue-ish.
            assert!(img.pixels().any(|p| p[2] > 200 && p[0] < 150));
        }
        let mut empty = summary();
        empty.bin_edges.clear();
        assert!(matches!(
            draw(&dir.path().join("x.png"), &empty, false),
            Err(ReportError::Empty { .. })
        ));
    }
}
