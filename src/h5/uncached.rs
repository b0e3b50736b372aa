//! Reading old-style (symbol table) groups, their members and their
//! attributes without the HDF5 crate's caches.
//!
//! The crate keeps every object header it parses (1-2 KB each), every
//! group's member list and every global heap collection for the life of
//! the file: a Keras 2 file of 100,000 layers (300,000 objects) held
//! 700 MB. Here each header is parsed for one use and dropped. Whatever
//! these functions do not follow (shared messages, soft links, dense
//! attribute storage, names that are not clean UTF-8, anything unexpected)
//! comes back as `None`, and the caller asks the crate, whose answers and
//! errors are then the ones it always gave.

use std::sync::{Arc, Mutex};

use hdf5_reader::global_heap::GlobalHeapCollection;
use hdf5_reader::io::Cursor;
use hdf5_reader::messages::dataspace::DataspaceType;
use hdf5_reader::messages::symbol_table_msg::SymbolTableMessage;
use hdf5_reader::messages::HdfMessage;
use hdf5_reader::object_header::ObjectHeader;
use hdf5_reader::symbol_table::{SymbolTableEntry, SymbolTableNode};
use hdf5_reader::{
    Attribute, Datatype, Hdf5File, StringEncoding, StringPadding, StringSize, VarLenKind,
};

type Result<T> = std::result::Result<T, super::H5Error>;

/// What an object header says the object is, as the crate classifies it
/// (`hdf5_reader::group::classify_child_header`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Group,
    Dataset,
    Other,
}

/// The object header at `address`, parsed for this use only. A header
/// with shared messages comes from the crate, which resolves them.
pub(super) fn header(h5: &Hdf5File, address: u64) -> Result<Arc<ObjectHeader>> {
    let superblock = h5.superblock();
    let header = ObjectHeader::parse_at_storage_with_limit(
        h5.storage(),
        address,
        superblock.offset_size,
        superblock.length_size,
        hdf5_reader::DEFAULT_MAX_OBJECT_HEADER_BYTES,
    )?;
    if header
        .messages
        .iter()
        .any(|m| matches!(m, HdfMessage::Shared(_)))
    {
        return Ok(h5.get_or_parse_header(address)?);
    }
    Ok(Arc::new(header))
}

/// The crate's rule (`classify_child_header`), on a header parsed here.
pub(super) fn classify(header: &ObjectHeader) -> Kind {
    let (mut dataset, mut attributes) = (false, false);
    for message in &header.messages {
        match message {
            HdfMessage::SymbolTable(_)
            | HdfMessage::Link(_)
            | HdfMessage::LinkInfo(_)
            | HdfMessage::GroupInfo(_) => return Kind::Group,
            HdfMessage::Attribute(_) | HdfMessage::AttributeInfo(_) => attributes = true,
            HdfMessage::Dataspace(_)
            | HdfMessage::DataLayout(_)
            | HdfMessage::FillValue(_)
            | HdfMessage::FilterPipeline(_) => dataset = true,
            _ => {}
        }
    }
    match (dataset, attributes) {
        (true, _) => Kind::Dataset,
        (false, true) => Kind::Group,
        (false, false) => Kind::Other,
    }
}

/// The symbol table of a group that lists its members only there (the
/// way h5py writes groups by default); `None` for any other group.
pub(super) fn old_style_table(header: &ObjectHeader) -> Option<SymbolTableMessage> {
    let mut table = None;
    for message in &header.messages {
        match message {
            HdfMessage::SymbolTable(t) => table = Some(t.clone()),
            HdfMessage::Link(_) | HdfMessage::LinkInfo(_) => return None,
            _ => {}
        }
    }
    table
}

/// The entries of an old-style group, in the order its B-tree lists them
/// (alphabetical).
pub(super) fn symbol_entries(
    h5: &Hdf5File,
    table: &SymbolTableMessage,
) -> Result<Vec<SymbolTableEntry>> {
    let storage = h5.storage();
    let superblock = h5.superblock();
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

/// The bytes of an old-style group's name heap.
pub(super) fn name_heap(h5: &Hdf5File, table: &SymbolTableMessage) -> Result<Vec<u8>> {
    let superblock = h5.superblock();
    let heap = hdf5_reader::local_heap::LocalHeap::parse_at_storage(
        h5.storage(),
        table.heap_address,
        superblock.offset_size,
        superblock.length_size,
    )?;
    let segment = usize::try_from(heap.data_segment_size)
        .map_err(|_| super::H5Error::new("a group's name heap is too large"))?;
    Ok(h5
        .storage()
        .read_range(heap.data_segment_address, segment)?
        .as_ref()
        .to_vec())
}

/// The NUL-terminated UTF-8 name at `offset` of a name heap, as the crate
/// reads it; `None` where the crate would fail.
fn heap_name(heap: &[u8], offset: u64) -> Option<&str> {
    let start = usize::try_from(offset).ok().filter(|&s| s < heap.len())?;
    let len = heap[start..].iter().position(|&b| b == 0)?;
    std::str::from_utf8(&heap[start..start + len]).ok()
}

/// An old-style group's members (name, object header address), in the
/// crate's order; `None` if one is a soft link or a name is unreadable.
pub(super) fn members(
    h5: &Hdf5File,
    table: &SymbolTableMessage,
) -> Result<Option<Vec<(String, u64)>>> {
    let entries = symbol_entries(h5, table)?;
    if entries.is_empty() {
        return Ok(Some(Vec::new()));
    }
    let heap = name_heap(h5, table)?;
    let mut out = Vec::with_capacity(entries.len());
    for entry in &entries {
        if entry.cache_type == 2 {
            return Ok(None);
        }
        let Some(name) = heap_name(&heap, entry.link_name_offset) else {
            return Ok(None);
        };
        out.push((name.to_string(), entry.object_header_address));
    }
    Ok(Some(out))
}

/// The last global heap collection read: h5py writes a group's strings
/// one after another, so consecutive layers share one collection.
#[derive(Default)]
pub(super) struct HeapMemo(Mutex<Option<(u64, Arc<GlobalHeapCollection>)>>);

impl HeapMemo {
    fn collection(&self, h5: &Hdf5File, address: u64) -> Option<Arc<GlobalHeapCollection>> {
        if let Ok(memo) = self.0.lock() {
            if let Some((at, collection)) = memo.as_ref() {
                if *at == address {
                    return Some(collection.clone());
                }
            }
        }
        let superblock = h5.superblock();
        let collection = Arc::new(
            GlobalHeapCollection::parse_at_storage(
                h5.storage(),
                address,
                superblock.offset_size,
                superblock.length_size,
            )
            .ok()?,
        );
        if let Ok(mut memo) = self.0.lock() {
            *memo = Some((address, collection.clone()));
        }
        Some(collection)
    }

    /// The bytes a variable-length reference at the start of `raw` points
    /// to, and the length the reference records; `Some(None)` for the
    /// null reference, `None` where it cannot be read.
    fn object(&self, h5: &Hdf5File, raw: &[u8]) -> Option<Option<(Vec<u8>, usize)>> {
        let offset_size = h5.superblock().offset_size;
        let mut cursor = Cursor::new(raw);
        let length = cursor.read_u32_le().ok()? as usize;
        let address = cursor.read_offset(offset_size).ok()?;
        let index = cursor.read_u32_le().ok()? as u16;
        if Cursor::is_undefined_offset(address, offset_size) || index == 0 {
            return Some(None);
        }
        let collection = self.collection(h5, address)?;
        let object = collection.get_object(index)?;
        Some(Some((object.data.clone(), length)))
    }
}

/// The padding and encoding of a variable-length string type, as the
/// crate recognises one (`vlen_string_format`).
fn vlen_string_format(datatype: &Datatype) -> Option<(StringPadding, StringEncoding)> {
    match datatype {
        Datatype::String {
            size: StringSize::Variable,
            padding,
            encoding,
        } => Some((*padding, *encoding)),
        Datatype::VarLen {
            base,
            kind: VarLenKind::String,
            padding,
            encoding,
        } if base.is_vlen_string_base() => Some((*padding, *encoding)),
        _ => None,
    }
}

/// The crate's `decode_string`: trimmed by the padding, strict UTF-8.
fn decode_string(bytes: &[u8], padding: StringPadding) -> Option<String> {
    let end = match padding {
        StringPadding::NullTerminate => bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len()),
        StringPadding::NullPad => bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1),
        StringPadding::SpacePad => bytes.iter().rposition(|&b| b != b' ').map_or(0, |i| i + 1),
    };
    String::from_utf8(bytes[..end].to_vec()).ok()
}

/// A group's attributes as the crate's `Group::attributes` gives them,
/// from a header parsed here; `None` for dense attribute storage or a
/// variable-length string that does not decode (the crate then).
pub(super) fn attributes(
    h5: &Hdf5File,
    header: &ObjectHeader,
    heaps: &HeapMemo,
) -> Option<Vec<Attribute>> {
    let offset_size = usize::from(h5.superblock().offset_size);
    let mut list = Vec::new();
    for message in &header.messages {
        let attr = match message {
            HdfMessage::Attribute(a) => a,
            HdfMessage::AttributeInfo(_) => return None,
            _ => continue,
        };
        let elements = attr.dataspace.num_elements().ok();
        let mut decoded_strings = None;
        let mut raw_data = attr.raw_data.clone();
        if let (Some((padding, _)), Some(n)) = (vlen_string_format(&attr.datatype), elements) {
            let n = usize::try_from(n).ok()?;
            let width = 4 + offset_size + 4;
            if attr.raw_data.len() < n.checked_mul(width)? {
                return None;
            }
            let mut strings = Vec::with_capacity(n);
            for i in 0..n {
                let text = match heaps.object(h5, &attr.raw_data[i * width..])? {
                    None => String::new(),
                    Some((bytes, _)) => decode_string(&bytes, padding)?,
                };
                strings.push(text);
            }
            decoded_strings = Some(strings);
        }
        if let Datatype::VarLen {
            base,
            kind: VarLenKind::String,
            ..
        } = &attr.datatype
        {
            if base.is_vlen_string_base() && elements == Some(1) {
                raw_data = match heaps.object(h5, &attr.raw_data)? {
                    None => Vec::new(),
                    Some((bytes, length)) => bytes[..bytes.len().min(length)].to_vec(),
                };
            }
        }
        let shape = match attr.dataspace.dataspace_type {
            DataspaceType::Scalar => vec![],
            DataspaceType::Null => vec![0],
            DataspaceType::Simple => attr.dataspace.dims.clone(),
        };
        list.push(Attribute {
            name: attr.name.clone(),
            datatype: attr.datatype.clone(),
            shape,
            raw_data,
            decoded_strings,
        });
    }
    Some(list)
}
