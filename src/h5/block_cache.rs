//! The bytes of an HDF5 file as the reader asks for them: many small
//! pieces (headers, B-tree nodes, name heaps, the data of small weights),
//! served from a few blocks kept in memory.
//!
//! The HDF5 crate's own block cache copies each block twice (read into a
//! vector, then into a shared slice) and hashes every lookup; walking a
//! Keras file of 100,000 layers asks for pieces about 3 million times.
//! Here a block is read once into a buffer the cache owns, pieces are
//! lent out of it without a copy, and a block's slot is found by its
//! number alone (direct-mapped: block `b` lives in slot `b % SLOTS`). A
//! walk that goes front to back through the file, as reading a Keras file
//! in layer order does, reads each block once.

use std::fs::File as FsFile;
use std::sync::{Arc, Mutex};

use hdf5_reader::{Storage, StorageBuffer};

use crate::pread::read_exact_at;

/// Bytes per block.
pub(super) const BLOCK_BYTES: usize = 16 << 10;

/// Blocks kept: 512 x 16 KiB, 8 MiB at most, whatever the file's size.
const SLOTS: usize = 512;

/// A window of a file (`len` bytes from `base`), read through the cache.
pub(super) struct BlockCache {
    file: Arc<FsFile>,
    base: u64,
    len: u64,
    slots: Vec<Mutex<Option<Block>>>,
}

struct Block {
    number: u64,
    bytes: Arc<Vec<u8>>,
}

impl BlockCache {
    pub(super) fn new(file: Arc<FsFile>, base: u64, len: u64) -> BlockCache {
        BlockCache {
            file,
            base,
            len,
            slots: (0..SLOTS).map(|_| Mutex::new(None)).collect(),
        }
    }

    /// Empties every slot: the blocks go once no piece lent out holds them.
    pub(super) fn forget(&self) {
        for slot in &self.slots {
            *slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
        }
    }

    /// Block `number`, read from the file unless it is in its slot.
    fn block(&self, number: u64) -> std::io::Result<Arc<Vec<u8>>> {
        let slot = &self.slots[(number % SLOTS as u64) as usize];
        let mut slot = slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(block) = slot.as_ref().filter(|b| b.number == number) {
            return Ok(block.bytes.clone());
        }
        // Every read of the file's structure passes here: a stop is
        // noticed however long the walk.
        crate::cancel::checkpoint()?;
        let start = number * BLOCK_BYTES as u64;
        let size = (self.len - start).min(BLOCK_BYTES as u64) as usize;
        // The evicted block's buffer is used again when nobody holds it.
        let mut buffer = slot
            .take()
            .and_then(|old| Arc::try_unwrap(old.bytes).ok())
            .unwrap_or_default();
        buffer.resize(size, 0);
        read_exact_at(&self.file, &mut buffer, self.base + start)?;
        let bytes = Arc::new(buffer);
        *slot = Some(Block {
            number,
            bytes: bytes.clone(),
        });
        Ok(bytes)
    }

    /// Copies `buf.len()` bytes from `offset` of the window into `buf`.
    pub(super) fn read_into(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&end| end <= self.len)
            .ok_or(std::io::ErrorKind::UnexpectedEof)?;
        let mut at = offset;
        while at < end {
            let number = at / BLOCK_BYTES as u64;
            let block = self.block(number)?;
            let within = (at - number * BLOCK_BYTES as u64) as usize;
            let n = ((end - at) as usize).min(block.len() - within);
            let done = (at - offset) as usize;
            buf[done..done + n].copy_from_slice(&block[within..within + n]);
            at += n as u64;
        }
        Ok(())
    }
}

impl Storage for BlockCache {
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
        if len == 0 {
            return Ok(StorageBuffer::from_vec(Vec::new()));
        }
        let number = offset / BLOCK_BYTES as u64;
        if (end - 1) / BLOCK_BYTES as u64 == number {
            // Within one block: lent, not copied.
            let block = self.block(number)?;
            let within = (offset - number * BLOCK_BYTES as u64) as usize;
            return StorageBuffer::from_shared_owner(block, within, len);
        }
        let mut bytes = vec![0u8; len];
        self.read_into(&mut bytes, offset)?;
        Ok(StorageBuffer::from_vec(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_of(bytes: &[u8]) -> Arc<FsFile> {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(bytes).unwrap();
        Arc::new(file)
    }

    #[test]
    fn any_range_reads_the_bytes_at_its_offset() {
        // Three and a half blocks of distinct bytes, read through a window
        // that starts 7 bytes in, by ranges that start and end anywhere:
        // inside a block, across one or more block edges, at the end.
        let data: Vec<u8> = (0..BLOCK_BYTES * 7 / 2 + 7)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let cache = BlockCache::new(file_of(&data), 7, (data.len() - 7) as u64);
        let window = &data[7..];
        let edges = [
            0,
            1,
            BLOCK_BYTES - 1,
            BLOCK_BYTES,
            BLOCK_BYTES + 1,
            2 * BLOCK_BYTES + 5,
        ];
        for &start in &edges {
            for len in [0, 1, 2, 100, BLOCK_BYTES, 2 * BLOCK_BYTES + 3] {
                let Some(expected) = window.get(start..start + len) else {
                    continue;
                };
                let got = cache.read_range(start as u64, len).unwrap();
                assert_eq!(got.as_ref(), expected, "{start}+{len}");
                let mut buf = vec![0u8; len];
                cache.read_into(&mut buf, start as u64).unwrap();
                assert_eq!(buf, expected, "{start}+{len}");
            }
        }
        let last = window.len() - 3;
        assert_eq!(
            cache.read_range(last as u64, 3).unwrap().as_ref(),
            &window[last..]
        );
    }

    #[test]
    fn pieces_of_one_block_are_lent_not_copied() {
        // Two pieces of a block point into the block's one buffer, as far
        // apart as their offsets, up to the block's last byte; a piece
        // across a block edge is a copy of its own.
        let data: Vec<u8> = (0..3 * BLOCK_BYTES).map(|i| i as u8).collect();
        let cache = BlockCache::new(file_of(&data), 0, data.len() as u64);
        let block = BLOCK_BYTES as u64;
        for (a, b, len) in [
            (10, 20, 4),
            (block, 2 * block - 8, 8),
            (block + 1, block + 5, 1),
        ] {
            let first = cache.read_range(a, len).unwrap();
            let second = cache.read_range(b, len).unwrap();
            let gap = second.as_ref().as_ptr() as usize - first.as_ref().as_ptr() as usize;
            assert_eq!(gap as u64, b - a, "{a} {b}");
        }
        let across = cache.read_range(block - 2, 4).unwrap();
        let inside = cache.read_range(block - 6, 4).unwrap();
        assert_ne!(
            across.as_ref().as_ptr() as usize,
            inside.as_ref().as_ptr() as usize + 4
        );
        assert_eq!(across.as_ref(), &data[BLOCK_BYTES - 2..BLOCK_BYTES + 2]);
    }

    #[test]
    fn a_forgotten_cache_holds_no_block_and_reads_again() {
        let data: Vec<u8> = (0..2 * BLOCK_BYTES).map(|i| (i % 251) as u8).collect();
        let cache = BlockCache::new(file_of(&data), 0, data.len() as u64);
        let held = cache.read_range(5, 10).unwrap();
        cache.read_range(BLOCK_BYTES as u64 + 3, 4).unwrap();
        cache.forget();
        assert!(cache
            .slots
            .iter()
            .all(|slot| slot.lock().unwrap().is_none()));
        // A piece lent out before stays whole; a new read reads the file.
        assert_eq!(held.as_ref(), &data[5..15]);
        assert_eq!(cache.read_range(5, 10).unwrap().as_ref(), &data[5..15]);
    }

    #[test]
    fn a_range_past_the_window_is_an_error() {
        let data = vec![1u8; 100];
        let cache = BlockCache::new(file_of(&data), 10, 80);
        assert!(cache.read_range(70, 11).is_err());
        assert!(cache.read_range(u64::MAX, 2).is_err());
        assert!(cache.read_into(&mut [0u8; 2], 79).is_err());
        assert_eq!(cache.read_range(70, 10).unwrap().as_ref(), &[1u8; 10]);
    }

    #[test]
    fn a_walk_front_to_back_reads_each_block_once() {
        // Every block of an 8 MiB window read once, the file then changed
        // under them: read again, each still comes from its slot.
        use std::os::unix::fs::FileExt;
        let len = SLOTS * BLOCK_BYTES;
        let file = file_of(&vec![1u8; len]);
        let cache = BlockCache::new(file.clone(), 0, len as u64);
        for block in 0..SLOTS {
            cache
                .read_range((block * BLOCK_BYTES + 7) as u64, 3)
                .unwrap();
        }
        file.write_all_at(&vec![2u8; len], 0).unwrap();
        for block in 0..SLOTS {
            let got = cache.read_range((block * BLOCK_BYTES) as u64, 1).unwrap();
            assert_eq!(got.as_ref(), [1], "block {block} was read again");
        }
    }

    #[test]
    fn blocks_that_share_a_slot_replace_each_other() {
        // Blocks 0 and SLOTS share slot 0; reading one after the other,
        // while a piece of the first is still held, gives each its own bytes.
        let data: Vec<u8> = (0..(SLOTS + 1) * BLOCK_BYTES)
            .map(|i| (i / BLOCK_BYTES) as u8 ^ (i as u8))
            .collect();
        let cache = BlockCache::new(file_of(&data), 0, data.len() as u64);
        let far = (SLOTS * BLOCK_BYTES) as u64;
        let held = cache.read_range(10, 4).unwrap();
        assert_eq!(
            cache.read_range(far + 10, 4).unwrap().as_ref(),
            &data[far as usize + 10..][..4]
        );
        assert_eq!(held.as_ref(), &data[10..14]);
        assert_eq!(cache.read_range(10, 4).unwrap().as_ref(), &data[10..14]);
    }
}
