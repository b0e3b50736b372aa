//! keras2safetensors: read Keras HDF5 weight files, label every array, and
//! write safetensors.
//!
//! The data path is one walk:
//! file → [`keras::detect`] → reader ([`keras::open`]) → [`model::Model`]
//! (layers with labelled weights) → [`export::plan`] (names) →
//! [`export::write`] (streamed, atomic safetensors).
//!
//! ```no_run
//! use std::path::Path;
//! use keras2safetensors::{convert_file, ReadOptions};
//!
//! let summary = convert_file(
//!     Path::new("model.h5"),
//!     Path::new("model.safetensors"),
//!     &ReadOptions::default(),
//!     false,
//!     &mut |_bytes| {},
//! )?;
//! println!("{} tensors", summary.tensors);
//! # Ok::<(), keras2safetensors::Error>(())
//! ```

pub mod dtype;
pub mod error;
pub mod export;
pub mod h5;
pub mod inspect;
pub mod json_order;
pub mod keras;
pub mod labels;
pub mod model;
pub mod safetensors_file;

use std::path::Path;

pub use error::{Error, ErrorKind, Result};
pub use export::WriteSummary;
pub use keras::{open, ReadOptions};
pub use model::Model;

/// Converts one Keras file to one safetensors file.
pub fn convert_file(
    input: &Path,
    output: &Path,
    options: &ReadOptions,
    force: bool,
    progress: &mut dyn FnMut(u64),
) -> Result<WriteSummary> {
    if !force && output.exists() {
        return Err(Error::new(output, ErrorKind::OutputExists));
    }
    let model = keras::open(input, options)?;
    let plan = export::plan(&model, input)?;
    export::write(&plan, &model, output, force, progress)
}
