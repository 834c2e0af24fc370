//! Test support: seeded random tensors, closeness checks, and independent f64 reference implementations written
//! straight from the formulas (loops, no shared code with the crate).
#![allow(dead_code, clippy::needless_range_loop)]

use half::bf16;
use nvlm_tensor::{DType, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A seeded RNG; every test uses its own seed so failures reproduce.
pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// `n` values uniform in `[-scale, scale)`.
pub fn values(rng: &mut StdRng, n: usize, scale: f64) -> Vec<f64> {
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}

/// A host tensor of `dtype` holding `v` (rounded to the dtype), and the rounded values as f64.
pub fn tensor(v: &[f64], shape: &[usize], dtype: DType) -> (Tensor, Vec<f64>) {
    let t = Tensor::from_vec(v.iter().map(|&x| x as f32).collect::<Vec<_>>(), shape).unwrap();
    let t = t.to_dtype(dtype).unwrap();
    let exact = t.to_f64_vec().unwrap();
    (t, exact)
}

/// A random host tensor and its exact values.
pub fn random(rng: &mut StdRng, shape: &[usize], dtype: DType) -> (Tensor, Vec<f64>) {
    let n = shape.iter().product();
    let v = values(rng, n, 1.0);
    tensor(&v, shape, dtype)
}

/// Asserts `|got - want| <= atol + rtol·|want|` elementwise, reporting the worst element.
pub fn assert_close(what: &str, got: &[f64], want: &[f64], atol: f64, rtol: f64) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: {} values, expected {}",
        got.len(),
        want.len()
    );
    let mut worst = (0usize, 0f64);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let excess = (g - w).abs() - (atol + rtol * w.abs());
        if excess > worst.1 || g.is_nan() != w.is_nan() {
            worst = (i, excess.max(f64::MIN_POSITIVE));
        }
    }
    if worst.1 > 0.0 {
        let i = worst.0;
        panic!(
            "{what}: element {i} is {} but the f64 reference says {} (atol {atol}, rtol {rtol})",
            got[i], want[i]
        );
    }
}

/// f32-output tolerance: what f32 accumulation over `k` terms of magnitude ~1 can lose.
pub fn f32_tol(k: usize) -> f64 {
    1e-6 * (k as f64).sqrt().max(1.0) * 4.0
}

/// Rounds an f64 to bf16 and back.
pub fn round_bf16(x: f64) -> f64 {
    bf16::from_f64(x).to_f64()
}

// ------------------------------------------------------------------------------------------- f64 references

pub fn matmul_ref(x: &[f64], w: &[f64], bias: Option<&[f64]>, m: usize, n: usize, k: usize) -> Vec<f64> {
    let mut y = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut acc = bias.map_or(0.0, |b| b[j]);
            for p in 0..k {
                acc += x[i * k + p] * w[j * k + p];
            }
            y[i * n + j] = acc;
        }
    }
    y
}

/// `w · round(x / rms(x[..stat]))`, where `round` is the identity for f32 and bf16 rounding for bf16.
pub fn rms_norm_ref(
    x: &[f64],
    w: &[f64],
    eps: f64,
    width: usize,
    stat: usize,
    round: fn(f64) -> f64,
) -> Vec<f64> {
    let mut y = Vec::with_capacity(x.len());
    for row in x.chunks(width) {
        let ms: f64 = row[..stat].iter().map(|v| v * v).sum::<f64>() / stat as f64;
        let inv = 1.0 / (ms + eps).sqrt();
        for (i, v) in row.iter().enumerate() {
            y.push(w[i] * round(v * inv));
        }
    }
    y
}

pub fn layer_norm_ref(x: &[f64], w: &[f64], b: &[f64], eps: f64, width: usize) -> Vec<f64> {
    let mut y = Vec::with_capacity(x.len());
    for row in x.chunks(width) {
        let mean = row.iter().sum::<f64>() / width as f64;
        let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / width as f64;
        for (i, v) in row.iter().enumerate() {
            y.push((v - mean) / (var + eps).sqrt() * w[i] + b[i]);
        }
    }
    y
}

pub fn softmax_ref(row: &[f64]) -> Vec<f64> {
    let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = row.iter().map(|v| (v - max).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

/// Attention with explicit loops; `causal_offset = None` for bidirectional.
#[allow(clippy::too_many_arguments)]
pub fn attention_ref(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    b: usize,
    tq: usize,
    tk: usize,
    hq: usize,
    hkv: usize,
    d: usize,
    causal_offset: Option<usize>,
    scale: f64,
) -> Vec<f64> {
    let mut out = vec![0.0; b * tq * hq * d];
    for bi in 0..b {
        for i in 0..tq {
            for h in 0..hq {
                let kh = h * hkv / hq;
                let visible = causal_offset.map_or(tk, |o| o + i + 1);
                let scores: Vec<f64> = (0..visible)
                    .map(|j| {
                        (0..d)
                            .map(|c| {
                                q[((bi * tq + i) * hq + h) * d + c] * k[((bi * tk + j) * hkv + kh) * d + c]
                            })
                            .sum::<f64>()
                            * scale
                    })
                    .collect();
                let p = softmax_ref(&scores);
                for c in 0..d {
                    out[((bi * tq + i) * hq + h) * d + c] = (0..visible)
                        .map(|j| p[j] * v[((bi * tk + j) * hkv + kh) * d + c])
                        .sum();
                }
            }
        }
    }
    out
}
