//! `.keras` archives: a zip of `config.json`, `metadata.json` and
//! `model.weights.h5`. Keras stores the members uncompressed, so the HDF5
//! member is read in place, through a window on the archive file: nothing
//! is extracted to disk. A compressed member is read into memory instead,
//! after checking that it does not expand far beyond the archive.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use serde_json::Value;
use zip::CompressionMethod;

use crate::error::{Error, ErrorKind, Result};
use crate::h5;
use crate::inspect::human_bytes;
use crate::keras::config::MAX_CONFIG_BYTES;

/// The member that holds the weights.
pub const WEIGHTS_MEMBER: &str = "model.weights.h5";

/// `metadata.json` holds a version and a date: a few hundred bytes.
const MAX_METADATA_BYTES: u64 = 1 << 20;

/// How far a compressed member may expand relative to the whole archive
/// before we call it a zip bomb.
const MAX_EXPANSION: u64 = 100;

/// What an archive holds.
#[derive(Debug)]
pub struct Archive {
    pub config: Option<String>,
    pub metadata: Option<Value>,
    pub weights: h5::File,
}

pub fn open(path: &Path) -> Result<Archive> {
    let fail = |m: String| Error::new(path, ErrorKind::InvalidKeras(m));
    let file = crate::files::open_regular(path)?;
    let archive_len = file
        .metadata()
        .map_err(|e| Error::new(path, e.into()))?
        .len();
    let mut zip = zip::ZipArchive::new(file.try_clone().map_err(|e| Error::new(path, e.into()))?)
        .map_err(|e| fail(format!("not a readable zip archive (truncated?): {e}")))?;

    let mut config = None;
    let mut metadata = None;
    let mut weights = None;
    let mut declared_total = 0u64;
    for i in 0..zip.len() {
        let mut member = zip
            .by_index(i)
            .map_err(|e| fail(format!("zip member {i}: {e}")))?;
        let name = member
            .name()
            .map_err(|e| fail(format!("zip member {i} has an unreadable name: {e}")))?
            .to_string();
        let refuse = |m: String| Error::new(path, ErrorKind::Unsafe(m));
        if member.enclosed_name().is_none() {
            return Err(refuse(format!(
                "archive member `{name}` would land outside the archive's folder"
            )));
        }
        if member.is_symlink() {
            return Err(refuse(format!(
                "archive member `{name}` is a symbolic link"
            )));
        }
        declared_total = declared_total.saturating_add(member.size());
        if declared_total > archive_len.saturating_mul(MAX_EXPANSION).max(1 << 20) {
            return Err(Error::new(
                path,
                ErrorKind::Unsafe(format!(
                    "archive members would expand to over {MAX_EXPANSION} times the archive's {archive_len} bytes (a zip bomb?)"
                )),
            ));
        }
        match name.as_str() {
            "config.json" | "metadata.json" => {
                let limit = match name.as_str() {
                    "config.json" => MAX_CONFIG_BYTES as u64,
                    _ => MAX_METADATA_BYTES,
                };
                if member.size() > limit {
                    return Err(refuse(format!(
                        "`{name}` is {} bytes, more than the {} a Keras model needs",
                        member.size(),
                        human_bytes(limit)
                    )));
                }
                let mut text = String::new();
                member
                    .by_ref()
                    .take(limit)
                    .read_to_string(&mut text)
                    .map_err(|e| fail(format!("reading `{name}`: {e}")))?;
                if name == "config.json" {
                    config = Some(text);
                } else {
                    metadata = serde_json::from_str(&text).ok();
                }
            }
            WEIGHTS_MEMBER => {
                let opened = if member.compression() == CompressionMethod::Stored {
                    let start = member
                        .data_start()
                        .ok_or_else(|| fail(format!("`{name}` has no data offset")))?;
                    let len = member.size();
                    if start.checked_add(len).is_none_or(|end| end > archive_len) {
                        return Err(fail(format!(
                            "`{name}` runs past the end of the archive (truncated?)"
                        )));
                    }
                    let shared =
                        Arc::new(file.try_clone().map_err(|e| Error::new(path, e.into()))?);
                    h5::File::open_window(shared, start, len)
                } else {
                    let mut data = Vec::new();
                    let declared = member.size();
                    member
                        .by_ref()
                        .take(declared)
                        .read_to_end(&mut data)
                        .map_err(|e| fail(format!("decompressing `{name}`: {e}")))?;
                    h5::File::from_bytes(data)
                };
                let opened = opened.map_err(|e| {
                    Error::new(
                        path,
                        ErrorKind::CorruptHdf5(format!("in `{name}`: {}", e.0)),
                    )
                })?;
                crate::keras::refuse_links(path, &opened)?;
                weights = Some(opened);
            }
            "model.weights.npz" => {
                return Err(Error::new(
                    path,
                    ErrorKind::Unsupported(
                        "an archive whose weights are `.npz`, which this version does not read"
                            .into(),
                    ),
                ))
            }
            _ => {}
        }
    }
    let weights = weights.ok_or_else(|| {
        fail(format!(
            "a zip archive without `{WEIGHTS_MEMBER}`; a `.keras` archive has one"
        ))
    })?;
    Ok(Archive {
        config,
        metadata,
        weights,
    })
}
