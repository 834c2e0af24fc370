//! Argument checks shared by every op.

use nvlm_tensor::{DType, Device, Tensor, TensorError};

use crate::{KernelError, Result};

/// The common device of `tensors`, or an error naming the two that differ.
pub fn same_device(op: &'static str, tensors: &[&Tensor]) -> Result<Device> {
    let device = tensors.first().map(|t| t.device()).unwrap_or(Device::Cpu);
    for t in tensors {
        if t.device() != device {
            return Err(TensorError::Device {
                op,
                detail: format!("inputs on {device} and {}", t.device()),
            }
            .into());
        }
    }
    Ok(device)
}

/// Fails unless `t` is one of the floating-point dtypes the ops take (f32, bf16, f16).
pub fn float_dtype(op: &'static str, t: &Tensor) -> Result<DType> {
    match t.dtype() {
        d @ (DType::F32 | DType::BF16 | DType::F16) => Ok(d),
        found => Err(TensorError::DType {
            op,
            expected: "F32, BF16 or F16".into(),
            found,
        }
        .into()),
    }
}

/// Fails unless `t` has the same dtype as `like`.
pub fn same_dtype(op: &'static str, t: &Tensor, like: &Tensor) -> Result<()> {
    if t.dtype() != like.dtype() {
        return Err(TensorError::DType {
            op,
            expected: like.dtype().to_string(),
            found: t.dtype(),
        }
        .into());
    }
    Ok(())
}

/// Fails unless `t` has rank `rank`.
pub fn rank(op: &'static str, what: &str, t: &Tensor, rank: usize) -> Result<()> {
    if t.rank() != rank {
        return Err(KernelError::shape(
            op,
            format!("{what} must have rank {rank}, found shape {:?}", t.shape()),
        ));
    }
    Ok(())
}

/// Fails unless `t` is a vector of length `len`.
pub fn vector(op: &'static str, what: &str, t: &Tensor, len: usize) -> Result<()> {
    if t.shape() != [len] {
        return Err(KernelError::shape(
            op,
            format!("{what} must have shape [{len}], found {:?}", t.shape()),
        ));
    }
    Ok(())
}

/// Fails unless `t` holds integer ids (i32 or i64).
pub fn index_dtype(op: &'static str, t: &Tensor) -> Result<()> {
    match t.dtype() {
        DType::I32 | DType::I64 => Ok(()),
        found => Err(TensorError::DType {
            op,
            expected: "I32 or I64".into(),
            found,
        }
        .into()),
    }
}
