//! A strip of example faces per pose bin, so a person can see the bins really are poses.

use std::path::{Path, PathBuf};

use image::imageops::{self, FilterType};
use image::{Rgb, RgbImage};
use plotters::prelude::*;

use super::{FAMILY, ReportError, draw_error, fonts_available, save_rgb};
use faces::face::BBox;

const GAP: u32 = 4;
/// The crop around a landmarks box, as the render stage's default crop (DESIGN.md boxes).
const ENLARGE: f64 = 1.25;
/// Crops larger than this (a broken box) are not decoded into a tile.
const MAX_CROP: f64 = 8192.0;

/// Example faces of one bin.
#[derive(Debug, Clone, PartialEq)]
pub struct BinExamples {
    /// Row label, e.g. the bin's coefficient range.
    pub label: String,
    /// Source image and the face's landmarks box (internal pixel coordinates).
    pub examples: Vec<(PathBuf, BBox)>,
}

/// What [`plot_thumbnail_strip`] could not show.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ThumbnailStrip {
    /// Examples drawn as grey placeholders: the image could not be read or the box is
    /// degenerate. A report stage logs these rather than failing.
    pub unreadable: Vec<PathBuf>,
}

/// One row per bin, one `tile`×`tile` thumbnail per example: the box made square (side = the
/// larger of width and height), enlarged 1.25× about its centre, pixels outside the image
/// black, resized with a triangle filter. Row labels are drawn when a font is available.
pub fn plot_thumbnail_strip(
    path: &Path,
    bins: &[BinExamples],
    tile: u32,
) -> Result<ThumbnailStrip, ReportError> {
    draw(path, bins, tile, fonts_available())
}

fn draw(
    path: &Path,
    bins: &[BinExamples],
    tile: u32,
    text: bool,
) -> Result<ThumbnailStrip, ReportError> {
    let columns = bins.iter().map(|b| b.examples.len()).max().unwrap_or(0) as u32;
    if bins.is_empty() || columns == 0 || tile == 0 {
        return Err(ReportError::Empty {
            path: path.to_owned(),
            reason: "no example faces",
        });
    }
    let label_width = if text { 150 } else { GAP };
    let width = label_width + columns * (tile + GAP);
    let height = GAP + bins.len() as u32 * (tile + GAP);
    let mut canvas = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
    let mut outcome = ThumbnailStrip::default();
    for (row, bin) in bins.iter().enumerate() {
        for (col, (image_path, bbox)) in bin.examples.iter().enumerate() {
            let thumb = thumbnail(image_path, bbox, tile).unwrap_or_else(|| {
                outcome.unreadable.push(image_path.clone());
                RgbImage::from_pixel(tile, tile, Rgb([128, 128, 128]))
            });
            let x = label_width + col as u32 * (tile + GAP);
            let y = GAP + row as u32 * (tile + GAP);
            imageops::replace(&mut canvas, &thumb, i64::from(x), i64::from(y));
        }
    }
    let mut rgb = canvas.into_raw();
    if text {
        let root = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        let err = |e: DrawingAreaErrorKind<_>| draw_error(path)(e.to_string());
        let style = TextStyle::from((FAMILY, 16).into_font()).color(&BLACK);
        for (row, bin) in bins.iter().enumerate() {
            let y = (GAP + row as u32 * (tile + GAP) + tile / 2) as i32 - 8;
            root.draw(&Text::new(bin.label.clone(), (6, y), style.clone()))
                .map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    save_rgb(path, width, height, rgb)?;
    Ok(outcome)
}

/// The square, enlarged crop around `bbox`, resized to `tile`; `None` if the image cannot be
/// decoded or the box is unusable.
fn thumbnail(path: &Path, bbox: &BBox, tile: u32) -> Option<RgbImage> {
    let side = f64::from(bbox.w.max(bbox.h)) * ENLARGE;
    let cx = f64::from(bbox.x) + 0.5 * f64::from(bbox.w);
    let cy = f64::from(bbox.y) + 0.5 * f64::from(bbox.h);
    if !((1.0..=MAX_CROP).contains(&side) && cx.is_finite() && cy.is_finite()) {
        return None;
    }
    let source = image::open(path).ok()?.to_rgb8();
    let (x0, y0) = (
        (cx - 0.5 * side).floor() as i64,
        (cy - 0.5 * side).floor() as i64,
    );
    let px = side.ceil() as u32;
    let mut crop = RgbImage::new(px, px);
    imageops::replace(&mut crop, &source, -x0, -y0);
    Some(imageops::resize(&crop, tile, tile, FilterType::Triangle))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An image with a distinct colour in each quadrant.
    fn quadrants(path: &Path) {
        let img = RgbImage::from_fn(200, 100, |x, y| match (x < 100, y < 50) {
            (true, true) => Rgb([255, 0, 0]),
            (false, true) => Rgb([0, 255, 0]),
            (true, false) => Rgb([0, 0, 255]),
            (false, false) => Rgb([255, 255, 0]),
        });
        img.save(path).expect("writes test image");
    }

    #[test]
    fn tiles_show_the_boxed_region_and_missing_images_become_placeholders() {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = dir.path().join("face.png");
        quadrants(&source);
        let red = BBox {
            x: 30.0,
            y: 10.0,
            w: 20.0,
            h: 20.0,
        };
        let yellow = BBox {
            x: 150.0,
            y: 70.0,
            w: 10.0,
            h: 10.0,
        };
        // A box at the image corner: the crop reaches outside and is padded black.
        let corner = BBox {
            x: -5.0,
            y: -5.0,
            w: 20.0,
            h: 20.0,
        };
        let bins = vec![
            BinExamples {
                label: "0 – 0.1".into(),
                examples: vec![(source.clone(), red), (source.clone(), corner)],
            },
            BinExamples {
                label: "0.1 – 0.2".into(),
                examples: vec![
                    (source.clone(), yellow),
                    (dir.path().join("missing.png"), red),
                ],
            },
        ];
        for text in [false, true] {
            if text && !fonts_available() {
                continue;
            }
            let out = dir.path().join(format!("strip_{text}.png"));
            let tile = 32;
            let strip = draw(&out, &bins, tile, text).expect("draws");
            crate::tests::keep(&out);
            assert_eq!(strip.unreadable, vec![dir.path().join("missing.png")]);
            let img = image::open(&out).expect("PNG").to_rgb8();
            let label = if text { 150 } else { GAP };
            let centre = |row: u32, col: u32| {
                *img.get_pixel(
                    label + col * (tile + GAP) + tile / 2,
                    GAP + row * (tile + GAP) + tile / 2,
                )
            };
            assert_eq!(centre(0, 0), Rgb([255, 0, 0]));
            assert_eq!(centre(1, 0), Rgb([255, 255, 0]));
            assert_eq!(centre(1, 1), Rgb([128, 128, 128]));
            // Corner tile: black outside the image (top-left), red inside (bottom-right).
            let corner_px = |dx: u32, dy: u32| *img.get_pixel(label + tile + GAP + dx, GAP + dy);
            assert_eq!(corner_px(2, 2), Rgb([0, 0, 0]));
            assert_eq!(corner_px(tile - 3, tile - 3), Rgb([255, 0, 0]));
        }
        assert!(matches!(
            draw(&dir.path().join("e.png"), &[], 32, false),
            Err(ReportError::Empty { .. })
        ));
    }
}
