//! On-disk forms of the align and pca stages' outputs.
//!
//! - `aligned.safetensors`: `aligned` f64 [N, 2L], `mean` f64 [2L], `transforms` f64 [N, 7]
//!   (scale, r00, r01, r10, r11, tx, ty); `__metadata__`: `sample_ids` (JSON list),
//!   `iterations`, `change`, `converged`.
//! - `pca.json`: the [`ShapeModel`] and the pose coefficient of every face.

use std::path::{Path, PathBuf};

use nalgebra::{Matrix2, Vector2};
use serde::{Deserialize, Serialize};

use crate::align::{Alignment, Similarity};
use crate::pca::ShapeModel;

/// Errors reading or writing the shape stages' files.
#[derive(Debug, thiserror::Error)]
pub enum ShapeStoreError {
    /// The atomic write (temporary file, fsync, rename) failed; the message names the file.
    #[error(transparent)]
    Write(#[from] manifests::Error),
    /// File system error.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not what the stage writes.
    #[error("{path}: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// An alignment with the sample id of each shape.
#[derive(Debug, Clone)]
pub struct StoredAlignment {
    /// Sample id of each aligned shape, in order.
    pub sample_ids: Vec<String>,
    /// The alignment.
    pub alignment: Alignment,
}

fn f64_bytes(values: &[f64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn bytes_f64(bytes: &[u8]) -> Vec<f64> {
    bytes
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect()
}

/// Write `aligned.safetensors` atomically.
pub fn write_alignment(path: &Path, stored: &StoredAlignment) -> Result<(), ShapeStoreError> {
    let a = &stored.alignment;
    let format = |reason: String| ShapeStoreError::Format {
        path: path.to_owned(),
        reason,
    };
    let n = a.len();
    let features = 2 * a.num_points;
    let transforms: Vec<f64> = a
        .transforms
        .iter()
        .flat_map(|t| {
            [
                t.scale,
                t.rotation[(0, 0)],
                t.rotation[(0, 1)],
                t.rotation[(1, 0)],
                t.rotation[(1, 1)],
                t.translation.x,
                t.translation.y,
            ]
        })
        .collect();
    let (aligned, mean, transforms) = (
        f64_bytes(&a.aligned),
        f64_bytes(&a.mean),
        f64_bytes(&transforms),
    );
    let metadata: std::collections::BTreeMap<&str, String> = [
        (
            "sample_ids",
            serde_json::to_string(&stored.sample_ids).map_err(|e| format(e.to_string()))?,
        ),
        ("iterations", a.iterations.to_string()),
        ("change", format!("{:e}", a.change)),
        ("converged", a.converged.to_string()),
    ]
    .into_iter()
    .collect();
    let bytes = serialize_sorted(
        &[
            ("aligned", vec![n, features], &aligned),
            ("mean", vec![features], &mean),
            ("transforms", vec![n, 7], &transforms),
        ],
        &metadata,
    );
    Ok(manifests::write_atomic(path, &bytes)?)
}

/// A safetensors file of f64 tensors with a header in sorted key order (the safetensors crate
/// keeps metadata in a `HashMap`, so its bytes would change from run to run).
fn serialize_sorted(
    tensors: &[(&str, Vec<usize>, &[u8])],
    metadata: &std::collections::BTreeMap<&str, String>,
) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".to_owned(), serde_json::json!(metadata));
    let mut offset = 0usize;
    for (name, shape, data) in tensors {
        header.insert(
            (*name).to_owned(),
            serde_json::json!({ "dtype": "F64", "shape": shape, "data_offsets": [offset, offset + data.len()] }),
        );
        offset += data.len();
    }
    // Deterministic either way: serde_json's Map is sorted, or (with `preserve_order`) keeps
    // the insertion order above.
    let mut text = serde_json::Value::Object(header).to_string().into_bytes();
    while !text.len().is_multiple_of(8) {
        text.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + text.len() + offset);
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(&text);
    for (_, _, data) in tensors {
        out.extend_from_slice(data);
    }
    out
}

/// Read `aligned.safetensors`.
pub fn read_alignment(path: &Path) -> Result<StoredAlignment, ShapeStoreError> {
    let format = |reason: String| ShapeStoreError::Format {
        path: path.to_owned(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|source| ShapeStoreError::Io {
        path: path.to_owned(),
        source,
    })?;
    let (_, header) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| format(e.to_string()))?;
    let tensors =
        safetensors::SafeTensors::deserialize(&bytes).map_err(|e| format(e.to_string()))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let get = |key: &str| {
        meta.get(key)
            .cloned()
            .ok_or_else(|| format(format!("metadata `{key}` missing")))
    };
    let sample_ids: Vec<String> =
        serde_json::from_str(&get("sample_ids")?).map_err(|e| format(e.to_string()))?;
    let tensor = |name: &str| {
        tensors
            .tensor(name)
            .map(|t| (t.shape().to_vec(), bytes_f64(t.data())))
            .map_err(|e| format(format!("{name}: {e}")))
    };
    let (shape, aligned) = tensor("aligned")?;
    let (_, mean) = tensor("mean")?;
    let (_, flat) = tensor("transforms")?;
    if shape.len() != 2
        || shape[0] != sample_ids.len()
        || shape[1] % 2 != 0
        || flat.len() != 7 * shape[0]
    {
        return Err(format(format!(
            "inconsistent shapes: aligned {shape:?}, {} ids",
            sample_ids.len()
        )));
    }
    let transforms = flat
        .chunks_exact(7)
        .map(|t| Similarity {
            scale: t[0],
            rotation: Matrix2::new(t[1], t[2], t[3], t[4]),
            translation: Vector2::new(t[5], t[6]),
        })
        .collect();
    let parse = |key: &str| {
        get(key).and_then(|v| v.parse::<f64>().map_err(|e| format(format!("{key}: {e}"))))
    };
    let alignment = Alignment {
        num_points: shape[1] / 2,
        aligned,
        mean,
        transforms,
        iterations: parse("iterations")? as usize,
        change: parse("change")?,
        converged: get("converged")? == "true",
    };
    Ok(StoredAlignment {
        sample_ids,
        alignment,
    })
}

/// The pca stage's output: the shape model and every face's pose coefficient.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoseTable {
    /// The fitted model (components, variance ratios, chosen pose component and its score).
    pub model: ShapeModel,
    /// (sample id, pose coefficient) of every face, in faces.parquet order; `None` when a face
    /// has too few points to be fitted.
    pub coefficients: Vec<(String, Option<f64>)>,
}

/// Write `pca.json` atomically.
pub fn write_pose_table(path: &Path, table: &PoseTable) -> Result<(), ShapeStoreError> {
    let text = serde_json::to_vec(table).map_err(|e| ShapeStoreError::Format {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(manifests::write_atomic(path, &text)?)
}

/// Read `pca.json`.
pub fn read_pose_table(path: &Path) -> Result<PoseTable, ShapeStoreError> {
    let bytes = std::fs::read(path).map_err(|source| ShapeStoreError::Io {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ShapeStoreError::Format {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::align::{AlignParams, align_shapes};

    #[test]
    fn alignment_round_trips_through_safetensors() {
        let shapes: Vec<f32> = vec![
            0.0, 0.0, 1.0, 0.0, 0.5, 1.0, 0.1, 0.0, 1.2, 0.1, 0.6, 1.1, 0.0, 0.1, 0.9, 0.0, 0.4,
            0.9,
        ];
        let alignment = align_shapes(&shapes, 3, &AlignParams::default(), None).unwrap();
        let stored = StoredAlignment {
            sample_ids: vec!["a".into(), "b".into(), "c".into()],
            alignment,
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aligned.safetensors");
        write_alignment(&path, &stored).unwrap();
        let first = std::fs::read(&path).unwrap();
        write_alignment(&path, &stored).unwrap();
        assert_eq!(first, std::fs::read(&path).unwrap(), "not byte-identical");
        let back = read_alignment(&path).unwrap();
        assert_eq!(back.sample_ids, stored.sample_ids);
        assert_eq!(back.alignment.aligned, stored.alignment.aligned);
        assert_eq!(back.alignment.mean, stored.alignment.mean);
        assert_eq!(back.alignment.transforms, stored.alignment.transforms);
        assert_eq!(back.alignment.iterations, stored.alignment.iterations);
        assert_eq!(back.alignment.converged, stored.alignment.converged);
    }

    #[test]
    fn a_foreign_file_is_a_format_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aligned.safetensors");
        std::fs::write(&path, b"not a tensor file").unwrap();
        let err = read_alignment(&path).unwrap_err().to_string();
        assert!(err.contains("aligned.safetensors"), "{err}");
    }
}
