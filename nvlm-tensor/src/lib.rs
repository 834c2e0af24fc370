//! Device tensors for the NVLM-D engine.
//!
//! A [`Tensor`] is contiguous row-major storage plus a [`DType`], a shape and a [`Device`]. There is no autograd and no
//! implicit broadcasting: ops live in `nvlm-kernels` as explicit functions that check shapes and return errors.

mod cuda;
mod device;
mod dtype;
mod error;
mod graph;
mod staging;
mod storage;
mod tensor;
mod weights;

pub use cuda::{cuda_available, cuda_device_count, CudaDevice};
pub use device::Device;
pub use dtype::{DType, Element};
pub use error::{Result, TensorError};
pub use graph::DeviceGraph;
pub use storage::{CpuBuffer, CudaBuffer, Storage};
pub use tensor::Tensor;
pub use weights::{load_weight, load_weight_columns, load_weight_rows, MemoryWeights, TensorView, Weights};

/// Re-export of the cudarc version this crate is built against, so that kernel crates use the same types.
pub use cudarc;
/// Re-export of `half`, whose `bf16`/`f16` types are the engine's 16-bit floats.
pub use half;
