//! Activations: SwiGLU's `silu(gate) · up`, exact (erf) GELU.

use nvlm_tensor::{Device, Tensor};

use crate::check::float_dtype;
use crate::cpu::{f32_values, from_f32, map_rows};
use crate::{KernelError, Result};

/// SwiGLU's `silu(gate) · up` (Qwen2's MLP) from the fused gate/up projection: rows `[gate | up]` of `2·F` values
/// give rows of `F`, in the input's dtype.
pub fn silu_mul(gate_up: &Tensor) -> Result<Tensor> {
    const OP: &str = "silu_mul";
    let dtype = float_dtype(OP, gate_up)?;
    if gate_up.rank() == 0 || !gate_up.last_dim().is_multiple_of(2) {
        return Err(KernelError::shape(
            OP,
            format!(
                "{:?} is not [..., gate | up] with two equal halves",
                gate_up.shape()
            ),
        ));
    }
    let width = gate_up.last_dim() / 2;
    let mut shape = gate_up.shape().to_vec();
    *shape.last_mut().expect("rank >= 1") = width;
    match gate_up.device() {
        Device::Cpu => {
            let y = map_rows(&f32_values(gate_up)?, 2 * width, width, |_, row, out| {
                for ((o, &g), &u) in out.iter_mut().zip(&row[..width]).zip(&row[width..]) {
                    *o = g / (1.0 + (-g).exp()) * u;
                }
            });
            from_f32(y, dtype, &shape)
        }
        Device::Cuda(_) => crate::cuda::elementwise::silu_mul(gate_up, &shape),
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
