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
                rms_row(row, &w, eps, mean_square(&row[..stat_channels]), dtype, out)
            });
            from_f32(y, dtype, x.shape())
        }
        Device::Cuda(_) => crate::cuda::elementwise::rms_norm(x, weight, eps, stat_channels),
    }
}

/// InternViT's attention inputs from the fused qkv projection in one pass: `qkv[..., 3·width]` split into `q`, `k`,
/// `v` (each `[..., width]`), `q` and `k` RMSNormed like [`rms_norm_partial_stats`] (QK-norm over all heads, the mean
/// square over the first `stat_channels` channels). Same results as `split` then two `rms_norm_partial_stats`.
pub fn qkv_qk_norm(
    qkv: &Tensor,
    q_weight: &Tensor,
    k_weight: &Tensor,
    eps: f32,
    stat_channels: usize,
) -> Result<[Tensor; 3]> {
    const OP: &str = "qkv_qk_norm";
    let dtype = float_dtype(OP, qkv)?;
    float_dtype(OP, q_weight)?;
    float_dtype(OP, k_weight)?;
    let width = q_weight.numel();
    if qkv.rank() == 0 || qkv.last_dim() != 3 * width {
        return Err(KernelError::shape(
            OP,
            format!("qkv {:?} is not [..., 3 x {width}]", qkv.shape()),
        ));
    }
    vector(OP, "k weight", k_weight, width)?;
    if stat_channels == 0 || stat_channels > width {
        return Err(KernelError::invalid(
            OP,
            format!("statistics over {stat_channels} of {width} channels"),
        ));
    }
    match same_device(OP, &[qkv, q_weight, k_weight])? {
        Device::Cpu => {
            let (wq, wk) = (f32_values(q_weight)?, f32_values(k_weight)?);
            let x = f32_values(qkv)?;
            let norm = |part: usize, w: &[f32]| {
                map_rows(&x, 3 * width, width, |_, row, out| {
                    let row = &row[part * width..(part + 1) * width];
                    rms_row(row, w, eps, mean_square(&row[..stat_channels]), dtype, out)
                })
            };
            let (q, k) = (norm(0, &wq), norm(1, &wk));
            let v = map_rows(&x, 3 * width, width, |_, row, out| {
                out.copy_from_slice(&row[2 * width..])
            });
            let mut shape = qkv.shape().to_vec();
            *shape.last_mut().expect("rank >= 1") = width;
            Ok([
                from_f32(q, dtype, &shape)?,
                from_f32(k, dtype, &shape)?,
                from_f32(v, dtype, &shape)?,
            ])
        }
        Device::Cuda(_) => crate::cuda::elementwise::qkv_qk_norm(qkv, q_weight, k_weight, eps, stat_channels),
    }
}

fn sum_squares(values: &[f32]) -> f32 {
    values.iter().map(|v| v * v).sum()
}

fn mean_square(values: &[f32]) -> f32 {
    sum_squares(values) / values.len() as f32
}

fn rms_row(row: &[f32], w: &[f32], eps: f32, mean_square: f32, dtype: nvlm_tensor::DType, out: &mut [f32]) {
    let inv = 1.0 / (mean_square + eps).sqrt();
    for ((o, &v), &g) in out.iter_mut().zip(row).zip(w) {
        *o = g * round_to(v * inv, dtype);
    }
}

/// Per-row sums of squares (f32) of channels `start..start + len` of `x`: shape `x.shape()` without its last
/// dimension. With [`rms_norm_with_sum_squares`], a QK-norm whose channels are split over tensor-parallel ranks (the
/// ranks all-reduce these sums in between).
pub fn row_sum_squares(x: &Tensor, start: usize, len: usize) -> Result<Tensor> {
    const OP: &str = "row_sum_squares";
    float_dtype(OP, x)?;
    let width = x.last_dim();
    if start + len > width {
        return Err(KernelError::invalid(
            OP,
            format!("channels {start}..{} of {width}", start + len),
        ));
    }
    let rows_shape = &x.shape()[..x.rank().saturating_sub(1)];
    match x.device() {
        Device::Cpu => {
            let sums = map_rows(&f32_values(x)?, width, 1, |_, row, out| {
                out[0] = sum_squares(&row[start..start + len]);
            });
            Ok(Tensor::from_vec(sums, rows_shape)?)
        }
        Device::Cuda(_) => crate::cuda::elementwise::row_sum_squares(x, start, len),
    }
}

/// RMSNorm with the statistics given: `w · cast(x · rsqrt(sum_squares / count + eps))` per row, where
/// `sum_squares` (f32, one per row) covers `count` channels, possibly spread over several ranks.
pub fn rms_norm_with_sum_squares(
    x: &Tensor,
    weight: &Tensor,
    eps: f32,
    sum_squares: &Tensor,
    count: usize,
) -> Result<Tensor> {
    const OP: &str = "rms_norm_with_sum_squares";
    let dtype = float_dtype(OP, x)?;
    let width = x.last_dim();
    vector(OP, "weight", weight, width)?;
    let rows = x.numel() / width.max(1);
    if sum_squares.numel() != rows || count == 0 {
        return Err(KernelError::invalid(
            OP,
            format!(
                "{} sums of squares over {count} channels for {rows} rows",
                sum_squares.numel()
            ),
        ));
    }
    match same_device(OP, &[x, weight, sum_squares])? {
        Device::Cpu => {
            let (w, sums) = (f32_values(weight)?, f32_values(sum_squares)?);
            let y = map_rows(&f32_values(x)?, width, width, |r, row, out| {
                rms_row(row, &w, eps, sums[r] / count as f32, dtype, out)
            });
            from_f32(y, dtype, x.shape())
        }
        Device::Cuda(_) => {
            crate::cuda::elementwise::rms_norm_with_sum_squares(x, weight, eps, sum_squares, count)
        }
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
                rms_row(row, &w, eps, mean_square(row), dtype, out)
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
