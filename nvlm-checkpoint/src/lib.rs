//! NVLM-D checkpoint readers and converters.

pub mod dcp;
mod dtype;
mod error;
mod files;
pub mod pickle;
pub mod torch_save;
mod zip;

pub use dtype::StoredDType;
pub use error::{CheckpointError, Result};
pub use torch_save::{HostTensor, TorchArchive};

/// The index file of a sharded Hugging Face safetensors checkpoint.
pub const SAFETENSORS_INDEX: &str = "model.safetensors.index.json";
