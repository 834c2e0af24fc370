//! NVLM-D checkpoint readers and converters.

pub mod common_state;
pub mod convert;
pub mod dcp;
mod dtype;
mod error;
mod files;
pub mod megatron;
pub mod nvlm_layout;
pub mod pickle;
pub mod safetensors_dir;
pub mod torch_save;
mod weights;
pub mod write_dcp;
pub mod zarr;
mod zip;

pub use dtype::StoredDType;
pub use error::{CheckpointError, Result};
pub use megatron::MegatronCheckpoint;
pub use safetensors_dir::SafetensorsCheckpoint;
pub use torch_save::{HostTensor, TorchArchive};
pub use weights::MegatronWeights;

/// The index file of a sharded Hugging Face safetensors checkpoint.
pub const SAFETENSORS_INDEX: &str = "model.safetensors.index.json";
