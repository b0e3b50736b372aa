//! Reading the header of a safetensors file, for `inspect`: the header only,
//! so a multi-GB file is described without touching its data.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use safetensors::tensor::Metadata;

use crate::error::{Error, ErrorKind, Result};
use crate::export::writer::MAX_HEADER_BYTES;

/// A safetensors header, checked against the file's length.
pub struct Header {
    pub metadata: Metadata,
    pub file_len: u64,
}

pub fn read_header(path: &Path) -> Result<Header> {
    let invalid = |m: String| Error::new(path, ErrorKind::InvalidSafetensors(m));
    let mut file = File::open(path).map_err(|e| Error::new(path, e.into()))?;
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
