//! Writes a [`Plan`] as a safetensors file, streaming.
//!
//! The header comes from the `safetensors` crate's own types (so its
//! validation and byte layout are the reference), but the data is copied
//! here, through one fixed buffer: the crate's `View::data()` would hold a
//! whole tensor in memory at once, and memory must not grow with the model.
//! The output appears only when complete: it is written to a temporary file
//! in the target folder, synced, and renamed into place.

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use safetensors::tensor::{Metadata, TensorInfo};

use crate::error::{Error, ErrorKind, Result};
use crate::export::plan::Plan;
use crate::h5;
use crate::model::Model;

/// The largest header the safetensors format allows (as the crate checks on read).
pub const MAX_HEADER_BYTES: usize = 100_000_000;

/// What a conversion wrote.
#[derive(Debug, Clone)]
pub struct WriteSummary {
    pub tensors: usize,
    pub bytes: u64,
    pub elapsed: Duration,
}

/// Writes `plan` (whose data lives in `model`) to `output`.
///
/// An existing `output` is refused unless `force`. `progress` is called with
/// each number of data bytes written.
pub fn write(
    plan: &Plan,
    model: &Model,
    output: &Path,
    force: bool,
    progress: &mut dyn FnMut(u64),
) -> Result<WriteSummary> {
    let started = Instant::now();
    let fail = |kind: ErrorKind| Error::new(output, kind);
    if !force && output.exists() {
        return Err(fail(ErrorKind::OutputExists));
    }

    // The crate's order: by descending dtype alignment, then by name.
    let mut order: Vec<usize> = (0..plan.tensors.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&plan.tensors[a], &plan.tensors[b]);
        b.dtype
            .to_safetensors()
            .cmp(&a.dtype.to_safetensors())
            .then(a.name.cmp(&b.name))
    });
    let header = header_bytes(plan, &order).map_err(fail)?;

    let dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let temp = tempfile::Builder::new()
        .prefix(".keras2safetensors-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| fail(e.into()))?;
    {
        let mut out = BufWriter::with_capacity(1 << 20, temp.as_file());
        out.write_all(&(header.len() as u64).to_le_bytes())
            .and_then(|_| out.write_all(&header))
            .map_err(|e| fail(e.into()))?;
        let mut buf = vec![0u8; h5::COPY_BUFFER_BYTES];
        for &i in &order {
            let tensor = &plan.tensors[i];
            let mut written = 0u64;
            model
                .copy_weight_data(
                    tensor.file,
                    &tensor.location,
                    &mut out,
                    &mut buf,
                    &mut |n| {
                        written += n;
                        progress(n);
                    },
                )
                .map_err(|e| {
                    Error::new(
                        output,
                        ErrorKind::Io(std::io::Error::new(
                            e.kind(),
                            format!("writing tensor `{}`: {e}", tensor.name),
                        )),
                    )
                })?;
            if written != tensor.byte_len {
                return Err(fail(ErrorKind::InvalidKeras(format!(
                    "tensor `{}` gave {written} bytes where its shape needs {}",
                    tensor.name, tensor.byte_len
                ))));
            }
        }
        out.flush().map_err(|e| fail(e.into()))?;
    }
    temp.as_file().sync_all().map_err(|e| fail(e.into()))?;
    let persisted = if force {
        temp.persist(output).map(|_| ())
    } else {
        temp.persist_noclobber(output).map(|_| ())
    };
    persisted.map_err(|e| {
        if e.error.kind() == std::io::ErrorKind::AlreadyExists {
            fail(ErrorKind::OutputExists)
        } else {
            fail(e.error.into())
        }
    })?;
    Ok(WriteSummary {
        tensors: plan.tensors.len(),
        bytes: plan.total_bytes(),
        elapsed: started.elapsed(),
    })
}

/// The JSON header, padded with spaces to a multiple of 8 bytes.
fn header_bytes(plan: &Plan, order: &[usize]) -> std::result::Result<Vec<u8>, ErrorKind> {
    let mut offset = 0usize;
    let mut infos = Vec::with_capacity(order.len());
    for &i in order {
        let t = &plan.tensors[i];
        let len = usize::try_from(t.byte_len)
            .map_err(|_| ErrorKind::Unsupported(format!("tensor `{}` is too large", t.name)))?;
        infos.push((
            t.name.clone(),
            TensorInfo {
                dtype: t.dtype.to_safetensors(),
                shape: t.shape.clone(),
                data_offsets: (offset, offset + len),
            },
        ));
        offset += len;
    }
    let metadata: HashMap<String, String> = plan.metadata.clone().into_iter().collect();
    let header = Metadata::new(Some(metadata), infos)
        .map_err(|e| ErrorKind::InvalidSafetensors(format!("planned header is invalid: {e}")))?;
    let mut bytes = serde_json::to_vec(&header)
        .map_err(|e| ErrorKind::InvalidSafetensors(format!("header does not serialise: {e}")))?;
    bytes.resize(bytes.len().next_multiple_of(8), b' ');
    if bytes.len() > MAX_HEADER_BYTES {
        return Err(ErrorKind::Unsupported(format!(
            "the header would be {} bytes, over the format's limit of {MAX_HEADER_BYTES}",
            bytes.len()
        )));
    }
    Ok(bytes)
}
