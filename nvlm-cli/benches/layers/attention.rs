//! Attention alone at NVLM-D's shapes, and the device copy bandwidth every memory-bound case is measured against.

use std::time::Instant;

use nvlm_kernels::{attention, AttentionMask};
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

/// Times `nvlm_kernels::attention` on the case's shapes (random bf16 q, k, v), against the FLOP roofline.
pub fn run(device: Device, case: &Case, report: &mut Report) -> anyhow::Result<()> {
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
    // The warm-up call also sizes the run: up to ten calls, about a second in all (the 32k case may be slow).
    let start = Instant::now();
    attention(&q, &k, &v, mask, scale)?;
    sync(device)?;
    let iterations = (1.0 / start.elapsed().as_secs_f64()).clamp(1.0, ITERATIONS as f64) as usize;
    let start = Instant::now();
    for _ in 0..iterations {
        attention(&q, &k, &v, mask, scale)?;
    }
    sync(device)?;
    let ms = start.elapsed().as_secs_f64() * 1e3 / iterations as f64;
    // Two matrix products of 2·queries·keys·head_dim each per head; a causal mask halves them.
    let full = 4.0 * (batch * heads) as f64 * (queries * keys * head_dim) as f64;
    let flops = if causal { full / 2.0 } else { full };
    report.add(Row {
        name: case.name.clone(),
        shape: format!(
            "[{batch}, {queries}, {heads}, {head_dim}] over {keys} keys, {kv_heads} KV heads, {}",
            if causal { "causal" } else { "bidirectional" }
        ),
        ms,
        roofline_ms: Some(Report::compute_roofline_ms(flops)),
        basis: format!("{:.0} TFLOP/s achieved; FLOPs / bf16 peak", flops / ms / 1e9),
    });
    Ok(())
}
