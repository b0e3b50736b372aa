//! Tensors with their data, from any file we read: a Keras file (named and
//! laid out by a plan, as `convert` would write it) or safetensors (one
//! file or shards). `verify`, `diff`, `manifest` and `inspect --stats` read
//! through this, tensor by tensor, in fixed-size chunks.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use crate::dtype::Dtype;
use crate::error::{Error, ErrorKind, Result};
use crate::export::plan::{self, Plan, PlanOptions};
use crate::export::writer;
use crate::h5::COPY_BUFFER_BYTES;
use crate::keras::{self, FileKind, ReadOptions};
use crate::model::Model;
use crate::pread::read_exact_at;
use crate::safetensors_file::{shard_folder_entry, SafetensorsSet, INDEX_SUFFIX};

/// A tensor's description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// The tensor's name (for a Keras file, the name `convert` gives it).
    pub name: String,
    /// Its dtype.
    pub dtype: Dtype,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its size in bytes.
    pub byte_len: u64,
}

impl TensorInfo {
    /// The number of elements.
    pub fn element_count(&self) -> u64 {
        self.shape.iter().map(|&d| d as u64).product()
    }
}

/// A file's tensors, readable.
#[derive(Debug)]
pub enum TensorFile {
    /// A Keras file, read as `convert` would write it.
    Keras {
        /// The model read.
        model: Box<Model>,
        /// Its tensors as `convert` would name and lay them out.
        plan: Plan,
    },
    /// A safetensors file or a sharded set.
    Safetensors(SafetensorsSet),
}

impl TensorFile {
    /// Opens any file we read. Keras files are planned with `plan_options`
    /// (so names and bytes are those `convert` would write).
    pub fn open(path: &Path, read: &ReadOptions, plan_options: &PlanOptions) -> Result<TensorFile> {
        let entry = shard_folder_entry(path)?;
        let path = entry.as_path();
        let is_index = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().ends_with(INDEX_SUFFIX));
        if is_index || keras::detect(path)? == FileKind::Safetensors {
            return Ok(TensorFile::Safetensors(SafetensorsSet::open(path)?));
        }
        let mut model = keras::open(path, read)?;
        let plan = plan::plan(&mut model, path, plan_options)?;
        Ok(TensorFile::Keras {
            model: Box::new(model),
            plan,
        })
    }

    /// A stable identifier of the format.
    pub fn format(&self) -> &'static str {
        match self {
            TensorFile::Keras { model, .. } => model.format.id(),
            TensorFile::Safetensors(_) => "safetensors",
        }
    }

    /// The safetensors `__metadata__`: the file's own, or the one `convert` would write.
    pub fn metadata(&self) -> BTreeMap<String, String> {
        match self {
            TensorFile::Keras { plan, .. } => plan.metadata.clone(),
            TensorFile::Safetensors(set) => set.metadata.clone(),
        }
    }

    /// Every tensor, in file (or plan) order.
    pub fn tensors(&self) -> Vec<TensorInfo> {
        match self {
            TensorFile::Keras { plan, .. } => plan
                .tensors
                .iter()
                .map(|t| TensorInfo {
                    name: t.name.clone(),
                    dtype: t.dtype,
                    shape: t.shape.to_vec(),
                    byte_len: t.byte_len,
                })
                .collect(),
            TensorFile::Safetensors(set) => set
                .tensors
                .iter()
                .map(|t| {
                    let dtype = Dtype::from_safetensors(t.info.dtype).unwrap_or(Dtype::U8);
                    TensorInfo {
                        name: t.name.clone(),
                        dtype,
                        shape: t.info.shape.clone(),
                        byte_len: (t.info.data_offsets.1 - t.info.data_offsets.0) as u64,
                    }
                })
                .collect(),
        }
    }

    /// Feeds the bytes of tensor `index` (in [`TensorFile::tensors`] order)
    /// to `visit`, in element-aligned chunks of at most a few MiB (whole,
    /// for tensors that change on the way out).
    pub fn visit(
        &self,
        index: usize,
        visit: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        match self {
            TensorFile::Keras { model, plan } => {
                let tensor = &plan.tensors[index];
                if tensor.is_verbatim() {
                    let plan::Source::Stored { file, location, .. } = &tensor.source else {
                        unreachable!("verbatim tensors are stored");
                    };
                    let mut sink = Visitor(visit);
                    // Small tensors get small buffers: a model can have
                    // thousands of 256-byte BatchNorm vectors.
                    let mut buf = vec![0u8; COPY_BUFFER_BYTES.min(tensor.byte_len as usize)];
                    model.copy_weight_data(*file, location, &mut sink, &mut buf, &mut |_| {})
                } else {
                    let (bytes, _) = writer::build(model, tensor, &mut writer::Scratch::default())?;
                    visit(&bytes)
                }
            }
            TensorFile::Safetensors(set) => {
                let t = &set.tensors[index];
                if Dtype::from_safetensors(t.info.dtype).is_none() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("dtype {:?} is not one Keras writes", t.info.dtype),
                    ));
                }
                let len = (t.info.data_offsets.1 - t.info.data_offsets.0) as u64;
                let mut buf = vec![0u8; COPY_BUFFER_BYTES.min(len as usize)];
                let mut done = 0u64;
                while done < len {
                    crate::cancel::checkpoint()?;
                    let n = (len - done).min(buf.len() as u64) as usize;
                    read_exact_at(&set.files[t.file], &mut buf[..n], t.offset + done)?;
                    visit(&buf[..n])?;
                    done += n as u64;
                }
                Ok(())
            }
        }
    }

    /// Reads part of tensor `index` from byte `offset`, where the tensor can
    /// be read piecewise (it goes out as stored); `false` otherwise.
    pub fn read_at(&self, index: usize, offset: u64, buf: &mut [u8]) -> std::io::Result<bool> {
        match self {
            TensorFile::Keras { model, plan } => {
                let tensor = &plan.tensors[index];
                match &tensor.source {
                    plan::Source::Stored { file, location, .. } if tensor.is_verbatim() => {
                        model.read_weight_at(*file, location, offset, buf)
                    }
                    _ => Ok(false),
                }
            }
            TensorFile::Safetensors(set) => {
                let t = &set.tensors[index];
                let len = (t.info.data_offsets.1 - t.info.data_offsets.0) as u64;
                if offset + buf.len() as u64 > len {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                read_exact_at(&set.files[t.file], buf, t.offset + offset)?;
                Ok(true)
            }
        }
    }

    /// Whether [`TensorFile::read_at`] can read tensor `index` in pieces.
    pub fn reads_piecewise(&self, index: usize) -> bool {
        self.read_at(index, 0, &mut []).unwrap_or(false)
    }

    /// All bytes of one tensor.
    pub fn read(&self, index: usize) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        self.visit(index, &mut |chunk| {
            out.extend_from_slice(chunk);
            Ok(())
        })?;
        Ok(out)
    }
}

/// A `Write` that hands each chunk to a closure.
struct Visitor<'a>(&'a mut dyn FnMut(&[u8]) -> std::io::Result<()>);

impl Write for Visitor<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        crate::cancel::checkpoint()?;
        (self.0)(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An I/O error while reading one tensor, as an error naming the file.
pub fn read_error(path: &Path, tensor: &str, e: std::io::Error) -> Error {
    if let Some(limit) = crate::h5::refusal(&e) {
        return Error::new(
            path,
            ErrorKind::Unsafe(format!("tensor `{tensor}`: {limit}")),
        );
    }
    Error::new(
        path,
        ErrorKind::Io(std::io::Error::new(
            e.kind(),
            format!("reading tensor `{tensor}`: {e}"),
        )),
    )
}
