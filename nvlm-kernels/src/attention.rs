//! Scaled dot-product attention: bidirectional (InternViT) or causal (Qwen2), with grouped-query heads.

use nvlm_tensor::{Device, Tensor};
use rayon::prelude::*;

use crate::check::{float_dtype, rank, same_device, same_dtype};
use crate::cpu::{f32_values, from_f32};
use crate::softmax::softmax_row;
use crate::{KernelError, Result};

/// Which keys a query may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionMask {
    /// Every query sees every key (the vision tower).
    Bidirectional,
    /// Query `i` sits at position `query_offset + i` and sees keys `0..=query_offset + i` (prefill has offset 0;
    /// a decode step over a cache of `n` keys has offset `n - 1`).
    Causal {
        /// Position of the first query among the keys.
        query_offset: usize,
    },
}

/// `softmax(q·kᵀ · scale + mask) · v` per head, with `q[b, tq, hq, d]`, `k`/`v` `[b, tk, hkv, d]` and query head `h`
/// reading KV head `h / (hq / hkv)`. Scores and softmax in f32; output `[b, tq, hq, d]` in `q`'s dtype.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: AttentionMask, scale: f32) -> Result<Tensor> {
    const OP: &str = "attention";
    let dtype = float_dtype(OP, q)?;
    same_dtype(OP, k, q)?;
    same_dtype(OP, v, q)?;
    for (what, t) in [("q", q), ("k", k), ("v", v)] {
        rank(OP, what, t, 4)?;
    }
    let [b, tq, hq, d] = [q.shape()[0], q.shape()[1], q.shape()[2], q.shape()[3]];
    let [bk, tk, hkv, dk] = [k.shape()[0], k.shape()[1], k.shape()[2], k.shape()[3]];
    v.expect_shape(OP, "v", k.shape())?;
    if bk != b || dk != d || hkv == 0 || hq % hkv != 0 {
        return Err(KernelError::shape(
            OP,
            format!(
                "q {:?} and k/v {:?}: batch and head_dim must match, kv heads divide q heads",
                q.shape(),
                k.shape()
            ),
        ));
    }
    if let AttentionMask::Causal { query_offset } = mask {
        if query_offset + tq > tk {
            return Err(KernelError::shape(
                OP,
                format!("{tq} causal queries at offset {query_offset} need > {tk} keys"),
            ));
        }
    }
    match same_device(OP, &[q, k, v])? {
        Device::Cpu => {
            let (qv, kv, vv) = (f32_values(q)?, f32_values(k)?, f32_values(v)?);
            let group = hq / hkv;
            let mut out = vec![0f32; b * tq * hq * d];
            // One task per (batch, query token): rows of `hq * d` outputs.
            out.par_chunks_mut((hq * d).max(1))
                .enumerate()
                .for_each(|(row, o)| {
                    let (bi, i) = (row / tq, row % tq);
                    let visible = match mask {
                        AttentionMask::Bidirectional => tk,
                        AttentionMask::Causal { query_offset } => query_offset + i + 1,
                    };
                    let mut scores = vec![0f32; visible];
                    let mut probs = vec![0f32; visible];
                    for h in 0..hq {
                        let kh = h / group;
                        let qrow = &qv[((bi * tq + i) * hq + h) * d..][..d];
                        for (j, s) in scores.iter_mut().enumerate() {
                            let krow = &kv[((bi * tk + j) * hkv + kh) * d..][..d];
                            *s = qrow.iter().zip(krow).map(|(a, b)| a * b).sum::<f32>() * scale;
                        }
                        softmax_row(&scores, &mut probs);
                        let oh = &mut o[h * d..(h + 1) * d];
                        oh.fill(0.0);
                        for (j, &p) in probs.iter().enumerate() {
                            let vrow = &vv[((bi * tk + j) * hkv + kh) * d..][..d];
                            oh.iter_mut().zip(vrow).for_each(|(acc, &x)| *acc += p * x);
                        }
                    }
                });
            from_f32(out, dtype, q.shape())
        }
        Device::Cuda(_) => {
            let offset = match mask {
                AttentionMask::Bidirectional => None,
                AttentionMask::Causal { query_offset } => Some(query_offset),
            };
            crate::cuda::attention::attention(q, k, v, offset, scale)
        }
    }
}
