//! Normalisations: RMSNorm (InternViT/Qwen2 order), fused residual-add + RMSNorm, LayerNorm.
//!
//! RMSNorm follows the reference order exactly: statistics in f32, `x · rsqrt(mean(x²) + eps)` cast to the
//! activation dtype, *then* multiplied by the weight. The QK-norm of InternViT normalises all heads concatenated with
//! the variance taken over the real (non-dummy) channels only: [`rms_norm_partial_stats`].

use nvlm_tensor::{Device, Tensor};

use crate::check::{float_dtype, same_device, same_dtype, vector};
use crate::cpu::{f32_values, from_f32, map_rows, round_to};
use crate::{KernelError, Result};

/// RMSNorm over the last dimension: `w · cast(x · rsqrt(mean(x²) + eps))`, in `x`'s dtype.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f32) -> Result<Tensor> {
    rms_norm_partial_stats(x, weight, eps, x.last_dim())
}

/// RMSNorm whose mean square is taken over the first `stat_channels` channels only (divided by `stat_channels`),
/// while every channel is normalised: InternViT's QK-norm over 25 real heads stored padded to 32.
pub fn rms_norm_partial_stats(x: &Tensor, weight: &Tensor, eps: f32, stat_channels: usize) -> Result<Tensor> {
    const OP: &str = "rms_norm";
    let dtype = float_dtype(OP, x)?;
    float_dtype(OP, weight)?;
    let width = x.last_dim();
    vector(OP, "weight", weight, width)?;
    if stat_channels == 0 || stat_channels > width {
        return Err(KernelError::invalid(
            OP,
            format!("statistics over {stat_channels} of {width} channels"),
        ));
    }
    match same_device(OP, &[x, weight])? {
        Device::Cpu => {
            let w = f32_values(weight)?;
            let y = map_rows(&f32_values(x)?, width, width, |_, row, out| {
                rms_row(row, &w, eps, stat_channels, dtype, out)
            });
            from_f32(y, dtype, x.shape())
        }
        Device::Cuda(_) if stat_channels == width => crate::cuda::elementwise::rms_norm(x, weight, eps),
        device => Err(KernelError::unsupported(OP, device)),
    }
}

fn rms_row(
    row: &[f32],
    w: &[f32],
    eps: f32,
    stat_channels: usize,
    dtype: nvlm_tensor::DType,
    out: &mut [f32],
) {
    let mean_square = row[..stat_channels].iter().map(|v| v * v).sum::<f32>() / stat_channels as f32;
    let inv = 1.0 / (mean_square + eps).sqrt();
    for ((o, &v), &g) in out.iter_mut().zip(row).zip(w) {
        *o = g * round_to(v * inv, dtype);
    }
}

/// Fused residual add + RMSNorm: returns `(rms_norm(x + residual), x + residual)`, both in `x`'s dtype.
pub fn add_rms_norm(x: &Tensor, residual: &Tensor, weight: &Tensor, eps: f32) -> Result<(Tensor, Tensor)> {
    const OP: &str = "add_rms_norm";
    let dtype = float_dtype(OP, x)?;
    same_dtype(OP, residual, x)?;
    residual.expect_shape(OP, "residual", x.shape())?;
    let width = x.last_dim();
    vector(OP, "weight", weight, width)?;
    match same_device(OP, &[x, residual, weight])? {
        Device::Cpu => {
            let (xv, rv) = (f32_values(x)?, f32_values(residual)?);
            let sum: Vec<f32> = xv
                .iter()
                .zip(rv.iter())
                .map(|(a, b)| round_to(a + b, dtype))
                .collect();
            let w = f32_values(weight)?;
            let y = map_rows(&sum, width, width, |_, row, out| {
                rms_row(row, &w, eps, width, dtype, out)
            });
            Ok((from_f32(y, dtype, x.shape())?, from_f32(sum, dtype, x.shape())?))
        }
        Device::Cuda(_) => crate::cuda::elementwise::add_rms_norm(x, residual, weight, eps),
    }
}

/// LayerNorm over the last dimension with weight and bias: statistics and affine in f32, rounded once.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f32) -> Result<Tensor> {
    const OP: &str = "layer_norm";
    let dtype = float_dtype(OP, x)?;
    let width = x.last_dim();
    vector(OP, "weight", weight, width)?;
    vector(OP, "bias", bias, width)?;
    match same_device(OP, &[x, weight, bias])? {
        Device::Cpu => {
            let (w, b) = (f32_values(weight)?, f32_values(bias)?);
            let y = map_rows(&f32_values(x)?, width, width, |_, row, out| {
                let mean = row.iter().sum::<f32>() / width as f32;
                let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / width as f32;
                let inv = 1.0 / (var + eps).sqrt();
                for (i, o) in out.iter_mut().enumerate() {
                    *o = (row[i] - mean) * inv * w[i] + b[i];
                }
            });
            from_f32(y, dtype, x.shape())
        }
        Device::Cuda(_) => crate::cuda::elementwise::layer_norm(x, weight, bias, eps),
    }
}
