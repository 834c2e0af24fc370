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

fn name(op: &'static str, base: &str, dtype: DType) -> Result<String> {
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

/// Attention with one warp per (batch, query, head).
pub(crate) fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    causal_offset: Option<usize>,
    scale: f32,
) -> Result<Tensor> {
    const OP: &str = "attention";
    let [b, tq, hq, d] = [q.shape()[0], q.shape()[1], q.shape()[2], q.shape()[3]];
    let [tk, hkv] = [k.shape()[1], k.shape()[2]];
    head_dim_fits(OP, d)?;
    let (kernel, grid, block) = attention_kernel("attention", b, tq, hq, d);
    let causal = usize::from(causal_offset.is_some());
    let ints = [b, tq, tk, hq, hkv, d, causal, causal_offset.unwrap_or(0)];
    attention_launch(OP, kernel, &[q, k, v], &ints, scale, (grid, block))
}

/// The attention kernel for `b x tq` queries of `hq` heads of `head_dim` (`base` or its tiled variant), its grid and
/// block: the tiled kernel (16 queries a block, K/V tiles staged once in shared memory) from 16 queries and
/// head_dim <= 128, else one warp per (batch, query, head), 4 warps a block.
fn attention_kernel(
    base: &'static str,
    b: usize,
    tq: usize,
    hq: usize,
    d: usize,
) -> (&'static str, u32, u32) {
    const TILE_Q: usize = 16;
    const WARPS: usize = 4;
    if tq >= TILE_Q && d <= 128 {
        let tiled = if base == "attention" {
            "attention_tiled"
        } else {
            "paged_attention_tiled"
        };
        return (tiled, (b * hq * tq.div_ceil(TILE_Q)) as u32, (WARPS * 32) as u32);
    }
    (base, (b * tq * hq).div_ceil(WARPS) as u32, (WARPS * 32) as u32)
}

/// Causal attention of `q[t, hq, d]` at positions `offset..offset + t` over one sequence's paged cache (`k`/`v`
/// `[slots, hkv, d]`, `table` i32 block ids); checked by the caller.
#[allow(clippy::too_many_arguments)]
pub(crate) fn paged_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    table: &Tensor,
    block_size: usize,
    offset: usize,
    scale: f32,
) -> Result<Tensor> {
    const OP: &str = "paged_attention";
    let [t, hq, d] = [q.shape()[0], q.shape()[1], q.shape()[2]];
    let hkv = k.shape()[1];
    head_dim_fits(OP, d)?;
    let (kernel, grid, block) = attention_kernel("paged_attention", 1, t, hq, d);
    let ints = [t, hq, hkv, d, offset, block_size];
    attention_launch(OP, kernel, &[q, k, v, table], &ints, scale, (grid, block))
}

/// The attention kernels keep a query row in registers, 8 channels a lane: head_dim at most 256.
fn head_dim_fits(op: &'static str, d: usize) -> Result<()> {
    if d > 256 {
        return Err(KernelError::invalid(
            op,
            format!("the CUDA attention kernel supports head_dim <= 256, found {d}"),
        ));
    }
    Ok(())
}

/// Launches attention kernel `kernel` (`attention.cu`) on `inputs` (q first) with the i32 `ints` and then `scale`
/// as its scalars; the output is shaped like q.
fn attention_launch(
    op: &'static str,
    kernel: &str,
    inputs: &[&Tensor],
    ints: &[usize],
    scale: f32,
    (grid, block): (u32, u32),
) -> Result<Tensor> {
    let q = inputs[0];
    let scalars: Vec<Scalar> = ints
        .iter()
        .map(|&v| Scalar::I32(v as i32))
        .chain([Scalar::F32(scale)])
        .collect();
    Ok(launch(
        op,
        "attention",
        &name(op, kernel, q.dtype())?,
        inputs,
        vec![Output::new(q.dtype(), q.shape())],
        &scalars,
        grid,
        block,
    )?
    .remove(0))
}

/// Causal attention of `q[t, hq, d]`, one row per sequence, over the paged caches; `rows` packs i32
/// `[slots | positions | table starts | block ids]` (checked by the caller), `max_keys` is the longest row's context.
/// Split-K (flash-decoding) when the GQA group fits a block: enough (row, KV head, key range) blocks to fill the GPU,
/// then a merge; otherwise one warp per (row, head) over the whole context.
#[allow(clippy::too_many_arguments)]
pub(crate) fn paged_attention_rows(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    rows: &Tensor,
    t: usize,
    max_keys: usize,
    block_size: usize,
    scale: f32,
) -> Result<Tensor> {
    const OP: &str = "paged_attention_rows";
    let [hq, d] = [q.shape()[1], q.shape()[2]];
    let hkv = k.shape()[1];
    head_dim_fits(OP, d)?;
    if t == 0 {
        return Ok(Tensor::zeros(q.shape(), q.dtype(), q.device())?);
    }
    let group = hq / hkv;
    if group <= 32 {
        let (splits, chunk) = decode_splits(t * hkv, max_keys);
        let scalars = [t, hq, hkv, d, block_size, splits, chunk]
            .map(|v| Scalar::I32(v as i32))
            .into_iter()
            .chain([Scalar::F32(scale)])
            .collect::<Vec<_>>();
        let mut partials = launch(
            OP,
            "attention",
            &name(OP, "paged_decode_partial", q.dtype())?,
            &[q, k, v, rows],
            vec![
                Output::new(DType::F32, &[t, hq, splits, 2]),
                Output::new(DType::F32, &[t, hq, splits, d]),
            ],
            &scalars,
            (t * hkv * splits) as u32,
            (group * 32) as u32,
        )?;
        let partial = partials.remove(1);
        let ml = partials.remove(0);
        return Ok(launch(
            OP,
            "attention",
            &name(OP, "paged_decode_combine", q.dtype())?,
            &[&ml, &partial],
            vec![Output::new(q.dtype(), q.shape())],
            &[Scalar::I32(d as i32), Scalar::I32(splits as i32)],
            (t * hq) as u32,
            d.next_multiple_of(32).min(256) as u32,
        )?
        .remove(0));
    }
    let (kernel, grid, block) = attention_kernel("paged_attention_rows", t, 1, hq, d);
    let ints = [t, hq, hkv, d, block_size];
    attention_launch(OP, kernel, &[q, k, v, rows], &ints, scale, (grid, block))
}

/// Key ranges per (row, KV head) for split-K decode: enough blocks for two per SM of an H200 (132 SMs), each range at
/// least 32 keys, at most 128 ranges. Returns (ranges, keys per range).
pub(crate) fn decode_splits(row_heads: usize, max_keys: usize) -> (usize, usize) {
    const TARGET_BLOCKS: usize = 2 * 132;
    const MIN_KEYS: usize = 32;
    let wanted = TARGET_BLOCKS.div_ceil(row_heads.max(1));
    let splits = wanted.min(max_keys / MIN_KEYS).clamp(1, 128);
    (splits, max_keys.max(1).div_ceil(splits))
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

#[cfg(test)]
mod tests {
    use super::decode_splits;

    #[test]
    fn decode_splits_cover_the_context_and_fill_the_gpu() {
        for (row_heads, max_keys) in [
            (8, 1),
            (8, 90),
            (8, 2048),
            (8, 32_768),
            (256, 32_768),
            (1024, 100),
        ] {
            let (splits, chunk) = decode_splits(row_heads, max_keys);
            assert!(
                splits * chunk >= max_keys,
                "{row_heads} {max_keys}: keys left out"
            );
            assert!((1..=128).contains(&splits));
            assert!(
                chunk >= 32 || splits == 1,
                "{row_heads} {max_keys}: ranges of {chunk} keys"
            );
            if max_keys >= 32 * 264 {
                assert!(
                    row_heads * splits >= 264 || splits == 128,
                    "{row_heads} {max_keys}: too few blocks"
                );
            }
        }
        // Batch-1 decode of Qwen2-72B (8 KV heads) at 32k: 33 ranges of 993 keys, 264 blocks.
        assert_eq!(decode_splits(8, 32_768), (33, 993));
    }
}
