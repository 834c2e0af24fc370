//! The CUDA backend: NVRTC compilation with an on-disk cache, loaded modules per device, cuBLASLt GEMMs, and the
//! launch wrappers the op dispatchers call.

pub(crate) mod attention;
pub use attention::{flash_kernel, set_flash_kernel, FlashKernel, FLASH_ENV};
pub(crate) mod elementwise;
pub(crate) mod launch;
pub(crate) mod layout;
pub mod matmul;
pub mod module_cache;
pub mod nvrtc;
pub mod sources;
pub(crate) mod tma;
