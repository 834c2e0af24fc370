//! Launch wrappers for the row-wise and elementwise kernels.

use nvlm_tensor::{DType, Tensor};

use super::launch::{alloc_like, grid_for, launch, run, suffix, Output, Scalar, BLOCK};
use crate::{KernelError, Result};

/// A grid-stride kernel `function(inputs..., out, long n, extra...)` over the elements of `inputs[0]`.
fn elementwise(
    op: &'static str,
    kernel: &'static str,
    name: &str,
    inputs: &[&Tensor],
    dtype: DType,
    extra: &[Scalar],
) -> Result<Tensor> {
    let n = inputs[0].numel();
    let mut scalars = vec![Scalar::I64(n as i64)];
    scalars.extend_from_slice(extra);
    let grid = if n == 0 { 0 } else { grid_for(n) };
    Ok(launch(
        op,
        kernel,
        name,
        inputs,
        vec![Output::new(dtype, inputs[0].shape())],
        &scalars,
        grid,
        BLOCK,
    )?
    .remove(0))
}

/// A one-block-per-row kernel `function(inputs..., outputs..., int width, extra...)`.
fn rows(
    op: &'static str,
    kernel: &'static str,
    name: &str,
    inputs: &[&Tensor],
    outputs: usize,
    extra: &[Scalar],
) -> Result<Vec<Tensor>> {
    let x = inputs[0];
    let mut scalars = vec![Scalar::I32(x.last_dim() as i32)];
    scalars.extend_from_slice(extra);
    let outs = (0..outputs).map(|_| Output::new(x.dtype(), x.shape())).collect();
    launch(op, kernel, name, inputs, outs, &scalars, x.rows() as u32, BLOCK)
}

/// `base` with the kernel suffix of `dtype` (`rms_norm` -> `rms_norm_bf16`).
pub(crate) fn name(op: &'static str, base: &str, dtype: DType) -> Result<String> {
    Ok(format!("{base}_{}", suffix(op, dtype)?))
}

/// RMSNorm on the device, the mean square over the first `stat_channels` channels: one block per row.
pub(crate) fn rms_norm(x: &Tensor, weight: &Tensor, eps: f32, stat_channels: usize) -> Result<Tensor> {
    const OP: &str = "rms_norm";
    crate::check::same_dtype(OP, weight, x)?;
    Ok(rows(
        OP,
        "rms_norm",
        &name(OP, "rms_norm", x.dtype())?,
        &[x, weight],
        1,
        &[Scalar::I32(stat_channels as i32), Scalar::F32(eps)],
    )?
    .remove(0))
}

/// RMSNorm with per-row f32 sums of squares over `count` channels given: one block per row.
pub(crate) fn rms_norm_with_sum_squares(
    x: &Tensor,
    weight: &Tensor,
    eps: f32,
    sum_squares: &Tensor,
    count: usize,
) -> Result<Tensor> {
    const OP: &str = "rms_norm_with_sum_squares";
    crate::check::same_dtype(OP, weight, x)?;
    if sum_squares.dtype() != DType::F32 {
        return Err(KernelError::invalid(OP, "the sums of squares must be F32"));
    }
    Ok(rows(
        OP,
        "rms_norm",
        &name(OP, "rms_norm_with_sum_squares", x.dtype())?,
        &[x, weight, sum_squares],
        1,
        &[Scalar::I32(count as i32), Scalar::F32(eps)],
    )?
    .remove(0))
}

/// Per-row f32 sums of squares of channels `start..start + len`: one block per row.
pub(crate) fn row_sum_squares(x: &Tensor, start: usize, len: usize) -> Result<Tensor> {
    const OP: &str = "row_sum_squares";
    let rows_shape = &x.shape()[..x.rank().saturating_sub(1)];
    let scalars = [
        Scalar::I32(x.last_dim() as i32),
        Scalar::I32(start as i32),
        Scalar::I32(len as i32),
    ];
    Ok(launch(
        OP,
        "rms_norm",
        &name(OP, "row_sum_squares", x.dtype())?,
        &[x],
        vec![Output::new(DType::F32, rows_shape)],
        &scalars,
        x.rows() as u32,
        BLOCK,
    )?
    .remove(0))
}

/// The fused qkv rows `[..., 3·width]` split into q, k, v, with q and k RMSNormed (mean square over the first
/// `stat_channels` channels): one block per row, one pass.
pub(crate) fn qkv_qk_norm(
    qkv: &Tensor,
    q_weight: &Tensor,
    k_weight: &Tensor,
    eps: f32,
    stat_channels: usize,
) -> Result<[Tensor; 3]> {
    const OP: &str = "qkv_qk_norm";
    crate::check::same_dtype(OP, q_weight, qkv)?;
    crate::check::same_dtype(OP, k_weight, qkv)?;
    let width = qkv.last_dim() / 3;
    let mut shape = qkv.shape().to_vec();
    *shape.last_mut().expect("rank >= 1") = width;
    let outputs = (0..3).map(|_| Output::new(qkv.dtype(), &shape)).collect();
    let scalars = [
        Scalar::I32(width as i32),
        Scalar::I32(stat_channels as i32),
        Scalar::F32(eps),
    ];
    let mut out = launch(
        OP,
        "rms_norm",
        &name(OP, "qkv_qk_norm", qkv.dtype())?,
        &[qkv, q_weight, k_weight],
        outputs,
        &scalars,
        qkv.rows() as u32,
        BLOCK,
    )?;
    let v = out.remove(2);
    let k = out.remove(1);
    Ok([out.remove(0), k, v])
}

/// [`rope_qkv`] with k and v written in place into the paged caches at i32 `slots` (one per token row, checked by
/// the caller); returns q.
#[allow(clippy::too_many_arguments)]
pub(crate) fn rope_qkv_paged(
    qkv: &Tensor,
    positions: &Tensor,
    inv_freq: &Tensor,
    slots: &Tensor,
    heads: usize,
    kv_heads: usize,
    k_cache: &mut Tensor,
    v_cache: &mut Tensor,
) -> Result<Tensor> {
    const OP: &str = "rope_qkv_paged";
    if positions.dtype() != DType::I32 || slots.dtype() != DType::I32 || inv_freq.dtype() != DType::F32 {
        return Err(KernelError::invalid(
            OP,
            "CUDA rope_qkv_paged takes I32 positions and slots and F32 frequencies",
        ));
    }
    let t = qkv.shape()[0];
    let d = 2 * inv_freq.numel();
    let n = t * (heads + 2 * kv_heads) * d / 2;
    let scalars = [t, heads, kv_heads, d].map(|v| Scalar::I32(v as i32));
    let grid = if n == 0 { 0 } else { grid_for(n) };
    let q_shape = [t, heads, d];
    let mut q = alloc_like(OP, qkv, qkv.dtype(), &q_shape)?;
    run(
        OP,
        "rope",
        &name(OP, "rope_qkv_paged", qkv.dtype())?,
        &[qkv, positions, inv_freq, slots],
        &mut [
            q.slice_mut(..),
            k_cache.cuda_view_mut()?,
            v_cache.cuda_view_mut()?,
        ],
        &scalars,
        grid,
        BLOCK,
    )?;
    let (buffer, _, _) = qkv.cuda_parts()?;
    Ok(Tensor::from_cuda(q, buffer.device.clone(), qkv.dtype(), &q_shape))
}

/// Residual add + RMSNorm: `(normed, sum)`.
pub(crate) fn add_rms_norm(
    x: &Tensor,
    residual: &Tensor,
    weight: &Tensor,
    eps: f32,
) -> Result<(Tensor, Tensor)> {
    const OP: &str = "add_rms_norm";
    crate::check::same_dtype(OP, weight, x)?;
    let mut out = rows(
        OP,
        "layer_norm",
        &name(OP, "add_rms_norm", x.dtype())?,
        &[x, residual, weight],
        2,
        &[Scalar::F32(eps)],
    )?;
    let sum = out.remove(1);
    Ok((out.remove(0), sum))
}

/// LayerNorm with weight and bias.
pub(crate) fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f32) -> Result<Tensor> {
    const OP: &str = "layer_norm";
    crate::check::same_dtype(OP, weight, x)?;
    crate::check::same_dtype(OP, bias, x)?;
    Ok(rows(
        OP,
        "layer_norm",
        &name(OP, "layer_norm", x.dtype())?,
        &[x, weight, bias],
        1,
        &[Scalar::F32(eps)],
    )?
    .remove(0))
}

/// Softmax over the last dimension.
pub(crate) fn softmax(x: &Tensor) -> Result<Tensor> {
    const OP: &str = "softmax";
    Ok(rows(OP, "softmax", &name(OP, "softmax", x.dtype())?, &[x], 1, &[])?.remove(0))
}

/// `silu(gate) · up`.
pub(crate) fn silu_mul(gate_up: &Tensor, out_shape: &[usize]) -> Result<Tensor> {
    const OP: &str = "silu_mul";
    let width = gate_up.last_dim() / 2;
    let n = gate_up.numel() / 2;
    let grid = if n == 0 { 0 } else { grid_for(n) };
    Ok(launch(
        OP,
        "silu_mul",
        &name(OP, "silu_mul", gate_up.dtype())?,
        &[gate_up],
        vec![Output::new(gate_up.dtype(), out_shape)],
        &[Scalar::I64(n as i64), Scalar::I32(width as i32)],
        grid,
        BLOCK,
    )?
    .remove(0))
}

/// `a + b` / `a · b`.
pub(crate) fn binary(op: &'static str, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    elementwise(
        op,
        "elementwise",
        &name(op, op, a.dtype())?,
        &[a, b],
        a.dtype(),
        &[],
    )
}

/// `x · s`.
pub(crate) fn scale(x: &Tensor, s: f32) -> Result<Tensor> {
    elementwise(
        "scale",
        "elementwise",
        &name("scale", "scale", x.dtype())?,
        &[x],
        x.dtype(),
        &[Scalar::F32(s)],
    )
}

/// `residual + x[..., d] · v[d]`.
pub(crate) fn add_scaled_channels(residual: &Tensor, x: &Tensor, v: &Tensor) -> Result<Tensor> {
    const OP: &str = "add_scaled_channels";
    crate::check::same_dtype(OP, v, x)?;
    crate::check::same_dtype(OP, residual, x)?;
    let width = Scalar::I32(x.last_dim() as i32);
    elementwise(
        OP,
        "elementwise",
        &name(OP, OP, x.dtype())?,
        &[residual, x, v],
        x.dtype(),
        &[width],
    )
}

/// Exact GELU.
pub(crate) fn gelu(x: &Tensor) -> Result<Tensor> {
    elementwise(
        "gelu",
        "elementwise",
        &name("gelu", "gelu", x.dtype())?,
        &[x],
        x.dtype(),
        &[],
    )
}

/// f32 <-> bf16 conversion.
pub(crate) fn cast(x: &Tensor, dtype: DType) -> Result<Tensor> {
    const OP: &str = "cast";
    let name = match (x.dtype(), dtype) {
        (DType::F32, DType::BF16) => "cast_f32_to_bf16",
        (DType::BF16, DType::F32) => "cast_bf16_to_f32",
        (from, to) => {
            return Err(KernelError::invalid(
                OP,
                format!("no CUDA cast from {from} to {to}"),
            ))
        }
    };
    elementwise(OP, "cast", name, &[x], dtype, &[])
}

/// Rotary embedding of `x[t, heads, d]` with i32 positions on the device.
pub(crate) fn rotary(x: &Tensor, positions: &Tensor, inv_freq: &[f32]) -> Result<Tensor> {
    const OP: &str = "rotary_embedding";
    let positions = if positions.dtype() == DType::I32 {
        positions.clone()
    } else {
        return Err(KernelError::invalid(
            OP,
            "CUDA rotary_embedding takes I32 positions",
        ));
    };
    let freq = Tensor::from_slice(inv_freq, &[inv_freq.len()], x.device())?;
    let [t, h, d] = [x.shape()[0], x.shape()[1], x.shape()[2]];
    let n = t * h * d / 2;
    let scalars = [
        Scalar::I32(t as i32),
        Scalar::I32(h as i32),
        Scalar::I32(d as i32),
    ];
    let grid = if n == 0 { 0 } else { grid_for(n) };
    Ok(launch(
        OP,
        "rope",
        &name(OP, "rope", x.dtype())?,
        &[x, &positions, &freq],
        vec![Output::new(x.dtype(), x.shape())],
        &scalars,
        grid,
        BLOCK,
    )?
    .remove(0))
}

/// Fused qkv rows `[t, (h + 2 kv) · d]` to rotated q `[t, h, d]`, rotated k and copied v `[t, kv, d]`; `inv_freq`
/// already on the device (F32), positions I32.
pub(crate) fn rope_qkv(
    qkv: &Tensor,
    positions: &Tensor,
    inv_freq: &Tensor,
    heads: usize,
    kv_heads: usize,
) -> Result<[Tensor; 3]> {
    const OP: &str = "rope_qkv";
    if positions.dtype() != DType::I32 || inv_freq.dtype() != DType::F32 {
        return Err(KernelError::invalid(
            OP,
            "CUDA rope_qkv takes I32 positions and F32 frequencies",
        ));
    }
    let t = qkv.shape()[0];
    let d = 2 * inv_freq.numel();
    let n = t * (heads + 2 * kv_heads) * d / 2;
    let scalars = [
        Scalar::I32(t as i32),
        Scalar::I32(heads as i32),
        Scalar::I32(kv_heads as i32),
        Scalar::I32(d as i32),
    ];
    let grid = if n == 0 { 0 } else { grid_for(n) };
    let mut out = launch(
        OP,
        "rope",
        &name(OP, "rope_qkv", qkv.dtype())?,
        &[qkv, positions, inv_freq],
        vec![
            Output::new(qkv.dtype(), &[t, heads, d]),
            Output::new(qkv.dtype(), &[t, kv_heads, d]),
            Output::new(qkv.dtype(), &[t, kv_heads, d]),
        ],
        &scalars,
        grid,
        BLOCK,
    )?;
    let v = out.remove(2);
    let k = out.remove(1);
    Ok([out.remove(0), k, v])
}

/// `[n, d]` rows in `dtype`, row `i` from i32 `sources[i]` (`embedding.cu`'s encoding): `table`'s rows, zeros,
/// or rows of `extra` (`dtype`, on the table's device); checked by the caller.
pub(crate) fn gather_rows(
    sources: &Tensor,
    table: &Tensor,
    extra: Option<&Tensor>,
    dtype: DType,
) -> Result<Tensor> {
    const OP: &str = "gather_rows";
    let (n, d) = (sources.numel(), table.shape()[1]);
    let function = format!(
        "gather_rows_{}_{}",
        suffix(OP, table.dtype())?,
        suffix(OP, dtype)?
    );
    let scalars = [Scalar::I32(n as i32), Scalar::I32(d as i32)];
    let grid = if n * d == 0 { 0 } else { grid_for(n * d) };
    // Without extra rows no source refers to them: the table stands in for the unused pointer.
    let extra = extra.unwrap_or(table);
    Ok(launch(
        OP,
        "embedding",
        &function,
        &[sources, table, extra],
        vec![Output::new(dtype, &[n, d])],
        &scalars,
        grid,
        BLOCK,
    )?
    .remove(0))
}

/// Argmax per row of `logits[b, v]` → i32 `[b]`.
pub(crate) fn argmax(logits: &Tensor) -> Result<Tensor> {
    let out = Output::new(DType::I32, &[logits.rows()]);
    argmax_launch("argmax", "argmax", logits, out, &[])
}

/// Per row of `logits[b, v]`: (largest value, `first_id` + its index) → f32 `[b, 2]`.
pub(crate) fn argmax_pairs(logits: &Tensor, first_id: usize) -> Result<Tensor> {
    let out = Output::new(DType::F32, &[logits.rows(), 2]);
    argmax_launch(
        "argmax_with_value",
        "argmax_pair",
        logits,
        out,
        &[Scalar::I32(first_id as i32)],
    )
}

/// One block per row of `argmax.cu`'s `kernel` over `logits`: `(logits, out, width, extra...)`.
fn argmax_launch(
    op: &'static str,
    kernel: &str,
    logits: &Tensor,
    out: Output,
    extra: &[Scalar],
) -> Result<Tensor> {
    let mut scalars = vec![Scalar::I32(logits.last_dim() as i32)];
    scalars.extend_from_slice(extra);
    Ok(launch(
        op,
        "argmax",
        &name(op, kernel, logits.dtype())?,
        &[logits],
        vec![out],
        &scalars,
        logits.rows() as u32,
        BLOCK,
    )?
    .remove(0))
}

/// One token per row of `logits[b, v]` with temperature / top-k / top-p and the counter RNG (`params` checked by
/// the caller, temperature > 0): one block of 1024 threads per row, radix selects over the row (`cuda/sample.cu`).
pub(crate) fn sample(logits: &Tensor, params: &crate::SamplingParams, step: u64) -> Result<Tensor> {
    const OP: &str = "sample";
    let scalars = [
        Scalar::I32(logits.last_dim() as i32),
        Scalar::F32(params.temperature),
        Scalar::I32(params.top_k.min(i32::MAX as usize) as i32),
        Scalar::F32(params.top_p),
        // The kernel takes unsigned 64-bit values: the same bits.
        Scalar::I64(params.seed as i64),
        Scalar::I64(step as i64),
    ];
    Ok(launch(
        OP,
        "sample",
        &name(OP, "sample", logits.dtype())?,
        &[logits],
        vec![Output::new(DType::I32, &[logits.rows()])],
        &scalars,
        logits.rows() as u32,
        1024,
    )?
    .remove(0))
}

/// A copy of the logits row `logits[1, v]` with transformers' repetition penalty applied at the distinct `ids`
/// (i32, on the device; checked by the caller).
pub(crate) fn repetition_penalty(logits: &Tensor, ids: &Tensor, penalty: f32) -> Result<Tensor> {
    const OP: &str = "repetition_penalty";
    let n = ids.numel();
    let out = Output {
        dtype: logits.dtype(),
        shape: logits.shape().to_vec(),
        init_from: Some(logits.clone()),
    };
    let scalars = [
        Scalar::I32(n as i32),
        Scalar::I32(logits.last_dim() as i32),
        Scalar::F32(penalty),
    ];
    let grid = if n == 0 { 0 } else { grid_for(n) };
    Ok(launch(
        OP,
        "sample",
        &name(OP, "repetition_penalty", logits.dtype())?,
        &[ids],
        vec![out],
        &scalars,
        grid,
        BLOCK,
    )?
    .remove(0))
}
