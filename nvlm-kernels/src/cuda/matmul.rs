//! cuBLASLt GEMMs: `x·wᵀ (+ bias)` in bf16 with f32 accumulation, the bias fused in the epilogue.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::cublaslt::{CudaBlasLT, Matmul, MatmulConfig};
use half::bf16;
use nvlm_tensor::{CudaDevice, DType, Tensor};

use crate::{KernelError, Result};

/// The cuBLASLt handle of `device` (created once, bound to its compute stream).
pub fn blas_lt(device: &Arc<CudaDevice>) -> Result<Arc<CudaBlasLT>> {
    static HANDLES: OnceLock<Mutex<HashMap<usize, Arc<CudaBlasLT>>>> = OnceLock::new();
    let mut handles = HANDLES
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(h) = handles.get(&device.ordinal()) {
        return Ok(h.clone());
    }
    // SAFETY: only probes for the library by name.
    if !unsafe { cudarc::cublaslt::sys::is_culib_present() } {
        return Err(KernelError::Cuda {
            op: "matmul",
            detail: "cuBLASLt (libcublasLt.so.13) not found: add the CUDA toolkit's lib64 to LD_LIBRARY_PATH"
                .into(),
        });
    }
    let handle =
        Arc::new(CudaBlasLT::new(device.stream().clone()).map_err(KernelError::cuda("creating cuBLASLt"))?);
    handles.insert(device.ordinal(), handle.clone());
    Ok(handle)
}

/// Alignment cuBLASLt assumes of every operand unless told otherwise.
const OPERAND_ALIGNMENT: usize = 256;

/// A fresh, aligned copy of `t` when its offset in its allocation is not [`OPERAND_ALIGNMENT`]-aligned.
fn aligned(t: &Tensor) -> Result<Option<cudarc::driver::CudaSlice<u8>>> {
    let (buffer, offset, len) = t.cuda_parts()?;
    if offset % OPERAND_ALIGNMENT == 0 {
        return Ok(None);
    }
    let copy = buffer
        .device
        .stream()
        .clone_dtod(&buffer.slice.slice(offset..offset + len));
    copy.map(Some).map_err(KernelError::cuda("matmul operand copy"))
}

/// The most rows the GEMV kernel takes (one register accumulator per row and lane).
pub const GEMV_MAX_ROWS: usize = 8;

/// Environment switch for decode-size products: `NVLM_GEMV=1` sends every bf16 product of at most
/// [`GEMV_MAX_ROWS`] rows that [`gemv_misfit`] accepts to the GEMV kernel instead of cuBLASLt. Off by default until an H200 run
/// shows where it wins (`benches/matmul.rs` times both at NVLM-D's decode shapes).
pub const GEMV_ENV: &str = "NVLM_GEMV";

fn gemv_enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var(GEMV_ENV).as_deref() == Ok("1"))
}

/// Why the GEMV kernel cannot take `x · wᵀ (+ bias)`, or `None` when it can: bf16 device tensors, at most
/// [`GEMV_MAX_ROWS`] rows, `k` a multiple of 8, and both operands 16-byte aligned (it reads 8 bf16 at a time).
pub(crate) fn gemv_misfit(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Option<String> {
    let k = w.shape()[1];
    if x.rows() > GEMV_MAX_ROWS {
        return Some(format!("{} rows (at most {GEMV_MAX_ROWS})", x.rows()));
    }
    if !k.is_multiple_of(8) {
        return Some(format!("k = {k} is not a multiple of 8"));
    }
    for t in [Some(x), Some(w), bias].into_iter().flatten() {
        if t.dtype() != DType::BF16 {
            return Some(format!("a {} operand (bf16 only)", t.dtype()));
        }
    }
    for t in [x, w] {
        match t.cuda_parts() {
            Ok((_, offset, _)) if offset % 16 == 0 => {}
            Ok(_) => return Some("an operand view not 16-byte aligned".into()),
            Err(_) => return Some("an operand not on a CUDA device".into()),
        }
    }
    None
}

/// `x[m, k] · w[n, k]ᵀ (+ bias[n])` for `m <= 8` with the GEMV kernel (the caller checked [`gemv_misfit`]).
pub(crate) fn gemv(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, out_shape: &[usize]) -> Result<Tensor> {
    use super::launch::{launch, Output, Scalar};
    let (m, n, k) = (x.rows(), w.shape()[0], w.shape()[1]);
    if m == 0 || n == 0 {
        return Ok(Tensor::zeros(out_shape, DType::BF16, x.device())?);
    }
    const WARPS: usize = 8;
    let grid = n.div_ceil(WARPS) as u32;
    Ok(launch(
        "gemv",
        "gemv",
        &format!("gemv_bf16_m{m}"),
        &[x, w, bias.unwrap_or(w)],
        vec![Output::new(DType::BF16, out_shape)],
        &[
            Scalar::I32(n as i32),
            Scalar::I32(k as i32),
            Scalar::I32(bias.is_some() as i32),
        ],
        grid,
        (WARPS * 32) as u32,
    )?
    .remove(0))
}

/// Row-major `y[m, n] = x[m, k] · w[n, k]ᵀ (+ bias[n])`. In cuBLASLt's column-major terms this is
/// `yᵀ[n, m] = (w stored as k×n, transposed) · (x stored as k×m)`: no copies, just a transpose flag. Decode-size
/// products go to the GEMV kernel instead when `NVLM_GEMV=1`.
pub(crate) fn matmul(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, out_shape: &[usize]) -> Result<Tensor> {
    if gemv_enabled() && gemv_misfit(x, w, bias).is_none() {
        return gemv(x, w, bias, out_shape);
    }
    let (m, n, k) = (x.rows(), w.shape()[0], w.shape()[1]);
    gemm(
        "matmul",
        x,
        w,
        bias,
        Gemm {
            batch: 1,
            m,
            n,
            k,
            w_is_n_by_k: true,
        },
        out_shape,
    )
}

/// Row-major `y[b, m, n] = a[b, m, k] · b[b, k, n]`, or `· b[b, n, k]ᵀ` when `transpose_b`: one strided-batched
/// cuBLASLt call.
pub(crate) fn batched_matmul(
    a: &Tensor,
    b: &Tensor,
    transpose_b: bool,
    out_shape: &[usize],
) -> Result<Tensor> {
    let [batch, m, n] = [out_shape[0], out_shape[1], out_shape[2]];
    let k = a.shape()[2];
    gemm(
        "batched_matmul",
        a,
        b,
        None,
        Gemm {
            batch,
            m,
            n,
            k,
            w_is_n_by_k: transpose_b,
        },
        out_shape,
    )
}

/// The sizes of `batch` row-major products `x[m, k] · w` with `w` stored `[n, k]` (`w_is_n_by_k`) or `[k, n]`.
#[derive(Debug, Clone, Copy)]
struct Gemm {
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
    w_is_n_by_k: bool,
}

fn gemm(
    op: &'static str,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    Gemm {
        batch,
        m,
        n,
        k,
        w_is_n_by_k,
    }: Gemm,
    out_shape: &[usize],
) -> Result<Tensor> {
    for t in [Some(x), Some(w), bias].into_iter().flatten() {
        if t.dtype() != DType::BF16 {
            return Err(KernelError::invalid(
                op,
                format!("CUDA {op} takes BF16 tensors, found {}", t.dtype()),
            ));
        }
    }
    let (xb, xo, xl) = x.cuda_parts()?;
    let (wb, wo, wl) = w.cuda_parts()?;
    let device = xb.device.clone();
    let stream = device.stream();
    let out_len = batch * m * n;
    // SAFETY: the allocation is fully written by the GEMM (beta = 0) or zeroed below.
    let mut out = unsafe { stream.alloc::<u8>((out_len * 2).max(1)) }.map_err(KernelError::cuda(op))?;
    if out_len > 0 && k > 0 {
        let blas = blas_lt(&device)?;
        let batched = batch > 1;
        let cfg = MatmulConfig {
            transa: w_is_n_by_k,
            transb: false,
            transc: false,
            m: n as u64,
            n: m as u64,
            k: k as u64,
            alpha: 1.0,
            lda: if w_is_n_by_k { k as i64 } else { n as i64 },
            ldb: k as i64,
            beta: 0.0,
            ldc: n as i64,
            stride_a: batched.then_some((n * k) as i64),
            stride_b: batched.then_some((m * k) as i64),
            stride_c: batched.then_some((m * n) as i64),
            stride_bias: None,
            batch_size: batched.then_some(batch as i32),
        };
        // cuBLASLt's heuristics assume 256-byte aligned operands; a view at another offset is copied first.
        let (xa, wa) = (aligned(x)?, aligned(w)?);
        let ba = bias.map(aligned).transpose()?;
        let xv = xa
            .as_ref()
            .map_or_else(|| xb.slice.slice(xo..xo + xl), |a| a.slice(..));
        let wv = wa
            .as_ref()
            .map_or_else(|| wb.slice.slice(wo..wo + wl), |a| a.slice(..));
        let bias_view = match (bias, &ba) {
            (Some(_), Some(Some(copy))) => Some(copy.slice(..)),
            (Some(b), _) => {
                let (bb, bo, bl) = b.cuda_parts()?;
                Some(bb.slice.slice(bo..bo + bl))
            }
            (None, _) => None,
        };
        // SAFETY: the byte views hold exactly the bf16 element counts given; alignment is that of the allocations.
        unsafe {
            let (xt, wt) = (
                xv.transmute::<bf16>(batch * m * k),
                wv.transmute::<bf16>(batch * n * k),
            );
            let bt = bias_view.as_ref().and_then(|b| b.transmute::<bf16>(n));
            let mut ot = out
                .transmute_mut::<bf16>(out_len)
                .expect("allocated out_len bf16");
            let (Some(xt), Some(wt)) = (xt, wt) else {
                return Err(KernelError::invalid(op, "device buffer smaller than its shape"));
            };
            blas.matmul(cfg, &wt, &xt, &mut ot, bt.as_ref(), None)
                .map_err(KernelError::cuda(op))?;
        }
    } else if out_len > 0 {
        stream.memset_zeros(&mut out).map_err(KernelError::cuda(op))?;
    }
    Ok(Tensor::from_cuda(out, device, DType::BF16, out_shape))
}
