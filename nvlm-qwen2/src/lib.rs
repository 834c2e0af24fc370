//! The Qwen2 language model of NVLM-D, on the ops of `nvlm-kernels`: the decoder ([`Qwen2Model`]), its paged KV
//! cache ([`PagedKvCache`]), the sampler ([`Sampler`]), the NVLM-D conversation template ([`chat`]) and the
//! tokenizer wrapper ([`tokenizer`]).

pub mod chat;
mod config;
mod decode_graph;
mod error;
mod generate;
pub mod kv_cache;
mod model;
mod sampler;
pub mod tensor_parallel;
pub mod tokenizer;

pub use chat::{build_prompt, SystemPrompt, DEFAULT_SYSTEM_MESSAGE};
pub use config::Qwen2Config;
pub use decode_graph::CUDA_GRAPHS_ENV;
pub use error::{Qwen2Error, Result};
pub use generate::{generate, GenerateOptions, Generation, StopReason};
pub use kv_cache::{PagedKvCache, SequenceId};
pub use model::Qwen2Model;
pub use sampler::{Sampler, SamplerConfig};
pub use tensor_parallel::Sharding;
pub use tokenizer::Tokenizer;

/// The token id of `<|vision_pad|>`, whose embedding rows are replaced by image embeddings.
pub const IMAGE_CONTEXT_TOKEN_ID: u32 = 151654;
/// The token id of `<|im_end|>`, the end of a turn and NVLM-D's eos.
pub const IM_END_TOKEN_ID: u32 = 151645;
