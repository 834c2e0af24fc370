//! The error type of `nvlm-kernels`.

use nvlm_tensor::{Device, TensorError};

/// Everything an op can fail with.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// Shape, dtype or device checks from the tensor layer (wrong shapes, mixed devices, CUDA missing).
    #[error(transparent)]
    Tensor(#[from] TensorError),
    /// The op has no implementation on this device yet.
    #[error("`{op}` is not implemented on {device} yet{hint}")]
    Unsupported {
        /// The op.
        op: &'static str,
        /// The device asked for.
        device: Device,
        /// What to do instead (may be empty).
        hint: &'static str,
    },
    /// An argument is out of its valid range (an id past the vocabulary, top-p outside (0, 1], ...).
    #[error("invalid argument to `{op}`: {detail}")]
    InvalidArgument {
        /// The op.
        op: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// NVRTC could not be loaded or a kernel did not compile.
    #[error("compiling CUDA kernel `{kernel}`: {detail}")]
    Compile {
        /// The kernel source name.
        kernel: String,
        /// The compiler log or loader message.
        detail: String,
    },
    /// A CUDA driver or cuBLASLt call failed.
    #[error("CUDA error in `{op}`: {detail}")]
    Cuda {
        /// The op.
        op: &'static str,
        /// The driver's message.
        detail: String,
    },
}

/// `Result` with [`KernelError`].
pub type Result<T, E = KernelError> = std::result::Result<T, E>;

impl KernelError {
    /// Shorthand for [`KernelError::InvalidArgument`].
    pub fn invalid(op: &'static str, detail: impl Into<String>) -> Self {
        KernelError::InvalidArgument {
            op,
            detail: detail.into(),
        }
    }

    /// Shorthand for a shape error.
    pub fn shape(op: &'static str, detail: impl Into<String>) -> Self {
        KernelError::Tensor(TensorError::shape(op, detail))
    }

    /// Shorthand for [`KernelError::Unsupported`] with no hint.
    pub fn unsupported(op: &'static str, device: Device) -> Self {
        KernelError::Unsupported {
            op,
            device,
            hint: "; run this op with --device cpu",
        }
    }

    /// A mapper for CUDA errors of any displayable type.
    pub fn cuda<E: std::fmt::Display>(op: &'static str) -> impl FnOnce(E) -> Self {
        move |e| KernelError::Cuda {
            op,
            detail: e.to_string(),
        }
    }
}
