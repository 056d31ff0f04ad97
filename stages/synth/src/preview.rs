//! A contact sheet of generated faces with their landmarks, for looking at the data.

use std::path::Path;

use image::{Rgb, RgbImage};
use imageproc::drawing::{draw_filled_circle_mut, draw_hollow_circle_mut};

use super::formats::{AFLW21_EARS, write_atomic};
use super::model::{Camera, FaceModel, FaceParams, Layout};
use super::{SynthError, TruthFace, read_truth};

/// Thumbnail side in pixels.
const THUMB: u32 = 224;

/// Colours: image-left points, image-right points, midline points, hidden points.
const LEFT: Rgb<u8> = Rgb([40, 220, 40]);
const RIGHT: Rgb<u8> = Rgb([240, 50, 50]);
const MIDDLE: Rgb<u8> = Rgb([250, 220, 30]);
const HIDDEN: Rgb<u8> = Rgb([60, 140, 255]);

/// Which side each point of `scheme` lies on in a frontal face (−1 image-left, 0 midline,
/// +1 image-right), from the mean model.
fn point_sides(scheme: &str) -> Option<Vec<i8>> {
    let mean = FaceModel::new(FaceParams::mean());
    let cam = Camera::frontal();
    let side = |x: f32| {
        if x < -1e-4 {
            -1
        } else if x > 1e-4 {
            1
        } else {
            0
        }
    };
    let pts = match scheme {
        "ibug68" => mean.landmarks(Layout::Ibug68, &cam),
        "aflw21" => mean.landmarks(Layout::Aflw21, &cam),
        "aflw19" => {
            let all = mean.landmarks(Layout::Aflw21, &cam);
            all.into_iter()
                .enumerate()
                .filter(|(i, _)| !AFLW21_EARS.contains(i))
                .map(|(_, p)| p)
                .collect()
        }
        _ => return None,
    };
    Some(pts.iter().map(|p| side(p.p[0])).collect())
}

fn bilinear(img: &RgbImage, x: f32, y: f32) -> Rgb<u8> {
    let (w, h) = img.dimensions();
    let (fx, fy) = (x - 0.5, y - 0.5);
    if fx < -1.0 || fy < -1.0 || fx > w as f32 || fy > h as f32 {
        return Rgb([0, 0, 0]);
    }
    let (x0, y0) = (fx.floor(), fy.floor());
    let (tx, ty) = (fx - x0, fy - y0);
    let get = |xi: f32, yi: f32| {
        let xi = (xi.max(0.0) as u32).min(w - 1);
        let yi = (yi.max(0.0) as u32).min(h - 1);
        img.get_pixel(xi, yi).0.map(f32::from)
    };
    let (a, b, c, d) = (
        get(x0, y0),
        get(x0 + 1.0, y0),
        get(x0, y0 + 1.0),
        get(x0 + 1.0, y0 + 1.0),
    );
    Rgb([0, 1, 2].map(|k| {
        let top = a[k] + (b[k] - a[k]) * tx;
        let bottom = c[k] + (d[k] - c[k]) * tx;
        (top + (bottom - top) * ty).round().clamp(0.0, 255.0) as u8
    }))
}

/// A landmark dot of radius `r` centred on the continuous point (cx, cy): filled, or a ring
/// for a hidden point.
fn dot(canvas: &mut RgbImage, cx: f32, cy: f32, r: f32, colour: Rgb<u8>, hollow: bool) {
    // Pixel (i, j) covers [i, i+1)×[j, j+1): the point lies in pixel floor(x).
    let centre = (cx.floor() as i32, cy.floor() as i32);
    let radius = r.round() as i32;
    if hollow {
        draw_hollow_circle_mut(canvas, centre, radius, colour);
    } else {
        draw_filled_circle_mut(canvas, centre, radius, colour);
    }
}

fn draw_face(
    canvas: &mut RgbImage,
    img: &RgbImage,
    face: &TruthFace,
    sides: &[i8],
    ox: u32,
    oy: u32,
) {
    let xs = face.landmarks.iter().step_by(2);
    let ys = face.landmarks.iter().skip(1).step_by(2);
    let (x0, x1) = xs.fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    let (y0, y1) = ys.fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    let side = 1.4 * (x1 - x0).max(y1 - y0).max(8.0);
    let (left, top) = (0.5 * (x0 + x1) - 0.5 * side, 0.5 * (y0 + y1) - 0.5 * side);
    let k = side / THUMB as f32;
    for v in 0..THUMB {
        for u in 0..THUMB {
            let px = bilinear(img, left + (u as f32 + 0.5) * k, top + (v as f32 + 0.5) * k);
            canvas.put_pixel(ox + u, oy + v, px);
        }
    }
    for (i, xy) in face.landmarks.chunks_exact(2).enumerate() {
        let (tx, ty) = (
            ox as f32 + (xy[0] - left) / k,
            oy as f32 + (xy[1] - top) / k,
        );
        let visible = face.visible.get(i).copied().unwrap_or(true);
        let colour = match sides.get(i) {
            _ if !visible => HIDDEN,
            Some(-1) => LEFT,
            Some(1) => RIGHT,
            _ => MIDDLE,
        };
        dot(
            canvas,
            tx,
            ty,
            if visible { 1.8 } else { 2.5 },
            colour,
            !visible,
        );
    }
}

/// Draw up to `max_faces` faces of the generated tree at `out_dir` (from its truth file) as a
/// grid of thumbnails with their landmarks, and write it as a PNG to `png`. Image-left points
/// are green, image-right red, midline yellow, self-occluded ones hollow blue. Returns the
/// number of faces drawn.
pub fn write_preview(out_dir: &Path, png: &Path, max_faces: usize) -> Result<usize, SynthError> {
    let faces = read_truth(out_dir)?;
    let faces = &faces[..faces.len().min(max_faces)];
    let n = faces.len().max(1) as u32;
    let cols = (n as f32).sqrt().ceil() as u32;
    let rows = n.div_ceil(cols);
    let mut canvas = RgbImage::from_pixel(cols * THUMB, rows * THUMB, Rgb([32, 32, 32]));
    for (k, face) in faces.iter().enumerate() {
        let path = out_dir.join(&face.image_path);
        let img = image::open(&path)
            .map_err(|source| SynthError::Image {
                path: path.clone(),
                source,
            })?
            .to_rgb8();
        let sides = point_sides(&face.scheme).unwrap_or_default();
        let (c, r) = (k as u32 % cols, k as u32 / cols);
        draw_face(&mut canvas, &img, face, &sides, c * THUMB, r * THUMB);
    }
    let mut bytes = Vec::new();
    canvas
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .map_err(|source| SynthError::Image {
            path: png.to_owned(),
            source,
        })?;
    write_atomic(png, &bytes)?;
    Ok(faces.len())
}
