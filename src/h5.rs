//! The only module that talks to the HDF5 crate.
//!
//! Everything above this module sees HDF5 as groups with string attributes and
//! datasets with a shape, an element type and a place where their bytes live.
//! Swapping the backend means rewriting this file and nothing else.

use std::fs::File as FsFile;

use crate::pread::read_exact_at;
use std::io::Write;
use std::sync::Arc;

use hdf5_reader::messages::layout::DataLayout;
use hdf5_reader::messages::link::LinkTarget;
use hdf5_reader::messages::symbol_table_msg::SymbolTableMessage;
use hdf5_reader::messages::HdfMessage;
use hdf5_reader::object_header::ObjectHeader;
use hdf5_reader::{ByteOrder, Datatype, Hdf5File, StringSize};

use block_cache::BlockCache;
pub use path_list::PathList;

/// Size of the buffer used to copy contiguous dataset bytes: the memory a
/// conversion needs does not grow with the size of a tensor.
pub const COPY_BUFFER_BYTES: usize = 4 << 20;

/// Deepest group nesting we follow; Keras files nest a few levels.
pub const MAX_GROUP_DEPTH: usize = 64;

/// HDF5 signature at offset 0 (HDF5 also allows it at 512, 1024, ...; Keras
/// files never use a user block).
pub const SIGNATURE: &[u8; 8] = b"\x89HDF\r\n\x1a\n";

/// A chunk may hold at most twice its dataset's bytes plus this (h5py's
/// automatic chunks are at most 1 MiB): a tiny dataset cannot declare a
/// huge chunk to decompress. No flag lifts it.
pub const CHUNK_SLACK_BYTES: u64 = 1 << 20;

/// Decompression may produce at most this multiple of the file's size,
/// plus [`DECODED_SLACK_BYTES`], over a whole run (each chunk counted once
/// per filter it goes through); `--allow-expansion` lifts it.
pub const DECODED_MULTIPLE: u64 = 32;
pub const DECODED_SLACK_BYTES: u64 = 16 << 20;

/// Datasets never written (their fill value) may add at most this
/// multiple of the file's size to the output; `--allow-fill` lifts it.
pub const FILL_MULTIPLE: u64 = 1;

/// Which of the limits on a file's cost the user lifted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Decode past [`DECODED_MULTIPLE`] x the file's size.
    pub allow_expansion: bool,
    /// Write fill values past [`FILL_MULTIPLE`] x the file's size.
    pub allow_fill: bool,
}

/// An I/O error that is a refusal (see [`refusal`]).
#[derive(Debug)]
struct Refusal(String);

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refusal {}

/// The limit an I/O error from reading data stands for, if it is one: the
/// caller reports it as `refused:`, not as an I/O failure.
pub fn refusal(e: &std::io::Error) -> Option<String> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<Refusal>())
        .map(|r| r.0.clone())
}

/// What went wrong inside the HDF5 layer, as text for a person, and
/// whether it is a refusal: a limit on the work a file may cost (see
/// [`Limits`]), which callers report as `refused:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct H5Error(pub String, pub(crate) bool);

impl H5Error {
    pub fn new(text: impl Into<String>) -> H5Error {
        H5Error(text.into(), false)
    }

    /// A limit the file would exceed.
    pub fn refused(text: impl Into<String>) -> H5Error {
        H5Error(text.into(), true)
    }

    pub fn is_refusal(&self) -> bool {
        self.1
    }

    /// The same error, its text prefixed with where it happened.
    pub fn within(self, context: impl std::fmt::Display) -> H5Error {
        H5Error(format!("{context}: {}", self.0), self.1)
    }

    /// The error as an [`ErrorKind`](crate::error::ErrorKind): `Unsafe` for
    /// a refusal, else what `otherwise` makes of the text.
    pub fn kind(
        self,
        otherwise: impl FnOnce(String) -> crate::error::ErrorKind,
    ) -> crate::error::ErrorKind {
        if self.1 {
            crate::error::ErrorKind::Unsafe(self.0)
        } else {
            otherwise(self.0)
        }
    }
}

impl std::fmt::Display for H5Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<hdf5_reader::error::Error> for H5Error {
    fn from(e: hdf5_reader::error::Error) -> Self {
        let text = e.to_string();
        if matches!(e, hdf5_reader::error::Error::ResourceLimit(_)) {
            return H5Error::refused(text);
        }
        if text.contains("layout class 3") {
            // Layout class 3 is a virtual dataset: data gathered from other files.
            return H5Error::new(format!(
                "{text} (a virtual dataset, which Keras files never contain)"
            ));
        }
        H5Error::new(text)
    }
}

impl From<std::io::Error> for H5Error {
    fn from(e: std::io::Error) -> Self {
        H5Error::new(e.to_string())
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
    datasets: std::sync::OnceLock<PathList>,
    limits: Limits,
    shared: Arc<Shared>,
    /// The root's symbol table, read once: the root's header also holds
    /// the layer name lists, megabytes for 100,000 layers.
    root_table: std::sync::OnceLock<Option<SymbolTableMessage>>,
    /// The group [`File::child_address`] last looked in, with its members
    /// if it is a small old-style group: a layer's weights share one.
    last_group: std::sync::Mutex<Option<Arc<Parent>>>,
    /// Bytes decompression has produced so far, and fill bytes made.
    decoded: std::sync::atomic::AtomicU64,
    filled: std::sync::atomic::AtomicU64,
}

/// What a file's groups share: small caches of our own, which stay small
/// whatever the number of objects.
#[derive(Default)]
struct Shared {
    /// Member name -> object header address, for big old-style groups.
    name_index: std::sync::Mutex<
        std::collections::HashMap<u64, Arc<std::collections::HashMap<String, u64>>>,
    >,
    heaps: uncached::HeapMemo,
}

/// Where an HDF5 file's bytes are: a file on disk, or a window of one (a
/// member stored uncompressed inside a `.keras` zip), or memory.
#[derive(Clone)]
enum Bytes {
    /// A window of a file, with the cache the reader's small reads go
    /// through (the crate reads the same one).
    Window {
        file: Arc<FsFile>,
        base: u64,
        cache: Arc<BlockCache>,
    },
    Memory(Arc<[u8]>),
}

/// Reads of at most this many bytes go through the block cache: a model of
/// many small layers reads its weights a few bytes each, in name order,
/// which is not the order they lie in the file.
const CACHED_READ_MAX: usize = 4 << 10;

impl Bytes {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        match self {
            Bytes::Window { cache, .. } if buf.len() <= CACHED_READ_MAX => {
                cache.read_into(buf, offset)
            }
            Bytes::Window { file, base, .. } => read_exact_at(file, buf, base + offset),
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

impl std::fmt::Debug for File {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("h5::File").field("len", &self.len).finish()
    }
}

/// A group in an open file. An old-style group (h5py's default) is read
/// from its symbol table directly (see [`uncached`]); anything else goes
/// through the HDF5 crate's handle, opened on first need.
#[derive(Clone)]
pub struct Group {
    h5: Hdf5File,
    shared: Arc<Shared>,
    address: u64,
    /// Absolute path, `/` for the root: how the crate's handle is opened.
    path: String,
    table: Option<SymbolTableMessage>,
    /// The header read when the group was found, for its attributes.
    header: Option<Arc<ObjectHeader>>,
    inner: std::sync::OnceLock<hdf5_reader::group::Group>,
}

/// What [`File::refuse_links`] has seen so far: every group's address,
/// and the same addresses in the order they were reached, so that a group
/// walked again by the crate's route can forget what was seen below it.
#[derive(Default)]
struct Walk {
    seen: std::collections::HashSet<u64>,
    reached: Vec<u64>,
}

/// Groups with more members than this are looked up through an index of
/// their names; smaller ones are scanned.
const SMALL_GROUP_MEMBERS: usize = 64;

/// A group [`File::child_address`] looks in.
struct Parent {
    path: String,
    address: u64,
    table: Option<SymbolTableMessage>,
    /// The members of a small old-style group.
    members: Option<Vec<(String, u64)>>,
}

/// The symbol table of the group at `address`, if it is an old-style
/// group whose header parses here.
fn table_of(h5: &Hdf5File, address: u64) -> Option<SymbolTableMessage> {
    uncached::header(h5, address)
        .ok()
        .and_then(|header| uncached::old_style_table(&header))
}

/// Whether an old-style group's B-tree is one leaf pointing at one symbol
/// node (at most 32 members with HDF5's defaults): listing it costs what
/// one lookup does.
fn small_group(h5: &Hdf5File, table: &SymbolTableMessage) -> bool {
    // "TREE", node type, level, entries used.
    h5.storage()
        .read_range(table.btree_address, 8)
        .ok()
        .is_some_and(|head| {
            let head = head.as_ref();
            head.len() == 8 && head[5] == 0 && u16::from_le_bytes([head[6], head[7]]) <= 1
        })
}

/// A member of an old-style group by name: big groups are indexed
/// once (looking each member up in turn stays linear), small ones
/// scanned.
fn lookup(
    h5: &Hdf5File,
    shared: &Shared,
    group: u64,
    table: &SymbolTableMessage,
    name: &str,
) -> Result<Option<u64>> {
    if let Some(index) = shared
        .name_index
        .lock()
        .ok()
        .and_then(|m| m.get(&group).cloned())
    {
        return Ok(index.get(name).copied());
    }
    let entries = uncached::symbol_entries(h5, table)?;
    let data = uncached::name_heap(h5, table)?;
    let name_at = |offset: u64| -> Option<&[u8]> {
        let start = usize::try_from(offset).ok().filter(|&s| s < data.len())?;
        let len = data[start..].iter().position(|&b| b == 0)?;
        Some(&data[start..start + len])
    };
    if entries.len() <= SMALL_GROUP_MEMBERS {
        return Ok(entries
            .iter()
            .find(|e| name_at(e.link_name_offset) == Some(name.as_bytes()))
            .map(|e| e.object_header_address));
    }
    let mut index = std::collections::HashMap::with_capacity(entries.len());
    for e in &entries {
        if let Some(n) = name_at(e.link_name_offset) {
            index
                .entry(String::from_utf8_lossy(n).into_owned())
                .or_insert(e.object_header_address);
        }
    }
    let found = index.get(name).copied();
    if let Ok(mut map) = shared.name_index.lock() {
        map.insert(group, Arc::new(index));
    }
    Ok(found)
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
    /// A number or bool whose bits are not laid out the standard way (a
    /// float of precision 16 in 4 bytes, an integer at a bit offset, a bool
    /// enum with other values): copying its bytes would give wrong values.
    /// The text says what is non-standard: `float layout (precision 16 in 4 bytes)`.
    NonStandard(String),
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
    /// Boxed: Keras stores nearly every weight contiguously, and every
    /// weight and planned tensor holds a location.
    Decoded(Box<Decoded>),
}

/// Where a dataset stored other than contiguously is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub path: String,
    pub swap_bytes: Option<usize>,
    /// The dataset's object header: two names with one address are two
    /// links to one dataset.
    pub address: u64,
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
    #[cfg(test)]
    pub fn open(path: &std::path::Path) -> Result<File> {
        File::from_fs_file(FsFile::open(path)?)
    }

    /// Reads the HDF5 file behind an open handle.
    pub fn from_fs_file(file: FsFile) -> Result<File> {
        let len = file.metadata()?.len();
        File::open_window(Arc::new(file), 0, len)
    }

    /// The identity of the file on disk this is read from (`None` for one
    /// held in memory).
    pub fn file_id(&self) -> Option<crate::files::FileId> {
        match &self.bytes {
            Bytes::Window { file, .. } => crate::files::FileId::of_file(file),
            Bytes::Memory(_) => None,
        }
    }

    /// Opens the HDF5 file stored in `len` bytes of `file` from `base`.
    pub fn open_window(file: Arc<FsFile>, base: u64, len: u64) -> Result<File> {
        // Metadata is read in many small pieces (about ten per dataset);
        // the block cache turns them into few reads.
        let cache = Arc::new(BlockCache::new(file.clone(), base, len));
        let h5 = Hdf5File::from_storage(cache.clone())?;
        File::checked(h5, Bytes::Window { file, base, cache }, len)
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
            return Err(H5Error::new(format!(
                "it has {len} bytes but its HDF5 header says {claimed} (cut short?)"
            )));
        }
        Ok(File {
            h5,
            bytes,
            len,
            datasets: std::sync::OnceLock::new(),
            limits: Limits::default(),
            shared: Default::default(),
            root_table: Default::default(),
            last_group: Default::default(),
            decoded: Default::default(),
            filled: Default::default(),
        })
    }

    /// Lifts limits the user asked to lift.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Counts `bytes` more decoded bytes against the file's budget.
    fn charge_decoded(&self, bytes: u64, path: &str) -> Result<()> {
        use std::sync::atomic::Ordering;
        let total = self.decoded.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let budget = DECODED_MULTIPLE
            .saturating_mul(self.len)
            .saturating_add(DECODED_SLACK_BYTES);
        if total > budget && !self.limits.allow_expansion {
            return Err(H5Error::refused(format!(
                "decompressing dataset {path} takes the file's decoded data past {budget} bytes \
                 ({DECODED_MULTIPLE} x its {} bytes + {} MiB); pass --allow-expansion if the \
                 file is trusted",
                self.len,
                DECODED_SLACK_BYTES >> 20
            )));
        }
        Ok(())
    }

    /// Counts `bytes` more fill-value bytes against the file's budget.
    fn charge_fill(&self, bytes: u64, path: &str) -> Result<()> {
        use std::sync::atomic::Ordering;
        let total = self.filled.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let budget = FILL_MULTIPLE.saturating_mul(self.len);
        if total > budget && !self.limits.allow_fill {
            return Err(H5Error::refused(format!(
                "dataset {path} was never written: its fill value would take the file's \
                 never-written data past {budget} bytes ({FILL_MULTIPLE} x its size); \
                 pass --allow-fill to write it"
            )));
        }
        Ok(())
    }

    /// Whether an address is HDF5's "undefined" (all bits set).
    fn undefined(&self, address: u64) -> bool {
        let bits = 8 * u32::from(self.h5.superblock().offset_size);
        address == u64::MAX || (bits < 64 && address == (1u64 << bits) - 1)
    }

    pub fn root(&self) -> Result<Group> {
        let root = self.h5.root_group()?;
        let table = self
            .root_table
            .get_or_init(|| table_of(&self.h5, root.address()))
            .clone();
        let inner = std::sync::OnceLock::new();
        let address = root.address();
        let _ = inner.set(root);
        Ok(Group {
            h5: self.h5.clone(),
            shared: self.shared.clone(),
            address,
            path: "/".into(),
            table,
            header: None,
            inner,
        })
    }

    /// The group at an absolute path, looked up member by member.
    fn group_at(&self, path: &str) -> Result<Group> {
        let mut group = self.root()?;
        for name in path.split('/').filter(|p| !p.is_empty()) {
            group = group.group(name)?;
        }
        Ok(group)
    }

    /// Walks every group and refuses soft and external links and objects
    /// reached twice (see [`File::check_links`]); notes the path of every
    /// dataset on the way, for [`File::dataset_paths`].
    pub fn refuse_links(&self) -> Result<()> {
        let mut datasets = PathList::default();
        self.refuse_links_below(&self.root()?, "", 0, &mut Walk::default(), &mut datasets)?;
        let _ = self.datasets.set(datasets);
        Ok(())
    }

    /// The absolute path of every dataset in the file (walking the file
    /// first if [`File::refuse_links`] has not).
    pub fn dataset_paths(&self) -> Result<&PathList> {
        if self.datasets.get().is_none() {
            self.refuse_links()?;
        }
        static NONE: PathList = PathList::new();
        Ok(self.datasets.get().unwrap_or(&NONE))
    }

    /// Drops the name indexes of big groups (100,000 names for a model of
    /// 100,000 layers) once the reader is done looking names up; a later
    /// lookup builds them again.
    pub fn forget_name_indexes(&self) {
        if let Ok(mut map) = self.shared.name_index.lock() {
            *map = Default::default();
        }
    }

    /// Empties the block cache once the file's structure is read: 8 MiB of
    /// metadata the writer does not read again (it refills the cache with
    /// the small weights it reads through it).
    pub fn forget_cached_blocks(&self) {
        if let Bytes::Window { cache, .. } = &self.bytes {
            cache.forget();
        }
    }

    /// Drops the list of dataset paths; [`File::dataset_paths`] walks the
    /// file again if asked.
    pub fn forget_dataset_paths(&mut self) {
        self.datasets.take();
    }

    /// The address of a dataset's object header: two paths with the same
    /// address are two links to one dataset.
    pub fn dataset_address(&self, path: &str) -> Result<u64> {
        Ok(self.open_dataset(path)?.address())
    }

    fn refuse_links_below(
        &self,
        group: &Group,
        path: &str,
        depth: usize,
        walk: &mut Walk,
        datasets: &mut PathList,
    ) -> Result<()> {
        crate::cancel::checkpoint()?;
        if depth > MAX_GROUP_DEPTH {
            // A limit, not damage: each level is a step of recursion, and a
            // crafted file could nest deep enough to overflow the stack.
            return Err(H5Error::refused(format!(
                "groups nest deeper than {MAX_GROUP_DEPTH} levels at `{path}`"
            )));
        }
        if !walk.seen.insert(group.address()) {
            return Err(H5Error::new(format!(
                "`{path}` is reached twice (a hard link), which Keras files never contain"
            )));
        }
        walk.reached.push(group.address());
        let (reached, listed) = (walk.reached.len(), datasets.mark());
        if self.walk_old_style(group, path, depth, walk, datasets)? {
            return Ok(());
        }
        // A member this walk cannot read: forget what it saw below this
        // group and ask the crate, whose answers and errors are the ones it
        // always gave.
        for address in walk.reached.drain(reached..) {
            walk.seen.remove(&address);
        }
        datasets.truncate_to(listed);
        self.check_links(group, path)?;
        let (groups, members) = group.member_names()?;
        for name in &members {
            datasets.push_joined(path, name);
        }
        for name in groups {
            let child = group.group(&name)?;
            let child_path = format!("{path}/{name}");
            self.refuse_links_below(&child, &child_path, depth + 1, walk, datasets)?;
        }
        Ok(())
    }

    /// Walks an old-style group (h5py's default), which can hold no soft
    /// link once its member list reads and no other kind of link at all;
    /// `false` where [`File::refuse_links_below`] asks the crate instead.
    /// Members are visited in the order they lie in the file (the order
    /// h5py wrote them), each header read once, and a child group is walked
    /// as soon as it is met: the file's metadata is read front to back, in
    /// one sweep, instead of once per member in alphabetical order and
    /// again per child group. Datasets are still listed in name order.
    fn walk_old_style(
        &self,
        group: &Group,
        path: &str,
        depth: usize,
        walk: &mut Walk,
        datasets: &mut PathList,
    ) -> Result<bool> {
        let Some(table) = group.table.as_ref() else {
            return Ok(false);
        };
        let Ok(Some(members)) = uncached::members(&self.h5, table) else {
            return Ok(false);
        };
        let mut by_address: Vec<usize> = (0..members.len()).collect();
        by_address.sort_by_key(|&i| members[i].1);
        // Child groups list their datasets as they are walked, in file
        // order; the list is put in name order below.
        let walked_from = datasets.len();
        let mut is_dataset = vec![false; members.len()];
        let mut below: Vec<Option<std::ops::Range<usize>>> = vec![None; members.len()];
        for i in by_address {
            let (name, address) = &members[i];
            let Ok(header) = uncached::header(&self.h5, *address) else {
                return Ok(false);
            };
            match uncached::classify(&header) {
                uncached::Kind::Group => {
                    let child = group.child(name, *address, header);
                    let child_path = format!("{path}/{name}");
                    let start = datasets.len() - walked_from;
                    self.refuse_links_below(&child, &child_path, depth + 1, walk, datasets)?;
                    below[i] = Some(start..datasets.len() - walked_from);
                }
                uncached::Kind::Dataset => is_dataset[i] = true,
                uncached::Kind::Other => {}
            }
        }
        // This group's datasets, then each child group's, in name order.
        let own_from = datasets.len() - walked_from;
        for (i, (name, _)) in members.iter().enumerate() {
            if is_dataset[i] {
                datasets.push_joined(path, name);
            }
        }
        let own = own_from..datasets.len() - walked_from;
        datasets.reorder_tail(
            walked_from,
            std::iter::once(own).chain(below.into_iter().flatten()),
        );
        Ok(true)
    }

    /// Refuses soft and external links in a group: Keras never writes them,
    /// and Keras's own loader rejects files that have them, since they can
    /// make one name read data that belongs somewhere else.
    pub fn check_links(&self, group: &Group, path: &str) -> Result<()> {
        let header = uncached::header(&self.h5, group.address())?;
        for message in &header.messages {
            match message {
                HdfMessage::Link(link) => match &link.target {
                    LinkTarget::Hard { .. } => {}
                    LinkTarget::Soft { path: target } => {
                        return Err(H5Error::new(format!(
                            "`{path}/{}` is a soft link (to `{target}`), which Keras files never contain",
                            link.name
                        )))
                    }
                    LinkTarget::External { filename, .. } => {
                        return Err(H5Error::new(format!(
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
        if uncached::symbol_entries(&self.h5, table)?
            .iter()
            .any(|e| e.cache_type == 2)
        {
            return Err(H5Error::new(format!(
                "group `{path}` holds a soft link, which Keras files never contain"
            )));
        }
        Ok(())
    }

    /// The names of a group's members in the order they were created, where
    /// the file records it: an old-style group appends each new name to its
    /// name heap, so heap offsets rise in creation order (the listing itself
    /// is alphabetical). `None` for groups stored the newer way.
    pub fn creation_order(&self, group: &Group) -> Result<Option<Vec<String>>> {
        let header = uncached::header(&self.h5, group.address())?;
        let Some(table) = header.messages.iter().find_map(|m| match m {
            HdfMessage::SymbolTable(t) => Some(t),
            _ => None,
        }) else {
            return Ok(None);
        };
        let mut entries = uncached::symbol_entries(&self.h5, table)?;
        entries.sort_by_key(|e| e.link_name_offset);
        // The names' bytes, read once (the crate's own lookup reads from a
        // name to the end of the heap, for every name).
        let data = uncached::name_heap(&self.h5, table)?;
        let names = entries
            .iter()
            .map(|e| {
                let start = usize::try_from(e.link_name_offset)
                    .ok()
                    .filter(|&s| s < data.len())
                    .ok_or_else(|| H5Error::new("a group member's name lies outside its heap"))?;
                let len = data[start..]
                    .iter()
                    .position(|&b| b == 0)
                    .ok_or_else(|| H5Error::new("a group member's name is not terminated"))?;
                Ok(String::from_utf8_lossy(&data[start..start + len]).into_owned())
            })
            .collect::<Result<Vec<String>>>()?;
        Ok(Some(names))
    }

    /// The HDF5 crate's handle on the dataset at `path`, opened from its
    /// group: the crate's own path lookup keeps a second copy of every
    /// dataset's description, for good (a model of 100,000 weights).
    fn open_dataset(&self, path: &str) -> Result<hdf5_reader::Dataset> {
        let (parent, name) = path
            .trim_end_matches('/')
            .rsplit_once('/')
            .unwrap_or(("", path));
        Ok(self.h5.group(parent)?.dataset(name)?)
    }

    /// Describes the dataset at an absolute path (`/model_weights/dense/dense/kernel:0`).
    pub fn dataset(&self, path: &str) -> Result<DatasetInfo> {
        if let Some(meta) = self.header_meta(path)? {
            return self.describe(path, meta);
        }
        let ds = self.open_dataset(path)?;
        let datatype = ds.dtype().clone();
        let raw_datatype = match numeric(&element_of(&datatype)) {
            true => Some(self.datatype_message(&ds)?),
            false => None,
        };
        let meta = Meta {
            header: self.h5.get_or_parse_header(ds.address())?,
            address: ds.address(),
            dims: ds.shape().to_vec(),
            datatype,
            raw_datatype,
            element_size: ds.raw_element_size()? as u64,
            byte_len: ds.raw_byte_len()? as u64,
            chunk: ds.chunks(),
            dtype_attr: ds
                .attribute("dtype")
                .ok()
                .and_then(|a| a.read_string().ok()),
        };
        self.describe(path, meta)
    }

    /// What a dataset's object header says, read from the header itself:
    /// the crate's dataset handle would keep its own copy of it (2 KB or
    /// so) for the life of the file, a lot for 100,000 weights. `None`
    /// where this does not follow the header (a dense group, a `dtype`
    /// attribute, a shared or unusual datatype): the crate's handle then.
    fn header_meta(&self, path: &str) -> Result<Option<Meta>> {
        // Anything amiss is left to the crate's handle, whose errors say
        // what is wrong the way they always have.
        let Ok(Some(address)) = self.child_address(path) else {
            return Ok(None);
        };
        let Ok(header) = uncached::header(&self.h5, address) else {
            return Ok(None);
        };
        let (mut space, mut datatype, mut chunk) = (None, None, None);
        for message in &header.messages {
            match message {
                HdfMessage::Dataspace(d) => space = Some(d),
                HdfMessage::Datatype(d) => datatype = Some(&d.datatype),
                HdfMessage::DataLayout(m) => {
                    if let DataLayout::Chunked { dims, .. } = &m.layout {
                        chunk = Some(dims.clone());
                    }
                }
                HdfMessage::Attribute(a) if a.name == "dtype" => return Ok(None),
                HdfMessage::AttributeInfo(_) => return Ok(None),
                _ => {}
            }
        }
        let (Some(space), Some(datatype)) = (space, datatype) else {
            return Ok(None);
        };
        let Some(element_size) = type_size(datatype) else {
            return Ok(None);
        };
        let raw_datatype = match numeric(&element_of(datatype)) {
            true => match self.find_datatype_message(address) {
                Some(raw) => Some(raw),
                None => return Ok(None),
            },
            false => None,
        };
        let elements = space
            .num_elements()
            .map_err(|e| H5Error::new(format!("dataset {path}: {e}")))?;
        let byte_len = elements.checked_mul(element_size).ok_or_else(|| {
            H5Error::new(format!("dataset {path} has more bytes than 64 bits count"))
        })?;
        Ok(Some(Meta {
            address,
            dims: space.dims.clone(),
            datatype: datatype.clone(),
            raw_datatype,
            element_size,
            byte_len,
            chunk,
            dtype_attr: None,
            header: header.clone(),
        }))
    }

    /// Makes `group` the one [`File::child_address`] looks in next.
    fn remember(&self, group: &Group) -> Arc<Parent> {
        // A small group's members are listed once for all its weights; a
        // big one has its index (see `lookup`).
        let members = group
            .table
            .as_ref()
            .filter(|t| small_group(&self.h5, t))
            .and_then(|t| uncached::members(&self.h5, t).ok().flatten());
        let parent = Arc::new(Parent {
            path: match group.path.as_str() {
                "/" => String::new(),
                path => path.to_string(),
            },
            address: group.address,
            table: group.table.clone(),
            members,
        });
        if let Ok(mut last) = self.last_group.lock() {
            *last = Some(parent.clone());
        }
        parent
    }

    /// [`File::dataset`] of `path`, the dataset at `relative` below
    /// `group` (a layer's `dense/kernel:0`): the groups on the way are
    /// looked up from `group`, which the caller has, not from the root.
    pub fn dataset_in(&self, group: &Group, relative: &str, path: &str) -> Result<DatasetInfo> {
        let parent = path
            .trim_end_matches('/')
            .rsplit_once('/')
            .map_or("", |(p, _)| p);
        let known = self
            .last_group
            .lock()
            .ok()
            .and_then(|last| last.clone())
            .is_some_and(|last| last.path == parent);
        if !known && group.child_path(relative) == path {
            let mut at: Option<Group> = None;
            let below = relative.rsplit_once('/').map_or("", |(b, _)| b);
            let found = below
                .split('/')
                .filter(|p| !p.is_empty())
                .try_for_each(|part| {
                    at = Some(at.as_ref().unwrap_or(group).group(part)?);
                    Ok::<(), H5Error>(())
                });
            let at = at.as_ref().unwrap_or(group);
            // Anything amiss, and the lookup from the root says what.
            if found.is_ok() && (at.path == parent || (at.path == "/" && parent.is_empty())) {
                self.remember(at);
            }
        }
        self.dataset(path)
    }

    /// The object header address of the member at `path`, where its group
    /// lists members the way this reads (symbol tables, links in the
    /// header); `None` otherwise.
    fn child_address(&self, path: &str) -> Result<Option<u64>> {
        let (parent, name) = path
            .trim_end_matches('/')
            .rsplit_once('/')
            .unwrap_or(("", path));
        let remembered = self
            .last_group
            .lock()
            .ok()
            .and_then(|last| last.clone())
            .filter(|last| last.path == parent);
        let group = match remembered {
            Some(group) => group,
            None => self.remember(&self.group_at(parent)?),
        };
        if let Some(members) = &group.members {
            return Ok(members
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, address)| *address));
        }
        let address = group.address;
        if let Some(table) = &group.table {
            return lookup(&self.h5, &self.shared, address, table, name);
        }
        let header = uncached::header(&self.h5, address)?;
        for message in &header.messages {
            match message {
                HdfMessage::SymbolTable(table) => {
                    return lookup(&self.h5, &self.shared, address, table, name)
                }
                HdfMessage::Link(link) if link.name == name => {
                    return Ok(match link.target {
                        LinkTarget::Hard { address } => Some(address),
                        _ => None,
                    })
                }
                _ => {}
            }
        }
        Ok(None)
    }

    /// A dataset's description from what its header says.
    fn describe(&self, path: &str, meta: Meta) -> Result<DatasetInfo> {
        let shape = meta
            .dims
            .iter()
            .map(|&d| {
                usize::try_from(d).map_err(|_| H5Error::new(format!("dimension {d} too large")))
            })
            .collect::<Result<Vec<usize>>>()?;
        // Every later size computation multiplies these dimensions: refuse
        // a shape whose element count does not fit in 64 bits (only a
        // crafted file has one, often with a zero dimension hiding it).
        shape
            .iter()
            .filter(|&&d| d != 0)
            .try_fold(1u64, |n, &d| n.checked_mul(d as u64))
            .and_then(|n| n.checked_mul(16))
            .ok_or_else(|| {
                H5Error::new(format!("dataset {path} has an impossible shape {shape:?}"))
            })?;
        let mut element = element_of(&meta.datatype);
        if let Some(raw) = &meta.raw_datatype {
            // The parsed datatype drops the bit layout: check the stored bytes.
            if let Some(detail) = nonstandard_layout(raw) {
                element = Element::NonStandard(detail);
            }
        }
        let byte_len = meta.byte_len;
        if byte_len > self.len && !matches!(element, Element::Other(_)) {
            // Guards allocation on crafted files: no dataset can hold more
            // bytes than the file it lives in (Keras never writes fill-only data).
            return Err(H5Error::new(format!(
                "dataset {path} claims {byte_len} bytes in a {}-byte file",
                self.len
            )));
        }
        let location = self.locate(&meta.header, meta.address, &meta.datatype, path, byte_len)?;
        check_chunk_size(meta.chunk.as_deref(), meta.element_size, path, byte_len)?;
        Ok(DatasetInfo {
            shape,
            element,
            location,
            dtype_attr: meta.dtype_attr,
        })
    }

    /// The stored bytes of a dataset's datatype message. The HDF5 crate
    /// parses that message but drops the bit layout; its own accessor for
    /// the bytes parses the whole object header again, so the message is
    /// looked up here by walking the header's message envelopes, and the
    /// crate's accessor is left for what this walk does not follow (a
    /// shared datatype, more or fewer than one datatype message, anything
    /// unexpected).
    fn datatype_message(&self, ds: &hdf5_reader::Dataset) -> Result<Vec<u8>> {
        match self.find_datatype_message(ds.address()) {
            Some(raw) => Ok(raw),
            None => Ok(ds.raw_datatype()?),
        }
    }

    fn find_datatype_message(&self, address: u64) -> Option<Vec<u8>> {
        let storage = self.h5.storage();
        let superblock = self.h5.superblock();
        let (offset_size, length_size) = (
            usize::from(superblock.offset_size),
            usize::from(superblock.length_size),
        );
        let mut found = Vec::new();
        let mut continuations = Vec::new();
        // A version 1 prefix is 16 bytes; a version 2 header is longer than
        // that unless it is empty, which a dataset's never is.
        let head = storage.read_range(address, 16).ok()?;
        let version2 = &head.as_ref()[..4] == b"OHDR";
        let envelope = if version2 {
            // "OHDR", version 2, flags, optional times and attribute
            // thresholds, then the size of the first chunk.
            if head.as_ref()[4] != 2 {
                return None;
            }
            let flags = head.as_ref()[5];
            let size_width = 1usize << (flags & 0x03);
            let mut prefix = 6;
            if flags & 0x20 != 0 {
                prefix += 16;
            }
            if flags & 0x10 != 0 {
                prefix += 4;
            }
            let size_bytes = match head.as_ref().get(prefix..prefix + size_width) {
                Some(bytes) => le_uint(bytes)?,
                None => le_uint(
                    storage
                        .read_range(address + prefix as u64, size_width)
                        .ok()?
                        .as_ref(),
                )?,
            };
            let size = usize::try_from(size_bytes).ok()?;
            let start = prefix + size_width;
            let chunk = storage.read_range(address + start as u64, size).ok()?;
            let envelope = Envelope::V2 {
                creation_order: flags & 0x04 != 0,
            };
            envelope.walk(
                chunk.as_ref(),
                offset_size,
                length_size,
                &mut found,
                &mut continuations,
            )?;
            envelope
        } else {
            // Version 1, reserved, message count, reference count, size of
            // the first chunk, padding to 16 bytes.
            let prefix = head.as_ref();
            if prefix[0] != 1 {
                return None;
            }
            let size = u32::from_le_bytes([prefix[8], prefix[9], prefix[10], prefix[11]]);
            let chunk = storage.read_range(address + 16, size as usize).ok()?;
            Envelope::V1.walk(
                chunk.as_ref(),
                offset_size,
                length_size,
                &mut found,
                &mut continuations,
            )?;
            Envelope::V1
        };
        // The crate has followed these continuations already, refusing
        // cycles; the bound only keeps this walk finite on its own.
        let mut followed = 0;
        while let Some((offset, length)) = continuations.pop() {
            followed += 1;
            if followed > 64 {
                return None;
            }
            let chunk = storage
                .read_range(offset, usize::try_from(length).ok()?)
                .ok()?;
            let chunk = chunk.as_ref();
            let messages = match envelope {
                // "OCHK", messages, checksum.
                Envelope::V2 { .. } if chunk.len() >= 8 && &chunk[..4] == b"OCHK" => {
                    &chunk[4..chunk.len() - 4]
                }
                Envelope::V2 { .. } => return None,
                Envelope::V1 => chunk,
            };
            envelope.walk(
                messages,
                offset_size,
                length_size,
                &mut found,
                &mut continuations,
            )?;
        }
        match <[Vec<u8>; 1]>::try_from(found) {
            Ok([raw]) => Some(raw),
            Err(_) => None,
        }
    }

    fn locate(
        &self,
        header: &ObjectHeader,
        address: u64,
        datatype: &Datatype,
        path: &str,
        byte_len: u64,
    ) -> Result<Location> {
        if byte_len == 0 {
            return Ok(Location::Empty);
        }
        let mut contiguous = None;
        // Compact data lives in the object header, which the HDF5 crate
        // reads; only contiguous data is copied straight from the file.
        for message in &header.messages {
            match message {
                HdfMessage::ExternalFiles(_) => {
                    return Err(H5Error::new(format!(
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
        let swap = swap_size(datatype);
        match contiguous {
            Some((address, size)) if swap.is_none() && address != u64::MAX => {
                if size < byte_len {
                    return Err(H5Error::new(format!(
                        "dataset {path} stores {size} bytes but its shape needs {byte_len}"
                    )));
                }
                let end = address.checked_add(byte_len);
                if end.is_none_or(|end| end > self.len) {
                    return Err(H5Error::new(format!(
                        "dataset {path} lies beyond the end of the file (truncated?)"
                    )));
                }
                Ok(Location::Contiguous {
                    offset: address,
                    len: byte_len,
                })
            }
            _ => Ok(Location::Decoded(Box::new(Decoded {
                path: path.to_string(),
                swap_bytes: swap,
                address,
            }))),
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
                    crate::cancel::checkpoint()?;
                    let n = (*len - done).min(buf.len() as u64) as usize;
                    self.bytes.read_exact_at(&mut buf[..n], offset + done)?;
                    out.write_all(&buf[..n])?;
                    done += n as u64;
                    progress(n as u64);
                }
                Ok(())
            }
            Location::Decoded(decoded) => {
                let bytes = self
                    .decoded_bytes(&decoded.path, decoded.swap_bytes)
                    .map_err(|e| {
                        if e.is_refusal() {
                            std::io::Error::new(std::io::ErrorKind::InvalidData, Refusal(e.0))
                        } else {
                            std::io::Error::new(std::io::ErrorKind::InvalidData, e.0)
                        }
                    })?;
                out.write_all(&bytes)?;
                progress(bytes.len() as u64);
                Ok(())
            }
        }
    }

    /// Where a contiguous dataset's bytes lie in the file on disk; `None`
    /// for data stored otherwise or a file held in memory.
    pub fn contiguous_span(&self, location: &Location) -> Option<crate::file_span::FileSpan> {
        match (&self.bytes, location) {
            (Bytes::Window { file, base, .. }, Location::Contiguous { offset, len }) => {
                Some(crate::file_span::FileSpan {
                    file: file.clone(),
                    offset: base.checked_add(*offset)?,
                    len: *len,
                })
            }
            _ => None,
        }
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
            Location::Decoded(_) => Ok(false),
        }
    }

    /// A dataset's bytes, decompressed or filled in memory, within the
    /// file's budgets for decoded and never-written data.
    fn decoded_bytes(&self, path: &str, swap_bytes: Option<usize>) -> Result<Vec<u8>> {
        let ds = self.open_dataset(path)?;
        let header = self.h5.get_or_parse_header(ds.address())?;
        let mut layout = None;
        let mut stages = 0u64;
        for message in &header.messages {
            match message {
                HdfMessage::DataLayout(m) => layout = Some(m.layout.clone()),
                HdfMessage::FilterPipeline(p) => stages = p.filters.len() as u64,
                _ => {}
            }
        }
        let mut bytes = match layout {
            Some(DataLayout::Chunked { address, .. }) if !self.undefined(address) => {
                self.read_chunks(&ds, path, stages)?
            }
            Some(DataLayout::Chunked { .. }) => {
                self.charge_fill(ds.raw_byte_len()? as u64, path)?;
                ds.read_raw_bytes()?
            }
            Some(DataLayout::Contiguous { address, .. }) if self.undefined(address) => {
                self.charge_fill(ds.raw_byte_len()? as u64, path)?;
                ds.read_raw_bytes()?
            }
            // Compact data, or big-endian data stored contiguously: the
            // stored bytes themselves.
            _ => ds.read_raw_bytes()?,
        };
        if let Some(size) = swap_bytes {
            for element in bytes.chunks_exact_mut(size) {
                element.reverse();
            }
        }
        Ok(bytes)
    }
}

impl File {
    /// A chunked dataset's bytes, one chunk at a time: each chunk's
    /// decoding is counted against the file's budget as it happens, a
    /// chunk stored twice is refused, and the parts no chunk covers take
    /// the fill value (counted against the fill budget).
    fn read_chunks(&self, ds: &hdf5_reader::Dataset, path: &str, stages: u64) -> Result<Vec<u8>> {
        let shape: Vec<u64> = ds.shape().to_vec();
        let element = ds.raw_element_size()?;
        let byte_len = ds.raw_byte_len()?;
        let mut out = vec![0u8; byte_len];
        if let Some(fill) = ds
            .fill_value()
            .and_then(|f| f.value.as_ref())
            .filter(|v| v.len() == element)
        {
            for slot in out.chunks_exact_mut(element) {
                slot.copy_from_slice(fill);
            }
        }
        let mut seen = std::collections::HashSet::new();
        let mut covered = 0u64;
        for chunk in ds.iter_chunks()? {
            if crate::cancel::requested() {
                return Err(H5Error::new("interrupted"));
            }
            let chunk = chunk?;
            let decoded = chunk.bytes().len() as u64;
            self.charge_decoded(decoded.saturating_mul(stages.max(1)), path)?;
            if !seen.insert(chunk.offsets().to_vec()) {
                return Err(H5Error::refused(format!(
                    "dataset {path} stores its chunk at {:?} twice",
                    chunk.offsets()
                )));
            }
            covered += copy_chunk(&mut out, &shape, element, &chunk)? * element as u64;
        }
        self.charge_fill((byte_len as u64).saturating_sub(covered), path)?;
        Ok(out)
    }
}

/// Copies the part of a decoded chunk that lies inside the dataset into
/// `out` (the whole dataset, C order); returns how many elements it copied.
fn copy_chunk(
    out: &mut [u8],
    shape: &[u64],
    element: usize,
    chunk: &hdf5_reader::DatasetChunk,
) -> Result<u64> {
    let (offsets, chunk_shape, bytes) = (chunk.offsets(), chunk.shape(), chunk.bytes());
    let rank = shape.len();
    let short = || H5Error::new("a decoded chunk is shorter than its shape");
    if rank == 0 || offsets.len() < rank || chunk_shape.len() < rank {
        return Err(H5Error::new("a chunk of a dataset without dimensions"));
    }
    // The part of the chunk inside the dataset, per dimension.
    let extent: Vec<u64> = (0..rank)
        .map(|d| chunk_shape[d].min(shape[d].saturating_sub(offsets[d])))
        .collect();
    if extent.contains(&0) {
        return Ok(0);
    }
    let stride = |dims: &[u64], d: usize| -> u64 { dims[d + 1..rank].iter().product::<u64>() };
    let run = extent[rank - 1] as usize * element;
    let mut index = vec![0u64; rank];
    let mut copied = 0u64;
    loop {
        let (mut from, mut to) = (0u64, 0u64);
        for d in 0..rank {
            from += index[d] * stride(chunk_shape, d);
            to += (offsets[d] + index[d]) * stride(shape, d);
        }
        let (from, to) = (from as usize * element, to as usize * element);
        let source = bytes.get(from..from + run).ok_or_else(short)?;
        out.get_mut(to..to + run)
            .ok_or_else(|| H5Error::new("a chunk lies outside its dataset"))?
            .copy_from_slice(source);
        copied += extent[rank - 1];
        // The next run: count up over every dimension but the last.
        let mut d = rank - 1;
        loop {
            if d == 0 {
                return Ok(copied);
            }
            d -= 1;
            index[d] += 1;
            if index[d] < extent[d] {
                break;
            }
            index[d] = 0;
        }
    }
}

/// A dataset as its header describes it.
struct Meta {
    address: u64,
    dims: Vec<u64>,
    datatype: Datatype,
    /// The datatype message's bytes, for numbers (their bit layout).
    raw_datatype: Option<Vec<u8>>,
    element_size: u64,
    byte_len: u64,
    /// Chunk dimensions, for chunked data.
    chunk: Option<Vec<u32>>,
    dtype_attr: Option<String>,
    /// The object header all this was read from.
    header: Arc<ObjectHeader>,
}

/// Whether an element type is a number or bool, whose bit layout matters.
fn numeric(element: &Element) -> bool {
    matches!(
        element,
        Element::Float { .. } | Element::Int { .. } | Element::Bool
    )
}

/// The stored size of one element of the types a weight can have.
fn type_size(datatype: &Datatype) -> Option<u64> {
    match datatype {
        Datatype::FloatingPoint { size, .. } | Datatype::FixedPoint { size, .. } => {
            Some(u64::from(*size))
        }
        Datatype::Enum { base, .. } => type_size(base),
        Datatype::Opaque { size, .. } => Some(u64::from(*size)),
        _ => None,
    }
}

/// Refuses a chunk far larger than its dataset: a few bytes of data could
/// otherwise make the reader inflate hundreds of MB per dataset.
fn check_chunk_size(dims: Option<&[u32]>, element: u64, path: &str, byte_len: u64) -> Result<()> {
    let Some(dims) = dims else {
        return Ok(());
    };
    if byte_len == 0 {
        return Ok(());
    }
    let chunk = dims
        .iter()
        .try_fold(element, |n, &d| n.checked_mul(u64::from(d)));
    let allowed = byte_len.saturating_mul(2).saturating_add(CHUNK_SLACK_BYTES);
    match chunk {
        Some(chunk) if chunk <= allowed => Ok(()),
        _ => Err(H5Error::refused(format!(
            "dataset {path} declares chunks of {} bytes for {byte_len} bytes of data \
             (at most twice the data plus {} MiB)",
            chunk.map_or_else(|| "over 2^64".to_string(), |c| c.to_string()),
            CHUNK_SLACK_BYTES >> 20
        ))),
    }
}

fn element_of(dtype: &Datatype) -> Element {
    match dtype {
        Datatype::FloatingPoint { size, .. } => Element::Float { size: *size },
        Datatype::FixedPoint { size, signed, .. } => Element::Int {
            size: *size,
            signed: *signed,
        },
        // h5py stores numpy bool as an enum of int8 with members FALSE and
        // TRUE (their values are checked with the bit layout).
        Datatype::Enum { base, members }
            if matches!(**base, Datatype::FixedPoint { size: 1, .. })
                && is_bool_names(members.iter().map(|m| m.name.as_bytes())) =>
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

/// How the messages of an object header are framed.
#[derive(Clone, Copy)]
enum Envelope {
    /// Type (2 bytes), size (2), flags (1), reserved (3).
    V1,
    /// Type (1 byte), size (2), flags (1), then the creation order (2) if
    /// the header tracks it.
    V2 { creation_order: bool },
}

/// Message types: datatype and header continuation.
const MESSAGE_DATATYPE: u16 = 0x0003;
const MESSAGE_CONTINUATION: u16 = 0x0010;
/// Message flag: the message is shared (stored elsewhere).
const MESSAGE_SHARED: u8 = 0x02;

impl Envelope {
    /// Collects the datatype messages and continuations among the messages
    /// in `chunk`; `None` for a shared datatype or a message that overruns
    /// the chunk.
    fn walk(
        self,
        mut chunk: &[u8],
        offset_size: usize,
        length_size: usize,
        found: &mut Vec<Vec<u8>>,
        continuations: &mut Vec<(u64, u64)>,
    ) -> Option<()> {
        let head_len = match self {
            Envelope::V1 => 8,
            Envelope::V2 {
                creation_order: false,
            } => 4,
            Envelope::V2 {
                creation_order: true,
            } => 6,
        };
        while chunk.len() >= head_len {
            let (kind, size, flags) = match self {
                Envelope::V1 => (
                    u16::from_le_bytes([chunk[0], chunk[1]]),
                    u16::from_le_bytes([chunk[2], chunk[3]]),
                    chunk[4],
                ),
                Envelope::V2 { .. } => (
                    u16::from(chunk[0]),
                    u16::from_le_bytes([chunk[1], chunk[2]]),
                    chunk[3],
                ),
            };
            let body = chunk.get(head_len..head_len + usize::from(size))?;
            match kind {
                MESSAGE_DATATYPE if flags & MESSAGE_SHARED != 0 => return None,
                MESSAGE_DATATYPE => found.push(body.to_vec()),
                MESSAGE_CONTINUATION => {
                    let offset = le_uint(body.get(..offset_size)?)?;
                    let length = le_uint(body.get(offset_size..offset_size + length_size)?)?;
                    continuations.push((offset, length));
                }
                _ => {}
            }
            chunk = &chunk[head_len + usize::from(size)..];
        }
        Some(())
    }
}

/// A little-endian unsigned integer of 1 to 8 bytes.
fn le_uint(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() || bytes.len() > 8 {
        return None;
    }
    let mut value = [0u8; 8];
    value[..bytes.len()].copy_from_slice(bytes);
    Some(u64::from_le_bytes(value))
}

/// Whether enum member names are exactly `FALSE` and `TRUE`, in either order.
fn is_bool_names<'a>(names: impl Iterator<Item = &'a [u8]>) -> bool {
    let mut names: Vec<&[u8]> = names.collect();
    names.sort_unstable();
    names == [b"FALSE".as_slice(), b"TRUE".as_slice()]
}

/// What is non-standard about a numeric datatype, given the bytes of its
/// datatype message; `None` when its bits are laid out the way the bytes
/// are copied: integers using every bit of their size, IEEE floats of 2,
/// 4 or 8 bytes, bools as h5py writes them (an enum of a 1-byte integer
/// with FALSE = 0 and TRUE = 1). Classes and sizes with no standard here
/// (strings, a 16-byte float) are left to the dtype check, which names them.
fn nonstandard_layout(raw: &[u8]) -> Option<String> {
    match layout_problem(&mut RawType(raw)) {
        Some(problem) => problem,
        None => Some("datatype encoding (too short to read)".into()),
    }
}

/// A cursor over the bytes of a datatype message; every read is `None`
/// past the end.
struct RawType<'a>(&'a [u8]);

impl<'a> RawType<'a> {
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.bytes(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.bytes(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Option<u32> {
        self.bytes(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// `Some(None)` for a standard layout, `Some(Some(what))` for a
/// non-standard one, `None` when the bytes end too soon.
fn layout_problem(raw: &mut RawType) -> Option<Option<String>> {
    // Class (bits 0-3), version (4-7), 24 bits of class flags, then the size.
    let head = raw.u32()?;
    let (class, version, flags) = (head & 0x0f, (head >> 4) & 0x0f, head >> 8);
    let size = raw.u32()?;
    Some(match class {
        0 => int_bits(raw, size)?.map(|what| format!("integer layout ({what})")),
        1 => float_problem(raw, flags, size)?.map(|what| format!("float layout ({what})")),
        8 => bool_problem(raw, version, flags, size)?.map(|what| format!("bool enum ({what})")),
        _ => None,
    })
}

/// Bit offset and precision of an integer (the same two fields start a
/// float's properties): anything but all the bits of its bytes.
fn int_bits(raw: &mut RawType, size: u32) -> Option<Option<String>> {
    let offset = raw.u16()?;
    let precision = raw.u16()?;
    Some(bits_problem(offset, precision, size))
}

fn bits_problem(offset: u16, precision: u16, size: u32) -> Option<String> {
    let bytes = if size == 1 { "byte" } else { "bytes" };
    match (offset, u32::from(precision) == 8 * size) {
        (0, true) => None,
        (0, false) => Some(format!("precision {precision} in {size} {bytes}")),
        _ => Some(format!(
            "precision {precision} at bit offset {offset} in {size} {bytes}"
        )),
    }
}

fn float_problem(raw: &mut RawType, flags: u32, size: u32) -> Option<Option<String>> {
    let offset = raw.u16()?;
    let precision = raw.u16()?;
    let exponent = (raw.u8()?, raw.u8()?);
    let mantissa = (raw.u8()?, raw.u8()?);
    let bias = raw.u32()?;
    // (sign bit, exponent location and size, mantissa location and size, bias)
    let ieee: (u32, (u8, u8), (u8, u8), u32) = match size {
        2 => (15, (10, 5), (0, 10), 15),
        4 => (31, (23, 8), (0, 23), 127),
        8 => (63, (52, 11), (0, 52), 1023),
        _ => return Some(None),
    };
    // Byte order is bit 0 (low) and bit 6 (high) of the flags: 0 little,
    // 1 big, 3 VAX, 2 reserved.
    let order = (flags & 1) | ((flags >> 6) & 1) << 1;
    if order >= 2 {
        let name = if order == 3 { "VAX" } else { "reserved" };
        return Some(Some(format!("{name} byte order")));
    }
    if let Some(bits) = bits_problem(offset, precision, size) {
        return Some(Some(bits));
    }
    let mut parts = Vec::new();
    let sign = (flags >> 8) & 0xff;
    if sign != ieee.0 {
        parts.push(format!("sign at bit {sign}"));
    }
    if exponent != ieee.1 {
        parts.push(format!(
            "exponent of {} bits at bit {}",
            exponent.1, exponent.0
        ));
    }
    if mantissa != ieee.2 {
        parts.push(format!(
            "mantissa of {} bits at bit {}",
            mantissa.1, mantissa.0
        ));
    }
    if bias != ieee.3 {
        parts.push(format!("exponent bias {bias}"));
    }
    // Bits 4-5: 2 is IEEE's implied leading 1 of the mantissa.
    let normalization = (flags >> 4) & 3;
    if normalization != 2 {
        parts.push(format!("mantissa normalization {normalization}"));
    }
    Some((!parts.is_empty()).then(|| parts.join(", ")))
}

/// A bool enum (members exactly FALSE and TRUE over a 1-byte integer, as
/// [`element_of`] reads it) whose values are not FALSE = 0 and TRUE = 1 or
/// whose integer does not use all 8 bits. Other enums are not bools, and
/// the dtype check refuses them.
fn bool_problem(raw: &mut RawType, version: u32, flags: u32, size: u32) -> Option<Option<String>> {
    let members = (flags & 0xffff) as usize;
    let base_head = raw.u32()?;
    let base_size = raw.u32()?;
    if base_head & 0x0f != 0 || base_size != 1 || size != 1 || members != 2 {
        return Some(None);
    }
    let base_bits = int_bits(raw, base_size)?;
    let mut names = Vec::with_capacity(members);
    for _ in 0..members {
        let rest = raw.0;
        let len = rest.iter().position(|&b| b == 0)?;
        names.push(&rest[..len]);
        // Versions 1 and 2 pad each name, with its NUL, to 8 bytes.
        let stored = if version < 3 {
            (len + 1).next_multiple_of(8)
        } else {
            len + 1
        };
        raw.bytes(stored)?;
    }
    if !is_bool_names(names.iter().copied()) {
        return Some(None);
    }
    let values = raw.bytes(members)?;
    let value_of = |name: &[u8]| values[names.iter().position(|n| *n == name).unwrap_or(0)];
    let (false_value, true_value) = (value_of(b"FALSE"), value_of(b"TRUE"));
    Some(if let Some(bits) = base_bits {
        Some(format!("integer of {bits}"))
    } else if (false_value, true_value) != (0, 1) {
        Some(format!("FALSE={false_value}, TRUE={true_value}"))
    } else {
        None
    })
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

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("h5::Group")
            .field("address", &self.address())
            .finish()
    }
}

impl Group {
    fn new(
        h5: Hdf5File,
        shared: Arc<Shared>,
        address: u64,
        path: String,
        inner: Option<hdf5_reader::group::Group>,
    ) -> Group {
        // A header that does not parse here is the crate's to report.
        let table = table_of(&h5, address);
        let cell = std::sync::OnceLock::new();
        if let Some(inner) = inner {
            let _ = cell.set(inner);
        }
        Group {
            h5,
            shared,
            address,
            path,
            table,
            header: None,
            inner: cell,
        }
    }

    /// The HDF5 crate's handle on this group.
    fn inner(&self) -> Result<&hdf5_reader::group::Group> {
        if let Some(inner) = self.inner.get() {
            return Ok(inner);
        }
        let inner = match self.path.as_str() {
            "/" => self.h5.root_group()?,
            path => self.h5.group(path)?,
        };
        Ok(self.inner.get_or_init(|| inner))
    }

    fn child_path(&self, name: &str) -> String {
        match self.path.as_str() {
            "/" => format!("/{name}"),
            path => format!("{path}/{name}"),
        }
    }

    /// The object's address in the file: it grows in the order h5py
    /// created the objects, which for Keras is the order it saved them.
    pub fn address(&self) -> u64 {
        self.address
    }

    /// Names of the child groups and datasets, as stored (alphabetical).
    pub fn member_names(&self) -> Result<(Vec<String>, Vec<String>)> {
        if let Some(found) = self.member_names_uncached() {
            return Ok(found);
        }
        Ok(self.inner()?.member_names()?)
    }

    fn child(&self, name: &str, address: u64, header: Arc<ObjectHeader>) -> Group {
        Group {
            h5: self.h5.clone(),
            shared: self.shared.clone(),
            address,
            path: self.child_path(name),
            table: uncached::old_style_table(&header),
            header: Some(header),
            inner: std::sync::OnceLock::new(),
        }
    }

    fn member_names_uncached(&self) -> Option<(Vec<String>, Vec<String>)> {
        let members = uncached::members(&self.h5, self.table.as_ref()?).ok()??;
        let (mut groups, mut datasets) = (Vec::new(), Vec::new());
        for (name, address) in members {
            let header = uncached::header(&self.h5, address).ok()?;
            match uncached::classify(&header) {
                uncached::Kind::Group => groups.push(name),
                uncached::Kind::Dataset => datasets.push(name),
                uncached::Kind::Other => {}
            }
        }
        Some((groups, datasets))
    }

    /// A member's address and header, read here; `None` where the crate
    /// is asked instead.
    fn member_uncached(&self, name: &str) -> Option<Option<(u64, Arc<ObjectHeader>)>> {
        let table = self.table.as_ref()?;
        match lookup(&self.h5, &self.shared, self.address, table, name).ok()? {
            None => Some(None),
            Some(address) => Some(Some((address, uncached::header(&self.h5, address).ok()?))),
        }
    }

    /// The group at `path` below this one. Keras layer names may hold `/`
    /// (tf-keras's MobileNetV3 has `Conv/BatchNorm`), which h5py stores as
    /// nested groups, so the path is walked a part at a time.
    pub fn group(&self, path: &str) -> Result<Group> {
        let mut parts = path.split('/').filter(|p| !p.is_empty());
        let first = parts.next().unwrap_or(path);
        let mut group = self.member_group(first)?;
        for part in parts {
            group = group.member_group(part)?;
        }
        Ok(group)
    }

    /// The child group `name`.
    fn member_group(&self, name: &str) -> Result<Group> {
        if let Some(Some((address, header))) = self.member_uncached(name) {
            if uncached::classify(&header) == uncached::Kind::Group {
                return Ok(self.child(name, address, header));
            }
        }
        // Not found, not a group, or not read here: the crate's answer.
        let inner = self.inner()?.group(name)?;
        Ok(Group::new(
            self.h5.clone(),
            self.shared.clone(),
            inner.address(),
            self.child_path(name),
            Some(inner),
        ))
    }

    /// Whether the group at `path` below this one exists.
    pub fn has_group(&self, path: &str) -> bool {
        match path.trim_end_matches('/').rsplit_once('/') {
            Some((parent, name)) => match self.group(parent) {
                Ok(group) => group.has_member_group(name).unwrap_or(false),
                Err(_) => false,
            },
            None => self.has_member_group(path).unwrap_or(false),
        }
    }

    /// Whether `name` is a child group, failing where listing the group
    /// fails; a big group is not listed (each member's header read).
    pub fn has_member_group(&self, name: &str) -> Result<bool> {
        match self.member_uncached(name) {
            Some(None) => Ok(false),
            Some(Some((_, header))) => Ok(uncached::classify(&header) == uncached::Kind::Group),
            None => Ok(self.member_names()?.0.iter().any(|g| g == name)),
        }
    }

    pub fn attribute_names(&self) -> Result<Vec<String>> {
        Ok(self
            .attributes()?
            .list
            .into_iter()
            .map(|a| a.name)
            .collect())
    }

    /// A string attribute, scalar or one-element array, if present.
    pub fn string_attr(&self, name: &str) -> Result<Option<String>> {
        self.attributes()?.string(name)
    }

    /// An integer attribute (scalar), if present.
    pub fn integer_attr(&self, name: &str) -> Option<u64> {
        self.attributes().ok()?.integer(name)
    }

    /// All of the group's attributes, read once: looking several up costs
    /// one read of the object header, not one per name.
    pub fn attributes(&self) -> Result<Attributes> {
        let header = match &self.header {
            Some(header) => Some(header.clone()),
            None => uncached::header(&self.h5, self.address).ok(),
        };
        let read_here =
            header.and_then(|header| uncached::attributes(&self.h5, &header, &self.shared.heaps));
        let list = match read_here {
            Some(list) => list,
            None => self.inner()?.attributes()?,
        };
        let mut index = std::collections::HashMap::with_capacity(list.len());
        for (i, attr) in list.iter().enumerate() {
            index.entry(attr.name.clone()).or_insert(i);
        }
        Ok(Attributes { list, index })
    }
}

/// The attributes of a group, looked up by name in constant time.
#[derive(Debug)]
pub struct Attributes {
    list: Vec<hdf5_reader::Attribute>,
    index: std::collections::HashMap<String, usize>,
}

impl Attributes {
    pub fn has(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    fn get(&self, name: &str) -> Option<&hdf5_reader::Attribute> {
        self.index.get(name).map(|&i| &self.list[i])
    }

    /// A string attribute, scalar or one-element array, if present.
    pub fn string(&self, name: &str) -> Result<Option<String>> {
        match self.string_list(name)? {
            None => Ok(None),
            Some(mut list) if list.len() == 1 => Ok(list.pop()),
            Some(list) => Err(H5Error::new(format!(
                "attribute `{name}` holds {} strings where one was expected",
                list.len()
            ))),
        }
    }

    /// An integer attribute (scalar), if present.
    pub fn integer(&self, name: &str) -> Option<u64> {
        self.get(name)?
            .read_as_f64()
            .ok()
            .filter(|v| v.fract() == 0.0 && *v >= 0.0)
            .map(|v| v as u64)
    }

    /// A list-of-strings attribute in any of the encodings Keras has used:
    /// variable-length strings, fixed-length null-padded bytes, or an empty
    /// float64 array for an empty list.
    pub fn string_list(&self, name: &str) -> Result<Option<Vec<String>>> {
        let Some(attr) = self.get(name) else {
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
            other => Err(H5Error::new(format!(
                "attribute `{name}` is {} where strings were expected",
                describe(other)
            ))),
        }
    }
}

mod block_cache;
#[cfg(test)]
mod fixture_tests;
mod path_list;
mod uncached;

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    // Datatype messages as libhdf5 1.14 encodes them (`H5Tencode` through
    // h5py, its two-byte prefix removed): the bytes a file stores.
    const IEEE_F16LE: &[u8] = &[
        0x11, 0x20, 0x0f, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x0a, 0x05, 0x00,
        0x0a, 0x0f, 0x00, 0x00, 0x00,
    ];
    const IEEE_F32LE: &[u8] = &[
        0x11, 0x20, 0x1f, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x20, 0x00, 0x17, 0x08, 0x00,
        0x17, 0x7f, 0x00, 0x00, 0x00,
    ];
    const IEEE_F64LE: &[u8] = &[
        0x11, 0x20, 0x3f, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x40, 0x00, 0x34, 0x0b, 0x00,
        0x34, 0xff, 0x03, 0x00, 0x00,
    ];
    const IEEE_F16BE: &[u8] = &[
        0x11, 0x21, 0x0f, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x0a, 0x05, 0x00,
        0x0a, 0x0f, 0x00, 0x00, 0x00,
    ];
    const IEEE_F32BE: &[u8] = &[
        0x11, 0x21, 0x1f, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x20, 0x00, 0x17, 0x08, 0x00,
        0x17, 0x7f, 0x00, 0x00, 0x00,
    ];
    const IEEE_F64BE: &[u8] = &[
        0x11, 0x21, 0x3f, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x40, 0x00, 0x34, 0x0b, 0x00,
        0x34, 0xff, 0x03, 0x00, 0x00,
    ];
    const STD_I8LE: &[u8] = &[
        0x10, 0x08, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x08, 0x00,
    ];
    const STD_I16LE: &[u8] = &[
        0x10, 0x08, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00,
    ];
    const STD_I32LE: &[u8] = &[
        0x10, 0x08, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x20, 0x00,
    ];
    const STD_I64LE: &[u8] = &[
        0x10, 0x08, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x40, 0x00,
    ];
    const STD_U8LE: &[u8] = &[
        0x10, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x08, 0x00,
    ];
    const STD_U16LE: &[u8] = &[
        0x10, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00,
    ];
    const STD_U32LE: &[u8] = &[
        0x10, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x20, 0x00,
    ];
    const STD_U64LE: &[u8] = &[
        0x10, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x40, 0x00,
    ];
    const STD_I32BE: &[u8] = &[
        0x10, 0x09, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x20, 0x00,
    ];
    const STD_U64BE: &[u8] = &[
        0x10, 0x01, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x40, 0x00,
    ];
    /// numpy bool as h5py writes it: enum (version 1) of int8, FALSE = 0, TRUE = 1.
    const BOOL: &[u8] = &[
        0x18, 0x02, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x10, 0x08, 0x00, 0x00, 0x01, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x08, 0x00, 0x46, 0x41, 0x4c, 0x53, 0x45, 0x00, 0x00, 0x00, 0x54, 0x52,
        0x55, 0x45, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
    ];
    /// IEEE_F32LE with the fields of a float16 and precision 16.
    const F16_IN_F32: &[u8] = &[
        0x11, 0x20, 0x0f, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x0a, 0x05, 0x00,
        0x0a, 0x0f, 0x00, 0x00, 0x00,
    ];
    /// STD_I32LE with precision 12 at bit offset 8.
    const I32_PRECISION_12_AT_8: &[u8] = &[
        0x10, 0x08, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x08, 0x00, 0x0c, 0x00,
    ];
    /// The bool enum with FALSE = 1 and TRUE = 0.
    const BOOL_FLIPPED: &[u8] = &[
        0x18, 0x02, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x10, 0x08, 0x00, 0x00, 0x01, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x08, 0x00, 0x46, 0x41, 0x4c, 0x53, 0x45, 0x00, 0x00, 0x00, 0x54, 0x52,
        0x55, 0x45, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00,
    ];
    /// IEEE_F32LE with exponent bias 100.
    const F32_BIAS_100: &[u8] = &[
        0x11, 0x20, 0x1f, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x20, 0x00, 0x17, 0x08, 0x00,
        0x17, 0x64, 0x00, 0x00, 0x00,
    ];

    #[test]
    fn standard_layouts_are_accepted() {
        for (name, raw) in [
            ("f16", IEEE_F16LE),
            ("f32", IEEE_F32LE),
            ("f64", IEEE_F64LE),
            ("f16 BE", IEEE_F16BE),
            ("f32 BE", IEEE_F32BE),
            ("f64 BE", IEEE_F64BE),
            ("i8", STD_I8LE),
            ("i16", STD_I16LE),
            ("i32", STD_I32LE),
            ("i64", STD_I64LE),
            ("u8", STD_U8LE),
            ("u16", STD_U16LE),
            ("u32", STD_U32LE),
            ("u64", STD_U64LE),
            ("i32 BE", STD_I32BE),
            ("u64 BE", STD_U64BE),
            ("bool", BOOL),
        ] {
            assert_eq!(nonstandard_layout(raw), None, "{name}");
            // A message's space in an object header is padded to 8 bytes.
            let mut padded = raw.to_vec();
            padded.resize(raw.len().next_multiple_of(8) + 8, 0);
            assert_eq!(nonstandard_layout(&padded), None, "{name} padded");
        }
    }

    #[test]
    fn crafted_layouts_are_refused_with_what_is_wrong() {
        assert_eq!(
            nonstandard_layout(F16_IN_F32).as_deref(),
            Some("float layout (precision 16 in 4 bytes)")
        );
        assert_eq!(
            nonstandard_layout(I32_PRECISION_12_AT_8).as_deref(),
            Some("integer layout (precision 12 at bit offset 8 in 4 bytes)")
        );
        assert_eq!(
            nonstandard_layout(BOOL_FLIPPED).as_deref(),
            Some("bool enum (FALSE=1, TRUE=0)")
        );
        assert_eq!(
            nonstandard_layout(F32_BIAS_100).as_deref(),
            Some("float layout (exponent bias 100)")
        );
    }

    #[test]
    fn float_fields_and_byte_order_are_checked() {
        let mut vax = IEEE_F32LE.to_vec();
        vax[1] |= 0x41;
        assert_eq!(
            nonstandard_layout(&vax).as_deref(),
            Some("float layout (VAX byte order)")
        );
        let mut no_implied_one = IEEE_F64LE.to_vec();
        no_implied_one[1] &= !0x30;
        assert_eq!(
            nonstandard_layout(&no_implied_one).as_deref(),
            Some("float layout (mantissa normalization 0)")
        );
        // float16's fields in float16's size, but the sign bit elsewhere and
        // a shorter mantissa one bit higher.
        let mut fields = IEEE_F16LE.to_vec();
        fields[2] = 14;
        fields[14] = 1;
        fields[15] = 9;
        assert_eq!(
            nonstandard_layout(&fields).as_deref(),
            Some("float layout (sign at bit 14, mantissa of 9 bits at bit 1)")
        );
        // A 16-byte float has no standard here: the dtype check names it.
        let mut wide = IEEE_F64LE.to_vec();
        wide[4] = 16;
        assert_eq!(nonstandard_layout(&wide), None);
    }

    #[test]
    fn bool_enums_are_checked_in_both_name_encodings() {
        // Version 3 enums store names without padding.
        let v3 = |v1: &[u8]| {
            let mut raw = v1[..20].to_vec();
            raw[0] = 0x38;
            raw.extend_from_slice(b"FALSE\0TRUE\0");
            raw.extend_from_slice(&v1[36..]);
            raw
        };
        assert_eq!(nonstandard_layout(&v3(BOOL)), None);
        assert_eq!(
            nonstandard_layout(&v3(BOOL_FLIPPED)).as_deref(),
            Some("bool enum (FALSE=1, TRUE=0)")
        );
        // Members in the other order, values right.
        let mut swapped = BOOL[..20].to_vec();
        swapped.extend_from_slice(b"TRUE\0\0\0\0FALSE\0\0\0");
        swapped.extend_from_slice(&[1, 0]);
        assert_eq!(nonstandard_layout(&swapped), None);
        // A 4-bit integer under the enum.
        let mut narrow = BOOL.to_vec();
        narrow[18] = 4;
        assert_eq!(
            nonstandard_layout(&narrow).as_deref(),
            Some("bool enum (integer of precision 4 in 1 byte)")
        );
        // Other enums are not bools: the dtype check refuses them as enums.
        let mut other = BOOL.to_vec();
        other[20..25].copy_from_slice(b"MAYBE");
        assert_eq!(nonstandard_layout(&other), None);
        assert_eq!(
            nonstandard_layout(&BOOL[..30]).as_deref(),
            Some("datatype encoding (too short to read)")
        );
    }

    /// Every dataset of every HDF5 fixture: the walk of the object header
    /// finds the same datatype bytes as the HDF5 crate's own (slower)
    /// accessor. The `layout_*_v2.h5` files have version 2 headers with
    /// optional fields and continuation chunks; the others version 1.
    #[test]
    fn header_walk_finds_the_bytes_the_crate_parsed() {
        fn datasets(group: &Group, path: &str, out: &mut Vec<String>) {
            let (groups, names) = group.member_names().unwrap();
            out.extend(names.iter().map(|n| format!("{path}/{n}")));
            for name in groups {
                let child = group.group(&name).unwrap();
                datasets(&child, &format!("{path}/{name}"), out);
            }
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
        let mut checked = 0;
        let mut version2 = 0;
        for dir in ["", "numerics", "old_keras", "older_keras3", "malicious"] {
            for entry in std::fs::read_dir(root.join(dir)).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_none_or(|e| e != "h5") {
                    continue;
                }
                let Ok(file) = File::open(&path) else {
                    continue;
                };
                let Ok(top) = file.root() else { continue };
                let mut names = Vec::new();
                datasets(&top, "", &mut names);
                for name in names {
                    let ds = file.h5.dataset(&name).unwrap();
                    let expected = ds.raw_datatype().unwrap();
                    let found = file.find_datatype_message(ds.address());
                    assert_eq!(found, Some(expected), "{}: {name}", path.display());
                    checked += 1;
                    let head = file.h5.storage().read_range(ds.address(), 4).unwrap();
                    version2 += usize::from(head.as_ref() == b"OHDR");
                }
            }
        }
        assert!(checked > 1000, "{checked} datasets");
        assert!(version2 >= 10, "{version2} version 2 headers");
    }

    #[test]
    fn only_false_and_true_make_a_bool() {
        let member = |name: &str, value: u8| hdf5_reader::messages::datatype::EnumMember {
            name: name.into(),
            value: vec![value],
        };
        let enum_of = |members| Datatype::Enum {
            base: Box::new(Datatype::FixedPoint {
                size: 1,
                signed: true,
                byte_order: ByteOrder::LittleEndian,
            }),
            members,
        };
        let bool_type = enum_of(vec![member("FALSE", 0), member("TRUE", 1)]);
        assert_eq!(element_of(&bool_type), Element::Bool);
        let maybe = enum_of(vec![member("MAYBE", 0), member("TRUE", 1)]);
        assert_eq!(element_of(&maybe), Element::Other("enum".into()));
    }
}
