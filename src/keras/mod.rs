//! Recognising a file by its content and reading it into a [`Model`].

pub mod config;
pub mod legacy_h5;

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::error::{Error, ErrorKind, Result};
use crate::h5;
use crate::model::Model;
pub use legacy_h5::ReadOptions;

/// What a file is, judged from its first bytes (never from its extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Hdf5,
    Safetensors,
}

/// Looks at the first bytes of a file and says what it is, or why it is
/// nothing we read.
pub fn detect(path: &Path) -> Result<FileKind> {
    let mut head = [0u8; 16];
    let mut file = File::open(path).map_err(|e| Error::new(path, e.into()))?;
    let n = read_up_to(&mut file, &mut head).map_err(|e| Error::new(path, e.into()))?;
    let head = &head[..n];
    if head.is_empty() {
        return Err(Error::new(path, ErrorKind::Empty));
    }
    if head.starts_with(h5::SIGNATURE) {
        return Ok(FileKind::Hdf5);
    }
    if head.len() >= 9 && head[8] == b'{' {
        return Ok(FileKind::Safetensors);
    }
    Err(Error::new(
        path,
        ErrorKind::UnknownFormat(describe_head(head)),
    ))
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Says what the first bytes look like, so the person can tell what they have.
fn describe_head(head: &[u8]) -> String {
    let hex: Vec<String> = head.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let hint = if head.starts_with(b"PK\x03\x04") {
        ": a zip archive; `.keras` archives are not read by this version"
    } else if head.starts_with(b"\x93NUMPY") {
        ": a numpy .npy file"
    } else if head
        .iter()
        .all(|&b| b.is_ascii_graphic() || b.is_ascii_whitespace())
    {
        ": plain text"
    } else {
        ""
    };
    format!("first bytes are {}{hint}", hex.join(" "))
}

/// Opens a Keras weight file and reads its structure (not its data).
pub fn open(path: &Path, options: &ReadOptions) -> Result<Model> {
    match detect(path)? {
        FileKind::Hdf5 => {}
        FileKind::Safetensors => {
            return Err(Error::new(
                path,
                ErrorKind::UnknownFormat(
                    "this is a safetensors file, not a Keras file; `inspect` reads it".into(),
                ),
            ))
        }
    }
    let file = h5::File::open(path).map_err(|e| Error::new(path, ErrorKind::CorruptHdf5(e.0)))?;
    legacy_h5::read(path, file, options)
}
