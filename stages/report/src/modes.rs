//! The mean shape and its first modes of variation.

use std::path::Path;

use plotters::prelude::*;

use super::{FAMILY, ReportError, draw_error, fonts_available, save_rgb};
use shapes::pca::ShapeModel;

const PANEL: u32 = 420;
const HEIGHT: u32 = 460;
const MODES: usize = 3;

/// Up to three panels, one per leading component k: the mean shape (black) and the mean
/// ± 2σₖ along the component (red +, blue −) as point clouds, with a thin line from each mean
/// point to its displaced positions. The pose component is marked in its caption. Shapes are
/// drawn y-up from the y-down image frame, so faces stand upright.
pub fn plot_shape_modes(path: &Path, model: &ShapeModel) -> Result<(), ReportError> {
    draw(path, model, fonts_available())
}

fn draw(path: &Path, model: &ShapeModel, text: bool) -> Result<(), ReportError> {
    let modes = model.components.len().min(MODES);
    if modes == 0 || model.mean.is_empty() {
        return Err(ReportError::Empty {
            path: path.to_owned(),
            reason: "no shape modes",
        });
    }
    let displaced = |k: usize, sign: f64| -> Vec<(f64, f64)> {
        let sd = model.variances[k].max(0.0).sqrt();
        let v = &model.components[k];
        (0..model.num_points)
            .map(|j| {
                let x = model.mean[2 * j] + sign * 2.0 * sd * v[2 * j];
                let y = model.mean[2 * j + 1] + sign * 2.0 * sd * v[2 * j + 1];
                (x, -y)
            })
            .collect()
    };
    let sets: Vec<[Vec<(f64, f64)>; 3]> = (0..modes)
        .map(|k| [displaced(k, 0.0), displaced(k, 1.0), displaced(k, -1.0)])
        .collect();
    // One square range for all panels, so modes compare at the same scale.
    let all = sets.iter().flatten().flatten();
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in all {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    let half = 0.55 * (x1 - x0).max(y1 - y0).max(1e-9);
    let (cx, cy) = (0.5 * (x0 + x1), 0.5 * (y0 + y1));

    let width = PANEL * modes as u32;
    let mut rgb = vec![0u8; (width * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (width, HEIGHT)).into_drawing_area();
        let err = |e: DrawingAreaErrorKind<_>| draw_error(path)(e.to_string());
        root.fill(&WHITE).map_err(err)?;
        for (k, (area, [mean, plus, minus])) in
            root.split_evenly((1, modes)).iter().zip(&sets).enumerate()
        {
            let mut builder = ChartBuilder::on(area);
            builder.margin(10);
            if text {
                let pose = if k == model.pose_component {
                    ", pose"
                } else {
                    ""
                };
                let caption = format!(
                    "PC{} ({:.1} %, flip {:.2}{pose})",
                    k + 1,
                    100.0 * model.explained_variance_ratio[k],
                    model.flip_scores[k]
                );
                builder.caption(caption, (FAMILY, 18));
            }
            let mut chart = builder
                .build_cartesian_2d(cx - half..cx + half, cy - half..cy + half)
                .map_err(err)?;
            for (points, colour) in [(plus, RED), (minus, BLUE)] {
                let links = mean
                    .iter()
                    .zip(points)
                    .map(|(&a, &b)| PathElement::new(vec![a, b], colour.mix(0.35).stroke_width(1)));
                chart.draw_series(links).map_err(err)?;
                let dots = points.iter().map(|&p| Circle::new(p, 3, colour.filled()));
                chart.draw_series(dots).map_err(err)?;
            }
            let dots = mean.iter().map(|&p| Circle::new(p, 3, BLACK.filled()));
            chart.draw_series(dots).map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    save_rgb(path, width, HEIGHT, rgb)
}

#[cfg(test)]
mod tests {
    use super::*;
    use contract::scheme;
    use shapes::align::{AlignParams, align_shapes, synthetic};
    use shapes::pca::{PcaParams, fit_shape_model};

    #[test]
    fn draws_three_panels_with_and_without_text() {
        let scheme = scheme::by_name("ibug68").expect("registered");
        let perm = &scheme.flip_permutation;
        let set = synthetic::shapes(perm, 300, 2, 0.2, 0.0);
        let a = align_shapes(&set.shapes, 68, &AlignParams::default(), Some(perm)).expect("aligns");
        let model = fit_shape_model(&a, perm, &PcaParams::default())
            .expect("fits")
            .model;
        let dir = tempfile::tempdir().expect("tempdir");
        for text in [true, false] {
            if text && !fonts_available() {
                continue;
            }
            let path = dir.path().join(format!("modes_{text}.png"));
            draw(&path, &model, text).expect("draws");
            let img = image::open(&path).expect("PNG").to_rgb8();
            assert_eq!(img.dimensions(), (3 * PANEL, HEIGHT));
            for colour in [[255, 0, 0], [0, 0, 255], [0, 0, 0]] {
                assert!(img.pixels().any(|p| p.0 == colour), "no {colour:?} points");
            }
            crate::tests::keep(&path);
        }
    }
}
