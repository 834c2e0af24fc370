//! Rotary position embedding (rotate-half, non-interleaved), with transformers' `dynamic` NTK scaling.

use nvlm_tensor::{Device, Tensor};

use crate::check::{float_dtype, index_dtype, rank, same_device};
use crate::cpu::{f32_values, from_f32, index_values, round_to};
use crate::{KernelError, Result};

/// transformers' `rope_scaling = {"type": "dynamic", "factor": f}`: NTK-aware base growth past the trained context.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DynamicNtk {
    /// `factor` from `rope_scaling`.
    pub factor: f64,
    /// `max_position_embeddings`: the context length below which plain RoPE applies.
    pub original_max_positions: usize,
}

/// The frequencies of one model's rotary embedding.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RopeConfig {
    /// `rope_theta` (1e6 for Qwen2-72B).
    pub theta: f64,
    /// Rotated dimensions per head (all of `head_dim`).
    pub head_dim: usize,
    /// Dynamic NTK scaling, or `None` for plain RoPE at every position (transformers v4.39 behaviour).
    pub dynamic: Option<DynamicNtk>,
}

impl RopeConfig {
    /// The base in effect for a sequence of `seq_len` positions (`max(position) + 1`):
    /// `θ · (factor·seq_len/L0 − (factor − 1))^(d/(d−2))` past `L0` with dynamic scaling, `θ` otherwise.
    pub fn base_for(&self, seq_len: usize) -> f64 {
        match self.dynamic {
            Some(ntk) if seq_len > ntk.original_max_positions => {
                let d = self.head_dim as f64;
                let ratio =
                    ntk.factor * seq_len as f64 / ntk.original_max_positions as f64 - (ntk.factor - 1.0);
                self.theta * ratio.powf(d / (d - 2.0))
            }
            _ => self.theta,
        }
    }

    /// `inv_freq[i] = 1 / base^(2i/d)` for `i < d/2`, in f32 as transformers computes it.
    pub fn inv_freq(&self, seq_len: usize) -> Vec<f32> {
        let base = self.base_for(seq_len) as f32;
        let d = self.head_dim;
        (0..d / 2)
            .map(|i| 1.0 / base.powf((2 * i) as f32 / d as f32))
            .collect()
    }
}

/// Qwen2's attention input in one pass: the fused projection `qkv[tokens, (heads + 2·kv_heads)·head_dim]` (q, k, v
/// heads in that order) split into `q[tokens, heads, head_dim]`, `k` and `v` `[tokens, kv_heads, head_dim]`, with q
/// and k rotated as [`rotary_embedding`] does. `inv_freq` (F32, `head_dim / 2`) lives on `qkv`'s device, so a step
/// uploads the frequencies once, not once per layer.
pub fn rope_qkv(
    qkv: &Tensor,
    positions: &Tensor,
    inv_freq: &Tensor,
    heads: usize,
    kv_heads: usize,
) -> Result<[Tensor; 3]> {
    const OP: &str = "rope_qkv";
    check_qkv(OP, qkv, positions, inv_freq, heads, kv_heads)?;
    let (tokens, all, d) = (qkv.shape()[0], heads + 2 * kv_heads, 2 * inv_freq.numel());
    match same_device(OP, &[qkv, positions, inv_freq])? {
        Device::Cpu => {
            let parts = crate::split(&qkv.reshape(&[tokens, all, d])?, 1, &[heads, kv_heads, kv_heads])?;
            let freq = f32_values(inv_freq)?;
            Ok([
                rotary_embedding(&parts[0], positions, &freq)?,
                rotary_embedding(&parts[1], positions, &freq)?,
                parts[2].clone(),
            ])
        }
        Device::Cuda(_) => crate::cuda::elementwise::rope_qkv(qkv, positions, inv_freq, heads, kv_heads),
    }
}

/// The argument checks of [`rope_qkv`] (shared with the paged variant).
pub(crate) fn check_qkv(
    op: &'static str,
    qkv: &Tensor,
    positions: &Tensor,
    inv_freq: &Tensor,
    heads: usize,
    kv_heads: usize,
) -> Result<()> {
    float_dtype(op, qkv)?;
    rank(op, "input", qkv, 2)?;
    index_dtype(op, positions)?;
    let (tokens, all) = (qkv.shape()[0], heads + 2 * kv_heads);
    let d = 2 * inv_freq.numel();
    if inv_freq.dtype() != nvlm_tensor::DType::F32 || heads == 0 || kv_heads == 0 || qkv.shape()[1] != all * d
    {
        return Err(KernelError::shape(
            op,
            format!(
                "qkv {:?} is not [tokens, ({heads} + 2 x {kv_heads}) x {d}] (F32 frequencies: {})",
                qkv.shape(),
                inv_freq.numel()
            ),
        ));
    }
    if positions.shape() != [tokens] {
        return Err(KernelError::shape(
            op,
            format!("positions {:?} for {tokens} tokens", positions.shape()),
        ));
    }
    Ok(())
}

/// Rotates `x[tokens, heads, head_dim]` by the angle `position · inv_freq` per token:
/// `x·cos + rotate_half(x)·sin` with `rotate_half(x) = cat(−x[d/2:], x[:d/2])` and `cos`/`sin` rounded to `x`'s dtype.
pub fn rotary_embedding(x: &Tensor, positions: &Tensor, inv_freq: &[f32]) -> Result<Tensor> {
    const OP: &str = "rotary_embedding";
    let dtype = float_dtype(OP, x)?;
    rank(OP, "input", x, 3)?;
    index_dtype(OP, positions)?;
    let (tokens, heads, d) = (x.shape()[0], x.shape()[1], x.shape()[2]);
    if positions.shape() != [tokens] {
        return Err(KernelError::shape(
            OP,
            format!("positions {:?} for {tokens} tokens", positions.shape()),
        ));
    }
    if d % 2 != 0 || inv_freq.len() != d / 2 {
        return Err(KernelError::shape(
            OP,
            format!("head_dim {d} with {} frequencies", inv_freq.len()),
        ));
    }
    match same_device(OP, &[x, positions])? {
        Device::Cpu => {
            let pos = index_values(positions)?;
            let half = d / 2;
            let xv = f32_values(x)?;
            let y = crate::cpu::map_rows(&xv, heads * d, heads * d, |t, row, out| {
                let angles: Vec<(f32, f32)> = inv_freq
                    .iter()
                    .map(|f| {
                        let a = pos[t] as f32 * f;
                        (round_to(a.cos(), dtype), round_to(a.sin(), dtype))
                    })
                    .collect();
                for h in 0..heads {
                    let (xi, oi) = (&row[h * d..(h + 1) * d], &mut out[h * d..(h + 1) * d]);
                    for i in 0..half {
                        let (c, s) = angles[i];
                        oi[i] = xi[i] * c - xi[i + half] * s;
                        oi[i + half] = xi[i + half] * c + xi[i] * s;
                    }
                }
            });
            from_f32(y, dtype, x.shape())
        }
        Device::Cuda(_) => crate::cuda::elementwise::rotary(x, positions, inv_freq),
    }
}
