//! The face record: one annotated face, the row type of `faces.parquet` (DESIGN.md data model).
//!
//! Coordinates follow the one pixel convention: continuous, pixel (i, j) covers
//! [i, i+1)×[j, j+1), so the centre of the top-left pixel is (0.5, 0.5).

use serde::{Deserialize, Serialize};

/// Where a face's crop box came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BoxSource {
    /// The source's own box (AFLW `FaceRect`, HRNet centre/scale, WFLW rectangle).
    Annotation,
    /// The landmarks' bounding box.
    Landmarks,
    /// A face detector's box.
    Detector,
}

impl BoxSource {
    /// The name stored in `faces.parquet`.
    pub fn as_str(self) -> &'static str {
        match self {
            BoxSource::Annotation => "annotation",
            BoxSource::Landmarks => "landmarks",
            BoxSource::Detector => "detector",
        }
    }

    /// Parse the name stored in `faces.parquet`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "annotation" => Some(BoxSource::Annotation),
            "landmarks" => Some(BoxSource::Landmarks),
            "detector" => Some(BoxSource::Detector),
            _ => None,
        }
    }
}

/// An axis-aligned box in internal pixel coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BBox {
    /// Left edge.
    pub x: f32,
    /// Top edge.
    pub y: f32,
    /// Width.
    pub w: f32,
    /// Height.
    pub h: f32,
}

/// The six WFLW attribute flags of a face.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct WflwAttributes {
    /// Large pose.
    pub pose: bool,
    /// Exaggerated expression.
    pub expression: bool,
    /// Extreme illumination.
    pub illumination: bool,
    /// Make-up.
    pub makeup: bool,
    /// Occlusion.
    pub occlusion: bool,
    /// Blur.
    pub blur: bool,
}

/// One annotated face (one row of `faces.parquet`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaceRecord {
    /// Stable id, e.g. `300w/helen/trainset/100032540_1`.
    pub sample_id: String,
    /// Dataset name (`300w`, `aflw`, `wflw`, `cofw`, …).
    pub dataset: String,
    /// Landmark scheme name (see [`contract::scheme`]).
    pub scheme: String,
    /// Split from the source (`train`, `common`, `challenging`, `test`, …).
    pub split: String,
    /// Path of the image file.
    pub image_path: String,
    /// Image width in pixels.
    pub image_width: u32,
    /// Image height in pixels.
    pub image_height: u32,
    /// x0, y0, x1, y1, … in the internal pixel convention; NaN where a point has no coordinates.
    pub landmarks: Vec<f32>,
    /// The point has coordinates we trust: it trains and is scored (the loss and the NME mask
    /// by it). An occluded point whose position is annotated is visible.
    pub visible: Vec<bool>,
    /// The source marks the point as labelled but occluded (COCO `v = 1` read with
    /// `visibility = "coco"`); such a point keeps its coordinates and is visible. All false for
    /// sources without per-point occlusion flags. Left out of the record's serialised form
    /// when no point is occluded, so the render stage's shard keys of such faces are the keys
    /// they had before the field existed.
    #[serde(default, skip_serializing_if = "no_point_occluded")]
    pub occluded: Vec<bool>,
    /// The face box.
    pub bbox: BBox,
    /// Where [`FaceRecord::bbox`] came from.
    pub bbox_source: BoxSource,
    /// Yaw in degrees (> 0 when the face turns towards the image's right), if known.
    pub yaw: Option<f32>,
    /// Pitch in degrees, if known.
    pub pitch: Option<f32>,
    /// Roll in degrees, if known.
    pub roll: Option<f32>,
    /// WFLW attribute flags, for WFLW sources.
    pub attributes: Option<WflwAttributes>,
}

impl FaceRecord {
    /// Number of landmarks.
    pub fn num_points(&self) -> usize {
        self.landmarks.len() / 2
    }

    /// Whether any point is marked occluded.
    pub fn any_occluded(&self) -> bool {
        self.occluded.iter().any(|&o| o)
    }
}

/// `skip_serializing_if` of [`FaceRecord::occluded`].
fn no_point_occluded(occluded: &[bool]) -> bool {
    !occluded.iter().any(|&o| o)
}

/// The bounding box of the points that have coordinates, or `None` when none has.
pub fn landmarks_bbox(landmarks: &[f32]) -> Option<BBox> {
    let (mut x0, mut y0, mut x1, mut y1) = (f32::MAX, f32::MAX, f32::MIN, f32::MIN);
    let mut any = false;
    for p in landmarks.chunks_exact(2) {
        if p[0].is_finite() && p[1].is_finite() {
            any = true;
            x0 = x0.min(p[0]);
            y0 = y0.min(p[1]);
            x1 = x1.max(p[0]);
            y1 = y1.max(p[1]);
        }
    }
    any.then_some(BBox {
        x: x0,
        y: y0,
        w: x1 - x0,
        h: y1 - y0,
    })
}
