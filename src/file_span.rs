//! A run of bytes in an input file, and copying it into the output inside
//! the kernel.
//!
//! A stored tensor that goes out unchanged is one run of the input. Copied
//! by `pread` into a buffer and `write` out of it, each byte crosses into
//! our memory and back; `copy_file_range` moves it from page cache to page
//! cache, as `cat` does. On the 8 GB bench file that took the copy's
//! system time from 9.9-11.5 s to 5.5-7.6 s, about what `cat` pays (see
//! `sink.rs`).

use std::fs::File;
use std::sync::Arc;

/// `len` bytes of `file` from `offset`.
#[derive(Debug, Clone)]
pub struct FileSpan {
    pub file: Arc<File>,
    pub offset: u64,
    pub len: u64,
}

/// Bytes of a scratch buffer, where the kernel will not copy for us.
const FALLBACK_BUFFER_BYTES: usize = 128 << 10;

impl FileSpan {
    /// Appends the span to `out` at its current position, `piece` bytes at
    /// a time, calling `after_piece` with each number of bytes copied (an
    /// error from it stops the copy). An input shorter than the span is an
    /// error.
    pub fn copy_to(
        &self,
        out: &File,
        piece: u64,
        after_piece: &mut dyn FnMut(u64) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let piece = piece.max(1);
        let mut done = 0u64;
        while done < self.len {
            let want = (self.len - done).min(piece);
            let n = match kernel_copy(&self.file, self.offset + done, out, want) {
                Ok(0) => return Err(ended_early()),
                Ok(n) => n,
                // Not between these two files (another file system, a kernel
                // without the call): the rest through memory.
                Err(e) if kernel_copy_unavailable(&e) => {
                    return self.copy_through_memory(out, done, piece, after_piece);
                }
                Err(e) => return Err(e),
            };
            done += n;
            after_piece(n)?;
        }
        Ok(())
    }

    /// The span from `done` bytes in, read into memory and written out.
    fn copy_through_memory(
        &self,
        mut out: &File,
        mut done: u64,
        piece: u64,
        after_piece: &mut dyn FnMut(u64) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        use std::io::Write;
        let mut buf = vec![0u8; FALLBACK_BUFFER_BYTES];
        let mut since = 0u64;
        while done < self.len {
            let n = (self.len - done).min(buf.len() as u64) as usize;
            crate::pread::read_exact_at(&self.file, &mut buf[..n], self.offset + done)?;
            out.write_all(&buf[..n])?;
            done += n as u64;
            since += n as u64;
            if since >= piece || done == self.len {
                after_piece(std::mem::take(&mut since))?;
            }
        }
        Ok(())
    }
}

fn ended_early() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "the input ended inside a tensor's data (was it truncated while being read?)",
    )
}

/// Copies up to `len` bytes of `from` at `offset` to `to` at its position.
#[cfg(target_os = "linux")]
fn kernel_copy(from: &File, offset: u64, to: &File, len: u64) -> std::io::Result<u64> {
    use std::os::fd::AsRawFd;
    let mut offset = i64::try_from(offset).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    loop {
        // SAFETY: both descriptors are open while the files are borrowed;
        // the kernel writes only `offset`, a local it is given the address
        // of, and a null output offset means the file's own position.
        let n = unsafe {
            libc::copy_file_range(
                from.as_raw_fd(),
                &mut offset,
                to.as_raw_fd(),
                std::ptr::null_mut(),
                len,
                0,
            )
        };
        if n >= 0 {
            return Ok(n as u64);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn kernel_copy(_from: &File, _offset: u64, _to: &File, _len: u64) -> std::io::Result<u64> {
    Err(std::io::ErrorKind::Unsupported.into())
}

/// Errors that say the kernel cannot copy between these files at all.
fn kernel_copy_unavailable(e: &std::io::Error) -> bool {
    #[cfg(target_os = "linux")]
    if let Some(code) = e.raw_os_error() {
        return [
            libc::EXDEV,
            libc::EINVAL,
            libc::ENOSYS,
            libc::EOPNOTSUPP,
            libc::EPERM,
            libc::EBADF,
        ]
        .contains(&code);
    }
    e.kind() == std::io::ErrorKind::Unsupported
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, Write};

    fn input(dir: &std::path::Path, data: &[u8]) -> Arc<File> {
        let path = dir.join("in");
        std::fs::write(&path, data).unwrap();
        Arc::new(File::open(&path).unwrap())
    }

    #[test]
    fn a_span_lands_at_the_output_position_in_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 13 % 251) as u8).collect();
        let span = FileSpan {
            file: input(dir.path(), &data),
            offset: 777,
            len: 50_001,
        };
        let path = dir.path().join("out");
        let mut out = File::create(&path).unwrap();
        out.write_all(b"head").unwrap();
        let mut pieces = Vec::new();
        span.copy_to(&out, 4096, &mut |n| {
            pieces.push(n);
            Ok(())
        })
        .unwrap();
        out.write_all(b"tail").unwrap();
        assert_eq!(out.stream_position().unwrap(), 4 + 50_001 + 4);
        let written = std::fs::read(&path).unwrap();
        assert_eq!(&written[..4], b"head");
        assert!(written[4..4 + 50_001] == data[777..777 + 50_001]);
        assert_eq!(&written[4 + 50_001..], b"tail");
        assert_eq!(pieces.iter().sum::<u64>(), 50_001);
        assert!(pieces.iter().all(|&n| n <= 4096), "{pieces:?}");
    }

    #[test]
    fn a_short_input_is_an_error_and_so_is_a_stop() {
        let dir = tempfile::tempdir().unwrap();
        let file = input(dir.path(), &[5u8; 1000]);
        let out = File::create(dir.path().join("out")).unwrap();
        let short = FileSpan {
            file: file.clone(),
            offset: 900,
            len: 200,
        };
        let err = short.copy_to(&out, 64, &mut |_| Ok(())).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof, "{err}");
        let whole = FileSpan {
            file,
            offset: 0,
            len: 1000,
        };
        let mut calls = 0;
        let err = whole
            .copy_to(&out, 100, &mut |_| {
                calls += 1;
                Err(std::io::Error::other("stop"))
            })
            .unwrap_err();
        assert_eq!((err.to_string().as_str(), calls), ("stop", 1));
    }

    /// Between two file systems the kernel refuses (`EXDEV`) and memory
    /// copies instead. Needs a tmpfs at `/dev/shm` on another device than
    /// the temporary folder, as on Linux machines and CI runners; elsewhere
    /// it says so and checks nothing.
    #[test]
    #[cfg(target_os = "linux")]
    fn a_copy_across_file_systems_still_lands() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let Ok(other) = tempfile::tempdir_in("/dev/shm") else {
            eprintln!("no /dev/shm: not checked");
            return;
        };
        let device = |p: &std::path::Path| std::fs::metadata(p).unwrap().dev();
        if device(dir.path()) == device(other.path()) {
            eprintln!("/dev/shm is on the temporary folder's device: not checked");
            return;
        }
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 5 % 241) as u8).collect();
        let span = FileSpan {
            file: input(dir.path(), &data),
            offset: 1,
            len: 199_998,
        };
        let path = other.path().join("out");
        let out = File::create(&path).unwrap();
        span.copy_to(&out, 1 << 16, &mut |_| Ok(())).unwrap();
        assert!(std::fs::read(&path).unwrap() == data[1..199_999]);
    }

    #[test]
    fn where_the_kernel_will_not_copy_memory_does() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        let span = FileSpan {
            file: input(dir.path(), &data),
            offset: 3,
            len: 299_990,
        };
        let path = dir.path().join("out");
        let out = File::create(&path).unwrap();
        let mut pieces = Vec::new();
        span.copy_through_memory(&out, 10, 1 << 20, &mut |n| {
            pieces.push(n);
            Ok(())
        })
        .unwrap();
        // Less than one 1 MiB piece: told once, at the end.
        assert_eq!(pieces, [299_980]);
        assert!(std::fs::read(&path).unwrap() == data[13..299_993]);
    }
}
