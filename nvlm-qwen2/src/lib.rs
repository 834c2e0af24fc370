//! The Qwen2 language model of NVLM-D (stub; see the README).

/// The token id of `<|vision_pad|>`, whose embedding rows are replaced by image embeddings.
pub const IMAGE_CONTEXT_TOKEN_ID: u32 = 151654;
