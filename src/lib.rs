//! keras2safetensors: read Keras HDF5 weight files, label every array, and
//! write safetensors.
//!
//! The data path is one walk:
//! file → [`keras::detect`] → reader ([`keras::open`], which accounts for
//! every dataset: each is written or skipped for a reason
//! ([`model::Model::skipped`])) → [`model::Model`]
//! (layers with labelled weights) → [`export::plan()`] (names) →
//! [`export::write`] (streamed, atomic safetensors).
//!
//! ```no_run
//! use std::path::Path;
//! use keras2safetensors::{convert_file, ConvertOptions};
//!
//! let summary = convert_file(
//!     Path::new("model.h5"),
//!     Path::new("model.safetensors"),
//!     &ConvertOptions::default(),
//!     &mut |_bytes| {},
//! )?;
//! println!("{} tensors", summary.tensors);
//! # Ok::<(), keras2safetensors::Error>(())
//! ```

#![warn(missing_debug_implementations)]
#![warn(missing_docs)]

mod accounting;
pub mod align;
pub mod cancel;
pub mod compare;
pub mod dtype;
pub mod error;
pub mod export;
mod file_span;
pub mod files;
mod h5;
pub mod inspect;
mod json_order;
pub mod keras;
mod labels;
pub mod manifest;
mod memory;
pub mod model;
mod pread;
pub mod safetensors_file;
pub mod stats;
pub mod tensors;
pub mod terminal;
pub mod tf_bundle;
pub mod values;

#[cfg(test)]
mod test_support;

use std::path::Path;

pub use error::{Error, ErrorKind, Result};
pub use export::{Layout, PlanOptions, WriteOptions, WriteSummary};
pub use keras::{open, ReadOptions};
pub use model::Model;

/// Everything `convert` takes besides the input and output paths.
#[derive(Debug, Clone, Default)]
pub struct ConvertOptions {
    /// What is read (optimizer state, a config, limits).
    pub read: ReadOptions,
    /// Names, layout, casts and selection of the tensors.
    pub plan: PlanOptions,
    /// Where and how the output is written (`force`, shards).
    pub write: WriteOptions,
}

/// Converts one Keras file to safetensors: one file, or with
/// `max_shard_bytes` a folder of shards.
pub fn convert_file(
    input: &Path,
    output: &Path,
    options: &ConvertOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<WriteSummary> {
    let mut write = options.write.clone();
    write.inputs.push(input.to_path_buf());
    write.inputs.extend(options.read.config.clone());
    write.inputs.extend(keras::shard_index_of(input));
    let protected: Vec<files::FileId> = write
        .inputs
        .iter()
        .filter_map(|p| files::FileId::of_path(p))
        .collect();
    match write.max_shard_bytes {
        None => files::check_output(output, write.force, &protected)?,
        Some(_) => files::check_output_folder(output)?,
    }
    let read = match options.plan.preset {
        Some(preset) => preset.read_options(&options.read),
        None => options.read.clone(),
    };
    let mut model = keras::open(input, &read)?;
    let plan = export::plan(&mut model, input, &options.plan)?;
    export::plan::ensure_tensors(&plan, input)?;
    model.forget_layers();
    export::write(&plan, &model, output, &write, progress)
        .map_err(|e| cancel::blame(e.refusal_names(input)))
}
