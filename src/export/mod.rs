//! From a [`Model`](crate::model::Model) to safetensors: a plan of output
//! tensors (names, layout, casts), then a writer that streams each tensor's
//! bytes into place.

pub(crate) mod metadata;
pub mod plan;
pub mod presets;
pub(crate) mod pytorch;
pub mod rename;
pub mod shared;
mod sink;
pub mod transform;
pub(crate) mod writer;

pub use plan::{plan, tensor_name, Layout, Plan, PlanOptions, PlannedTensor};
pub use writer::{write, write_small_output, WriteOptions, WriteSummary};
