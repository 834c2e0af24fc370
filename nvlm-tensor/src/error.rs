//! The error type of `nvlm-tensor`.

use crate::DType;

/// Everything that can go wrong when creating, moving or viewing a tensor.
#[derive(Debug, thiserror::Error)]
pub enum TensorError {
    /// Two shapes that had to agree do not.
    #[error("shape mismatch in {op}: {detail}")]
    Shape {
        /// The operation that checked the shapes.
        op: &'static str,
        /// What was expected and what was found.
        detail: String,
    },
    /// A tensor had a dtype the operation does not take.
    #[error("dtype mismatch in {op}: expected {expected}, found {found:?}")]
    DType {
        /// The operation that checked the dtype.
        op: &'static str,
        /// The dtype(s) accepted.
        expected: String,
        /// The dtype given.
        found: DType,
    },
    /// Tensors on different devices were combined, or a host-only access was made on a device tensor.
    #[error("device mismatch in {op}: {detail}")]
    Device {
        /// The operation.
        op: &'static str,
        /// Which devices were involved.
        detail: String,
    },
    /// CUDA is not usable on this machine (no driver, no device, bad ordinal).
    #[error("CUDA unavailable: {0}")]
    CudaUnavailable(String),
    /// A CUDA driver call failed.
    #[error("CUDA driver error during {op}: {source}")]
    Driver {
        /// What was being done.
        op: &'static str,
        /// The driver's error.
        source: cudarc::driver::DriverError,
    },
    /// A named weight is missing from a `Weights` source.
    #[error("weight `{0}` not found")]
    MissingWeight(String),
    /// Something that is valid but not implemented (yet).
    #[error("unsupported: {0}")]
    Unsupported(String),
}

/// `Result` with [`TensorError`].
pub type Result<T, E = TensorError> = std::result::Result<T, E>;

impl TensorError {
    /// Shorthand for a [`TensorError::Shape`].
    pub fn shape(op: &'static str, detail: impl Into<String>) -> Self {
        TensorError::Shape {
            op,
            detail: detail.into(),
        }
    }

    /// Shorthand for a [`TensorError::Driver`] mapper: `.map_err(TensorError::driver("upload"))`.
    pub fn driver(op: &'static str) -> impl FnOnce(cudarc::driver::DriverError) -> Self {
        move |source| TensorError::Driver { op, source }
    }
}
