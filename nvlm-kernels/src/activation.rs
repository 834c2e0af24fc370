//! Activations: SwiGLU's `silu(gate) · up`, exact (erf) GELU.

use nvlm_tensor::{Device, Tensor};

use crate::check::{float_dtype, same_device, same_dtype};
use crate::cpu::{f32_values, from_f32};
use crate::Result;

/// `silu(gate) · up` elementwise (Qwen2's MLP), in `gate`'s dtype.
pub fn silu_mul(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    const OP: &str = "silu_mul";
    let dtype = float_dtype(OP, gate)?;
    same_dtype(OP, up, gate)?;
    up.expect_shape(OP, "up", gate.shape())?;
    match same_device(OP, &[gate, up])? {
        Device::Cpu => {
            let (g, u) = (f32_values(gate)?, f32_values(up)?);
            let y = g
                .iter()
                .zip(u.iter())
                .map(|(&g, &u)| g / (1.0 + (-g).exp()) * u)
                .collect();
            from_f32(y, dtype, gate.shape())
        }
        Device::Cuda(_) => crate::cuda::elementwise::silu_mul(gate, up),
    }
}

/// Exact GELU, `x · Φ(x) = 0.5 · x · (1 + erf(x / √2))` (PyTorch's default `nn.GELU()`), in `x`'s dtype.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    const OP: &str = "gelu";
    let dtype = float_dtype(OP, x)?;
    match x.device() {
        Device::Cpu => {
            let y = f32_values(x)?.iter().map(|&v| gelu_scalar(v)).collect();
            from_f32(y, dtype, x.shape())
        }
        Device::Cuda(_) => crate::cuda::elementwise::gelu(x),
    }
}

fn gelu_scalar(v: f32) -> f32 {
    0.5 * v * (1.0 + libm::erff(v * std::f32::consts::FRAC_1_SQRT_2))
}
