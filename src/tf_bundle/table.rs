//! The `.index` file of a tensor bundle: a LevelDB-style sorted table.
//!
//! Layout (all integers little-endian, varints as in protobuf):
//! data blocks, a metaindex block, an index block, then a 48-byte footer
//! holding the metaindex and index block handles (two varints each,
//! zero-padded to 40 bytes) and the 8-byte magic number. Every block is
//! followed by a 5-byte trailer: its compression type (0 none, 1 snappy)
//! and a masked CRC-32C of the block and the type byte. A block holds
//! prefix-compressed entries (`shared`, `non_shared`, `value_len`, the
//! key's new bytes, the value), then an array of `u32` restart offsets and
//! their count. The index block maps each data block's last key to its
//! handle. Keys are strictly increasing.
//!
//! Everything here is checked against the file's size before anything is
//! allocated, so a hostile index costs at most its own size in memory.

use super::crc;

/// The magic number that ends every table (`kTableMagicNumber`).
pub const MAGIC: u64 = 0xdb47_7524_8b80_fb57;
/// Footer length: two block handles padded to 40 bytes, then the magic.
pub const FOOTER_LEN: usize = 48;
/// Compression type byte and masked CRC after every block.
const TRAILER_LEN: usize = 5;
/// A decompressed block larger than this is refused: TF writes blocks of
/// a few KiB (a block holds entries, never tensor data).
pub const MAX_BLOCK_BYTES: usize = 64 << 20;

/// What is wrong with an index file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableError(pub String);

impl std::fmt::Display for TableError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

type Result<T> = std::result::Result<T, TableError>;

fn bad(message: impl Into<String>) -> TableError {
    TableError(message.into())
}

/// Where a block is: offset and size of its contents, without the trailer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Handle {
    offset: u64,
    size: u64,
}

/// Reads an unsigned LEB128 varint of at most `max_bytes` bytes at `*pos`.
pub(crate) fn varint(data: &[u8], pos: &mut usize, max_bytes: usize) -> Option<u64> {
    let mut value = 0u64;
    for i in 0..max_bytes {
        let byte = *data.get(*pos)?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

fn handle(data: &[u8], pos: &mut usize) -> Option<Handle> {
    Some(Handle {
        offset: varint(data, pos, 10)?,
        size: varint(data, pos, 10)?,
    })
}

/// Every entry of a table, in key order. `index` is the whole `.index` file.
pub fn entries(index: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    if index.len() < FOOTER_LEN {
        return Err(bad(format!(
            "the file is {} bytes, shorter than a table footer ({FOOTER_LEN} bytes): truncated",
            index.len()
        )));
    }
    let footer = &index[index.len() - FOOTER_LEN..];
    let magic = u64::from_le_bytes(footer[40..48].try_into().expect("8 bytes"));
    if magic != MAGIC {
        return Err(bad(
            "no table magic number at the end (truncated, or not a TensorFlow index file)",
        ));
    }
    let mut pos = 0;
    let _metaindex = handle(footer, &mut pos).ok_or_else(|| bad("unreadable metaindex handle"))?;
    let index_handle = handle(footer, &mut pos).ok_or_else(|| bad("unreadable index handle"))?;
    if pos > 40 {
        return Err(bad("the footer's block handles overrun the footer"));
    }
    let body = &index[..index.len() - FOOTER_LEN];
    let index_block = block(body, index_handle, "the index block")?;
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for (n, (_, value)) in block_entries(&index_block, "the index block")?
        .into_iter()
        .enumerate()
    {
        let mut pos = 0;
        let h = handle(&value, &mut pos)
            .ok_or_else(|| bad(format!("index entry {n}: unreadable block handle")))?;
        let what = format!("data block {n}");
        let data = block(body, h, &what)?;
        for (key, value) in block_entries(&data, &what)? {
            if let Some((last, _)) = out.last() {
                if key.as_slice() <= last.as_slice() {
                    return Err(bad(format!("{what}: keys out of order or repeated")));
                }
            }
            out.push((key, value));
        }
    }
    Ok(out)
}

/// The contents of one block: bounds and checksum checked, decompressed.
fn block(body: &[u8], h: Handle, what: &str) -> Result<Vec<u8>> {
    let end = h
        .offset
        .checked_add(h.size)
        .and_then(|e| e.checked_add(TRAILER_LEN as u64))
        .filter(|&e| e <= body.len() as u64)
        .ok_or_else(|| {
            bad(format!(
                "{what} (offset {}, {} bytes) lies past the end of the table ({} bytes): truncated or corrupt",
                h.offset,
                h.size,
                body.len()
            ))
        })?;
    let start = h.offset as usize;
    let contents_end = end as usize - TRAILER_LEN;
    let with_type = &body[start..contents_end + 1];
    let stored = u32::from_le_bytes(
        body[contents_end + 1..end as usize]
            .try_into()
            .expect("4 bytes"),
    );
    if crc::unmask(stored) != crc32c::crc32c(with_type) {
        return Err(bad(format!("{what}: checksum mismatch (corrupt index)")));
    }
    let contents = &body[start..contents_end];
    match body[contents_end] {
        0 => Ok(contents.to_vec()),
        // TensorFlow 1.2 and later never write this: `BundleWriter::Finish`
        // and `MergeBundles` in tensorflow/core/util/tensor_bundle/tensor_bundle.cc
        // set `compression = table::kNoCompression` ("Compressed tables cannot
        // be read by TensorFlow releases prior to 1.1 ... compressed writes are
        // disabled for now (version 1.2)"). Before that the bundle writer used
        // the default `table::Options`, whose compression is
        // `kSnappyCompression` (tensorflow/core/lib/io/table_options.h), so
        // V2 checkpoints from TF 0.12-1.1 may hold snappy blocks, and TF's
        // reader still takes them. No TensorFlow that runs today writes one:
        // the test table is built by hand.
        1 => {
            let len = snap::raw::decompress_len(contents)
                .map_err(|e| bad(format!("{what}: bad snappy data ({e})")))?;
            if len > MAX_BLOCK_BYTES {
                return Err(bad(format!(
                    "{what}: would decompress to {len} bytes, more than a table block holds"
                )));
            }
            snap::raw::Decoder::new()
                .decompress_vec(contents)
                .map_err(|e| bad(format!("{what}: bad snappy data ({e})")))
        }
        other => Err(bad(format!("{what}: unknown compression type {other}"))),
    }
}

/// The entries of one block, keys expanded from their shared prefixes.
fn block_entries(data: &[u8], what: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let broken = |detail: &str| bad(format!("{what}: {detail}"));
    if data.len() < 4 {
        return Err(broken("shorter than its restart count"));
    }
    let restarts = u32::from_le_bytes(data[data.len() - 4..].try_into().expect("4 bytes")) as usize;
    let restart_bytes = restarts
        .checked_mul(4)
        .and_then(|n| n.checked_add(4))
        .filter(|&n| n <= data.len())
        .ok_or_else(|| broken("its restart array is larger than the block"))?;
    let limit = data.len() - restart_bytes;
    let mut entries = Vec::new();
    let mut key: Vec<u8> = Vec::new();
    let mut pos = 0;
    while pos < limit {
        let entry = &data[..limit];
        let shared = varint(entry, &mut pos, 5).ok_or_else(|| broken("unreadable entry"))? as usize;
        let non_shared =
            varint(entry, &mut pos, 5).ok_or_else(|| broken("unreadable entry"))? as usize;
        let value_len =
            varint(entry, &mut pos, 5).ok_or_else(|| broken("unreadable entry"))? as usize;
        if shared > key.len() {
            return Err(broken(
                "an entry shares more of the previous key than it has",
            ));
        }
        let key_end = pos
            .checked_add(non_shared)
            .filter(|&e| e <= limit)
            .ok_or_else(|| broken("an entry's key runs past the block"))?;
        let value_end = key_end
            .checked_add(value_len)
            .filter(|&e| e <= limit)
            .ok_or_else(|| broken("an entry's value runs past the block"))?;
        key.truncate(shared);
        key.extend_from_slice(&entry[pos..key_end]);
        entries.push((key.clone(), entry[key_end..value_end].to_vec()));
        pos = value_end;
    }
    Ok(entries)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A table built by hand: one data block, an empty metaindex, an index.
    pub(crate) fn table(entries: &[(&[u8], &[u8])], snappy: bool) -> Vec<u8> {
        fn put_varint(out: &mut Vec<u8>, mut v: u64) {
            while v >= 0x80 {
                out.push((v as u8) | 0x80);
                v >>= 7;
            }
            out.push(v as u8);
        }
        fn block(entries: &[(&[u8], &[u8])]) -> Vec<u8> {
            let mut out = Vec::new();
            for (k, v) in entries {
                put_varint(&mut out, 0);
                put_varint(&mut out, k.len() as u64);
                put_varint(&mut out, v.len() as u64);
                out.extend_from_slice(k);
                out.extend_from_slice(v);
            }
            out.extend_from_slice(&0u32.to_le_bytes());
            out.extend_from_slice(&1u32.to_le_bytes());
            out
        }
        fn append(file: &mut Vec<u8>, contents: &[u8], snappy: bool) -> (u64, u64) {
            let offset = file.len() as u64;
            let (body, kind) = if snappy {
                (
                    snap::raw::Encoder::new().compress_vec(contents).unwrap(),
                    1u8,
                )
            } else {
                (contents.to_vec(), 0u8)
            };
            file.extend_from_slice(&body);
            file.push(kind);
            let mut with_type = body.clone();
            with_type.push(kind);
            file.extend_from_slice(&crc::mask(crc32c::crc32c(&with_type)).to_le_bytes());
            (offset, body.len() as u64)
        }
        let mut file = Vec::new();
        let data = append(&mut file, &block(entries), snappy);
        let meta = append(&mut file, &block(&[]), false);
        let mut h = Vec::new();
        put_varint(&mut h, data.0);
        put_varint(&mut h, data.1);
        let last = entries.last().map(|e| e.0).unwrap_or(b"");
        let index = append(&mut file, &block(&[(last, &h)]), false);
        let mut footer = Vec::new();
        put_varint(&mut footer, meta.0);
        put_varint(&mut footer, meta.1);
        put_varint(&mut footer, index.0);
        put_varint(&mut footer, index.1);
        footer.resize(40, 0);
        footer.extend_from_slice(&MAGIC.to_le_bytes());
        file.extend_from_slice(&footer);
        file
    }

    #[test]
    fn reads_plain_and_snappy_blocks() {
        for snappy in [false, true] {
            let t = table(&[(b"", b"header"), (b"a/b", b"1"), (b"a/c", b"22")], snappy);
            let e = entries(&t).unwrap();
            assert_eq!(e.len(), 3);
            assert_eq!(e[2], (b"a/c".to_vec(), b"22".to_vec()));
        }
    }

    /// Every `.index` below `dir`.
    fn index_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                index_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "index") {
                out.push(path);
            }
        }
    }

    /// What the README and the comment on snappy blocks say: TensorFlow
    /// 2.21 wrote every block of every fixture index uncompressed (single
    /// saves, merged sharded saves, TF1's sharded Saver).
    #[test]
    fn tensorflow_writes_uncompressed_blocks() {
        let mut files = Vec::new();
        index_files(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures"),
            &mut files,
        );
        assert!(files.len() >= 9, "{files:?}");
        for file in files {
            let index = std::fs::read(&file).unwrap();
            let body = &index[..index.len() - FOOTER_LEN];
            let mut pos = 0;
            let footer = &index[index.len() - FOOTER_LEN..];
            let mut handles = vec![
                handle(footer, &mut pos).unwrap(),
                handle(footer, &mut pos).unwrap(),
            ];
            let index_block = block(body, handles[1], "index").unwrap();
            for (_, value) in block_entries(&index_block, "index").unwrap() {
                handles.push(handle(&value, &mut 0).unwrap());
            }
            assert!(handles.len() >= 3, "{}", file.display());
            for h in handles {
                let kind = body[(h.offset + h.size) as usize];
                assert_eq!(kind, 0, "{}: block at {}", file.display(), h.offset);
            }
        }
    }

    #[test]
    fn damage_is_reported_not_panicked() {
        let t = table(&[(b"", b"header"), (b"a/b", b"1")], false);
        for cut in 0..t.len() {
            assert!(entries(&t[..cut]).is_err());
        }
        for i in 0..t.len() - 8 {
            let mut d = t.clone();
            d[i] ^= 0x41;
            let _ = entries(&d);
        }
        let mut d = t.clone();
        d[3] ^= 1;
        assert!(entries(&d).unwrap_err().0.contains("checksum"));
    }
}
