//! The filesystem side of safety. Inputs are read only when they are
//! regular files (opening a named pipe blocks until someone writes to it, a
//! device never ends); files are told apart by identity (device and inode),
//! so an output never replaces an input; outputs replace only regular
//! files; and folders a run creates are removed again when it fails.

use std::fs::{File, FileType, Metadata};
use std::io::Read;
use std::path::{Path, PathBuf};

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

/// Checks that an output file may be written at `path`: it is not there,
/// or (with `force`) it is a regular file and none of `inputs`. A named
/// pipe, a device, a folder or a symbolic link is never replaced, nor is an
/// input, whatever `force` says.
pub fn check_output(path: &Path, force: bool, inputs: &[FileId]) -> Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::new(path, e.into())),
    };
    if !meta.file_type().is_file() {
        return Err(Error::new(
            path,
            ErrorKind::Unsafe(format!(
                "the output is {}, which is never replaced, even with --force (only regular files are)",
                kind_name(meta.file_type())
            )),
        ));
    }
    check_not_input(path, inputs)?;
    if !force {
        return Err(Error::new(path, ErrorKind::OutputExists));
    }
    Ok(())
}

/// Checks that a file written in place (`manifest -o`) may be written at
/// `path`, following symbolic links: it is not there, or it is a regular
/// file and none of `inputs`.
pub fn check_writable(path: &Path, inputs: &[FileId]) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_file() => Err(Error::new(
            path,
            ErrorKind::Unsafe(format!(
                "the output is {}, which is never written over (only regular files are)",
                kind_name(meta.file_type())
            )),
        )),
        _ => check_not_input(path, inputs),
    }
}

/// Refuses an output path that names one of the inputs.
pub fn check_not_input(path: &Path, inputs: &[FileId]) -> Result<()> {
    match FileId::of_path(path) {
        Some(id) if inputs.contains(&id) => Err(Error::new(
            path,
            ErrorKind::Unsafe(
                "the output is an input of this conversion, which is never replaced, even with --force"
                    .into(),
            ),
        )),
        _ => Ok(()),
    }
}

/// Checks that a folder of outputs (`--max-shard-size`) may be used at
/// `path`: it is not there yet, or it is a folder.
pub fn check_output_folder(path: &Path) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(meta) => Err(Error::new(
            path,
            ErrorKind::Unsafe(format!(
                "the output must be a folder here, and this is {}; it is never replaced",
                kind_name(meta.file_type())
            )),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::new(path, e.into())),
    }
}

/// Folders created by this run, so that a failed run can take them away
/// again. Only empty folders are removed, and only ones this run created:
/// nothing that was there before is ever touched.
#[derive(Debug, Default)]
pub struct CreatedDirs {
    /// In creation order: parents before children.
    dirs: Vec<PathBuf>,
}

impl CreatedDirs {
    /// No folder made yet.
    pub fn new() -> CreatedDirs {
        CreatedDirs::default()
    }

    /// Creates `dir` and whichever of its parents are missing, remembering
    /// each folder it made.
    pub fn create(&mut self, dir: &Path) -> Result<()> {
        let mut missing = Vec::new();
        let mut current = dir;
        loop {
            match std::fs::symlink_metadata(current) {
                Ok(_) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    missing.push(current.to_path_buf());
                    match current.parent() {
                        Some(parent) if !parent.as_os_str().is_empty() => current = parent,
                        _ => break,
                    }
                }
                Err(e) => return Err(Error::new(current, e.into())),
            }
        }
        for folder in missing.into_iter().rev() {
            match std::fs::create_dir(&folder) {
                Ok(()) => self.dirs.push(folder),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && folder.is_dir() => {}
                Err(e) => return Err(Error::new(&folder, e.into())),
            }
        }
        Ok(())
    }

    /// Removes the folders this run created that are still empty, deepest
    /// first (a folder emptied that way is removed too).
    pub fn remove_empty(&mut self) {
        for folder in self.dirs.drain(..).rev() {
            // Fails, and so keeps the folder, when something is in it.
            let _ = std::fs::remove_dir(folder);
        }
    }

    /// Keeps every folder created: the run succeeded.
    pub fn keep(mut self) {
        self.dirs.clear();
    }
}

impl Drop for CreatedDirs {
    fn drop(&mut self) {
        self.remove_empty();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_folders_go_and_others_stay() {
        let root = tempfile::tempdir().unwrap();
        let existing = root.path().join("there");
        std::fs::create_dir(&existing).unwrap();
        let mut created = CreatedDirs::new();
        created.create(&existing.join("a/b/c")).unwrap();
        created.create(&existing.join("a/d")).unwrap();
        std::fs::write(existing.join("a/d/kept"), b"x").unwrap();
        created.remove_empty();
        assert!(existing.join("a/d/kept").exists());
        assert!(!existing.join("a/b").exists());
        drop(created);
        assert!(existing.is_dir(), "a folder that was there stays");
    }

    #[test]
    fn kept_folders_stay() {
        let root = tempfile::tempdir().unwrap();
        let mut created = CreatedDirs::new();
        created.create(&root.path().join("x/y")).unwrap();
        created.keep();
        assert!(root.path().join("x/y").is_dir());
    }
}
