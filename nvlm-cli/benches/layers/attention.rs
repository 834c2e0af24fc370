//! Attention alone at NVLM-D's shapes, and the device copy bandwidth every memory-bound case is measured against.

use std::time::Instant;

use nvlm_kernels::cuda::{flash_kernel, set_flash_kernel, FlashKernel};
use nvlm_kernels::{attention, paged_attention_rows, AttentionMask, BlockTable, PagedRows};
use nvlm_tensor::{CudaDevice, Device};

use crate::cases::{Case, Kind};
use crate::report::{Report, Row};
use crate::sync;
use crate::weights::random_tensor;

const ITERATIONS: usize = 10;

/// Device-to-device copy of `bytes` (ten copies after a warm-up): bytes read + written per second.
pub fn copy_bandwidth(device: Device, bytes: usize) -> anyhow::Result<f64> {
    let Device::Cuda(ordinal) = device else {
        anyhow::bail!("the copy bandwidth is a GPU figure");
    };
    let stream = CudaDevice::get(ordinal)?.stream().clone();
    let src = stream.alloc_zeros::<u8>(bytes)?;
    let mut dst = stream.alloc_zeros::<u8>(bytes)?;
    stream.memcpy_dtod(&src, &mut dst)?;
    stream.synchronize()?;
    let start = Instant::now();
    for _ in 0..ITERATIONS {
        stream.memcpy_dtod(&src, &mut dst)?;
    }
    stream.synchronize()?;
    Ok(2.0 * (bytes * ITERATIONS) as f64 / start.elapsed().as_secs_f64())
}

/// Which attention kernels [`run`] times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    /// The `mma.sync` tensor-core kernel (the default) and the CUDA-core tiled kernel it replaces
    /// (`<case>-cuda-cores`).
    Default,
    /// The opt-in Hopper kernels, `wgmma` (`<case>-wgmma`) and the warp-specialised TMA kernel (`<case>-tma`): run in
    /// a process of their own (`--opt-in-kernels`), since one that faults leaves the CUDA context unusable.
    OptIn,
}

/// Times `nvlm_kernels::attention` on the case's shapes (random bf16 q, k, v) with `kernels`, against the FLOP
/// roofline.
pub fn run(device: Device, case: &Case, kernels: Kernels, report: &mut Report) -> anyhow::Result<()> {
    let Kind::Attention {
        batch,
        queries,
        keys,
        heads,
        kv_heads,
        head_dim,
        causal,
    } = case.kind
    else {
        anyhow::bail!("{} is not an attention case", case.name);
    };
    let q = random_tensor(11, &[batch, queries, heads, head_dim], device)?;
    let k = random_tensor(12, &[batch, keys, kv_heads, head_dim], device)?;
    let v = random_tensor(13, &[batch, keys, kv_heads, head_dim], device)?;
    let mask = if causal {
        AttentionMask::Causal {
            query_offset: keys - queries,
        }
    } else {
        AttentionMask::Bidirectional
    };
    let scale = 1.0 / (head_dim as f32).sqrt();
    // Two matrix products of 2·queries·keys·head_dim each per head; a causal mask halves them.
    let full = 4.0 * (batch * heads) as f64 * (queries * keys * head_dim) as f64;
    let flops = if causal { full / 2.0 } else { full };
    let shape = format!(
        "[{batch}, {queries}, {heads}, {head_dim}] over {keys} keys, {kv_heads} KV heads, {}",
        if causal { "causal" } else { "bidirectional" }
    );
    let default = flash_kernel();
    let variants = match kernels {
        Kernels::Default => [
            (FlashKernel::MmaSync, case.name.clone()),
            (FlashKernel::Off, format!("{}-cuda-cores", case.name)),
        ],
        Kernels::OptIn => [
            (FlashKernel::Wgmma, format!("{}-wgmma", case.name)),
            (FlashKernel::Tma, format!("{}-tma", case.name)),
        ],
    };
    for (kernel, name) in variants {
        set_flash_kernel(kernel);
        let timed = time_ms(device, || {
            attention(&q, &k, &v, mask, scale).map(drop).map_err(Into::into)
        });
        set_flash_kernel(default);
        let ms = timed?;
        report.add(Row {
            name,
            shape: shape.clone(),
            ms,
            roofline_ms: Some(Report::compute_roofline_ms(flops)),
            basis: format!("{:.0} TFLOP/s achieved; FLOPs / bf16 peak", flops / ms / 1e9),
        });
    }
    Ok(())
}

/// Times `nvlm_kernels::paged_attention_rows` (the decode path: split-K over the context) for one query row per
/// sequence over a paged cache of random bf16 keys and values, against the KV bytes' memory roofline.
pub fn run_decode(device: Device, case: &Case, report: &mut Report) -> anyhow::Result<()> {
    let Kind::DecodeAttention {
        batch,
        context,
        heads,
        kv_heads,
        head_dim,
    } = case.kind
    else {
        anyhow::bail!("{} is not a decode attention case", case.name);
    };
    const BLOCK: usize = 16;
    let blocks_each = context.div_ceil(BLOCK);
    let slots = batch * blocks_each * BLOCK;
    let q = random_tensor(14, &[batch, heads, head_dim], device)?;
    let k = random_tensor(15, &[slots, kv_heads, head_dim], device)?;
    let v = random_tensor(16, &[slots, kv_heads, head_dim], device)?;
    let tables = (0..batch)
        .map(|b| {
            let blocks: Vec<usize> = (b * blocks_each..(b + 1) * blocks_each).collect();
            BlockTable::new(&blocks, BLOCK, device)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let segments: Vec<_> = tables.iter().map(|t| (t, context - 1, 1)).collect();
    let rows = PagedRows::new(&segments, device)?;
    let scale = 1.0 / (head_dim as f32).sqrt();
    let ms = time_ms(device, || {
        paged_attention_rows(&q, &k, &v, &rows, scale)
            .map(drop)
            .map_err(Into::into)
    })?;
    let bytes = (2 * batch * context * kv_heads * head_dim * 2) as f64;
    report.add(Row {
        name: case.name.clone(),
        shape: format!("{batch} x [1, {heads}, {head_dim}] over {context} keys, {kv_heads} KV heads, paged"),
        ms,
        roofline_ms: Some(report.memory_roofline_ms(bytes)),
        basis: format!("{:.0} GB/s of K/V read; bytes / copy bandwidth", bytes / ms / 1e6),
    });
    Ok(())
}

/// Milliseconds per call of `f` on `device`: a warm-up call sizes the run (up to ten calls, about a second in all;
/// the 32k cases may be slow).
fn time_ms(device: Device, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let start = Instant::now();
    f()?;
    sync(device)?;
    let iterations = (1.0 / start.elapsed().as_secs_f64()).clamp(1.0, ITERATIONS as f64) as usize;
    let start = Instant::now();
    for _ in 0..iterations {
        f()?;
    }
    sync(device)?;
    Ok(start.elapsed().as_secs_f64() * 1e3 / iterations as f64)
}
