//! safetensors files of tch tensors with a `__metadata__` table, written atomically.
//!
//! tch's own `Tensor::write_safetensors` writes no metadata, and checkpoints need it (the
//! architecture travels with the weights), so the trainer writes the files itself (header
//! keys in a fixed order, so the same weights give the same bytes) and reads them with the
//! safetensors crate.

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::{Dtype, SafeTensors};
use tch::{Device, Kind, Tensor};

use crate::error::{Result, TorchContext, TrainerError, io_err};

/// A tensor's bytes in host memory, ready to serialise.
pub(crate) struct HostView {
    pub(crate) dtype: Dtype,
    pub(crate) shape: Vec<usize>,
    pub(crate) data: Vec<u8>,
}

fn dtype_of(kind: Kind) -> Option<Dtype> {
    Some(match kind {
        Kind::Uint8 => Dtype::U8,
        Kind::Int8 => Dtype::I8,
        Kind::Int16 => Dtype::I16,
        Kind::Int => Dtype::I32,
        Kind::Int64 => Dtype::I64,
        Kind::Half => Dtype::F16,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Float => Dtype::F32,
        Kind::Double => Dtype::F64,
        Kind::Bool => Dtype::BOOL,
        _ => return None,
    })
}

fn kind_of(dtype: Dtype) -> Option<Kind> {
    Some(match dtype {
        Dtype::U8 => Kind::Uint8,
        Dtype::I8 => Kind::Int8,
        Dtype::I16 => Kind::Int16,
        Dtype::I32 => Kind::Int,
        Dtype::I64 => Kind::Int64,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        Dtype::BOOL => Kind::Bool,
        _ => return None,
    })
}

/// Write `bytes` to `path` atomically ([`manifests::write_atomic`]: a temporary file named as
/// wingflow's temporary files are, fsync, rename), creating the folder if needed, so a reader
/// never sees a half-written file (a crash mid-checkpoint leaves the old one intact).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    Ok(manifests::write_atomic(path, bytes)?)
}

/// Save named tensors (any device) and string metadata as one safetensors file, atomically.
pub fn save_tensors(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let mut views = Vec::with_capacity(tensors.len());
    for (name, tensor) in tensors {
        let host = tensor.to_device(Device::Cpu).contiguous();
        let dtype = dtype_of(host.kind()).ok_or_else(|| TrainerError::Checkpoint {
            path: path.to_owned(),
            message: format!(
                "tensor `{name}` has kind {:?}, which safetensors cannot hold",
                host.kind()
            ),
        })?;
        let numel = host.numel();
        let mut data = vec![0u8; numel * host.kind().elt_size_in_bytes()];
        host.f_copy_data_u8(&mut data, numel)
            .torch("copying a tensor to host memory")?;
        let shape = host.size().iter().map(|&d| d as usize).collect();
        views.push((name.clone(), HostView { dtype, shape, data }));
    }
    write_views(path, &views, metadata)
}

/// Serialise host views and metadata to `path`, atomically.
pub(crate) fn write_views(
    path: &Path,
    views: &[(String, HostView)],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let bytes = serialize_views(views, metadata).map_err(|source| TrainerError::Json {
        path: path.to_owned(),
        source,
    })?;
    write_atomic(path, &bytes)
}

/// A safetensors file's bytes, the same for the same tensors and metadata. The header is
/// written here, not by `safetensors::serialize`, whose `__metadata__` is a `HashMap` and comes
/// out in another order on every call, so that one training gives one checkpoint byte for byte.
/// Tensors are ordered by decreasing element size, then by name (each is naturally aligned in
/// a memory map); the header is padded with spaces to a multiple of 8 bytes.
fn serialize_views(
    views: &[(String, HostView)],
    metadata: &BTreeMap<String, String>,
) -> serde_json::Result<Vec<u8>> {
    let mut order: Vec<&(String, HostView)> = views.iter().collect();
    order.sort_by(|(a_name, a), (b_name, b)| {
        (b.dtype.bitsize().cmp(&a.dtype.bitsize())).then_with(|| a_name.cmp(b_name))
    });
    let mut header = String::from("{");
    if !metadata.is_empty() {
        header.push_str(&format!(
            "\"__metadata__\":{}",
            serde_json::to_string(metadata)?
        ));
    }
    let mut offset = 0;
    for (name, view) in &order {
        if header.len() > 1 {
            header.push(',');
        }
        let end = offset + view.data.len();
        header.push_str(&format!(
            "{}:{{\"dtype\":{},\"shape\":{},\"data_offsets\":[{offset},{end}]}}",
            serde_json::to_string(name)?,
            serde_json::to_string(&view.dtype)?,
            serde_json::to_string(&view.shape)?,
        ));
        offset = end;
    }
    header.push('}');
    let padded = header.len().next_multiple_of(8);
    let mut bytes = Vec::with_capacity(8 + padded + offset);
    bytes.extend((padded as u64).to_le_bytes());
    bytes.extend(header.as_bytes());
    bytes.resize(8 + padded, b' ');
    for (_, view) in &order {
        bytes.extend(&view.data);
    }
    Ok(bytes)
}

/// A safetensors file loaded into tch tensors on `device`.
#[derive(Debug)]
pub struct LoadedTensors {
    /// Tensors by name.
    pub tensors: BTreeMap<String, Tensor>,
    /// The `__metadata__` table (empty when absent).
    pub metadata: BTreeMap<String, String>,
}

/// The `__metadata__` table of a safetensors file (empty when absent), after checking that the
/// file is whole: its header parses and its length is what the header says.
pub fn read_metadata(path: &Path) -> Result<BTreeMap<String, String>> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    let (_, header) =
        SafeTensors::read_metadata(&bytes).map_err(|source| TrainerError::Safetensors {
            path: path.to_owned(),
            source,
        })?;
    Ok(header
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect())
}

/// Load every tensor of a safetensors file onto `device`.
pub fn load_tensors(path: &Path, device: Device) -> Result<LoadedTensors> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    let parsed = SafeTensors::deserialize(&bytes).map_err(|source| TrainerError::Safetensors {
        path: path.to_owned(),
        source,
    })?;
    let (_, header) =
        SafeTensors::read_metadata(&bytes).map_err(|source| TrainerError::Safetensors {
            path: path.to_owned(),
            source,
        })?;
    let metadata = header
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let mut tensors = BTreeMap::new();
    for (name, view) in parsed.tensors() {
        let kind = kind_of(view.dtype()).ok_or_else(|| TrainerError::Checkpoint {
            path: path.to_owned(),
            message: format!("tensor `{name}` has unsupported dtype {:?}", view.dtype()),
        })?;
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        let tensor = Tensor::f_from_data_size(view.data(), &shape, kind)
            .torch("building a tensor from a safetensors view")?
            .to_device(device);
        tensors.insert(name, tensor);
    }
    Ok(LoadedTensors { tensors, metadata })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_values_kinds_and_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.safetensors");
        let a = Tensor::from_slice(&[1.5f32, -2.0, 3.25, 4.0]).reshape([2, 2]);
        let b = Tensor::from_slice(&[7i64, 8, 9]);
        let meta = BTreeMap::from([("arch".to_owned(), "cnn6".to_owned())]);
        save_tensors(
            &path,
            &[
                ("a".into(), a.shallow_clone()),
                ("b".into(), b.shallow_clone()),
            ],
            &meta,
        )
        .unwrap();
        let loaded = load_tensors(&path, Device::Cpu).unwrap();
        assert_eq!(loaded.metadata, meta);
        assert!(loaded.tensors["a"].equal(&a));
        assert!(loaded.tensors["b"].equal(&b));
        assert_eq!(loaded.tensors["b"].kind(), Kind::Int64);
    }

    #[test]
    fn the_same_tensors_and_metadata_give_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let tensors = [
            ("z.bias".to_owned(), Tensor::from_slice(&[0.5f32, 1.0])),
            ("a.index".to_owned(), Tensor::from_slice(&[3i64])),
            ("m.flags".to_owned(), Tensor::from_slice(&[1u8, 0, 1])),
        ];
        let meta: BTreeMap<String, String> = (0..12)
            .map(|i| (format!("key{i}"), format!("value \"{i}\"")))
            .collect();
        let bytes: Vec<Vec<u8>> = (0..4)
            .map(|i| {
                let path = dir.path().join(format!("{i}.safetensors"));
                save_tensors(&path, &tensors, &meta).unwrap();
                std::fs::read(&path).unwrap()
            })
            .collect();
        assert!(bytes.iter().all(|b| b == &bytes[0]));
        // A valid safetensors file: header padded to 8 bytes, tensors by element size.
        let header_len = u64::from_le_bytes(bytes[0][..8].try_into().unwrap()) as usize;
        assert_eq!(header_len % 8, 0);
        let parsed = SafeTensors::deserialize(&bytes[0]).unwrap();
        let mut offsets: Vec<(usize, String)> = parsed
            .tensors()
            .into_iter()
            .map(|(name, view)| (view.data().as_ptr() as usize, name))
            .collect();
        offsets.sort();
        let names: Vec<&str> = offsets.iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(names, ["a.index", "z.bias", "m.flags"]);
        let loaded = load_tensors(&dir.path().join("0.safetensors"), Device::Cpu).unwrap();
        assert_eq!(loaded.metadata, meta);
        for (name, tensor) in &tensors {
            assert!(loaded.tensors[name].equal(tensor), "{name}");
        }
    }

    #[test]
    fn truncated_file_is_an_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.safetensors");
        std::fs::write(&path, [1u8, 2, 3]).unwrap();
        let err = load_tensors(&path, Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("bad.safetensors"), "{err}");
    }

    #[test]
    fn metadata_is_read_from_a_whole_file_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let meta = BTreeMap::from([("step".to_owned(), "20".to_owned())]);
        let tensors = [("a".to_owned(), Tensor::from_slice(&[1.0f32, 2.0, 3.0]))];
        save_tensors(&path, &tensors, &meta).unwrap();
        assert_eq!(read_metadata(&path).unwrap(), meta);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 4]).unwrap();
        let err = read_metadata(&path).unwrap_err().to_string();
        assert!(err.contains("w.safetensors"), "{err}");
    }
}
