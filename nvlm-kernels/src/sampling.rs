//! Choosing the next token: argmax, and temperature / top-k / top-p sampling with a seeded counter-based RNG.
//!
//! The random draw for row `r` at decode step `s` is [`uniform`]`(seed, s, r)`: a pure function, so a sequence is
//! reproducible from its seed alone, on any device and in any batch order.

use nvlm_tensor::{Device, Tensor};

use crate::check::{float_dtype, rank};
use crate::cpu::{f32_values, tensor_of};
use crate::{KernelError, Result};

/// Sampling settings for one batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingParams {
    /// Softmax temperature; `0` means greedy (argmax).
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens; `0` disables.
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p`; `1.0` disables.
    pub top_p: f32,
    /// RNG seed.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        }
    }
}

/// Index of the largest logit per row of `logits[b, v]` (the first one on ties) → i32 `[b]`.
pub fn argmax(logits: &Tensor) -> Result<Tensor> {
    if matches!(logits.device(), Device::Cuda(_)) {
        float_dtype("argmax", logits)?;
        rank("argmax", "logits", logits, 2)?;
        return crate::cuda::elementwise::argmax(logits);
    }
    choose_per_row("argmax", logits, |_, row| argmax_row(row))
}

/// Per row of `logits[b, v]`: the largest logit and its id, `first_id` + its index (the first one on ties), as f32
/// `[b, 2]`: what a vocabulary-parallel rank whose slice starts at `first_id` offers the others (ids below 2^24 are
/// exact in f32). Computed where the logits are; only the pair need cross to the host.
pub fn argmax_with_value(logits: &Tensor, first_id: usize) -> Result<Tensor> {
    const OP: &str = "argmax_with_value";
    float_dtype(OP, logits)?;
    rank(OP, "logits", logits, 2)?;
    if first_id + logits.shape()[1] > 1 << 24 {
        return Err(KernelError::invalid(
            OP,
            format!("ids up to {} are not exact in f32", first_id + logits.shape()[1]),
        ));
    }
    if matches!(logits.device(), Device::Cuda(_)) {
        return crate::cuda::elementwise::argmax_pairs(logits, first_id);
    }
    let v = logits.shape()[1];
    let mut out = Vec::with_capacity(2 * logits.shape()[0]);
    for row in f32_values(logits)?.chunks(v.max(1)) {
        let best = argmax_row(row);
        out.extend([
            row.get(best).copied().unwrap_or(f32::NEG_INFINITY),
            (first_id + best) as f32,
        ]);
    }
    tensor_of(out, &[logits.shape()[0], 2])
}

/// transformers' repetition penalty on one row of logits `[1, v]` (or `[v]`): a copy in which the logit of every
/// distinct id of `context` is divided by `penalty` when positive and multiplied by it otherwise. Runs where the
/// logits are (the ids, deduplicated here, go to the device). Ids outside the row are ignored.
pub fn repetition_penalty(logits: &Tensor, context: &[u32], penalty: f32) -> Result<Tensor> {
    const OP: &str = "repetition_penalty";
    float_dtype(OP, logits)?;
    if !(penalty.is_finite() && penalty > 0.0) {
        return Err(KernelError::invalid(
            OP,
            format!("penalty {penalty} must be positive"),
        ));
    }
    if logits.rank() == 2 && logits.shape()[0] != 1 {
        return Err(KernelError::shape(
            OP,
            format!("one row of logits, not {:?}", logits.shape()),
        ));
    }
    let width = logits.last_dim();
    let mut ids: Vec<i32> = context
        .iter()
        .filter(|&&id| (id as usize) < width)
        .map(|&id| id as i32)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    match logits.device() {
        Device::Cpu => {
            let mut row = f32_values(logits)?.into_owned();
            for &id in &ids {
                let v = &mut row[id as usize];
                *v = if *v > 0.0 { *v / penalty } else { *v * penalty };
            }
            crate::cpu::from_f32(row, logits.dtype(), logits.shape())
        }
        device => {
            let n = ids.len();
            let ids = Tensor::from_vec(ids, &[n])?.to_device(device)?;
            crate::cuda::elementwise::repetition_penalty(logits, &ids, penalty)
        }
    }
}

/// The CPU reference of the per-row choices: checks host `logits[b, v]` and picks one token per row with
/// `choose(row_index, row)` → i32 `[b]` (device logits are dispatched to their kernels before this).
fn choose_per_row(
    op: &'static str,
    logits: &Tensor,
    choose: impl Fn(usize, &[f32]) -> usize,
) -> Result<Tensor> {
    float_dtype(op, logits)?;
    rank(op, "logits", logits, 2)?;
    let v = logits.shape()[1];
    let ids = f32_values(logits)?
        .chunks(v.max(1))
        .enumerate()
        .map(|(r, row)| choose(r, row) as i32)
        .collect::<Vec<_>>();
    tensor_of(ids, &[logits.shape()[0]])
}

fn argmax_row(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] || row[best].is_nan() {
            best = i;
        }
    }
    best
}

/// One token per row of `logits[b, v]` → i32 `[b]`: greedy when `temperature == 0`, else softmax(logits / T)
/// restricted to top-k then top-p (in that order, as transformers' warpers), drawn with `uniform(seed, step, row)`.
pub fn sample(logits: &Tensor, params: &SamplingParams, step: u64) -> Result<Tensor> {
    const OP: &str = "sample";
    if params.temperature < 0.0 || !params.temperature.is_finite() {
        return Err(KernelError::invalid(
            OP,
            format!("temperature {} must be >= 0", params.temperature),
        ));
    }
    if !(params.top_p > 0.0 && params.top_p <= 1.0) {
        return Err(KernelError::invalid(
            OP,
            format!("top_p {} must be in (0, 1]", params.top_p),
        ));
    }
    if params.temperature == 0.0 {
        return argmax(logits);
    }
    if matches!(logits.device(), Device::Cuda(_)) {
        float_dtype(OP, logits)?;
        rank(OP, "logits", logits, 2)?;
        return crate::cuda::elementwise::sample(logits, params, step);
    }
    choose_per_row(OP, logits, |r, row| {
        sample_row(row, params, uniform(params.seed, step, r as u64))
    })
}

/// One in 2^40: the unit of the sampling weights (the CUDA kernel's `FIXED_ONE`).
pub const FIXED_ONE: f64 = 1_099_511_627_776.0;

/// The weight of logit `x` at temperature `1 / inv_t`, relative to the row's largest logit `max`, in 2^-40 fixed
/// point: `exp((x - max) * inv_t)` in f32, truncated. The CUDA kernel computes exactly this, and both sum weights as
/// integers, so the sums do not depend on order and every path (CPU, GPU, vocabulary-parallel) draws the same token
/// (f32 running sums over a 152k vocabulary drift by about 1% of the total, which moves nearly every draw).
pub fn fixed_weight(x: f32, max: f32, inv_t: f32) -> u64 {
    (((x - max) * inv_t).exp() * FIXED_ONE as f32) as u64
}

/// How many of `weights` (most likely first) top-p keeps: the shortest prefix whose weight reaches `top_p` of
/// `total`, or `None` when all of them together do not.
pub fn top_p_count(weights: &[u64], total: u64, top_p: f32) -> Option<usize> {
    let need = (top_p as f64 * total as f64).ceil();
    let target = if need >= 1.0 { need as u64 - 1 } else { 0 };
    first_past(weights, target).map(|i| i + 1)
}

/// The first index of `weights` whose running total exceeds `target`.
fn first_past(weights: &[u64], target: u64) -> Option<usize> {
    let mut cumulative = 0u64;
    weights.iter().position(|&w| {
        cumulative += w;
        cumulative > target
    })
}

/// The index into `weights` (most likely first) that the uniform draw `u` in `[0, 1)` lands on: the first whose
/// running total exceeds `floor(u * total)`.
pub fn draw_index(weights: &[u64], u: f32) -> usize {
    let total: u64 = weights.iter().sum();
    let target = ((u as f64 * total as f64) as u64).min(total.saturating_sub(1));
    first_past(weights, target).unwrap_or(weights.len().saturating_sub(1))
}

/// The candidate tokens and their weights ([`fixed_weight`]) after temperature, top-k and top-p, most likely first:
/// top-k keeps the `top_k` largest logits, top-p the shortest prefix whose weight reaches `top_p` of the total (as
/// transformers' warpers, in that order).
pub fn filtered_distribution(row: &[f32], params: &SamplingParams) -> Vec<(usize, u64)> {
    let mut order: Vec<usize> = (0..row.len()).collect();
    order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
    if params.top_k > 0 {
        order.truncate(params.top_k);
    }
    let Some(&first) = order.first() else {
        return Vec::new();
    };
    let (max, inv_t) = (row[first], 1.0 / params.temperature);
    let mut weighted: Vec<(usize, u64)> = order
        .iter()
        .map(|&i| (i, fixed_weight(row[i], max, inv_t)))
        .collect();
    if params.top_p < 1.0 {
        let weights: Vec<u64> = weighted.iter().map(|&(_, w)| w).collect();
        let kept = top_p_count(&weights, weights.iter().sum(), params.top_p).unwrap_or(weights.len());
        weighted.truncate(kept);
    }
    weighted
}

fn sample_row(row: &[f32], params: &SamplingParams, u: f32) -> usize {
    let kept = filtered_distribution(row, params);
    let weights: Vec<u64> = kept.iter().map(|&(_, w)| w).collect();
    kept.get(draw_index(&weights, u)).map_or(0, |&(i, _)| i)
}

/// A uniform draw in `[0, 1)` from `(seed, step, row)`: SplitMix64 of a mixed counter, top 24 bits.
pub fn uniform(seed: u64, step: u64, row: u64) -> f32 {
    let mut z = seed
        .wrapping_add(step.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(row.wrapping_mul(0xD1B5_4A32_D192_ED03));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
}
