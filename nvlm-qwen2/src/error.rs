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
}

/// `Result` with [`Qwen2Error`].
pub type Result<T, E = Qwen2Error> = std::result::Result<T, E>;
