//! Stopping a conversion cleanly: Ctrl-C (or SIGTERM) sets a flag that the
//! writer checks between chunks; it then returns an error, and its temporary
//! files are removed as they are dropped. Nothing half-written is left.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::sync::OnceLock;

static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();

fn flag() -> &'static Arc<AtomicBool> {
    FLAG.get_or_init(|| Arc::new(AtomicBool::new(false)))
}

/// Makes SIGINT and SIGTERM stop the work in progress instead of killing
/// the process on the spot (where temporary files would stay behind).
pub fn stop_on_signals() -> std::io::Result<()> {
    #[cfg(unix)]
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(flag()))?;
    }
    Ok(())
}

/// Whether a stop was asked for.
pub fn requested() -> bool {
    flag().load(Ordering::Relaxed)
}

/// Asks the work in progress to stop (what a signal does).
pub fn request() {
    flag().store(true, Ordering::Relaxed);
}

/// The error a stopped write returns. Not `ErrorKind::Interrupted`: that
/// one means "try again" to `write_all`, which would loop forever.
pub fn interrupted() -> std::io::Error {
    std::io::Error::other("interrupted")
}

/// A writer that fails once a stop is requested.
#[derive(Debug)]
pub struct Stoppable<W>(pub W);

impl<W: Write> Write for Stoppable<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if requested() {
            return Err(interrupted());
        }
        self.0.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}
