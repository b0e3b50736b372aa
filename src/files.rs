//! The filesystem side of safety. Inputs are read only when they are
//! regular files (opening a named pipe blocks until someone writes to it, a
//! device never ends); files are told apart by identity (device and inode);
//! a file reached through a link must stay in the folder it belongs to.

use std::fs::{File, FileType, Metadata};
use std::io::Read;
use std::path::Path;

use crate::error::{Error, ErrorKind, Result};

/// What a file that is not a regular file is, in words.
pub fn kind_name(file_type: FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if file_type.is_fifo() {
            return "a named pipe (FIFO)";
        }
        if file_type.is_socket() {
            return "a socket";
        }
        if file_type.is_char_device() {
            return "a character device";
        }
        if file_type.is_block_device() {
            return "a block device";
        }
    }
    if file_type.is_dir() {
        "a folder"
    } else if file_type.is_symlink() {
        "a symbolic link"
    } else if file_type.is_file() {
        "a regular file"
    } else {
        "a special file"
    }
}

fn not_regular(path: &Path, file_type: FileType) -> Error {
    Error::new(
        path,
        ErrorKind::Unsafe(format!(
            "{}, not a regular file; only regular files are read",
            kind_name(file_type)
        )),
    )
}

/// Opens `path` for reading if it is a regular file (following symbolic
/// links), and refuses anything else with one line saying what it is. The
/// file is opened without blocking and checked again through the handle, so
/// a file swapped for a named pipe in between cannot make `open` wait.
pub fn open_regular(path: &Path) -> Result<File> {
    let io = |e: std::io::Error| Error::new(path, e.into());
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(not_regular(path, meta.file_type()));
    }
    let file = open_nonblocking(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(not_regular(path, meta.file_type()));
    }
    restore_blocking(&file).map_err(io)?;
    Ok(file)
}

#[cfg(unix)]
fn open_nonblocking(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

#[cfg(not(unix))]
fn open_nonblocking(path: &Path) -> std::io::Result<File> {
    File::open(path)
}

/// Clears `O_NONBLOCK` again: it means nothing for a regular file, but the
/// handle then behaves exactly as `File::open`'s.
#[cfg(unix)]
fn restore_blocking(file: &File) -> std::io::Result<()> {
    use std::os::unix::io::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: `fd` is an open descriptor owned by `file` for the whole call;
    // F_GETFL and F_SETFL only read and set its status flags.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags == -1 || libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) == -1 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn restore_blocking(_file: &File) -> std::io::Result<()> {
    Ok(())
}

/// Reads a text file (an index, a config, rename rules) that must be a
/// regular file.
pub fn read_text(path: &Path) -> Result<String> {
    let mut text = String::new();
    open_regular(path)?
        .read_to_string(&mut text)
        .map_err(|e| Error::new(path, e.into()))?;
    Ok(text)
}

/// A file's identity: two paths with the same identity are one file (a
/// hard link, a symbolic link, `./x` and `x`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FileId {
    #[cfg(unix)]
    dev_ino: (u64, u64),
    #[cfg(not(unix))]
    path: std::path::PathBuf,
}

impl FileId {
    /// The identity of the file `path` names (following symbolic links),
    /// `None` if there is none.
    pub fn of_path(path: &Path) -> Option<FileId> {
        #[cfg(unix)]
        {
            FileId::of_metadata(&std::fs::metadata(path).ok()?)
        }
        #[cfg(not(unix))]
        {
            Some(FileId {
                path: std::fs::canonicalize(path).ok()?,
            })
        }
    }

    /// The identity of an open file.
    pub fn of_file(file: &File) -> Option<FileId> {
        #[cfg(unix)]
        {
            FileId::of_metadata(&file.metadata().ok()?)
        }
        #[cfg(not(unix))]
        {
            let _ = file;
            None
        }
    }

    #[cfg_attr(not(unix), allow(unused_variables))]
    fn of_metadata(meta: &Metadata) -> Option<FileId> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            Some(FileId {
                dev_ino: (meta.dev(), meta.ino()),
            })
        }
        #[cfg(not(unix))]
        {
            None
        }
    }
}

/// Refuses a file reached through a symbolic link that leads out of
/// `folder`: a shard named by an index must be in the index's folder, as
/// an archive member must stay inside the archive.
pub fn check_inside(path: &Path, folder: &Path, what: &str) -> Result<()> {
    let io = |e: std::io::Error| Error::new(path, e.into());
    let real = std::fs::canonicalize(path).map_err(io)?;
    let real_folder = std::fs::canonicalize(if folder.as_os_str().is_empty() {
        Path::new(".")
    } else {
        folder
    })
    .map_err(|e| Error::new(folder, e.into()))?;
    if real.starts_with(&real_folder) {
        Ok(())
    } else {
        Err(Error::new(
            path,
            ErrorKind::Unsafe(format!(
                "{what} is a symbolic link to `{}`, outside the folder `{}`",
                real.display(),
                real_folder.display()
            )),
        ))
    }
}
