//! TensorFlow tensor bundles: the container under TF checkpoints (object-
//! based and name-based) and SavedModel `variables/`. It knows bytes, not
//! Keras: a sorted table of entries (`<prefix>.index`, see [`table`])
//! whose values say where each tensor lies in the data shards
//! (`<prefix>.data-NNNNN-of-MMMMM`), with a masked CRC-32C per tensor.
//!
//! Opening reads the whole index (small) and checks every entry against
//! the shard files' sizes; reading a tensor verifies its CRC and refuses
//! bytes that do not match. Tensors saved in slices (several entries,
//! possibly in several shards) are put back together.

pub(crate) mod crc;
pub(crate) mod proto;
mod slice_key;
pub mod table;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use prost::Message;

use crate::dtype::Dtype;
use crate::pread::read_exact_at;

/// Index files larger than this are refused: an index holds names and
/// offsets, a few hundred bytes per tensor.
pub const MAX_INDEX_BYTES: u64 = 256 << 20;
/// More shards than this is not a checkpoint anyone wrote.
pub const MAX_SHARDS: i32 = 1 << 16;
/// More slices of one tensor than this is refused (they are checked
/// pairwise for overlap).
pub const MAX_SLICES: usize = 4096;

/// What is wrong, and in which file of the bundle.
#[derive(Debug)]
pub struct BundleError {
    /// The index or data shard concerned.
    pub file: PathBuf,
    /// What is wrong with it.
    pub message: String,
}

impl std::fmt::Display for BundleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.message)
    }
}

type Result<T> = std::result::Result<T, BundleError>;

/// A tensor's element type, as far as a converter cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorType {
    /// A number type safetensors holds.
    Numeric(Dtype),
    /// `DT_STRING`: variable-length strings (object graph, metadata).
    String,
    /// `DT_RESOURCE`, `DT_VARIANT`: handles, never values.
    Handle,
    /// Another `DataType` number (complex, quantized, 8-bit floats).
    Other(i32),
}

impl TensorType {
    /// The type of TensorFlow's `DataType` number.
    pub fn from_tf(number: i32) -> TensorType {
        use TensorType::Numeric as N;
        match number {
            1 => N(Dtype::F32),
            2 => N(Dtype::F64),
            3 => N(Dtype::I32),
            4 => N(Dtype::U8),
            5 => N(Dtype::I16),
            6 => N(Dtype::I8),
            7 => TensorType::String,
            9 => N(Dtype::I64),
            10 => N(Dtype::Bool),
            14 => N(Dtype::BF16),
            17 => N(Dtype::U16),
            19 => N(Dtype::F16),
            20 | 21 => TensorType::Handle,
            22 => N(Dtype::U32),
            23 => N(Dtype::U64),
            n => TensorType::Other(n),
        }
    }

    /// TensorFlow's name for it (`float32`, `string`, `complex64`).
    pub fn name(self) -> String {
        match self {
            TensorType::Numeric(d) => d.numpy_name().to_string(),
            TensorType::String => "string".into(),
            TensorType::Handle => "resource".into(),
            TensorType::Other(n) => match n {
                8 => "complex64".into(),
                18 => "complex128".into(),
                11..=13 | 15 | 16 => "quantized".into(),
                24..=28 => "float8".into(),
                n => format!("TensorFlow DataType {n}"),
            },
        }
    }
}

/// A run of bytes in one data shard, with its stored (masked) CRC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    /// The data shard, by id.
    pub shard: usize,
    /// Offset of the first byte in the shard.
    pub offset: u64,
    /// Length in bytes.
    pub size: u64,
    /// The CRC-32C of the bytes, masked as LevelDB stores it.
    pub crc: u32,
}

/// One saved slice of a tensor: where it sits in the whole, and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// Where the slice starts, per axis.
    pub start: Vec<usize>,
    /// Its extent, per axis.
    pub len: Vec<usize>,
    /// Its bytes.
    pub chunk: Chunk,
}

/// Where a tensor's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    /// The whole tensor in one run.
    Whole(Chunk),
    /// Saved in slices, to be put together.
    Sliced(Vec<Piece>),
}

/// One named tensor of the bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The tensor's key (a variable name, or an object-graph path).
    pub key: String,
    /// Its element type.
    pub dtype: TensorType,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Where its bytes are.
    pub data: Data,
}

impl Entry {
    /// The bytes of data it holds.
    pub fn byte_len(&self) -> u64 {
        match &self.data {
            Data::Whole(c) => c.size,
            Data::Sliced(pieces) => pieces.iter().map(|p| p.chunk.size).sum(),
        }
    }
}

/// An open bundle: its entries (the header excluded), in key order.
#[derive(Debug)]
pub struct Bundle {
    /// The checkpoint prefix (`ckpt/ckpt-1`).
    pub prefix: PathBuf,
    /// Every entry, the header excluded, in key order.
    pub entries: Vec<Entry>,
    by_key: HashMap<String, usize>,
    shard_paths: Vec<PathBuf>,
    /// Open shard files, by shard id; `None` for shards no entry uses.
    shards: Vec<Option<File>>,
}

/// `<prefix>.index`.
pub fn index_path(prefix: &Path) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(".index");
    PathBuf::from(s)
}

/// `<prefix>.data-00000-of-00002`.
pub fn shard_path(prefix: &Path, shard: usize, count: usize) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(format!(".data-{shard:05}-of-{count:05}"));
    PathBuf::from(s)
}

/// Whether these bytes end like a bundle index (the table magic number).
pub fn looks_like_index(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    let Ok(len) = file.metadata().map(|m| m.len()) else {
        return false;
    };
    if len < table::FOOTER_LEN as u64 {
        return false;
    }
    let mut magic = [0u8; 8];
    read_exact_at(&file, &mut magic, len - 8).is_ok() && u64::from_le_bytes(magic) == table::MAGIC
}

impl Bundle {
    /// Opens the bundle whose files start with `prefix`.
    pub fn open(prefix: &Path) -> Result<Bundle> {
        let index = index_path(prefix);
        let fail = |file: &Path, message: String| BundleError {
            file: file.to_path_buf(),
            message,
        };
        let bytes = read_capped(&index).map_err(|m| fail(&index, m))?;
        let rows = table::entries(&bytes).map_err(|e| fail(&index, e.0))?;
        drop(bytes);
        let (header_key, header) = rows
            .first()
            .ok_or_else(|| fail(&index, "the index has no entries".into()))?;
        if !header_key.is_empty() {
            return Err(fail(
                &index,
                "no bundle header (the first key is not empty): not a TensorFlow checkpoint index"
                    .into(),
            ));
        }
        let header = proto::BundleHeaderProto::decode(header.as_slice())
            .map_err(|e| fail(&index, format!("unreadable bundle header ({e})")))?;
        if header.endianness != 0 {
            return Err(fail(
                &index,
                "a big-endian checkpoint, which is not read (its tensors would need byte swaps)"
                    .into(),
            ));
        }
        if !(1..=MAX_SHARDS).contains(&header.num_shards) {
            return Err(fail(
                &index,
                format!("the header says {} data shards", header.num_shards),
            ));
        }
        let num_shards = header.num_shards as usize;
        let shard_paths: Vec<PathBuf> = (0..num_shards)
            .map(|i| shard_path(prefix, i, num_shards))
            .collect();
        let mut slices: HashMap<Vec<u8>, proto::BundleEntryProto> = HashMap::new();
        let mut full: Vec<(String, proto::BundleEntryProto)> = Vec::new();
        for (key, value) in rows.into_iter().skip(1) {
            let entry = proto::BundleEntryProto::decode(value.as_slice()).map_err(|e| {
                fail(
                    &index,
                    format!(
                        "entry `{}`: unreadable ({e})",
                        String::from_utf8_lossy(&key)
                    ),
                )
            })?;
            if key.first() == Some(&0) {
                slices.insert(key, entry);
            } else {
                let key = String::from_utf8(key).map_err(|e| {
                    fail(
                        &index,
                        format!(
                            "a key that is not UTF-8: `{}`",
                            String::from_utf8_lossy(e.as_bytes())
                        ),
                    )
                })?;
                full.push((key, entry));
            }
        }
        // Shard sizes, for bounds; a missing shard is an error only when
        // an entry needs it.
        let mut shards: Vec<Option<File>> = (0..num_shards).map(|_| None).collect();
        let mut sizes: Vec<Option<u64>> = vec![None; num_shards];
        let mut used_slices: HashSet<Vec<u8>> = HashSet::new();
        let mut entries = Vec::with_capacity(full.len());
        for (key, e) in full {
            let bad = |m: String| fail(&index, format!("entry `{key}`: {m}"));
            let dtype = TensorType::from_tf(e.dtype);
            let shape = shape_of(&e).map_err(bad)?;
            let mut chunk_of = |e: &proto::BundleEntryProto, what: &str| -> Result<Chunk> {
                let shard = usize::try_from(e.shard_id)
                    .ok()
                    .filter(|&s| s < num_shards)
                    .ok_or_else(|| {
                        bad(format!("{what} is in shard {} of {num_shards}", e.shard_id))
                    })?;
                if e.offset < 0 || e.size < 0 {
                    return Err(bad(format!("{what} has a negative offset or size")));
                }
                let (offset, size) = (e.offset as u64, e.size as u64);
                if sizes[shard].is_none() {
                    let path = &shard_paths[shard];
                    let file = File::open(path).map_err(|err| {
                        fail(
                            path,
                            match err.kind() {
                                std::io::ErrorKind::NotFound => {
                                    format!("data shard missing (entry `{key}` is in it)")
                                }
                                _ => err.to_string(),
                            },
                        )
                    })?;
                    let len = file
                        .metadata()
                        .map_err(|err| fail(path, err.to_string()))?
                        .len();
                    sizes[shard] = Some(len);
                    shards[shard] = Some(file);
                }
                let shard_len = sizes[shard].unwrap_or(0);
                if offset.checked_add(size).is_none_or(|end| end > shard_len) {
                    return Err(fail(
                        &shard_paths[shard],
                        format!(
                            "entry `{key}`: {what} lies at {offset}..{} but the shard has {shard_len} bytes: truncated",
                            offset.saturating_add(size)
                        ),
                    ));
                }
                Ok(Chunk {
                    shard,
                    offset,
                    size,
                    crc: e.crc32c,
                })
            };
            let elements = element_count(&shape).ok_or_else(|| bad("a shape too large".into()))?;
            let expect = |size: u64, elements: u64, what: &str| -> Result<()> {
                if let TensorType::Numeric(d) = dtype {
                    if elements.checked_mul(d.size() as u64) != Some(size) {
                        return Err(bad(format!(
                            "{what} has {size} bytes, but {elements} {} values need {}",
                            d.numpy_name(),
                            elements.saturating_mul(d.size() as u64)
                        )));
                    }
                }
                Ok(())
            };
            let data = if e.slices.is_empty() {
                let chunk = chunk_of(&e, "the tensor")?;
                expect(chunk.size, elements, "the tensor")?;
                Data::Whole(chunk)
            } else {
                if !matches!(dtype, TensorType::Numeric(_)) {
                    return Err(bad(format!("a sliced {} tensor", dtype.name())));
                }
                if e.slices.len() > MAX_SLICES {
                    return Err(bad(format!("{} slices", e.slices.len())));
                }
                let mut pieces = Vec::with_capacity(e.slices.len());
                for (n, slice) in e.slices.iter().enumerate() {
                    let what = format!("slice {n}");
                    let (start, len, extents) =
                        slice_extents(slice, &shape).map_err(|m| bad(format!("{what}: {m}")))?;
                    let slice_key = slice_key::encode(key.as_bytes(), &extents);
                    let stored = slices.get(&slice_key).ok_or_else(|| {
                        bad(format!("{what} ({}) has no entry", describe(&start, &len)))
                    })?;
                    used_slices.insert(slice_key);
                    let chunk = chunk_of(stored, &what)?;
                    let n_elements = element_count(&len).unwrap_or(u64::MAX);
                    expect(chunk.size, n_elements, &what)?;
                    pieces.push(Piece { start, len, chunk });
                }
                check_cover(&pieces, elements).map_err(bad)?;
                // Slices are assembled in memory: never more than the
                // shards hold (honest slices share no bytes).
                let total: u64 = pieces.iter().map(|p| p.chunk.size).sum();
                let available: u64 = sizes.iter().flatten().sum();
                if total > available {
                    return Err(bad(format!(
                        "its slices add up to {total} bytes, more than its shards hold ({available})"
                    )));
                }
                Data::Sliced(pieces)
            };
            entries.push(Entry {
                key,
                dtype,
                shape,
                data,
            });
        }
        if let Some(stray) = slices.keys().find(|k| !used_slices.contains(*k)) {
            return Err(fail(
                &index,
                format!(
                    "a saved slice that belongs to no tensor (key `{}`)",
                    String::from_utf8_lossy(stray).escape_debug()
                ),
            ));
        }
        let by_key = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.key.clone(), i))
            .collect();
        Ok(Bundle {
            prefix: prefix.to_path_buf(),
            entries,
            by_key,
            shard_paths,
            shards,
        })
    }

    /// `<prefix>.index`.
    pub fn index_path(&self) -> PathBuf {
        index_path(&self.prefix)
    }

    /// The data shard files (all of them, used or not).
    pub fn shard_paths(&self) -> &[PathBuf] {
        &self.shard_paths
    }

    /// The data shards that are open (those some entry uses).
    pub fn open_shards(&self) -> impl Iterator<Item = &File> {
        self.shards.iter().flatten()
    }

    /// The position in [`Bundle::entries`] of the entry `key`.
    pub fn find(&self, key: &str) -> Option<usize> {
        self.by_key.get(key).copied()
    }

    /// Reads a chunk, checks its CRC and hands it to `visit` in pieces of
    /// at most `buf.len()` bytes. A CRC mismatch is an error after the
    /// last piece: a caller writing a temporary file must drop it.
    fn visit_chunk(
        &self,
        key: &str,
        chunk: &Chunk,
        buf: &mut [u8],
        verify: bool,
        visit: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let file = self.shards[chunk.shard]
            .as_ref()
            .ok_or_else(|| std::io::Error::other("a data shard that is not open"))?;
        let mut crc = 0u32;
        let mut done = 0u64;
        while done < chunk.size {
            let n = (chunk.size - done).min(buf.len().max(1) as u64) as usize;
            read_exact_at(file, &mut buf[..n], chunk.offset + done).map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("{}: {e}", self.shard_paths[chunk.shard].display()),
                )
            })?;
            crc = crc32c::crc32c_append(crc, &buf[..n]);
            visit(&buf[..n])?;
            done += n as u64;
        }
        if verify {
            self.check_crc(key, chunk, crc)?;
        }
        Ok(())
    }

    fn check_crc(&self, key: &str, chunk: &Chunk, crc: u32) -> std::io::Result<()> {
        if crc != crc::unmask(chunk.crc) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{}: checksum mismatch for `{key}` (CRC-32C {crc:08x}, the index says {:08x}): the data shard is corrupt",
                    self.shard_paths[chunk.shard].display(),
                    crc::unmask(chunk.crc)
                ),
            ));
        }
        Ok(())
    }

    /// Copies the bytes of entry `i` (little-endian, C order) into `out`,
    /// verifying their CRC. Sliced tensors are assembled in memory first.
    pub fn copy(
        &self,
        i: usize,
        out: &mut dyn Write,
        buf: &mut [u8],
        progress: &mut dyn FnMut(u64),
    ) -> std::io::Result<()> {
        let entry = &self.entries[i];
        match &entry.data {
            Data::Whole(chunk) => self.visit_chunk(&entry.key, chunk, buf, true, &mut |b| {
                out.write_all(b)?;
                progress(b.len() as u64);
                Ok(())
            }),
            Data::Sliced(_) => {
                let whole = self.read(i)?;
                out.write_all(&whole)?;
                progress(whole.len() as u64);
                Ok(())
            }
        }
    }

    /// Fills `buf` (exactly the entry's size) with all bytes of entry `i`,
    /// CRC verified, without a copy for tensors stored whole.
    pub fn read_into(&self, i: usize, buf: &mut [u8]) -> std::io::Result<()> {
        let entry = &self.entries[i];
        if buf.len() as u64 != entry.byte_len() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "`{}` has {} bytes, not {}",
                    entry.key,
                    entry.byte_len(),
                    buf.len()
                ),
            ));
        }
        match &entry.data {
            Data::Whole(chunk) if matches!(entry.dtype, TensorType::Numeric(_)) => {
                let file = self.shards[chunk.shard]
                    .as_ref()
                    .ok_or_else(|| std::io::Error::other("a data shard that is not open"))?;
                read_exact_at(file, buf, chunk.offset).map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!("{}: {e}", self.shard_paths[chunk.shard].display()),
                    )
                })?;
                self.check_crc(&entry.key, chunk, crc32c::crc32c(buf))
            }
            _ => {
                buf.copy_from_slice(&self.read(i)?);
                Ok(())
            }
        }
    }

    /// All bytes of entry `i`, CRC verified.
    pub fn read(&self, i: usize) -> std::io::Result<Vec<u8>> {
        let entry = &self.entries[i];
        let mut out = Vec::with_capacity(entry.byte_len() as usize);
        let mut buf = vec![0u8; (1 << 20).min(entry.byte_len().max(1) as usize)];
        match &entry.data {
            Data::Whole(chunk) => {
                // String tensors have a CRC of their own making, checked
                // where they are parsed.
                let numeric = matches!(entry.dtype, TensorType::Numeric(_));
                self.visit_chunk(&entry.key, chunk, &mut buf, numeric, &mut |b| {
                    out.extend_from_slice(b);
                    Ok(())
                })?;
            }
            Data::Sliced(pieces) => {
                let TensorType::Numeric(dtype) = entry.dtype else {
                    unreachable!("only numeric tensors are sliced");
                };
                out.resize(entry.byte_len() as usize, 0);
                for piece in pieces {
                    let mut bytes = Vec::with_capacity(piece.chunk.size as usize);
                    self.visit_chunk(&entry.key, &piece.chunk, &mut buf, true, &mut |b| {
                        bytes.extend_from_slice(b);
                        Ok(())
                    })?;
                    scatter(&bytes, piece, &entry.shape, dtype.size(), &mut out);
                }
            }
        }
        Ok(out)
    }

    /// The value of a scalar string tensor (the object graph): TF stores
    /// the string lengths as varints, a masked CRC of them, then the bytes;
    /// the entry's CRC covers each length as 4 bytes, that CRC and the bytes.
    pub fn read_scalar_string(&self, i: usize) -> std::io::Result<Vec<u8>> {
        let entry = &self.entries[i];
        let Data::Whole(chunk) = &entry.data else {
            unreachable!("string tensors are never sliced");
        };
        if entry.dtype != TensorType::String || !entry.shape.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("`{}` is not a scalar string", entry.key),
            ));
        }
        let bytes = self.read(i)?;
        let broken = || {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("string tensor `{}` is malformed", self.entries[i].key),
            )
        };
        let mut pos = 0;
        let len = table::varint(&bytes, &mut pos, 10).ok_or_else(broken)?;
        let start = pos.checked_add(4).ok_or_else(broken)?;
        let end = start
            .checked_add(usize::try_from(len).map_err(|_| broken())?)
            .filter(|&e| e <= bytes.len())
            .ok_or_else(broken)?;
        // (TensorFlow feeds the low 4 bytes of each length to the CRC.)
        let mut crc = crc32c::crc32c(&(len as u32).to_le_bytes());
        crc = crc32c::crc32c_append(crc, &bytes[pos..end]);
        self.check_crc(&entry.key, chunk, crc)?;
        Ok(bytes[start..end].to_vec())
    }
}

fn read_capped(path: &Path) -> std::result::Result<Vec<u8>, String> {
    let file = File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => "no such file (the checkpoint's index)".to_string(),
        _ => e.to_string(),
    })?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    if len > MAX_INDEX_BYTES {
        return Err(format!(
            "an index of {len} bytes, more than a checkpoint index holds"
        ));
    }
    let mut bytes = vec![0u8; len as usize];
    read_exact_at(&file, &mut bytes, 0).map_err(|e| e.to_string())?;
    Ok(bytes)
}

fn shape_of(e: &proto::BundleEntryProto) -> std::result::Result<Vec<usize>, String> {
    let shape = e.shape.clone().unwrap_or_default();
    if shape.unknown_rank {
        return Err("a shape of unknown rank".into());
    }
    shape
        .dim
        .iter()
        .map(|d| usize::try_from(d.size).map_err(|_| format!("a dimension of size {}", d.size)))
        .collect()
}

fn element_count(shape: &[usize]) -> Option<u64> {
    shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
}

/// Start and length of a slice in every dimension, and the extents as
/// TensorFlow encodes them in the slice's key.
type Extents = (Vec<usize>, Vec<usize>, Vec<(i64, i64)>);

fn slice_extents(
    slice: &proto::TensorSliceProto,
    shape: &[usize],
) -> std::result::Result<Extents, String> {
    if slice.extent.len() != shape.len() {
        return Err(format!(
            "{} dimensions for a tensor of {}",
            slice.extent.len(),
            shape.len()
        ));
    }
    let mut start = Vec::new();
    let mut len = Vec::new();
    let mut extents = Vec::new();
    for (e, &dim) in slice.extent.iter().zip(shape) {
        let (s, l) = match e.length {
            None => (0, dim as i64),
            Some(l) => (e.start, l),
        };
        if s < 0 || l < 0 || (s as u64).saturating_add(l as u64) > dim as u64 {
            return Err(format!("extent {s}+{l} outside a dimension of {dim}"));
        }
        start.push(s as usize);
        len.push(l as usize);
        extents.push(match e.length {
            None => (0, -1),
            Some(l) => (e.start, l),
        });
    }
    Ok((start, len, extents))
}

fn describe(start: &[usize], len: &[usize]) -> String {
    let dims: Vec<String> = start
        .iter()
        .zip(len)
        .map(|(s, l)| format!("{s}:{}", s + l))
        .collect();
    format!("[{}]", dims.join(", "))
}

/// Checks that the slices fill the tensor exactly: no overlap, no gap.
fn check_cover(pieces: &[Piece], elements: u64) -> std::result::Result<(), String> {
    let total: u64 = pieces
        .iter()
        .map(|p| element_count(&p.len).unwrap_or(u64::MAX))
        .fold(0u64, u64::saturating_add);
    if total != elements {
        return Err(format!(
            "its slices hold {total} values, the tensor {elements}"
        ));
    }
    for (i, a) in pieces.iter().enumerate() {
        for b in &pieces[i + 1..] {
            let disjoint = (0..a.start.len()).any(|d| {
                a.start[d] + a.len[d] <= b.start[d] || b.start[d] + b.len[d] <= a.start[d]
            });
            let empty = a.len.contains(&0) || b.len.contains(&0);
            if !disjoint && !empty {
                return Err(format!(
                    "slices {} and {} overlap",
                    describe(&a.start, &a.len),
                    describe(&b.start, &b.len)
                ));
            }
        }
    }
    Ok(())
}

/// Copies one slice's C-order bytes to its place in the whole tensor.
fn scatter(bytes: &[u8], piece: &Piece, shape: &[usize], size: usize, out: &mut [u8]) {
    let rank = shape.len();
    if piece.len.contains(&0) {
        return;
    }
    if rank == 0 {
        out[..size].copy_from_slice(&bytes[..size]);
        return;
    }
    // Strides of the whole tensor, in elements.
    let mut strides = vec![1usize; rank];
    for d in (0..rank - 1).rev() {
        strides[d] = strides[d + 1] * shape[d + 1];
    }
    let run = piece.len[rank - 1] * size;
    let mut index = vec![0usize; rank - 1];
    let mut src = 0;
    loop {
        let dst: usize = (0..rank)
            .map(|d| (piece.start[d] + index.get(d).copied().unwrap_or(0)) * strides[d])
            .sum::<usize>()
            * size;
        out[dst..dst + run].copy_from_slice(&bytes[src..src + run]);
        src += run;
        // Next index over all but the last dimension, C order.
        let mut d = rank - 1;
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            index[d] += 1;
            if index[d] < piece.len[d] {
                break;
            }
            index[d] = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_land_in_place() {
        // A 3x4 tensor of u8 in two slices: rows 0..1 and rows 1..3.
        let shape = [3usize, 4];
        let whole: Vec<u8> = (0..12).collect();
        let mut out = vec![0u8; 12];
        let chunk = Chunk {
            shard: 0,
            offset: 0,
            size: 0,
            crc: 0,
        };
        let top = Piece {
            start: vec![0, 0],
            len: vec![1, 4],
            chunk,
        };
        let bottom = Piece {
            start: vec![1, 0],
            len: vec![2, 4],
            chunk,
        };
        scatter(&whole[..4], &top, &shape, 1, &mut out);
        scatter(&whole[4..], &bottom, &shape, 1, &mut out);
        assert_eq!(out, whole);
        // Columns: 0..3 and 3..4.
        let mut out = vec![0u8; 12];
        let left: Vec<u8> = whole.chunks(4).flat_map(|r| r[..3].to_vec()).collect();
        let right: Vec<u8> = whole.chunks(4).map(|r| r[3]).collect();
        let l = Piece {
            start: vec![0, 0],
            len: vec![3, 3],
            chunk,
        };
        let r = Piece {
            start: vec![0, 3],
            len: vec![3, 1],
            chunk,
        };
        scatter(&left, &l, &shape, 1, &mut out);
        scatter(&right, &r, &shape, 1, &mut out);
        assert_eq!(out, whole);
        assert!(check_cover(&[l.clone(), r.clone()], 12).is_ok());
        assert!(check_cover(&[l.clone(), l], 12).is_err());
    }
}

#[cfg(test)]
mod fixture_tests {
    use super::*;

    /// A bundle written by hand: `entries` (key, entry) after the header,
    /// one data shard of `data`.
    fn bundle(dir: &Path, entries: &[(Vec<u8>, proto::BundleEntryProto)], data: &[u8]) -> PathBuf {
        let header = proto::BundleHeaderProto {
            num_shards: 1,
            endianness: 0,
        }
        .encode_to_vec();
        let mut rows: Vec<(Vec<u8>, Vec<u8>)> = vec![(Vec::new(), header)];
        rows.extend(entries.iter().map(|(k, e)| (k.clone(), e.encode_to_vec())));
        rows.sort();
        let refs: Vec<(&[u8], &[u8])> = rows.iter().map(|(k, v)| (&k[..], &v[..])).collect();
        let prefix = dir.join("ckpt");
        std::fs::write(index_path(&prefix), table::tests::table(&refs, true)).unwrap();
        std::fs::write(shard_path(&prefix, 0, 1), data).unwrap();
        prefix
    }

    fn f32_entry(shape: &[i64], offset: i64, size: i64, data: &[u8]) -> proto::BundleEntryProto {
        proto::BundleEntryProto {
            dtype: 1,
            shape: Some(proto::TensorShapeProto {
                dim: shape.iter().map(|&size| proto::Dim { size }).collect(),
                unknown_rank: false,
            }),
            shard_id: 0,
            offset,
            size,
            crc32c: crc::mask(crc32c::crc32c(
                &data[offset as usize..(offset + size) as usize],
            )),
            slices: Vec::new(),
        }
    }

    #[test]
    fn hand_made_bundles_read_and_hostile_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..64u8).collect();
        // A plain tensor, and a (2, 4) tensor saved as two row slices.
        let whole = f32_entry(&[4], 0, 16, &data);
        let rows = |start: i64| proto::TensorSliceProto {
            extent: vec![
                proto::Extent {
                    start,
                    length: Some(1),
                },
                proto::Extent {
                    start: 0,
                    length: None,
                },
            ],
        };
        let mut sliced = f32_entry(&[2, 4], 0, 0, &data);
        sliced.slices = vec![rows(0), rows(1)];
        let key = |row: i64| slice_key::encode(b"s", &[(row, 1), (0, -1)]);
        let entries = vec![
            (b"w".to_vec(), whole.clone()),
            (b"s".to_vec(), sliced.clone()),
            (key(0), f32_entry(&[1, 4], 16, 16, &data)),
            (key(1), f32_entry(&[1, 4], 32, 16, &data)),
        ];
        let prefix = bundle(dir.path(), &entries, &data);
        let b = Bundle::open(&prefix).unwrap();
        assert_eq!(b.read(b.find("w").unwrap()).unwrap(), &data[..16]);
        assert_eq!(b.read(b.find("s").unwrap()).unwrap(), &data[16..48]);
        let mut buf = [0u8; 16];
        b.read_into(b.find("w").unwrap(), &mut buf).unwrap();
        assert_eq!(buf, data[..16]);
        let mut buf = [0u8; 32];
        b.read_into(b.find("s").unwrap(), &mut buf).unwrap();
        assert_eq!(buf, data[16..48]);
        // Two slices claiming the same rows: refused.
        let mut overlapping = sliced.clone();
        overlapping.slices = vec![rows(0), rows(0)];
        let mut e = entries.clone();
        e[1].1 = overlapping;
        let prefix = bundle(dir.path(), &e, &data);
        assert!(Bundle::open(&prefix)
            .unwrap_err()
            .message
            .contains("overlap"));
        // A tensor larger than its shard.
        let mut e = entries.clone();
        e[0].1 = f32_entry(&[4], 0, 16, &data);
        e[0].1.size = 1 << 40;
        e[0].1.shape = Some(proto::TensorShapeProto {
            dim: vec![proto::Dim { size: 1 << 38 }],
            unknown_rank: false,
        });
        let prefix = bundle(dir.path(), &e, &data);
        assert!(Bundle::open(&prefix)
            .unwrap_err()
            .message
            .contains("truncated"));
        // A size that does not fit the shape.
        let mut e = entries.clone();
        e[0].1.size = 12;
        let prefix = bundle(dir.path(), &e, &data);
        assert!(Bundle::open(&prefix)
            .unwrap_err()
            .message
            .contains("need 16"));
        // A slice with no entry of its own.
        let e: Vec<_> = entries[..3].to_vec();
        let prefix = bundle(dir.path(), &e, &data);
        assert!(Bundle::open(&prefix)
            .unwrap_err()
            .message
            .contains("has no entry"));
        // A CRC that does not match is found on reading.
        let mut e = entries.clone();
        e[0].1.crc32c ^= 1;
        let prefix = bundle(dir.path(), &e, &data);
        let b = Bundle::open(&prefix).unwrap();
        let err = b.read(b.find("w").unwrap()).unwrap_err();
        assert!(err.to_string().contains("checksum mismatch"), "{err}");
        let mut buf = [0u8; 16];
        let err = b.read_into(b.find("w").unwrap(), &mut buf).unwrap_err();
        assert!(err.to_string().contains("checksum mismatch"), "{err}");
        let mut sink = Vec::new();
        let err = b
            .copy(b.find("w").unwrap(), &mut sink, &mut [0u8; 5], &mut |_| {})
            .unwrap_err();
        assert!(err.to_string().contains("checksum mismatch"), "{err}");
    }

    #[test]
    fn reads_the_keras_checkpoint_fixture() {
        let prefix =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/subclassed_effdet_ckpt/ckpt");
        let bundle = Bundle::open(&prefix).unwrap();
        assert_eq!(bundle.entries.len(), 97);
        for i in 0..bundle.entries.len() {
            bundle.read(i).unwrap();
        }
        let graph = bundle.find("_CHECKPOINTABLE_OBJECT_GRAPH").unwrap();
        let bytes = bundle.read_scalar_string(graph).unwrap();
        let graph = proto::TrackableObjectGraph::decode(bytes.as_slice()).unwrap();
        assert!(graph.nodes.len() > 90);
    }
}
