//! From a [`Model`](crate::model::Model) to safetensors: a plan of output
//! tensors, then a writer that streams each tensor's bytes into place.

pub mod plan;
pub mod writer;

pub use plan::{plan, tensor_name, Plan, PlannedTensor};
pub use writer::{write, WriteSummary};
