//! `wingflow predict`: landmarks of faces given by boxes (or a list file) through the two-stage
//! inference path, written as `.pts` or JSON, optionally drawn on the image.

use imageproc::drawing::{draw_filled_circle_mut, draw_hollow_rect_mut};
use imageproc::rect::Rect;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use contract::scheme::Scheme;
use faces::face::BBox;
use faces::formats::pts::write_pts;
use render::RenderParams;
use serde::Serialize;

use crate::inference::{FacePrediction, FaceQuery, Models, face_box, predict_faces, scratch_dir};

/// Parse `x,y,w,h` (internal pixel convention).
pub fn parse_box(text: &str) -> Result<BBox> {
    let v: Vec<f32> = text
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<f32>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("box `{text}`: expected four numbers x,y,w,h"))?;
    ensure!(v.len() == 4, "box `{text}`: expected four numbers x,y,w,h");
    ensure!(
        v.iter().all(|x| x.is_finite()) && v[2] > 0.0 && v[3] > 0.0,
        "box `{text}`: width and height must be positive"
    );
    Ok(BBox {
        x: v[0],
        y: v[1],
        w: v[2],
        h: v[3],
    })
}

/// Read a list file: one face per line, `IMAGE X Y W H`; blank lines and `#` comments are
/// skipped; relative image paths are taken relative to the list's folder.
pub fn read_list(path: &Path) -> Result<Vec<(PathBuf, BBox)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        ensure!(
            fields.len() == 5,
            "{}, line {}: expected `IMAGE X Y W H`, got {} fields",
            path.display(),
            i + 1,
            fields.len()
        );
        let b = parse_box(&fields[1..].join(","))
            .with_context(|| format!("{}, line {}", path.display(), i + 1))?;
        out.push((base.join(fields[0]), b));
    }
    ensure!(!out.is_empty(), "{}: no faces listed", path.display());
    Ok(out)
}

#[derive(Serialize)]
struct JsonFace<'a> {
    image: &'a Path,
    r#box: [f32; 4],
    refined: bool,
    landmarks: Vec<[f32; 2]>,
    stage1_landmarks: Vec<[f32; 2]>,
}

#[derive(Serialize)]
struct JsonOutput<'a> {
    scheme: &'a str,
    coordinates: &'a str,
    faces: Vec<JsonFace<'a>>,
}

fn pairs(xy: &[f32]) -> Vec<[f32; 2]> {
    xy.chunks_exact(2).map(|p| [p[0], p[1]]).collect()
}

/// The JSON document `wingflow predict` writes.
pub fn predictions_json(
    scheme: &Scheme,
    faces: &[(PathBuf, BBox)],
    predictions: &[FacePrediction],
) -> Result<String> {
    let doc = JsonOutput {
        scheme: scheme.name,
        coordinates: "image pixels, continuous; the centre of the top-left pixel is (0.5, 0.5) \
                      (add 0.5 for 300W .pts values)",
        faces: faces
            .iter()
            .zip(predictions)
            .map(|((image, b), p)| JsonFace {
                image,
                r#box: [b.x, b.y, b.w, b.h],
                refined: p.refined,
                landmarks: pairs(&p.landmarks),
                stage1_landmarks: pairs(&p.stage1),
            })
            .collect(),
    };
    Ok(serde_json::to_string_pretty(&doc)?)
}

/// Draw the face boxes (yellow) and landmarks (green; stage 1 in red when refined) on a copy
/// of `image`, written as PNG.
pub fn draw_predictions(
    image: &Path,
    faces: &[(PathBuf, BBox)],
    predictions: &[FacePrediction],
    png: &Path,
) -> Result<()> {
    let mut rgb = image::open(image)
        .with_context(|| format!("cannot decode {}", image.display()))?
        .to_rgb8();
    let (box_colour, refined, stage1) = (
        image::Rgb([255, 220, 0]),
        image::Rgb([40, 230, 60]),
        image::Rgb([230, 40, 40]),
    );
    for ((_, b), p) in faces.iter().zip(predictions) {
        // Pixel (i, j) covers [i, i+1)×[j, j+1): a coordinate lies in pixel floor(x).
        let (x0, y0) = (b.x.floor() as i32, b.y.floor() as i32);
        let (x1, y1) = ((b.x + b.w).floor() as i32, (b.y + b.h).floor() as i32);
        let rect = Rect::at(x0, y0).of_size((x1 - x0 + 1) as u32, (y1 - y0 + 1) as u32);
        draw_hollow_rect_mut(&mut rgb, rect, box_colour);
        let r = (b.w.max(b.h) / 120.0).round().max(1.0) as i32;
        let mut dots = |xy: &[f32], colour: image::Rgb<u8>, r: i32| {
            for q in xy.chunks_exact(2) {
                let centre = (q[0].floor() as i32, q[1].floor() as i32);
                draw_filled_circle_mut(&mut rgb, centre, r, colour);
            }
        };
        if p.refined {
            dots(&p.stage1, stage1, (r - 1).max(0));
        }
        dots(&p.landmarks, refined, r);
    }
    let mut bytes = std::io::Cursor::new(Vec::new());
    rgb.write_to(&mut bytes, image::ImageFormat::Png)
        .with_context(|| format!("cannot encode {}", png.display()))?;
    manifests::write_atomic(png, bytes.get_ref())
        .with_context(|| format!("cannot write {}", png.display()))?;
    Ok(())
}

/// Arguments of `wingflow predict`.
#[derive(clap::Args, Debug)]
pub struct PredictArgs {
    /// The image (with --box); omit it with --list.
    #[arg(required_unless_present = "list", conflicts_with = "list")]
    pub image: Option<PathBuf>,
    /// The face box `x,y,w,h` in pixels (the landmarks' box under the default box rule; it is
    /// made square and enlarged ×1.25 as for training crops).
    #[arg(long = "box", value_name = "X,Y,W,H", required_unless_present = "list")]
    pub face_box: Option<String>,
    /// A list of faces, one per line: `IMAGE X Y W H`.
    #[arg(long, value_name = "FILE")]
    pub list: Option<PathBuf>,
    /// CNN-6 weights (a training run's `last.safetensors` or `best.safetensors`).
    #[arg(long, value_name = "W6")]
    pub stage1: PathBuf,
    /// CNN-7 weights; without it only stage 1 runs.
    #[arg(long, value_name = "W7")]
    pub stage2: Option<PathBuf>,
    /// Write the landmarks here: `.pts` (one face, 300W 1-based convention) or `.json`;
    /// default: JSON on stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Draw the boxes and landmarks on the image into this PNG (faces of one image only).
    #[arg(long, value_name = "PNG")]
    pub draw: Option<PathBuf>,
    /// Device for the networks: auto, cpu, cuda, cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Take the crop sizes, box rule and border from this configuration's `[render]` (they
    /// must be those the networks were trained with); default: the built-in render defaults.
    #[arg(long, value_name = "TOML")]
    pub config: Option<PathBuf>,
}

/// `wingflow predict`.
pub fn predict_command(args: &PredictArgs) -> Result<()> {
    let faces: Vec<(PathBuf, BBox)> = match (&args.list, &args.image, &args.face_box) {
        (Some(list), _, _) => read_list(list)?,
        (None, Some(image), Some(b)) => vec![(image.clone(), parse_box(b)?)],
        _ => bail!("give IMAGE --box X,Y,W,H, or --list FILE"),
    };
    let models = Models {
        stage1: args.stage1.clone(),
        stage2: args.stage2.clone(),
        device: args.device.clone(),
    };
    let params = match &args.config {
        Some(path) => crate::config::Config::load(path)?.render,
        None => RenderParams::default(),
    };
    let queries: Vec<FaceQuery> = faces
        .iter()
        .map(|(image, b)| FaceQuery {
            image: image.clone(),
            crop_box: face_box(b, &params),
        })
        .collect();
    let scheme = models.scheme()?;
    let work = scratch_dir(None)?;
    let predictions = predict_faces(&queries, &models, &params, work.path())?;
    match &args.out {
        Some(path)
            if path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("pts")) =>
        {
            ensure!(
                predictions.len() == 1,
                "--out {}: a .pts file holds one face, but {} were predicted (use .json)",
                path.display(),
                predictions.len()
            );
            manifests::write_atomic(path, write_pts(&predictions[0].landmarks, 3).as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Some(path) => {
            let json = predictions_json(scheme, &faces, &predictions)?;
            manifests::write_atomic(path, json.as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        None => {
            let json = predictions_json(scheme, &faces, &predictions)?;
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "{json}")?;
        }
    }
    if let Some(png) = &args.draw {
        let first = &faces[0].0;
        ensure!(
            faces.iter().all(|(image, _)| image == first),
            "--draw needs every face on one image"
        );
        draw_predictions(first, &faces, &predictions, png)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_and_lists_parse_with_line_numbers() {
        assert_eq!(
            parse_box("1,2,3,4").unwrap(),
            BBox {
                x: 1.0,
                y: 2.0,
                w: 3.0,
                h: 4.0
            }
        );
        assert!(parse_box("1,2,3").is_err());
        assert!(parse_box("1,2,0,4").is_err());
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("faces.txt");
        std::fs::write(&list, "# faces\na.jpg 1 2 30 40\n\nb.png 1 2 x 4\n").unwrap();
        let err = format!("{:#}", read_list(&list).unwrap_err());
        assert!(err.contains("line 4"), "{err}");
        std::fs::write(&list, "a.jpg 1 2 30 40\n").unwrap();
        assert_eq!(read_list(&list).unwrap()[0].0, dir.path().join("a.jpg"));
    }
}
