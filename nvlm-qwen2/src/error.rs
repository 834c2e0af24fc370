//! The error type of `nvlm-qwen2`.

/// Everything the language-model side can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Qwen2Error {
    /// The tokenizer file could not be loaded, or text could not be encoded or decoded.
    #[error("tokenizer `{path}`: {detail}")]
    Tokenizer {
        /// The tokenizer file.
        path: String,
        /// What went wrong.
        detail: String,
    },
    /// The config is missing a field or describes an unsupported model.
    #[error("LLM config: {0}")]
    Config(String),
    /// The KV cache cannot hold the request.
    #[error("KV cache: {0}")]
    Cache(String),
    /// A prompt longer than the model or cache allows, and similar input errors.
    #[error("{0}")]
    Input(String),
    /// A tensor-layer error (missing weight, shape mismatch, device).
    #[error(transparent)]
    Tensor(#[from] nvlm_tensor::TensorError),
    /// An op failed.
    #[error(transparent)]
    Kernel(#[from] nvlm_kernels::KernelError),
    /// A tensor-parallel collective failed.
    #[error(transparent)]
    Dist(#[from] nvlm_dist::DistError),
}

/// `Result` with [`Qwen2Error`].
pub type Result<T, E = Qwen2Error> = std::result::Result<T, E>;
