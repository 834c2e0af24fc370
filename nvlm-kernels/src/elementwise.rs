//! Elementwise arithmetic and dtype casts.

use nvlm_tensor::{DType, Device, Tensor};

use crate::check::{float_dtype, same_device, same_dtype, vector};
use crate::cpu::{f32_values, from_f32};
use crate::Result;

fn binary(op: &'static str, a: &Tensor, b: &Tensor, f: impl Fn(f32, f32) -> f32) -> Result<Tensor> {
    let dtype = float_dtype(op, a)?;
    same_dtype(op, b, a)?;
    b.expect_shape(op, "rhs", a.shape())?;
    match same_device(op, &[a, b])? {
        Device::Cpu => {
            let y = f32_values(a)?
                .iter()
                .zip(f32_values(b)?.iter())
                .map(|(&x, &y)| f(x, y))
                .collect();
            from_f32(y, dtype, a.shape())
        }
        Device::Cuda(_) => crate::cuda::elementwise::binary(op, a, b),
    }
}

/// `a + b` (same shape, same dtype), rounded once to the dtype.
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary("add", a, b, |x, y| x + y)
}

/// `a · b` elementwise (same shape, same dtype).
pub fn mul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary("mul", a, b, |x, y| x * y)
}

/// `x · s` for a scalar `s`.
pub fn scale(x: &Tensor, s: f32) -> Result<Tensor> {
    const OP: &str = "scale";
    let dtype = float_dtype(OP, x)?;
    match x.device() {
        Device::Cpu => from_f32(f32_values(x)?.iter().map(|v| v * s).collect(), dtype, x.shape()),
        Device::Cuda(_) => crate::cuda::elementwise::scale(x, s),
    }
}

/// `residual + x[..., d] · v[d]`: InternViT's LayerScale and residual add in one pass (one rounding), in `x`'s dtype.
pub fn add_scaled_channels(residual: &Tensor, x: &Tensor, v: &Tensor) -> Result<Tensor> {
    const OP: &str = "add_scaled_channels";
    let dtype = float_dtype(OP, x)?;
    let d = x.last_dim();
    vector(OP, "scale", v, d)?;
    residual.expect_shape(OP, "residual", x.shape())?;
    match same_device(OP, &[residual, x, v])? {
        Device::Cpu => {
            let vv = f32_values(v)?;
            let y = f32_values(residual)?
                .iter()
                .zip(f32_values(x)?.iter())
                .enumerate()
                .map(|(i, (&r, &a))| r + a * vv[i % d])
                .collect();
            from_f32(y, dtype, x.shape())
        }
        Device::Cuda(_) => crate::cuda::elementwise::add_scaled_channels(residual, x, v),
    }
}

/// `x` converted to `dtype`, on `x`'s device.
pub fn cast(x: &Tensor, dtype: DType) -> Result<Tensor> {
    match x.device() {
        Device::Cpu => Ok(x.to_dtype(dtype)?),
        Device::Cuda(_) if x.dtype() == dtype => Ok(x.clone()),
        Device::Cuda(_) => crate::cuda::elementwise::cast(x, dtype),
    }
}
