//! The Qwen2 language model of NVLM-D.
//!
//! Today: the NVLM-D `chatml` conversation template ([`chat`]) and the tokenizer wrapper ([`tokenizer`]). The
//! decoder, KV cache and sampler land with the forward-pass issue.

pub mod chat;
mod error;
pub mod tokenizer;

pub use chat::{build_prompt, SystemPrompt, DEFAULT_SYSTEM_MESSAGE};
pub use error::{Qwen2Error, Result};
pub use tokenizer::Tokenizer;

/// The token id of `<|vision_pad|>`, whose embedding rows are replaced by image embeddings.
pub const IMAGE_CONTEXT_TOKEN_ID: u32 = 151654;
/// The token id of `<|im_end|>`, the end of a turn and NVLM-D's eos.
pub const IM_END_TOKEN_ID: u32 = 151645;
