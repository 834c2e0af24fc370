//! Where a tensor lives.

use crate::{cuda, DType, Result};

/// A compute device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Device {
    /// Host memory; ops run the f32 CPU reference.
    Cpu,
    /// A CUDA GPU by ordinal.
    Cuda(usize),
}

impl Device {
    /// A checked CUDA device: returns an error (never panics) when there is no driver, no device, or the ordinal is
    /// out of range. The context and stream are created here, once per ordinal.
    pub fn cuda(ordinal: usize) -> Result<Device> {
        cuda::CudaDevice::get(ordinal)?;
        Ok(Device::Cuda(ordinal))
    }

    /// Parses `cpu`, `cuda`, or `cuda:N` (as the CLI's `--device` takes it) and checks CUDA devices.
    pub fn parse(text: &str) -> Result<Device> {
        match text {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Device::cuda(0),
            other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Device::cuda(n),
                _ => Err(crate::TensorError::Unsupported(format!(
                    "device `{other}`: expected `cpu`, `cuda` or `cuda:N`"
                ))),
            },
        }
    }

    /// True for [`Device::Cpu`].
    pub fn is_cpu(self) -> bool {
        matches!(self, Device::Cpu)
    }

    /// The dtype activations (and the KV cache) are computed in here: f32 for the CPU reference, bf16 on GPUs
    /// (whose kernels accumulate in f32).
    pub fn compute_dtype(self) -> DType {
        match self {
            Device::Cpu => DType::F32,
            Device::Cuda(_) => DType::BF16,
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}
