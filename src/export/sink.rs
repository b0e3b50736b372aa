//! The output file's write buffer, and the thread that writes it.
//!
//! A tensor that goes out as stored, and lies in one run of an input file
//! on disk, is copied file to file by the kernel (`copy_file_range`, as
//! `cat` copies; see `file_span.rs`). Everything else is copied twice: into
//! the buffer (`pread`, or built in memory) and from the buffer into the
//! output (`write`). Both kinds of work go, in output order, to a thread of
//! its own, so that the next buffer is filled while the last is written.
//!
//! Measured on the bench files, rotating rounds after `rm` + `sync`:
//! - At 8 GB, the kernel copy took 5.7-7.7 s (5.5-7.6 s of system time)
//!   against 8.8-10.7 s (9.9-11.5 s) for `pread` + `write` with the two
//!   copies on two cores, and 6.7-8.2 s for `cat` + sync (once 21 s).
//!   Written through memory, a gigabyte took 3.0-3.7 times the system time
//!   it takes at 2.16 GB; copied by the kernel, 1.8-2.6 times.
//! - At 2.16 GB it is slower than the two cores were, 0.91-0.92 s against
//!   0.79-0.81 s, and faster than `cat` + sync (1.28-1.74 s): kept for the
//!   large files, where the other way missed the target.
//!
//! The writer also asks the kernel to start writing each 16 MiB of the
//! output to disk as soon as it is in the page cache
//! ([`start_writeback`]), rather than leaving it all dirty for the final
//! `fsync`. Without that, at 8 GB the dirty pages hit the kernel's limits
//! mid-copy and the writer paid for it in system time: 6.24 s median
//! against 5.60 s for `cat` + sync (five rotating rounds); with it, 4.91 s.
//! On the 2.16 GB file, six rounds: 1.38 s median against 1.92 s without
//! and 1.83 s for `cat` + sync. Windows of 64 MiB measured the same at
//! 2.16 GB and slower at 8 GB (5.38 s). (Those rounds were before the
//! kernel copy, on another machine.)

use std::fs::File;
use std::io::Write;
use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender};
use std::thread::{Scope, ScopedJoinHandle};

use crate::cancel;
use crate::file_span::FileSpan;

/// Buffers in flight: one being filled, one being written, one waiting.
const BUFFERS: usize = 3;

/// Bytes written between two requests to start writing back to disk.
const WRITEBACK_WINDOW: u64 = 16 << 20;

/// What the writer thread writes next, in order.
enum Job {
    /// The first bytes of a buffer, which goes back to be filled again.
    Bytes(Vec<u8>, usize),
    /// A run of an input file, copied by the kernel.
    Copy(FileSpan),
}

/// The output file behind buffers of fixed size: every write is a whole
/// buffer at an offset that is a multiple of its size (but for the one
/// before and the one after a kernel copy, and the last), so the page
/// cache takes whole, aligned pieces. Tensors can be read straight into
/// the free space ([`Sink::spare`]) or copied file to file
/// ([`Sink::copy_span`]); a stop request ends the next hand-over.
pub(super) struct Sink<'scope> {
    buf: Vec<u8>,
    len: usize,
    /// Where the buffer starts in the output.
    position: u64,
    /// Work for the writer, in output order.
    full: Option<SyncSender<Job>>,
    /// Written buffers back from the writer, to be filled again.
    empty: Receiver<Vec<u8>>,
    writer: Option<ScopedJoinHandle<'scope, std::io::Result<()>>>,
}

impl<'scope> Sink<'scope> {
    /// A sink of `size`-byte buffers writing to `file` from a thread of
    /// `scope`.
    pub(super) fn start<'env>(
        scope: &'scope Scope<'scope, 'env>,
        file: &'env File,
        size: usize,
    ) -> Sink<'scope> {
        Sink::start_with_window(scope, file, size, WRITEBACK_WINDOW)
    }

    /// [`Sink::start`], asking for writeback every `window` bytes.
    fn start_with_window<'env>(
        scope: &'scope Scope<'scope, 'env>,
        file: &'env File,
        size: usize,
        window: u64,
    ) -> Sink<'scope> {
        let size = size.max(1);
        let (full, to_write) = sync_channel::<Job>(BUFFERS);
        let (written, empty) = channel::<Vec<u8>>();
        for _ in 1..BUFFERS {
            let _ = written.send(vec![0u8; size]);
        }
        let writer = scope.spawn(move || -> std::io::Result<()> {
            let mut file = file;
            // Bytes written, and where the last writeback request ended.
            let (mut written_to, mut requested_to) = (0u64, 0u64);
            let mut advance = |n: u64| {
                written_to += n;
                if written_to - requested_to >= window {
                    start_writeback(file, requested_to, written_to - requested_to);
                    requested_to = written_to;
                }
            };
            for job in to_write {
                match job {
                    Job::Bytes(buf, len) => {
                        file.write_all(&buf[..len])?;
                        advance(len as u64);
                        // The sink may have stopped taking buffers back.
                        let _ = written.send(buf);
                    }
                    Job::Copy(span) => span.copy_to(file, window, &mut |n| {
                        advance(n);
                        cancel::checkpoint()
                    })?,
                }
            }
            Ok(())
        });
        Sink {
            buf: vec![0u8; size],
            len: 0,
            position: 0,
            full: Some(full),
            empty,
            writer: Some(writer),
        }
    }

    /// The free part of the buffer (never empty).
    pub(super) fn spare(&mut self) -> &mut [u8] {
        let limit = self.limit();
        &mut self.buf[self.len..limit]
    }

    /// Where this buffer is full: its end, or after a kernel copy left it
    /// misaligned, the next multiple of its size in the output.
    fn limit(&self) -> usize {
        let size = self.buf.len();
        size - (self.position % size as u64) as usize
    }

    /// Counts `n` bytes of [`Sink::spare`] as filled; hands over a full buffer.
    pub(super) fn commit(&mut self, n: usize) -> std::io::Result<()> {
        self.len += n;
        if self.len == self.limit() {
            self.hand_over()?;
        }
        Ok(())
    }

    /// Appends `span` of an input file, after what is buffered, copied by
    /// the writer file to file.
    pub(super) fn copy_span(&mut self, span: FileSpan) -> std::io::Result<()> {
        self.hand_over()?;
        let len = span.len;
        self.send(Job::Copy(span))?;
        self.position += len;
        Ok(())
    }

    /// Writes what is buffered and waits until every byte is written;
    /// the first error the writer met, if any.
    pub(super) fn finish(mut self) -> std::io::Result<()> {
        self.hand_over()?;
        self.full = None;
        self.writer_result()
    }

    /// Sends the filled buffer to the writer and takes an empty one.
    fn hand_over(&mut self) -> std::io::Result<()> {
        if self.len == 0 {
            return Ok(());
        }
        let Ok(empty) = self.empty.recv() else {
            return Err(self.stopped());
        };
        let filled = std::mem::replace(&mut self.buf, empty);
        let len = std::mem::take(&mut self.len);
        self.send(Job::Bytes(filled, len))?;
        self.position += len as u64;
        Ok(())
    }

    fn send(&mut self, job: Job) -> std::io::Result<()> {
        if cancel::requested() {
            return Err(cancel::interrupted());
        }
        let sent = self
            .full
            .as_ref()
            .is_some_and(|full| full.send(job).is_ok());
        if !sent {
            return Err(self.stopped());
        }
        Ok(())
    }

    /// The writer ended before its work did: its error.
    fn stopped(&mut self) -> std::io::Error {
        self.full = None;
        match self.writer_result() {
            Err(e) => e,
            Ok(()) => std::io::Error::other("the output's writer stopped"),
        }
    }

    fn writer_result(&mut self) -> std::io::Result<()> {
        match self.writer.take().map(ScopedJoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(panic)) => std::panic::resume_unwind(panic),
            None => Err(std::io::Error::other("the output's writer stopped")),
        }
    }
}

/// Asks the kernel to start writing `len` bytes of `file` from `offset`
/// to disk, without waiting. Only a head start for the `fsync` that ends
/// every conversion, which is what makes the output durable and reports
/// any write error; so a refusal here (a file system without the call)
/// changes nothing and is ignored.
#[cfg(target_os = "linux")]
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: the descriptor is open for as long as `file` is borrowed;
    // the call reads no memory of ours.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File, _offset: u64, _len: u64) {}

impl Write for Sink<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let space = self.spare();
        let n = data.len().min(space.len());
        space[..n].copy_from_slice(&data[..n]);
        self.commit(n)?;
        Ok(n)
    }

    /// Nothing to do: buffers go out as they fill, and [`Sink::finish`]
    /// writes the last one.
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_come_out_in_order_through_every_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let file = File::create(&path).unwrap();
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::thread::scope(|scope| {
            // Writeback asked for every other buffer or so.
            let mut sink = Sink::start_with_window(scope, &file, 64, 100);
            // Pieces of every size against 64-byte buffers: within one,
            // across several, filled through `spare`.
            let mut at = 0;
            for (k, piece) in [1usize, 63, 64, 65, 200, 3, 1000]
                .iter()
                .cycle()
                .enumerate()
            {
                if at >= data.len() {
                    break;
                }
                let end = (at + piece).min(data.len());
                if k % 3 == 2 {
                    let space = sink.spare();
                    let n = (end - at).min(space.len());
                    space[..n].copy_from_slice(&data[at..at + n]);
                    sink.commit(n).unwrap();
                    at += n;
                } else {
                    sink.write_all(&data[at..end]).unwrap();
                    at = end;
                }
            }
            sink.finish().unwrap();
        });
        assert_eq!(std::fs::read(&path).unwrap(), data);
    }

    #[test]
    fn copied_spans_fall_between_buffers_and_the_next_buffer_ends_aligned() {
        let dir = tempfile::tempdir().unwrap();
        let input: Vec<u8> = (0..5_000u32).map(|i| (i * 11 % 247) as u8).collect();
        std::fs::write(dir.path().join("in"), &input).unwrap();
        let from = std::sync::Arc::new(File::open(dir.path().join("in")).unwrap());
        let span = |offset: u64, len: u64| FileSpan {
            file: from.clone(),
            offset,
            len,
        };
        let path = dir.path().join("out");
        let file = File::create(&path).unwrap();
        let mut expected = Vec::new();
        std::thread::scope(|scope| {
            let mut sink = Sink::start_with_window(scope, &file, 64, 100);
            sink.write_all(b"header").unwrap();
            expected.extend_from_slice(b"header");
            sink.copy_span(span(10, 1000)).unwrap();
            expected.extend_from_slice(&input[10..1010]);
            // 6 + 1000 bytes are out: this buffer ends at 1024, a multiple of 64.
            assert_eq!(sink.spare().len(), 18);
            sink.write_all(&[7u8; 100]).unwrap();
            expected.extend_from_slice(&[7u8; 100]);
            assert_eq!(sink.spare().len(), 64 - (1106 % 64));
            sink.copy_span(span(4000, 1000)).unwrap();
            sink.copy_span(span(0, 3)).unwrap();
            expected.extend_from_slice(&input[4000..5000]);
            expected.extend_from_slice(&input[..3]);
            sink.write_all(b"end").unwrap();
            expected.extend_from_slice(b"end");
            sink.finish().unwrap();
        });
        assert!(std::fs::read(&path).unwrap() == expected);
    }

    #[test]
    fn a_copy_past_the_input_end_is_the_writers_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("in"), [1u8; 100]).unwrap();
        let from = std::sync::Arc::new(File::open(dir.path().join("in")).unwrap());
        let file = File::create(dir.path().join("out")).unwrap();
        let err = std::thread::scope(|scope| {
            let mut sink = Sink::start(scope, &file, 16);
            let span = FileSpan {
                file: from,
                offset: 50,
                len: 100,
            };
            sink.copy_span(span).unwrap();
            sink.finish().unwrap_err()
        });
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof, "{err}");
    }

    #[test]
    fn a_write_that_fails_is_an_error_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        std::fs::write(&path, b"").unwrap();
        // Opened for reading: every write fails.
        let file = File::open(&path).unwrap();
        let err = std::thread::scope(|scope| {
            let mut sink = Sink::start(scope, &file, 16);
            for _ in 0..100 {
                if let Err(e) = sink.write_all(&[1u8; 16]) {
                    return e;
                }
            }
            sink.finish().unwrap_err()
        });
        // The writer's own error, whichever buffer met it.
        assert_ne!(err.to_string(), "the output's writer stopped", "{err}");
        #[cfg(unix)]
        assert_eq!(err.raw_os_error(), Some(libc::EBADF), "{err}");
    }
}
