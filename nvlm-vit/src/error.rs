//! The error type of `nvlm-vit`.

/// What loading or running the vision tower can fail with.
#[derive(Debug, thiserror::Error)]
pub enum VitError {
    /// A tensor-layer error (missing weight, shape mismatch, device).
    #[error(transparent)]
    Tensor(#[from] nvlm_tensor::TensorError),
    /// An op failed.
    #[error(transparent)]
    Kernel(#[from] nvlm_kernels::KernelError),
    /// A tensor-parallel collective failed.
    #[error(transparent)]
    Dist(#[from] nvlm_dist::DistError),
    /// The config is missing a field or has an unsupported value.
    #[error("vision config: {0}")]
    Config(String),
}

/// `Result` with [`VitError`].
pub type Result<T, E = VitError> = std::result::Result<T, E>;
