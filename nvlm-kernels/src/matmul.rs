//! Matrix products: `matmul(x, w) = x·wᵀ (+ bias)` with PyTorch's `[out, in]` weight layout, and batched products.
//!
//! CPU: f32 GEMM from `matrixmultiply`, split across threads by rows (or by output columns when there are few rows,
//! as in decode). CUDA: cuBLASLt, bf16 in, f32 accumulation, bias in the epilogue.

use nvlm_tensor::{Device, Tensor};
use rayon::prelude::*;

use crate::check::{float_dtype, rank, same_device, vector};
use crate::cpu::{f32_values, from_f32};
use crate::{KernelError, Result};

/// `x[..., k] · w[n, k]ᵀ (+ bias[n])` → `[..., n]`, in `x`'s dtype. `w` may have another float dtype on the CPU
/// (bf16 weights are upcast); on CUDA all three must be bf16.
pub fn matmul(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    const OP: &str = "matmul";
    let dtype = float_dtype(OP, x)?;
    float_dtype(OP, w)?;
    rank(OP, "weight", w, 2)?;
    if x.rank() == 0 {
        return Err(KernelError::shape(OP, "input must have rank >= 1"));
    }
    let (n, k) = (w.shape()[0], w.shape()[1]);
    if x.last_dim() != k {
        return Err(KernelError::shape(
            OP,
            format!(
                "input {:?} has {} features but weight {:?} takes {k}",
                x.shape(),
                x.last_dim(),
                w.shape()
            ),
        ));
    }
    let mut tensors = vec![x, w];
    if let Some(b) = bias {
        vector(OP, "bias", b, n)?;
        float_dtype(OP, b)?;
        tensors.push(b);
    }
    let mut out_shape = x.shape().to_vec();
    *out_shape.last_mut().expect("rank >= 1") = n;
    match same_device(OP, &tensors)? {
        Device::Cpu => {
            let m = x.rows();
            let mut y = gemm_nt(&f32_values(x)?, &f32_values(w)?, m, n, k);
            if let Some(b) = bias {
                let b = f32_values(b)?;
                y.par_chunks_mut(n.max(1))
                    .for_each(|row| row.iter_mut().zip(b.iter()).for_each(|(v, b)| *v += b));
            }
            from_f32(y, dtype, &out_shape)
        }
        Device::Cuda(_) => crate::cuda::matmul::matmul(x, w, bias, &out_shape),
    }
}

/// [`matmul`] for decode-size inputs (at most 8 rows) with the dedicated GEMV kernel on CUDA: one warp per output
/// column reads its weight row once, at HBM speed. On the CPU it is [`matmul`]. On CUDA it takes bf16 tensors with
/// `k` a multiple of 8 and 16-byte aligned views, and says which condition fails otherwise. `matmul` itself uses
/// this kernel when `NVLM_GEMV=1`.
pub fn gemv(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    const OP: &str = "gemv";
    if matches!(x.device(), Device::Cpu) {
        return matmul(x, w, bias);
    }
    rank(OP, "weight", w, 2)?;
    if x.rank() == 0 || x.last_dim() != w.shape()[1] {
        return Err(KernelError::shape(
            OP,
            format!("input {:?} does not match weight {:?}", x.shape(), w.shape()),
        ));
    }
    if let Some(b) = bias {
        vector(OP, "bias", b, w.shape()[0])?;
    }
    let mut tensors = vec![x, w];
    tensors.extend(bias);
    same_device(OP, &tensors)?;
    if let Some(why) = crate::cuda::matmul::gemv_misfit(x, w, bias) {
        return Err(KernelError::invalid(
            OP,
            format!("the GEMV kernel does not take {why}"),
        ));
    }
    let mut out_shape = x.shape().to_vec();
    *out_shape.last_mut().expect("rank >= 1") = w.shape()[0];
    crate::cuda::matmul::gemv(x, w, bias, &out_shape)
}

/// `a[b, m, k] · b[b, k, n]` → `[b, m, n]`, or `a · bᵀ` with `b[b, n, k]` when `transpose_b`; in `a`'s dtype.
pub fn batched_matmul(a: &Tensor, b: &Tensor, transpose_b: bool) -> Result<Tensor> {
    const OP: &str = "batched_matmul";
    let dtype = float_dtype(OP, a)?;
    float_dtype(OP, b)?;
    rank(OP, "lhs", a, 3)?;
    rank(OP, "rhs", b, 3)?;
    let (batch, m, k) = (a.shape()[0], a.shape()[1], a.shape()[2]);
    let (bb, n, kb) = if transpose_b {
        (b.shape()[0], b.shape()[1], b.shape()[2])
    } else {
        (b.shape()[0], b.shape()[2], b.shape()[1])
    };
    if bb != batch || kb != k {
        return Err(KernelError::shape(
            OP,
            format!(
                "lhs {:?} and rhs {:?} (transpose_b = {transpose_b}) do not chain",
                a.shape(),
                b.shape()
            ),
        ));
    }
    match same_device(OP, &[a, b])? {
        Device::Cpu => {
            let (av, bv) = (f32_values(a)?, f32_values(b)?);
            let mut out = vec![0f32; batch * m * n];
            out.par_chunks_mut((m * n).max(1)).enumerate().for_each(|(i, c)| {
                let (ai, bi) = (&av[i * m * k..(i + 1) * m * k], &bv[i * n * k..(i + 1) * n * k]);
                // b[k, n] row-major has strides (n, 1); b[n, k] read as its transpose has strides (1, k).
                let (rsb, csb) = if transpose_b {
                    (1, k as isize)
                } else {
                    (n as isize, 1)
                };
                sgemm(ai, bi, c, m, n, k, rsb, csb);
            });
            from_f32(out, dtype, &[batch, m, n])
        }
        Device::Cuda(_) => crate::cuda::matmul::batched_matmul(a, b, transpose_b, &[batch, m, n]),
    }
}

/// `c[m, n] = a[m, k] · b` where `b` is read with row stride `rsb` and column stride `csb` (single thread).
#[allow(clippy::too_many_arguments)]
fn sgemm(a: &[f32], b: &[f32], c: &mut [f32], m: usize, n: usize, k: usize, rsb: isize, csb: isize) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c.fill(0.0);
        return;
    }
    // SAFETY: the slices hold m*k, k*n (under the given strides) and m*n elements, as every caller checks.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            k as isize,
            1,
            b.as_ptr(),
            rsb,
            csb,
            0.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// `x[m, k] · w[n, k]ᵀ` in f32, multithreaded.
pub(crate) fn gemm_nt(x: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
    let mut y = vec![0f32; m * n];
    let threads = rayon::current_num_threads().max(1);
    if m >= 2 * threads || n < 64 {
        let rows_per_chunk = m.div_ceil(threads).max(1);
        y.par_chunks_mut((rows_per_chunk * n).max(1))
            .enumerate()
            .for_each(|(i, c)| {
                let r0 = i * rows_per_chunk;
                let rows = c.len() / n.max(1);
                sgemm(&x[r0 * k..(r0 + rows) * k], w, c, rows, n, k, 1, k as isize);
            });
    } else {
        // Few rows (decode): split the output columns, i.e. the weight rows, across threads.
        let cols_per_chunk = n.div_ceil(threads);
        let parts: Vec<(usize, Vec<f32>)> = (0..n.div_ceil(cols_per_chunk))
            .into_par_iter()
            .map(|i| {
                let j0 = i * cols_per_chunk;
                let cols = cols_per_chunk.min(n - j0);
                let mut part = vec![0f32; m * cols];
                sgemm(
                    x,
                    &w[j0 * k..(j0 + cols) * k],
                    &mut part,
                    m,
                    cols,
                    k,
                    1,
                    k as isize,
                );
                (j0, part)
            })
            .collect();
        for (j0, part) in parts {
            let cols = part.len() / m.max(1);
            for r in 0..m {
                y[r * n + j0..r * n + j0 + cols].copy_from_slice(&part[r * cols..(r + 1) * cols]);
            }
        }
    }
    y
}
