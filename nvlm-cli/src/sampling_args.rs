//! Model and sampling arguments shared by `generate` and `chat`.

use std::path::PathBuf;

use clap::Args;
use nvlm_kernels::SamplingParams;
use nvlm_qwen2::SamplerConfig;

use crate::engine::ModelSource;

/// Where the model comes from and how it samples.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// NVLM-D weights: an HF folder (config.json, safetensors) or a Megatron checkpoint. Default: the embedded
    /// random-weight demonstration model.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// tokenizer.json (default: the model folder's).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// config.json for a Megatron checkpoint (default: the checkpoint folder's).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Tensor-parallel ranks for the language model (must divide its attention heads, FFN and vocabulary). On the
    /// CPU the ranks are threads of this process (for testing sharded runs); NCCL ranks on GPUs come with the
    /// CUDA backend.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub tp: u32,
    /// Most new tokens per answer.
    #[arg(long, default_value_t = 1024)]
    pub max_new_tokens: usize,
    /// Sampling temperature; 0 is greedy (the reference's setting).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Nucleus sampling threshold (1 disables).
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Keep only the K most likely tokens (0 disables).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Penalty for tokens already in the context (1 disables).
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f32,
    /// Random seed for sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl ModelArgs {
    /// The model source.
    pub fn source(&self) -> ModelSource {
        ModelSource {
            model: self.model.clone(),
            tokenizer: self.tokenizer.clone(),
            config: self.config.clone(),
            tensor_parallel: self.tp as usize,
        }
    }

    /// The sampler settings.
    pub fn sampler(&self) -> SamplerConfig {
        SamplerConfig {
            params: SamplingParams {
                temperature: self.temperature,
                top_k: self.top_k,
                top_p: self.top_p,
                seed: self.seed,
            },
            repetition_penalty: self.repetition_penalty,
        }
    }
}

/// The once-per-run notice for the demo model.
pub const DEMO_NOTICE: &str = "note: no --model given, so this is the embedded demonstration model: the real NVLM-D \
architecture and tokenizer at a tiny size, trained only on pictures of coloured circles, squares and triangles (ask \
which shape, which is on the left or right, what colour a named shape is, how many, how many sides; it answers 199 of \
its 200 test questions, but can miss a small shape). Pass \
--model DIR with NVLM-D weights (the HF release folder, or a Megatron checkpoint with --config) for everything else.";
