//! `manifest` and `check`: a file's tensors as a small, stable JSON
//! document (names, shapes, dtypes, sha256; sorted keys, no timestamps) to
//! commit beside a fixture, and a check of a file against it.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorKind, Result};
use crate::tensors::{read_error, TensorFile};
use crate::values::parallel_map;

/// The manifest of one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The detected source format (`keras-h5-model`, `safetensors`, ...).
    pub format: String,
    /// Elements of every tensor.
    pub total_params: u64,
    /// By tensor name, sorted.
    pub tensors: BTreeMap<String, ManifestTensor>,
}

/// One tensor of a [`Manifest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestTensor {
    /// Spelled as safetensors spells it (`F32`).
    pub dtype: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// The sha256 of its bytes, in lowercase hex.
    pub sha256: String,
}

/// One way a file differs from its manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// The tensor concerned.
    pub name: String,
    /// What differs (missing, extra, dtype, shape, bytes).
    pub problem: String,
}

/// Reads every tensor of `file` (streaming, on all cores) into a manifest.
pub fn build(path: &Path, file: &TensorFile) -> Result<Manifest> {
    let tensors = file.tensors();
    let hashes = parallel_map(tensors.len(), |i| {
        let mut hasher = Sha256::new();
        file.visit(i, &mut |chunk| {
            hasher.update(chunk);
            Ok(())
        })
        .map(|_| hex(&hasher.finalize()))
    });
    let mut out = BTreeMap::new();
    for (t, hash) in tensors.iter().zip(hashes) {
        let sha256 = hash.map_err(|e| read_error(path, &t.name, e))?;
        out.insert(
            t.name.clone(),
            ManifestTensor {
                dtype: t.dtype.to_string(),
                shape: t.shape.clone(),
                sha256,
            },
        );
    }
    Ok(Manifest {
        format: file.format().to_string(),
        total_params: tensors.iter().map(|t| t.element_count()).sum(),
        tensors: out,
    })
}

/// Bytes as lowercase hex, two digits each.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads a manifest file.
pub fn load(path: &Path) -> Result<Manifest> {
    let mut bytes = Vec::new();
    crate::files::open_regular(path)?
        .read_to_end(&mut bytes)
        .map_err(|e| Error::new(path, e.into()))?;
    let not_manifest = |why: String| Error::new(path, ErrorKind::InvalidManifest(why));
    let text = String::from_utf8(bytes).map_err(|_| not_manifest("not a text file".into()))?;
    serde_json::from_str(&text).map_err(|e| not_manifest(e.to_string()))
}

/// The manifest as committed: pretty, sorted, ending in a newline.
pub fn to_text(manifest: &Manifest) -> String {
    serde_json::to_string_pretty(manifest).unwrap_or_default() + "\n"
}

/// How `actual` differs from `expected`; empty when they match.
pub fn compare(expected: &Manifest, actual: &Manifest) -> Vec<Difference> {
    let difference = |name: &str, problem: String| Difference {
        name: name.to_string(),
        problem,
    };
    let mut out = Vec::new();
    for (name, want) in &expected.tensors {
        match actual.tensors.get(name) {
            None => out.push(difference(name, "missing".into())),
            Some(got) if got.dtype != want.dtype || got.shape != want.shape => {
                out.push(difference(
                    name,
                    format!(
                        "{} {:?} where the manifest says {} {:?}",
                        got.dtype, got.shape, want.dtype, want.shape
                    ),
                ))
            }
            Some(got) if got.sha256 != want.sha256 => {
                out.push(difference(name, "bytes differ (sha256)".into()))
            }
            Some(_) => {}
        }
    }
    for name in actual
        .tensors
        .keys()
        .filter(|n| !expected.tensors.contains_key(*n))
    {
        out.push(difference(name, "not in the manifest".into()));
    }
    if expected.total_params != actual.total_params && out.is_empty() {
        out.push(difference(
            "(total)",
            format!(
                "{} params where the manifest says {}",
                actual.total_params, expected.total_params
            ),
        ));
    }
    out
}
