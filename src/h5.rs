//! The only module that talks to the HDF5 crate.
//!
//! Everything above this module sees HDF5 as groups with string attributes and
//! datasets with a shape, an element type and a place where their bytes live.
//! Swapping the backend means rewriting this file and nothing else.

use std::fs::File as FsFile;

use crate::pread::read_exact_at;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use hdf5_reader::io::Cursor;
use hdf5_reader::messages::layout::DataLayout;
use hdf5_reader::messages::link::LinkTarget;
use hdf5_reader::messages::symbol_table_msg::SymbolTableMessage;
use hdf5_reader::messages::HdfMessage;
use hdf5_reader::symbol_table::SymbolTableNode;
use hdf5_reader::{
    BlockCacheStorage, ByteOrder, Datatype, Hdf5File, Storage, StorageBuffer, StringSize,
};

/// Size of the buffer used to copy contiguous dataset bytes: the memory a
/// conversion needs does not grow with the size of a tensor.
pub const COPY_BUFFER_BYTES: usize = 4 << 20;

/// The metadata cache: 512 blocks of 16 KiB, 8 MiB at most.
const METADATA_BLOCK_BYTES: usize = 16 << 10;
const METADATA_BLOCKS: usize = 512;

/// Deepest group nesting we follow; Keras files nest a few levels.
pub const MAX_GROUP_DEPTH: usize = 64;

/// HDF5 signature at offset 0 (HDF5 also allows it at 512, 1024, ...; Keras
/// files never use a user block).
pub const SIGNATURE: &[u8; 8] = b"\x89HDF\r\n\x1a\n";

/// What went wrong inside the HDF5 layer, as text for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct H5Error(pub String);

impl std::fmt::Display for H5Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<hdf5_reader::error::Error> for H5Error {
    fn from(e: hdf5_reader::error::Error) -> Self {
        let text = e.to_string();
        if text.contains("layout class 3") {
            // Layout class 3 is a virtual dataset: data gathered from other files.
            return H5Error(format!(
                "{text} (a virtual dataset, which Keras files never contain)"
            ));
        }
        H5Error(text)
    }
}

impl From<std::io::Error> for H5Error {
    fn from(e: std::io::Error) -> Self {
        H5Error(e.to_string())
    }
}

type Result<T> = std::result::Result<T, H5Error>;

/// An open HDF5 file: the parsed structure, plus direct access to its bytes,
/// used to stream dataset bytes without mapping or buffering the whole file.
pub struct File {
    h5: Hdf5File,
    bytes: Bytes,
    len: u64,
    /// Every dataset's absolute path, found by [`File::refuse_links`]'s walk.
    datasets: std::sync::OnceLock<Vec<String>>,
}

/// Where an HDF5 file's bytes are: a file on disk, or a window of one (a
/// member stored uncompressed inside a `.keras` zip), or memory.
#[derive(Clone)]
enum Bytes {
    Window { file: Arc<FsFile>, base: u64 },
    Memory(Arc<[u8]>),
}

impl Bytes {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        match self {
            Bytes::Window { file, base } => read_exact_at(file, buf, base + offset),
            Bytes::Memory(data) => {
                let start = usize::try_from(offset).unwrap_or(usize::MAX);
                match start
                    .checked_add(buf.len())
                    .and_then(|end| data.get(start..end))
                {
                    Some(src) => {
                        buf.copy_from_slice(src);
                        Ok(())
                    }
                    None => Err(std::io::ErrorKind::UnexpectedEof.into()),
                }
            }
        }
    }
}

/// The HDF5 crate's view of a window of a file.
struct WindowStorage {
    file: Arc<FsFile>,
    base: u64,
    len: u64,
}

impl Storage for WindowStorage {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_range(&self, offset: u64, len: usize) -> hdf5_reader::error::Result<StorageBuffer> {
        let eof = || hdf5_reader::error::Error::UnexpectedEof {
            offset,
            needed: len as u64,
            available: self.len.saturating_sub(offset),
        };
        let end = offset.checked_add(len as u64).ok_or_else(eof)?;
        if end > self.len {
            return Err(eof());
        }
        let mut buf = vec![0u8; len];
        read_exact_at(&self.file, &mut buf, self.base + offset)?;
        Ok(StorageBuffer::from_vec(buf))
    }
}

/// A group in an open file.
pub struct Group {
    inner: hdf5_reader::group::Group,
}

/// The element type of a dataset, reduced to what a weight file can hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Element {
    Float {
        size: u8,
    },
    Int {
        size: u8,
        signed: bool,
    },
    Bool,
    /// Opaque bytes; Keras stores bfloat16 as a 2-byte opaque type.
    Opaque {
        size: u32,
        tag: String,
    },
    /// Anything else, described for an error message.
    Other(String),
}

/// Where a dataset's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// One contiguous run of little-endian bytes in the file.
    Contiguous { offset: u64, len: u64 },
    /// No bytes at all (an empty array).
    Empty,
    /// Stored some other way (chunked, compact, big-endian, fill value): the
    /// HDF5 library materialises it in memory, converted to little-endian.
    Decoded {
        path: String,
        swap_bytes: Option<usize>,
    },
}

/// What we know about a dataset without reading its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetInfo {
    pub shape: Vec<usize>,
    pub element: Element,
    pub location: Location,
    /// The `dtype` string attribute Keras 3 puts on bfloat16 weights.
    pub dtype_attr: Option<String>,
}

impl File {
    pub fn open(path: &Path) -> Result<File> {
        let file = FsFile::open(path)?;
        let len = file.metadata()?.len();
        File::open_window(Arc::new(file), 0, len)
    }

    /// Opens the HDF5 file stored in `len` bytes of `file` from `base`.
    pub fn open_window(file: Arc<FsFile>, base: u64, len: u64) -> Result<File> {
        let storage = WindowStorage {
            file: file.clone(),
            base,
            len,
        };
        // Metadata is read in many small pieces (about ten per dataset);
        // a small block cache turns them into few reads.
        let cached =
            BlockCacheStorage::new(Arc::new(storage), METADATA_BLOCK_BYTES, METADATA_BLOCKS);
        let h5 = Hdf5File::from_storage(Arc::new(cached))?;
        File::checked(h5, Bytes::Window { file, base }, len)
    }

    /// Opens an HDF5 file held in memory.
    pub fn from_bytes(data: Vec<u8>) -> Result<File> {
        let len = data.len() as u64;
        let data: Arc<[u8]> = data.into();
        let h5 = Hdf5File::from_shared_bytes(data.clone())?;
        File::checked(h5, Bytes::Memory(data), len)
    }

    fn checked(h5: Hdf5File, bytes: Bytes, len: u64) -> Result<File> {
        let claimed = h5.superblock().eof_address;
        if claimed != u64::MAX && claimed > len {
            return Err(H5Error(format!(
                "it has {len} bytes but its HDF5 header says {claimed} (cut short?)"
            )));
        }
        Ok(File {
            h5,
            bytes,
            len,
            datasets: std::sync::OnceLock::new(),
        })
    }

    pub fn root(&self) -> Result<Group> {
        Ok(Group {
            inner: self.h5.root_group()?,
        })
    }

    /// The group at an absolute path (`/layers/dense/vars`).
    pub fn group(&self, path: &str) -> Result<Group> {
        Ok(Group {
            inner: self.h5.group(path)?,
        })
    }

    /// Walks every group and refuses soft and external links and objects
    /// reached twice (see [`File::check_links`]); notes the path of every
    /// dataset on the way, for [`File::dataset_paths`].
    pub fn refuse_links(&self) -> Result<()> {
        let mut seen = std::collections::HashSet::new();
        let mut datasets = Vec::new();
        self.refuse_links_below(&self.root()?, "", 0, &mut seen, &mut datasets)?;
        let _ = self.datasets.set(datasets);
        Ok(())
    }

    /// The absolute path of every dataset in the file (walking the file
    /// first if [`File::refuse_links`] has not).
    pub fn dataset_paths(&self) -> Result<&[String]> {
        if self.datasets.get().is_none() {
            self.refuse_links()?;
        }
        Ok(self.datasets.get().map(Vec::as_slice).unwrap_or_default())
    }

    /// The address of a dataset's object header: two paths with the same
    /// address are two links to one dataset.
    pub fn dataset_address(&self, path: &str) -> Result<u64> {
        Ok(self.h5.dataset(path)?.address())
    }

    fn refuse_links_below(
        &self,
        group: &Group,
        path: &str,
        depth: usize,
        seen: &mut std::collections::HashSet<u64>,
        datasets: &mut Vec<String>,
    ) -> Result<()> {
        if depth > MAX_GROUP_DEPTH {
            return Err(H5Error(format!(
                "groups nest deeper than {MAX_GROUP_DEPTH} levels at `{path}`"
            )));
        }
        if !seen.insert(group.address()) {
            return Err(H5Error(format!(
                "`{path}` is reached twice (a hard link), which Keras files never contain"
            )));
        }
        self.check_links(group, path)?;
        let (groups, members) = group.member_names()?;
        datasets.extend(members.iter().map(|name| format!("{path}/{name}")));
        for name in groups {
            let child = group.group(&name)?;
            self.refuse_links_below(&child, &format!("{path}/{name}"), depth + 1, seen, datasets)?;
        }
        Ok(())
    }

    /// Refuses soft and external links in a group: Keras never writes them,
    /// and Keras's own loader rejects files that have them, since they can
    /// make one name read data that belongs somewhere else.
    pub fn check_links(&self, group: &Group, path: &str) -> Result<()> {
        let header = self.h5.get_or_parse_header(group.inner.address())?;
        for message in &header.messages {
            match message {
                HdfMessage::Link(link) => match &link.target {
                    LinkTarget::Hard { .. } => {}
                    LinkTarget::Soft { path: target } => {
                        return Err(H5Error(format!(
                            "`{path}/{}` is a soft link (to `{target}`), which Keras files never contain",
                            link.name
                        )))
                    }
                    LinkTarget::External { filename, .. } => {
                        return Err(H5Error(format!(
                            "`{path}/{}` is an external link (to `{filename}`), which Keras files never contain",
                            link.name
                        )))
                    }
                },
                HdfMessage::SymbolTable(table) => self.check_symbol_table(table, path)?,
                _ => {}
            }
        }
        Ok(())
    }

    fn check_symbol_table(&self, table: &SymbolTableMessage, path: &str) -> Result<()> {
        // Cache type 2 marks a soft link in an old-style group.
        if self
            .symbol_entries(table)?
            .iter()
            .any(|e| e.cache_type == 2)
        {
            return Err(H5Error(format!(
                "group `{path}` holds a soft link, which Keras files never contain"
            )));
        }
        Ok(())
    }

    /// The entries of an old-style (symbol table) group.
    fn symbol_entries(
        &self,
        table: &SymbolTableMessage,
    ) -> Result<Vec<hdf5_reader::symbol_table::SymbolTableEntry>> {
        let storage = self.h5.storage();
        let superblock = self.h5.superblock();
        let (offset_size, length_size) = (superblock.offset_size, superblock.length_size);
        let leaves = hdf5_reader::btree_v1::collect_btree_v1_leaves_storage(
            storage,
            table.btree_address,
            offset_size,
            length_size,
            None,
            &[],
            None,
        )?;
        let entry_len = 2 * usize::from(offset_size) + 4 + 4 + 16;
        let mut entries = Vec::new();
        for (_, node_address) in leaves {
            let prefix = storage.read_range(node_address, 8)?;
            let count = u16::from_le_bytes([prefix.as_ref()[6], prefix.as_ref()[7]]);
            let node = storage.read_range(node_address, 8 + usize::from(count) * entry_len)?;
            let node =
                SymbolTableNode::parse(&mut Cursor::new(node.as_ref()), offset_size, length_size)?;
            entries.extend(node.entries);
        }
        Ok(entries)
    }

    /// The names of a group's members in the order they were created, where
    /// the file records it: an old-style group appends each new name to its
    /// name heap, so heap offsets rise in creation order (the listing itself
    /// is alphabetical). `None` for groups stored the newer way.
    pub fn creation_order(&self, group: &Group) -> Result<Option<Vec<String>>> {
        let header = self.h5.get_or_parse_header(group.inner.address())?;
        let Some(table) = header.messages.iter().find_map(|m| match m {
            HdfMessage::SymbolTable(t) => Some(t),
            _ => None,
        }) else {
            return Ok(None);
        };
        let storage = self.h5.storage();
        let superblock = self.h5.superblock();
        let heap = hdf5_reader::local_heap::LocalHeap::parse_at_storage(
            storage,
            table.heap_address,
            superblock.offset_size,
            superblock.length_size,
        )?;
        let mut entries = self.symbol_entries(table)?;
        entries.sort_by_key(|e| e.link_name_offset);
        let names = entries
            .iter()
            .map(|e| heap.get_string_storage(e.link_name_offset, storage))
            .collect::<hdf5_reader::error::Result<Vec<String>>>()?;
        Ok(Some(names))
    }

    /// Describes the dataset at an absolute path (`/model_weights/dense/dense/kernel:0`).
    pub fn dataset(&self, path: &str) -> Result<DatasetInfo> {
        let ds = self.h5.dataset(path)?;
        let shape = ds
            .shape()
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| H5Error(format!("dimension {d} too large"))))
            .collect::<Result<Vec<usize>>>()?;
        // Every later size computation multiplies these dimensions: refuse
        // a shape whose element count does not fit in 64 bits (only a
        // crafted file has one, often with a zero dimension hiding it).
        shape
            .iter()
            .filter(|&&d| d != 0)
            .try_fold(1u64, |n, &d| n.checked_mul(d as u64))
            .and_then(|n| n.checked_mul(16))
            .ok_or_else(|| H5Error(format!("dataset {path} has an impossible shape {shape:?}")))?;
        let element = element_of(ds.dtype());
        let dtype_attr = ds
            .attribute("dtype")
            .ok()
            .and_then(|a| a.read_string().ok());
        let byte_len = ds.raw_byte_len()? as u64;
        if byte_len > self.len && !matches!(element, Element::Other(_)) {
            // Guards allocation on crafted files: no dataset can hold more
            // bytes than the file it lives in (Keras never writes fill-only data).
            return Err(H5Error(format!(
                "dataset {path} claims {byte_len} bytes in a {}-byte file",
                self.len
            )));
        }
        let location = self.locate(&ds, path, byte_len)?;
        Ok(DatasetInfo {
            shape,
            element,
            location,
            dtype_attr,
        })
    }

    fn locate(&self, ds: &hdf5_reader::Dataset, path: &str, byte_len: u64) -> Result<Location> {
        if byte_len == 0 {
            return Ok(Location::Empty);
        }
        let header = self.h5.get_or_parse_header(ds.address())?;
        let mut contiguous = None;
        // Compact data lives in the object header, which the HDF5 crate
        // reads; only contiguous data is copied straight from the file.
        for message in &header.messages {
            match message {
                HdfMessage::ExternalFiles(_) => {
                    return Err(H5Error(format!(
                        "dataset {path} keeps its data in an external file, which is not read"
                    )))
                }
                HdfMessage::DataLayout(m) => {
                    if let DataLayout::Contiguous { address, size } = m.layout {
                        contiguous = Some((address, size));
                    }
                }
                _ => {}
            }
        }
        let swap = swap_size(ds.dtype());
        match contiguous {
            Some((address, size)) if swap.is_none() && address != u64::MAX => {
                if size < byte_len {
                    return Err(H5Error(format!(
                        "dataset {path} stores {size} bytes but its shape needs {byte_len}"
                    )));
                }
                let end = address.checked_add(byte_len);
                if end.is_none_or(|end| end > self.len) {
                    return Err(H5Error(format!(
                        "dataset {path} lies beyond the end of the file (truncated?)"
                    )));
                }
                Ok(Location::Contiguous {
                    offset: address,
                    len: byte_len,
                })
            }
            _ => Ok(Location::Decoded {
                path: path.to_string(),
                swap_bytes: swap,
            }),
        }
    }

    /// Copies a dataset's bytes (little-endian, C order) into `out`, through
    /// `buf` for contiguous data. Calls `progress` with each number of bytes written.
    pub fn copy_data(
        &self,
        location: &Location,
        out: &mut dyn Write,
        buf: &mut [u8],
        progress: &mut dyn FnMut(u64),
    ) -> std::io::Result<()> {
        match location {
            Location::Empty => Ok(()),
            Location::Contiguous { offset, len } => {
                let mut done = 0u64;
                while done < *len {
                    let n = (*len - done).min(buf.len() as u64) as usize;
                    self.bytes.read_exact_at(&mut buf[..n], offset + done)?;
                    out.write_all(&buf[..n])?;
                    done += n as u64;
                    progress(n as u64);
                }
                Ok(())
            }
            Location::Decoded { path, swap_bytes } => {
                let bytes = self.decoded_bytes(path, *swap_bytes).map_err(|e| {
                    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
                })?;
                out.write_all(&bytes)?;
                progress(bytes.len() as u64);
                Ok(())
            }
        }
    }

    /// Copies a contiguous dataset straight into `out` at its current
    /// position, file to file, so the kernel can move the bytes without
    /// passing them through user space (`copy_file_range` on Linux).
    /// `false` when the data is not a contiguous run in a file on disk.
    pub fn copy_contiguous_to(&self, location: &Location, out: &FsFile) -> std::io::Result<bool> {
        use std::io::{Read, Seek, SeekFrom};
        let (Location::Contiguous { offset, len }, Bytes::Window { file, base }) =
            (location, &self.bytes)
        else {
            return Ok(false);
        };
        // Nothing else reads this handle by position: all other reads are
        // positional (pread), so moving its cursor is safe.
        let mut input: &FsFile = file;
        input.seek(SeekFrom::Start(base + offset))?;
        let mut out = out;
        let copied = std::io::copy(&mut input.take(*len), &mut out)?;
        if copied != *len {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(true)
    }

    /// Fills `buf` with the bytes of a contiguous dataset from `offset`
    /// within it; `false` for data stored otherwise.
    pub fn read_contiguous_at(
        &self,
        location: &Location,
        offset: u64,
        buf: &mut [u8],
    ) -> std::io::Result<bool> {
        match location {
            Location::Contiguous { offset: start, len } => {
                if offset + buf.len() as u64 > *len {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                self.bytes.read_exact_at(buf, start + offset)?;
                Ok(true)
            }
            Location::Empty => Ok(buf.is_empty()),
            Location::Decoded { .. } => Ok(false),
        }
    }

    fn decoded_bytes(&self, path: &str, swap_bytes: Option<usize>) -> Result<Vec<u8>> {
        let mut bytes = self.h5.dataset(path)?.read_raw_bytes()?;
        if let Some(size) = swap_bytes {
            for element in bytes.chunks_exact_mut(size) {
                element.reverse();
            }
        }
        Ok(bytes)
    }
}

fn element_of(dtype: &Datatype) -> Element {
    match dtype {
        Datatype::FloatingPoint { size, .. } => Element::Float { size: *size },
        Datatype::FixedPoint { size, signed, .. } => Element::Int {
            size: *size,
            signed: *signed,
        },
        // h5py stores numpy bool as an enum of int8 with members FALSE and TRUE.
        Datatype::Enum { base, members }
            if matches!(**base, Datatype::FixedPoint { size: 1, .. })
                && members.len() == 2
                && members.iter().any(|m| m.name == "TRUE") =>
        {
            Element::Bool
        }
        Datatype::Opaque { size, tag } => Element::Opaque {
            size: *size,
            tag: tag.clone(),
        },
        other => Element::Other(describe(other)),
    }
}

fn describe(dtype: &Datatype) -> String {
    match dtype {
        Datatype::String { .. } | Datatype::VarLen { .. } => "string".into(),
        Datatype::Compound { .. } => "compound (struct)".into(),
        Datatype::Array { .. } => "array".into(),
        Datatype::Enum { .. } => "enum".into(),
        Datatype::Reference { .. } => "object reference".into(),
        Datatype::Bitfield { .. } => "bitfield".into(),
        other => format!("{other:?}"),
    }
}

/// Element size to byte-swap when the data is big-endian.
fn swap_size(dtype: &Datatype) -> Option<usize> {
    match dtype {
        Datatype::FloatingPoint {
            size,
            byte_order: ByteOrder::BigEndian,
        }
        | Datatype::FixedPoint {
            size,
            byte_order: ByteOrder::BigEndian,
            ..
        } if *size > 1 => Some(*size as usize),
        _ => None,
    }
}

impl Group {
    /// The object's address in the file: it grows in the order h5py
    /// created the objects, which for Keras is the order it saved them.
    pub fn address(&self) -> u64 {
        self.inner.address()
    }

    /// Names of the child groups and datasets, as stored (alphabetical).
    pub fn member_names(&self) -> Result<(Vec<String>, Vec<String>)> {
        Ok(self.inner.member_names()?)
    }

    pub fn group(&self, name: &str) -> Result<Group> {
        Ok(Group {
            inner: self.inner.group(name)?,
        })
    }

    pub fn has_group(&self, name: &str) -> bool {
        self.member_names()
            .map(|(groups, _)| groups.iter().any(|g| g == name))
            .unwrap_or(false)
    }

    pub fn attribute_names(&self) -> Result<Vec<String>> {
        Ok(self
            .inner
            .attributes()?
            .into_iter()
            .map(|a| a.name)
            .collect())
    }

    /// A string attribute, scalar or one-element array, if present.
    pub fn string_attr(&self, name: &str) -> Result<Option<String>> {
        match self.string_list_attr(name)? {
            None => Ok(None),
            Some(mut list) if list.len() == 1 => Ok(list.pop()),
            Some(list) => Err(H5Error(format!(
                "attribute `{name}` holds {} strings where one was expected",
                list.len()
            ))),
        }
    }

    /// An integer attribute (scalar), if present.
    pub fn integer_attr(&self, name: &str) -> Option<u64> {
        let attrs = self.inner.attributes().ok()?;
        let attr = attrs.into_iter().find(|a| a.name == name)?;
        attr.read_as_f64()
            .ok()
            .filter(|v| v.fract() == 0.0 && *v >= 0.0)
            .map(|v| v as u64)
    }

    /// A list-of-strings attribute in any of the encodings Keras has used:
    /// variable-length strings, fixed-length null-padded bytes, or an empty
    /// float64 array for an empty list.
    pub fn string_list_attr(&self, name: &str) -> Result<Option<Vec<String>>> {
        let attrs = self.inner.attributes()?;
        let Some(attr) = attrs.into_iter().find(|a| a.name == name) else {
            return Ok(None);
        };
        let element_count: u64 = attr.shape.iter().product();
        if let Some(strings) = &attr.decoded_strings {
            return Ok(Some(strings.clone()));
        }
        match &attr.datatype {
            Datatype::String {
                size: StringSize::Fixed(_),
                ..
            } => Ok(Some(attr.read_strings()?)),
            Datatype::VarLen { .. } => {
                if attr.shape.is_empty() {
                    Ok(Some(vec![attr.read_string()?]))
                } else {
                    Ok(Some(attr.read_strings()?))
                }
            }
            _ if element_count == 0 => Ok(Some(Vec::new())),
            other => Err(H5Error(format!(
                "attribute `{name}` is {} where strings were expected",
                describe(other)
            ))),
        }
    }
}
