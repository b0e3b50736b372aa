//! A minimal HDF5 writer for tests: enough of the format to build crafted
//! and very large Keras files at test time, without Python or libhdf5.
//!
//! It writes what h5py writes by default (superblock version 0, version 1
//! object headers, old-style groups: a B-tree of symbol table nodes and a
//! local heap of names), every object once, children before their parents.
//! Datasets are float32 (or float64), stored contiguously, chunked with
//! deflate filters, or never written (a fill value). Attributes are
//! fixed-length string lists, string scalars or empty float64 arrays. An
//! object linked from several groups is a hard link.
//!
//! By default B-tree and symbol table nodes hold up to 16384 entries and are
//! written only as long as their entries, so a group of 100,000 members is
//! a few MB; libhdf5 reads nodes at their full size, so it reads these files
//! only from [`Builder::libhdf5_compatible`] (small nodes, padded, at most
//! 256 members a group), which is how this writer was checked against h5py.

#![allow(dead_code)]

use std::collections::HashMap;

const UNDEFINED: u64 = u64::MAX;
/// Group leaf K and internal K: a symbol table node holds 2 x leaf K
/// entries, a B-tree node 2 x internal K children.
const COMPACT_K: (usize, usize) = (8192, 1024);
const LIBHDF5_K: (usize, usize) = (4, 16);

/// IEEE little-endian float32 and float64 datatype messages, as libhdf5 encodes them.
const F32LE: &[u8] = &[
    0x11, 0x20, 0x1f, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x20, 0x00, 0x17, 0x08, 0x00, 0x17,
    0x7f, 0x00, 0x00, 0x00,
];
const F64LE: &[u8] = &[
    0x11, 0x20, 0x3f, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x40, 0x00, 0x34, 0x0b, 0x00, 0x34,
    0xff, 0x03, 0x00, 0x00,
];

/// An object in the file being built.
pub type Id = usize;

/// An attribute value.
#[derive(Clone)]
pub enum Attr {
    /// A list of fixed-length, null-padded byte strings (Keras's
    /// `layer_names`, `weight_names`); an empty list is stored as Keras
    /// stores it, an empty float64 array.
    Strings(Vec<String>),
    /// One fixed-length string, scalar.
    Scalar(String),
}

/// Where a dataset's bytes are.
pub enum Storage {
    /// Little-endian bytes, stored contiguously.
    Contiguous(Vec<u8>),
    /// Never written: readers see the fill value.
    Fill(f32),
    /// Chunks of the given shape, each run through `deflates` deflate
    /// filters; `chunks` are the chunk offsets and their stored (already
    /// compressed) bytes.
    Chunked {
        chunk: Vec<u64>,
        deflates: usize,
        chunks: Vec<(Vec<u64>, Vec<u8>)>,
    },
}

enum Object {
    Group {
        attrs: Vec<(String, Attr)>,
        links: Vec<(String, Id)>,
    },
    Dataset {
        shape: Vec<u64>,
        element: usize,
        storage: Storage,
    },
}

/// A file under construction; object 0 is the root group.
pub struct Builder {
    objects: Vec<Object>,
    padded: bool,
}

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

impl Builder {
    pub fn new() -> Builder {
        Builder {
            objects: vec![Object::Group {
                attrs: Vec::new(),
                links: Vec::new(),
            }],
            padded: false,
        }
    }

    /// Writes nodes as libhdf5 does (see the module documentation).
    pub fn libhdf5_compatible(mut self) -> Builder {
        self.padded = true;
        self
    }

    pub const ROOT: Id = 0;

    /// A new group linked from `parent` as `name`.
    pub fn group(&mut self, parent: Id, name: &str) -> Id {
        let id = self.objects.len();
        self.objects.push(Object::Group {
            attrs: Vec::new(),
            links: Vec::new(),
        });
        self.link(parent, name, id);
        id
    }

    /// The group at `path` below `parent` (`a/b/c`), made where missing.
    pub fn groups(&mut self, parent: Id, path: &str) -> Id {
        let mut at = parent;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            let existing = match &self.objects[at] {
                Object::Group { links, .. } => links.iter().find(|(n, _)| n == part).map(|l| l.1),
                Object::Dataset { .. } => panic!("{part} is below a dataset"),
            };
            at = match existing {
                Some(id) => id,
                None => self.group(at, part),
            };
        }
        at
    }

    /// A float32 dataset with these values, linked as `name`.
    pub fn dataset_f32(&mut self, parent: Id, name: &str, shape: &[u64], values: &[f32]) -> Id {
        assert_eq!(shape.iter().product::<u64>(), values.len() as u64);
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.dataset(parent, name, shape, 4, Storage::Contiguous(bytes))
    }

    /// A dataset of `element`-byte floats (4 or 8) stored as `storage`.
    pub fn dataset(
        &mut self,
        parent: Id,
        name: &str,
        shape: &[u64],
        element: usize,
        storage: Storage,
    ) -> Id {
        let id = self.objects.len();
        self.objects.push(Object::Dataset {
            shape: shape.to_vec(),
            element,
            storage,
        });
        self.link(parent, name, id);
        id
    }

    /// Links an existing object into `parent` as `name` (a hard link).
    pub fn link(&mut self, parent: Id, name: &str, target: Id) {
        match &mut self.objects[parent] {
            Object::Group { links, .. } => links.push((name.to_string(), target)),
            Object::Dataset { .. } => panic!("cannot link into a dataset"),
        }
    }

    pub fn remove_attr(&mut self, group: Id, name: &str) {
        if let Object::Group { attrs, .. } = &mut self.objects[group] {
            attrs.retain(|(n, _)| n != name);
        }
    }

    /// Sets an attribute (replacing one of the same name).
    pub fn attr(&mut self, group: Id, name: &str, value: Attr) {
        match &mut self.objects[group] {
            Object::Group { attrs, .. } => match attrs.iter_mut().find(|(n, _)| n == name) {
                Some(existing) => existing.1 = value,
                None => attrs.push((name.to_string(), value)),
            },
            Object::Dataset { .. } => panic!("attributes go on groups here"),
        }
    }

    /// The file's bytes.
    pub fn finish(&self) -> Vec<u8> {
        let k = if self.padded { LIBHDF5_K } else { COMPACT_K };
        let mut w = Writer {
            out: vec![0; 96],
            written: HashMap::new(),
            k,
            padded: self.padded,
        };
        let (root, btree, heap) = w.write_object(self, Self::ROOT);
        let eof = w.out.len() as u64;
        let out = &mut w.out;
        out[..8].copy_from_slice(b"\x89HDF\r\n\x1a\n");
        // Versions 0, offsets and lengths of 8 bytes.
        out[8..16].copy_from_slice(&[0, 0, 0, 0, 0, 8, 8, 0]);
        put_u16(out, 16, k.0 as u16);
        put_u16(out, 18, k.1 as u16);
        put_u64(out, 24, 0);
        put_u64(out, 32, UNDEFINED);
        put_u64(out, 40, eof);
        put_u64(out, 48, UNDEFINED);
        // The root group's symbol table entry, with its B-tree and heap cached.
        put_u64(out, 56, 0);
        put_u64(out, 64, root);
        out[72..76].copy_from_slice(&1u32.to_le_bytes());
        put_u64(out, 80, btree);
        put_u64(out, 88, heap);
        w.out
    }
}

struct Writer {
    out: Vec<u8>,
    /// Object id -> address of its object header.
    written: HashMap<Id, u64>,
    /// Group leaf K and internal K.
    k: (usize, usize),
    /// Whether nodes take their full size.
    padded: bool,
}

impl Writer {
    fn here(&self) -> u64 {
        self.out.len() as u64
    }

    fn align(&mut self) {
        while !self.out.len().is_multiple_of(8) {
            self.out.push(0);
        }
    }

    /// Writes an object (and what it links to) once; returns the address of
    /// its header and, for a group, of its B-tree and heap.
    fn write_object(&mut self, b: &Builder, id: Id) -> (u64, u64, u64) {
        match &b.objects[id] {
            Object::Group { attrs, links } => {
                let mut entries: Vec<(String, u64)> = Vec::with_capacity(links.len());
                for (name, target) in links {
                    let address = match self.written.get(target) {
                        Some(&a) => a,
                        None => self.write_object(b, *target).0,
                    };
                    entries.push((name.clone(), address));
                }
                let (btree, heap) = self.symbol_table(&entries);
                let mut messages =
                    vec![(0x11u16, [btree.to_le_bytes(), heap.to_le_bytes()].concat())];
                messages.extend(attrs.iter().map(|(n, v)| (0x0Cu16, attribute(n, v))));
                let header = self.object_header(&messages);
                self.written.insert(id, header);
                (header, btree, heap)
            }
            Object::Dataset {
                shape,
                element,
                storage,
            } => {
                let dtype = if *element == 8 { F64LE } else { F32LE };
                let mut messages = vec![(0x01u16, dataspace(shape)), (0x03, dtype.to_vec())];
                match storage {
                    Storage::Contiguous(bytes) => {
                        self.align();
                        let address = self.here();
                        self.out.extend_from_slice(bytes);
                        messages.push((0x08, contiguous_layout(address, bytes.len() as u64)));
                    }
                    Storage::Fill(value) => {
                        let mut fill = vec![2, 2, 0, 1];
                        fill.extend_from_slice(&4u32.to_le_bytes());
                        fill.extend_from_slice(&value.to_le_bytes());
                        messages.push((0x05, fill));
                        let len = shape.iter().product::<u64>() * *element as u64;
                        messages.push((0x08, contiguous_layout(UNDEFINED, len)));
                    }
                    Storage::Chunked {
                        chunk,
                        deflates,
                        chunks,
                    } => {
                        let index = self.chunk_index(shape, chunk, chunks);
                        let mut layout = vec![3, 2, (chunk.len() + 1) as u8];
                        layout.extend_from_slice(&index.to_le_bytes());
                        for d in chunk {
                            layout.extend_from_slice(&(*d as u32).to_le_bytes());
                        }
                        layout.extend_from_slice(&(*element as u32).to_le_bytes());
                        messages.push((0x08, layout));
                        if *deflates > 0 {
                            let mut pipeline = vec![1, *deflates as u8, 0, 0, 0, 0, 0, 0];
                            for _ in 0..*deflates {
                                // Deflate, no name, not optional, one
                                // value (level 6) padded to 8 bytes.
                                for v in [1u16, 0, 0, 1] {
                                    pipeline.extend_from_slice(&v.to_le_bytes());
                                }
                                pipeline.extend_from_slice(&6u32.to_le_bytes());
                                pipeline.extend_from_slice(&0u32.to_le_bytes());
                            }
                            messages.push((0x0B, pipeline));
                        }
                    }
                }
                let header = self.object_header(&messages);
                self.written.insert(id, header);
                (header, 0, 0)
            }
        }
    }

    /// A version 1 object header holding `messages` (type, body).
    fn object_header(&mut self, messages: &[(u16, Vec<u8>)]) -> u64 {
        self.align();
        let address = self.here();
        let size: usize = messages
            .iter()
            .map(|(_, m)| 8 + m.len().next_multiple_of(8))
            .sum();
        self.out.extend_from_slice(&[1, 0]);
        self.out
            .extend_from_slice(&(messages.len() as u16).to_le_bytes());
        self.out.extend_from_slice(&1u32.to_le_bytes());
        self.out.extend_from_slice(&(size as u32).to_le_bytes());
        self.out.extend_from_slice(&[0; 4]);
        for (kind, body) in messages {
            let padded = body.len().next_multiple_of(8);
            assert!(padded <= u16::MAX as usize, "message of {padded} bytes");
            self.out.extend_from_slice(&kind.to_le_bytes());
            self.out.extend_from_slice(&(padded as u16).to_le_bytes());
            self.out.extend_from_slice(&[0; 4]);
            self.out.extend_from_slice(body);
            self.out.resize(self.out.len() + padded - body.len(), 0);
        }
        address
    }

    /// A local heap of the names and a B-tree of symbol table nodes; returns
    /// (B-tree address, heap address).
    /// `entries` in the order they were linked, which is the order of their
    /// names in the heap; the nodes list them by name, as libhdf5's do.
    fn symbol_table(&mut self, entries: &[(String, u64)]) -> (u64, u64) {
        // The heap: the empty name first, then each name, 8-byte aligned.
        let mut data = vec![0u8; 8];
        let mut named: Vec<(&str, u64, u64)> = Vec::with_capacity(entries.len());
        for (name, address) in entries {
            named.push((name, *address, data.len() as u64));
            data.extend_from_slice(name.as_bytes());
            data.push(0);
            data.resize(data.len().next_multiple_of(8), 0);
        }
        named.sort_by(|a, b| a.0.cmp(b.0));
        let entries: Vec<(String, u64)> =
            named.iter().map(|(n, a, _)| (n.to_string(), *a)).collect();
        let offsets: Vec<u64> = named.iter().map(|e| e.2).collect();
        self.align();
        let heap = self.here();
        self.out.extend_from_slice(b"HEAP\0\0\0\0");
        self.out
            .extend_from_slice(&(data.len() as u64).to_le_bytes());
        // No free block (libhdf5 spells that 1).
        self.out.extend_from_slice(&1u64.to_le_bytes());
        self.out.extend_from_slice(&(heap + 32).to_le_bytes());
        self.out.extend_from_slice(&data);
        // Symbol table nodes.
        let mut nodes = Vec::new();
        let per_node = 2 * self.k.0;
        for (chunk, names) in entries.chunks(per_node).zip(offsets.chunks(per_node)) {
            self.align();
            nodes.push((self.here(), *names.last().unwrap()));
            self.out.extend_from_slice(b"SNOD\x01\0");
            self.out
                .extend_from_slice(&(chunk.len() as u16).to_le_bytes());
            for ((_, address), offset) in chunk.iter().zip(names) {
                self.out.extend_from_slice(&offset.to_le_bytes());
                self.out.extend_from_slice(&address.to_le_bytes());
                self.out.extend_from_slice(&[0; 24]);
            }
            if self.padded {
                let room = (per_node - chunk.len()) * 40;
                self.out.resize(self.out.len() + room, 0);
            }
        }
        if nodes.is_empty() {
            // libhdf5 gives even an empty group one (empty) node.
            self.align();
            nodes.push((self.here(), 0));
            self.out.extend_from_slice(b"SNOD\x01\0\0\0");
            if self.padded {
                self.out.resize(self.out.len() + per_node * 40, 0);
            }
        }
        // One B-tree node (level 0) over them: keys are heap offsets.
        assert!(
            nodes.len() <= 2 * self.k.1,
            "too many entries for one B-tree node"
        );
        self.align();
        let btree = self.here();
        self.out.extend_from_slice(b"TREE\0\0");
        self.out
            .extend_from_slice(&(nodes.len() as u16).to_le_bytes());
        self.out.extend_from_slice(&UNDEFINED.to_le_bytes());
        self.out.extend_from_slice(&UNDEFINED.to_le_bytes());
        self.out.extend_from_slice(&0u64.to_le_bytes());
        for (address, last_name) in &nodes {
            self.out.extend_from_slice(&address.to_le_bytes());
            self.out.extend_from_slice(&last_name.to_le_bytes());
        }
        if self.padded {
            let room = (2 * self.k.1 - nodes.len()) * 16;
            self.out.resize(self.out.len() + room, 0);
        }
        (btree, heap)
    }

    /// The chunks' bytes and a B-tree (type 1) indexing them.
    fn chunk_index(&mut self, shape: &[u64], chunk: &[u64], chunks: &[(Vec<u64>, Vec<u8>)]) -> u64 {
        let mut placed = Vec::new();
        for (offsets, bytes) in chunks {
            self.align();
            placed.push((self.here(), bytes.len() as u32, offsets.clone()));
            self.out.extend_from_slice(bytes);
        }
        assert!(placed.len() <= 2 * self.k.1);
        self.align();
        let btree = self.here();
        self.out.extend_from_slice(b"TREE\x01\0");
        self.out
            .extend_from_slice(&(placed.len() as u16).to_le_bytes());
        self.out.extend_from_slice(&UNDEFINED.to_le_bytes());
        self.out.extend_from_slice(&UNDEFINED.to_le_bytes());
        let key = |out: &mut Vec<u8>, size: u32, offsets: &[u64]| {
            out.extend_from_slice(&size.to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
            for o in offsets {
                out.extend_from_slice(&o.to_le_bytes());
            }
            out.extend_from_slice(&0u64.to_le_bytes());
        };
        for (address, size, offsets) in &placed {
            key(&mut self.out, *size, offsets);
            self.out.extend_from_slice(&address.to_le_bytes());
        }
        // The last key: just past the dataset.
        let end: Vec<u64> = shape
            .iter()
            .zip(chunk)
            .map(|(d, c)| d.div_ceil(*c) * c)
            .collect();
        key(&mut self.out, 0, &end);
        if self.padded {
            // Chunk B-trees use K = 32 in version 0 superblocks.
            let key_len = 8 + 8 * (shape.len() + 1);
            let room = (64 - placed.len()) * (key_len + 8);
            self.out.resize(self.out.len() + room, 0);
        }
        btree
    }
}

fn put_u16(out: &mut [u8], at: usize, v: u16) {
    out[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut [u8], at: usize, v: u64) {
    out[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// A version 1 dataspace: scalar for no dimensions.
fn dataspace(shape: &[u64]) -> Vec<u8> {
    let mut out = vec![1, shape.len() as u8, 0, 0, 0, 0, 0, 0];
    for d in shape {
        out.extend_from_slice(&d.to_le_bytes());
    }
    out
}

fn contiguous_layout(address: u64, size: u64) -> Vec<u8> {
    let mut out = vec![3, 1];
    out.extend_from_slice(&address.to_le_bytes());
    out.extend_from_slice(&size.to_le_bytes());
    out
}

/// A version 1 attribute message.
fn attribute(name: &str, value: &Attr) -> Vec<u8> {
    let (dtype, space, data): (Vec<u8>, Vec<u8>, Vec<u8>) = match value {
        Attr::Strings(list) if list.is_empty() => (F64LE.to_vec(), dataspace(&[0]), Vec::new()),
        Attr::Strings(list) => {
            let width = list.iter().map(|s| s.len()).max().unwrap_or(1).max(1);
            let mut data = Vec::with_capacity(width * list.len());
            for s in list {
                data.extend_from_slice(s.as_bytes());
                data.resize(data.len() + width - s.len(), 0);
            }
            (string_type(width), dataspace(&[list.len() as u64]), data)
        }
        Attr::Scalar(s) => (
            string_type(s.len().max(1)),
            dataspace(&[]),
            if s.is_empty() {
                vec![0]
            } else {
                s.as_bytes().to_vec()
            },
        ),
    };
    let mut out = vec![1, 0];
    out.extend_from_slice(&((name.len() + 1) as u16).to_le_bytes());
    out.extend_from_slice(&(dtype.len() as u16).to_le_bytes());
    out.extend_from_slice(&(space.len() as u16).to_le_bytes());
    for part in [
        {
            let mut n = name.as_bytes().to_vec();
            n.push(0);
            n
        },
        dtype,
        space,
    ] {
        let padded = part.len().next_multiple_of(8);
        out.extend_from_slice(&part);
        out.resize(out.len() + padded - part.len(), 0);
    }
    out.extend_from_slice(&data);
    out
}

/// A fixed-length, null-padded ASCII string type.
fn string_type(width: usize) -> Vec<u8> {
    let mut out = vec![0x13, 0x01, 0, 0];
    out.extend_from_slice(&(width as u32).to_le_bytes());
    out
}

/// A Keras 2 `save_weights` file (layer groups at the root): one layer per
/// name, each with one float32 bias of `values`, listed in `layer_names`
/// (split into `layer_names0`, `layer_names1`, ... past 64 KB, as Keras does).
pub fn keras2_weights(names: &[String], values: &[f32]) -> Builder {
    let mut b = Builder::new();
    let root = Builder::ROOT;
    b.attr(root, "backend", Attr::Scalar("tensorflow".into()));
    b.attr(root, "keras_version", Attr::Scalar("2.21.0".into()));
    name_list(&mut b, root, "layer_names", names);
    for name in names {
        let layer = b.group(root, name);
        let weight = format!("{name}/bias:0");
        b.attr(layer, "weight_names", Attr::Strings(vec![weight.clone()]));
        let (scope, label) = weight.split_once('/').unwrap();
        let scope = b.groups(layer, scope);
        b.dataset_f32(scope, label, &[values.len() as u64], values);
    }
    b
}

/// A name list as Keras writes it: one attribute, or chunks of under 64 KB.
pub fn name_list(b: &mut Builder, group: Id, attr: &str, names: &[String]) {
    let width = names.iter().map(String::len).max().unwrap_or(1).max(1);
    let per_chunk = (60_000 / width).max(1);
    if names.len() <= per_chunk {
        b.attr(group, attr, Attr::Strings(names.to_vec()));
        return;
    }
    for (i, chunk) in names.chunks(per_chunk).enumerate() {
        b.attr(group, &format!("{attr}{i}"), Attr::Strings(chunk.to_vec()));
    }
}
