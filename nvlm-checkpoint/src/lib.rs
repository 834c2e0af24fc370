//! NVLM-D checkpoint readers and converters (stub; see the README).

/// The index file of a sharded Hugging Face safetensors checkpoint.
pub const SAFETENSORS_INDEX: &str = "model.safetensors.index.json";
