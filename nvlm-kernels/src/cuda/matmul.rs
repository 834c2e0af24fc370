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

/// Row-major `y[m, n] = x[m, k] · w[n, k]ᵀ (+ bias[n])`. In cuBLASLt's column-major terms this is
/// `yᵀ[n, m] = (w stored as k×n, transposed) · (x stored as k×m)`: no copies, just a transpose flag.
pub(crate) fn matmul(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, out_shape: &[usize]) -> Result<Tensor> {
    const OP: &str = "matmul";
    for t in [Some(x), Some(w), bias].into_iter().flatten() {
        if t.dtype() != DType::BF16 {
            return Err(KernelError::invalid(
                OP,
                format!("CUDA matmul takes BF16 tensors, found {}", t.dtype()),
            ));
        }
    }
    let (m, n, k) = (x.rows(), w.shape()[0], w.shape()[1]);
    let (xb, xo, xl) = x.cuda_parts()?;
    let (wb, wo, wl) = w.cuda_parts()?;
    let device = xb.device.clone();
    let stream = device.stream();
    // SAFETY: the allocation is fully written by the GEMM (beta = 0).
    let mut out = unsafe { stream.alloc::<u8>((m * n * 2).max(1)) }.map_err(KernelError::cuda(OP))?;
    if m > 0 && n > 0 && k > 0 {
        let blas = blas_lt(&device)?;
        let cfg = MatmulConfig {
            transa: true,
            transb: false,
            transc: false,
            m: n as u64,
            n: m as u64,
            k: k as u64,
            alpha: 1.0,
            lda: k as i64,
            ldb: k as i64,
            beta: 0.0,
            ldc: n as i64,
            stride_a: None,
            stride_b: None,
            stride_c: None,
            stride_bias: None,
            batch_size: None,
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
            let (xt, wt) = (xv.transmute::<bf16>(m * k), wv.transmute::<bf16>(n * k));
            let bt = bias_view.as_ref().and_then(|b| b.transmute::<bf16>(n));
            let mut ot = out.transmute_mut::<bf16>(m * n).expect("allocated m*n bf16");
            let (Some(xt), Some(wt)) = (xt, wt) else {
                return Err(KernelError::invalid(OP, "device buffer smaller than its shape"));
            };
            blas.matmul(cfg, &wt, &xt, &mut ot, bt.as_ref(), None)
                .map_err(KernelError::cuda(OP))?;
        }
    } else if m > 0 && n > 0 {
        stream.memset_zeros(&mut out).map_err(KernelError::cuda(OP))?;
    }
    Ok(Tensor::from_cuda(out, device, DType::BF16, out_shape))
}
