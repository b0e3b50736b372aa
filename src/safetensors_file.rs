//! Reading the header of a safetensors file, for `inspect`: the header only,
//! so a multi-GB file is described without touching its data.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use safetensors::tensor::Metadata;

use crate::error::{Error, ErrorKind, Result};
use crate::export::writer::MAX_HEADER_BYTES;

/// A safetensors header, checked against the file's length.
#[derive(Debug)]
pub struct Header {
    /// The header: tensors, their offsets and `__metadata__`.
    pub metadata: Metadata,
    /// The file's length in bytes.
    pub file_len: u64,
}

/// Reads and checks the header of the safetensors file at `path`.
pub fn read_header(path: &Path) -> Result<Header> {
    let invalid = |m: String| Error::new(path, ErrorKind::InvalidSafetensors(m));
    let mut file = crate::files::open_regular(path)?;
    let file_len = file
        .metadata()
        .map_err(|e| Error::new(path, e.into()))?
        .len();
    let mut len_bytes = [0u8; 8];
    file.read_exact(&mut len_bytes)
        .map_err(|_| invalid("shorter than the 8-byte header length".into()))?;
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > MAX_HEADER_BYTES as u64 || header_len > file_len - 8 {
        return Err(invalid(format!(
            "header length {header_len} does not fit a {file_len}-byte file"
        )));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header)
        .map_err(|e| invalid(format!("reading the header: {e}")))?;
    let metadata: Metadata =
        serde_json::from_slice(&header).map_err(|e| invalid(format!("header: {e}")))?;
    let data_end = 8 + header_len + metadata.data_len() as u64;
    if data_end != file_len {
        return Err(invalid(format!(
            "the header describes {data_end} bytes but the file has {file_len} (truncated?)"
        )));
    }
    Ok(Header { metadata, file_len })
}

/// The Hugging Face index of a sharded safetensors save.
pub const INDEX_SUFFIX: &str = ".safetensors.index.json";

/// One tensor of a safetensors set: where its bytes are.
#[derive(Debug, Clone)]
pub struct Located {
    /// The tensor's name.
    pub name: String,
    /// Its dtype, shape and offsets within its file's data.
    pub info: safetensors::tensor::TensorInfo,
    /// Index into [`SafetensorsSet::files`].
    pub file: usize,
    /// Absolute offset of the first byte in that file.
    pub offset: u64,
}

/// A safetensors file, or the shards of a Hugging Face sharded save, with
/// random access to tensor bytes (no mapping, no whole-file reads).
#[derive(Debug)]
pub struct SafetensorsSet {
    /// The open files: one, or the shards in index order.
    pub files: Vec<File>,
    /// Every tensor, in file order.
    pub tensors: Vec<Located>,
    /// `__metadata__` of the (first) file.
    pub metadata: std::collections::BTreeMap<String, String>,
}

impl SafetensorsSet {
    /// Opens a `.safetensors` file or a `model.safetensors.index.json`.
    pub fn open(path: &Path) -> Result<SafetensorsSet> {
        let (shards, indexed) = match shard_files(path)? {
            Some(shards) => (shards, true),
            None => (vec![path.to_path_buf()], false),
        };
        let mut set = SafetensorsSet {
            files: Vec::new(),
            tensors: Vec::new(),
            metadata: Default::default(),
        };
        let folder = path.parent().unwrap_or(Path::new("."));
        for (index, shard) in shards.iter().enumerate() {
            if indexed {
                crate::files::check_inside(shard, folder, "this shard")?;
            }
            let header = read_header(shard)?;
            let file = crate::files::open_regular(shard)?;
            let data_start = header.file_len - header.metadata.data_len() as u64;
            if index == 0 {
                set.metadata = header
                    .metadata
                    .metadata()
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .collect();
            }
            for (name, info) in header.metadata.tensors() {
                set.tensors.push(Located {
                    name,
                    offset: data_start + info.data_offsets.0 as u64,
                    info: info.clone(),
                    file: index,
                });
            }
            set.files.push(file);
        }
        set.tensors.sort_by(|a, b| a.name.cmp(&b.name));
        if let Some(twice) = set.tensors.windows(2).find(|w| w[0].name == w[1].name) {
            return Err(Error::new(
                path,
                ErrorKind::InvalidSafetensors(format!(
                    "tensor `{}` is in two shards",
                    twice[0].name
                )),
            ));
        }
        Ok(set)
    }
}

/// The file to read for `path`: itself, or for a folder of shards as
/// `convert --max-shard-size` writes it, its index (or its one
/// `model.safetensors`). Any other folder is an error saying what is read.
pub fn shard_folder_entry(path: &Path) -> Result<std::path::PathBuf> {
    if !path.is_dir() || crate::keras::tf_checkpoint::is_tf_folder(path) {
        return Ok(path.to_path_buf());
    }
    for name in ["model.safetensors.index.json", "model.safetensors"] {
        let candidate = path.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(Error::new(
        path,
        ErrorKind::Unsupported(
            "a folder without model.safetensors.index.json or model.safetensors; give a file, or a folder of shards"
                .into(),
        ),
    ))
}

/// The shard files named by a Hugging Face index, or `None` when `path` is
/// not an index.
fn shard_files(path: &Path) -> Result<Option<Vec<std::path::PathBuf>>> {
    let is_index = path
        .file_name()
        .is_some_and(|n| n.to_string_lossy().ends_with(INDEX_SUFFIX));
    if !is_index {
        return Ok(None);
    }
    let invalid = |m: String| Error::new(path, ErrorKind::InvalidSafetensors(m));
    let text = crate::files::read_text(path)?;
    let index: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| invalid(format!("index is not JSON: {e}")))?;
    let map = index
        .get("weight_map")
        .and_then(serde_json::Value::as_object)
        .ok_or_else(|| invalid("the index has no `weight_map`".into()))?;
    let mut names: Vec<&str> = map.values().filter_map(serde_json::Value::as_str).collect();
    names.sort_unstable();
    names.dedup();
    if names.iter().any(|n| n.contains('/') || n.contains('\\')) {
        return Err(invalid("a shard name has a folder in it".into()));
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    Ok(Some(names.into_iter().map(|n| dir.join(n)).collect()))
}
