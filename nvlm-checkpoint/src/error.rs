//! The error type of `nvlm-checkpoint`. Every message names the file and, where there is one, the tensor.

/// Everything that can go wrong reading or converting a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A file could not be opened, read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A pickle could not be interpreted (corrupt, truncated, or an opcode or global we refuse).
    #[error("{file}: pickle: {detail}")]
    Pickle {
        /// The file (and record) holding the pickle.
        file: String,
        /// What went wrong.
        detail: String,
    },
    /// The data does not have the structure the format requires (zip records, metadata fields, chunk layout).
    #[error("{file}: {detail}")]
    Format {
        /// The file.
        file: String,
        /// What is wrong.
        detail: String,
    },
    /// A tensor's chunks are missing, overlap, or disagree with the metadata.
    #[error("tensor `{tensor}` ({file}): {detail}")]
    Tensor {
        /// The tensor's name.
        tensor: String,
        /// The file concerned.
        file: String,
        /// What is wrong.
        detail: String,
    },
    /// A requested tensor does not exist.
    #[error("tensor `{0}` is not in the checkpoint")]
    Missing(String),
    /// Valid input this reader does not handle.
    #[error("{0}")]
    Unsupported(String),
}

/// `Result` with [`CheckpointError`].
pub type Result<T, E = CheckpointError> = std::result::Result<T, E>;

impl CheckpointError {
    /// A mapper for I/O errors on `path`.
    pub fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
        move |source| CheckpointError::Io {
            path: path.display().to_string(),
            source,
        }
    }

    /// Shorthand for [`CheckpointError::Format`].
    pub fn format(file: impl Into<String>, detail: impl Into<String>) -> Self {
        CheckpointError::Format {
            file: file.into(),
            detail: detail.into(),
        }
    }

    /// Shorthand for [`CheckpointError::Tensor`].
    pub fn tensor(tensor: impl Into<String>, file: impl Into<String>, detail: impl Into<String>) -> Self {
        CheckpointError::Tensor {
            tensor: tensor.into(),
            file: file.into(),
            detail: detail.into(),
        }
    }
}
