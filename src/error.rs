//! Errors as values that name the file they concern and say what is wrong
//! with it, in words a person can act on.

use std::fmt;
use std::path::{Path, PathBuf};

/// An error, with the file it concerns.
#[derive(Debug)]
pub struct Error {
    /// The file the error concerns (the input, an output, a shard, a config).
    pub path: PathBuf,
    /// What went wrong.
    pub kind: ErrorKind,
}

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum ErrorKind {
    /// The file has no bytes at all.
    #[error("the file is empty")]
    Empty,
    /// The file is neither HDF5 nor safetensors nor anything else we read.
    #[error("not a Keras weight file or safetensors file ({0})")]
    UnknownFormat(String),
    /// An HDF5 file whose structure could not be read: truncated or corrupt.
    #[error("truncated or corrupt HDF5 file: {0}")]
    CorruptHdf5(String),
    /// A TensorFlow checkpoint (tensor bundle) whose index or data could not
    /// be read: truncated, corrupt, a missing shard, a checksum mismatch.
    #[error("truncated or corrupt TensorFlow checkpoint: {0}")]
    CorruptCheckpoint(String),
    /// A readable HDF5 file that has none of the marks of a Keras weight file.
    #[error("an HDF5 file, but not a Keras weight file: {0}")]
    NotKeras(String),
    /// A file with a construct Keras never writes and Keras's own loader
    /// refuses (links, virtual datasets, archive members escaping the folder,
    /// zip bombs): it may be an attack.
    #[error("refused: {0}")]
    Unsafe(String),
    /// A Keras file laid out in a way this version does not read yet.
    #[error("{0}")]
    Unsupported(String),
    /// A Keras file whose contents contradict themselves.
    #[error("invalid Keras file: {0}")]
    InvalidKeras(String),
    /// A weight whose element type has no safetensors equivalent.
    #[error("weight `{weight}` has element type {detail}, which safetensors cannot hold")]
    UnsupportedDtype {
        /// The weight's stored name.
        weight: String,
        /// Its element type, described.
        detail: String,
    },
    /// A weight whose numbers are not laid out the standard way for their
    /// type (a float of precision 16 in 4 bytes, a bool enum with FALSE = 1):
    /// its bytes, copied as they are, would mean other values.
    #[error(
        "weight `{weight}` has a non-standard {detail}, which would be copied as wrong values"
    )]
    NonStandardLayout {
        /// The weight's stored name.
        weight: String,
        /// What is non-standard about its type.
        detail: String,
    },
    /// Two weights would be written under the same tensor name.
    #[error("two weights would both be named `{name}` ({first} and {second})")]
    NameClash {
        /// The tensor name both would get.
        name: String,
        /// The first weight's stored name.
        first: String,
        /// The second weight's stored name.
        second: String,
    },
    /// A dataset of the input that no reader claimed and nothing set aside:
    /// writing the rest would drop it silently.
    #[error("not every array would be written: {0}")]
    Unclaimed(String),
    /// Nothing would be written: every tensor was skipped or filtered out.
    #[error("no tensor to write: {0}")]
    NothingToWrite(String),
    /// The output file is there already and `--force` was not given.
    #[error("output exists already (pass --force to overwrite it)")]
    OutputExists,
    /// A file given as a manifest that is not one.
    #[error("not a keras2safetensors manifest ({0}); `manifest FILE -o MANIFEST_JSON` writes one")]
    InvalidManifest(String),
    /// A safetensors file that does not follow the format.
    #[error("not a valid safetensors file: {0}")]
    InvalidSafetensors(String),
    /// Reading or writing failed at the operating-system level.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// An error of `kind` concerning `path`.
    pub fn new(path: impl Into<PathBuf>, kind: ErrorKind) -> Error {
        Error {
            path: path.into(),
            kind,
        }
    }

    /// A refusal found while writing names the output; it is the input's
    /// fault, so it names the input.
    pub fn refusal_names(self, input: &Path) -> Error {
        match self.kind {
            ErrorKind::Unsafe(_) => Error::new(input, self.kind),
            _ => self,
        }
    }

    /// Wraps a kind-producing closure's error with a path.
    pub fn at(path: &Path) -> impl Fn(ErrorKind) -> Error + '_ {
        move |kind| Error::new(path, kind)
    }
}

impl fmt::Display for Error {
    /// One line: names from the file (and the file's own name) have their
    /// control characters spelled out, so an error never sends a terminal
    /// escape sequence or breaks the line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = format!("{}: {}", self.path.display(), self.kind);
        f.write_str(&crate::terminal::escape(&text))
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.kind)
    }
}

/// The result of every fallible call of the library.
pub type Result<T> = std::result::Result<T, Error>;
