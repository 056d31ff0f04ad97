//! blake3 digests of bytes, files and parameter values.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::{Error, Result};

/// Read buffer for streaming file digests: large enough for blake3's SIMD paths to run at full
/// width, small enough to keep many hashing threads cheap.
const READ_BUFFER_BYTES: usize = 1 << 20;

/// A blake3 digest; serialises as 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

impl Digest {
    /// The digest's raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The digest as 64 lowercase hex characters.
    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }

    /// The first 12 hex characters, for messages where the full digest is noise.
    pub fn short(&self) -> String {
        let mut hex = self.to_hex();
        hex.truncate(12);
        hex
    }
}

impl From<blake3::Hash> for Digest {
    fn from(hash: blake3::Hash) -> Self {
        Digest(*hash.as_bytes())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.short())
    }
}

impl FromStr for Digest {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        blake3::Hash::from_hex(s)
            .map(Digest::from)
            .map_err(|e| format!("invalid blake3 hex digest {s:?}: {e}"))
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let hex = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        hex.parse().map_err(serde::de::Error::custom)
    }
}

/// The digest of a byte slice.
pub fn digest_bytes(bytes: &[u8]) -> Digest {
    blake3::hash(bytes).into()
}

/// The digest of a file's contents, read in a streaming fashion (constant memory).
pub fn digest_file(path: &Path) -> Result<Digest> {
    let mut file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    digest_reader(&mut file).map_err(|e| Error::io("read", path, e))
}

/// Streams a reader through blake3.
pub(crate) fn digest_reader(reader: &mut impl Read) -> std::io::Result<Digest> {
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0u8; READ_BUFFER_BYTES];
    loop {
        match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buffer[..n]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(hasher.finalize().into())
}

/// The digest of a serialisable value: blake3 over its [`canonical_json`] form.
///
/// Two values that are equal as JSON have the same digest, whatever the field order of the
/// structs or maps they came from.
pub fn digest_value<T: Serialize + ?Sized>(value: &T) -> Result<Digest> {
    let value = serde_json::to_value(value).map_err(|source| Error::Serialize {
        what: "parameters",
        source,
    })?;
    Ok(digest_bytes(canonical_json(&value).as_bytes()))
}

/// Canonical JSON text of a value: object keys sorted (by their UTF-8 bytes), no whitespace.
///
/// Sorting is done here rather than relying on `serde_json::Map`'s ordering, because a crate
/// elsewhere in the build may turn on serde_json's `preserve_order` feature.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                // A string's JSON form is its canonical form: serde_json escapes deterministically.
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn digest_of_known_bytes_is_stable() {
        // blake3("abc") from the reference implementation's test vectors.
        assert_eq!(
            digest_bytes(b"abc").to_hex(),
            "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
        );
    }

    #[test]
    fn file_digest_equals_bytes_digest_across_buffer_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.bin");
        // Not a multiple of the read buffer, so the last partial read is exercised.
        let bytes: Vec<u8> = (0..READ_BUFFER_BYTES * 2 + 12_345)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(digest_file(&path).unwrap(), digest_bytes(&bytes));
    }

    #[test]
    fn value_digest_ignores_key_order_but_not_values() {
        let a = json!({"bins": 9, "nested": {"x": 1.5, "a": [1, 2]}, "name": "pca"});
        let b = json!({"name": "pca", "nested": {"a": [1, 2], "x": 1.5}, "bins": 9});
        let c = json!({"name": "pca", "nested": {"a": [2, 1], "x": 1.5}, "bins": 9});
        assert_eq!(digest_value(&a).unwrap(), digest_value(&b).unwrap());
        assert_ne!(digest_value(&a).unwrap(), digest_value(&c).unwrap());
        assert_eq!(
            canonical_json(&b),
            r#"{"bins":9,"name":"pca","nested":{"a":[1,2],"x":1.5}}"#
        );
    }

    #[test]
    fn digest_round_trips_through_serde_and_rejects_garbage() {
        let d = digest_bytes(b"wingflow");
        let text = serde_json::to_string(&d).unwrap();
        assert_eq!(text, format!("\"{}\"", d.to_hex()));
        assert_eq!(serde_json::from_str::<Digest>(&text).unwrap(), d);
        assert!(serde_json::from_str::<Digest>("\"not-hex\"").is_err());
    }
}
