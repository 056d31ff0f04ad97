//! The loss curve of a training run: `train_log.csv` (written by `wingflow-train`) drawn as a
//! PNG, training loss on the left and validation NME on the right.

use std::path::Path;

use crate::{FAMILY, ReportError, draw_error, fonts_available, save_rgb};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

type Result<T, E = ReportError> = std::result::Result<T, E>;

const WIDTH: u32 = 1000;
const HEIGHT: u32 = 420;

/// The columns of `train_log.csv` the plot needs, one entry per logged step.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrainLog {
    /// (step, training loss).
    pub loss: Vec<(f64, f64)>,
    /// (step, validation NME ×100), for the steps where validation ran.
    pub val_nme: Vec<(f64, f64)>,
    /// The first logged step of each pass over the training set after the first (a pass reads
    /// the next augmentation epoch), from the `epoch` column when the log has one.
    pub pass_starts: Vec<f64>,
}

/// Parse `train_log.csv` (header `step,epoch,loss,lr,images_per_sec,val_nme_percent,…`).
pub fn parse_train_log(text: &str, path: &Path) -> Result<TrainLog> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let column = |name: &str| {
        header
            .iter()
            .position(|h| h.trim() == name)
            .ok_or_else(|| ReportError::Parse {
                path: path.to_owned(),
                message: format!("no `{name}` column in the header"),
            })
    };
    let (step, loss, val) = (column("step")?, column("loss")?, column("val_nme_percent")?);
    let pass = column("epoch").ok();
    let mut log = TrainLog::default();
    let mut last_pass = None;
    for (i, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split(',').collect();
        let number = |k: usize| -> Result<Option<f64>> {
            match fields.get(k).map(|f| f.trim()) {
                None | Some("") => Ok(None),
                Some(f) => f.parse().map(Some).map_err(|_| ReportError::Parse {
                    path: path.to_owned(),
                    message: format!("line {}: `{f}` is not a number", i + 2),
                }),
            }
        };
        let Some(s) = number(step)? else { continue };
        if let Some(p) = pass.map(number).transpose()?.flatten() {
            if last_pass.is_some_and(|last| p > last) {
                log.pass_starts.push(s);
            }
            last_pass = Some(p);
        }
        if let Some(l) = number(loss)? {
            log.loss.push((s, l));
        }
        if let Some(v) = number(val)? {
            log.val_nme.push((s, v));
        }
    }
    Ok(log)
}

/// Draw the run logged in `csv` into `png`.
pub fn plot_loss_curve(csv: &Path, png: &Path) -> Result<()> {
    let text = std::fs::read_to_string(csv).map_err(|source| ReportError::Read {
        path: csv.to_owned(),
        source,
    })?;
    let log = parse_train_log(&text, csv)?;
    let positive: Vec<(f64, f64)> = log.loss.iter().copied().filter(|&(_, l)| l > 0.0).collect();
    if positive.is_empty() {
        return Err(ReportError::Empty {
            path: csv.to_owned(),
            reason: "no loss values",
        });
    }
    let text = fonts_available();
    let mut rgb = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (WIDTH, HEIGHT)).into_drawing_area();
        let draw = draw_error(png);
        let err = |e: DrawingAreaErrorKind<_>| draw(e.to_string());
        root.fill(&WHITE).map_err(err)?;
        let (left, right) = root.split_horizontally(WIDTH / 2);
        let max_step = positive.iter().map(|p| p.0).fold(1.0, f64::max);
        let (lo, hi) = positive
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
        let mut chart = panel(
            png,
            &left,
            "training loss",
            max_step,
            (lo * 0.9)..(hi * 1.05),
            text,
        )?;
        // A thin grey line where each pass over the training set (augmentation epoch) begins.
        let boundaries = log
            .pass_starts
            .iter()
            .map(|&s| PathElement::new(vec![(s, lo * 0.9), (s, hi * 1.05)], BLACK.mix(0.25)));
        chart.draw_series(boundaries).map_err(err)?;
        chart
            .draw_series(LineSeries::new(positive, BLUE.stroke_width(2)))
            .map_err(err)?;
        let top = log.val_nme.iter().map(|p| p.1).fold(1.0, f64::max) * 1.1;
        let mut chart = panel(
            png,
            &right,
            "validation NME (×100)",
            max_step,
            0.0..top,
            text,
        )?;
        chart
            .draw_series(LineSeries::new(
                log.val_nme.iter().copied(),
                RED.stroke_width(2),
            ))
            .map_err(err)?;
        chart
            .draw_series(log.val_nme.iter().map(|&p| Circle::new(p, 3, RED.filled())))
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    save_rgb(png, WIDTH, HEIGHT, rgb)
}

/// One panel of the loss-curve figure: `caption` above, steps 0..`max_step` across, `y` up
/// (axes and text only when the font is available).
fn panel<'a, 'b>(
    png: &Path,
    area: &'a DrawingArea<BitMapBackend<'b>, plotters::coord::Shift>,
    caption: &str,
    max_step: f64,
    y: std::ops::Range<f64>,
    text: bool,
) -> Result<ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>> {
    let draw = draw_error(png);
    let err = |e: DrawingAreaErrorKind<_>| draw(format!("{caption}: {e}"));
    let mut builder = ChartBuilder::on(area);
    builder.margin(15);
    if text {
        builder
            .caption(caption, (FAMILY, 18))
            .x_label_area_size(35)
            .y_label_area_size(60);
    }
    let mut chart = builder.build_cartesian_2d(0.0..max_step, y).map_err(err)?;
    if text {
        chart
            .configure_mesh()
            .x_desc("step")
            .label_style((FAMILY, 12))
            .draw()
            .map_err(err)?;
    }
    Ok(chart)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "step,epoch,loss,lr,images_per_sec,val_nme_percent,elapsed_s\n\
                       50,0,2019.5,8.6e-4,68.9,,5.8\n\
                       100,0,1589.9,5.1e-4,69.5,17.5,11.5\n\
                       150,1,1548.6,1.6e-4,58.3,,17.0\n";

    #[test]
    fn the_log_is_parsed_with_validation_only_where_it_ran() {
        let log = parse_train_log(LOG, Path::new("train_log.csv")).unwrap();
        assert_eq!(
            log.loss,
            vec![(50.0, 2019.5), (100.0, 1589.9), (150.0, 1548.6)]
        );
        assert_eq!(log.val_nme, vec![(100.0, 17.5)]);
        assert_eq!(log.pass_starts, vec![150.0]);
    }

    #[test]
    fn a_bad_value_names_the_file_and_line() {
        let bad = LOG.replace("1589.9", "oops");
        let err = parse_train_log(&bad, Path::new("train_log.csv"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("train_log.csv: line 3"), "{err}");
    }

    #[test]
    fn the_curve_is_drawn_and_an_empty_log_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("train_log.csv");
        std::fs::write(&csv, LOG).unwrap();
        let png = dir.path().join("loss-curve.png");
        plot_loss_curve(&csv, &png).unwrap();
        let img = image::open(&png).unwrap();
        assert_eq!((img.width(), img.height()), (WIDTH, HEIGHT));
        std::fs::write(&csv, "step,epoch,loss,lr,images_per_sec,val_nme_percent\n").unwrap();
        assert!(plot_loss_curve(&csv, &png).is_err());
    }
}
