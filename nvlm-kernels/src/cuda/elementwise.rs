//! Launch wrappers for the row-wise and elementwise kernels.

use cudarc::driver::{LaunchConfig, PushKernelArg};
use nvlm_tensor::{DType, Tensor};

use super::module_cache::function;
use crate::{KernelError, Result};

const BLOCK: u32 = 256;

fn grid_for(n: usize) -> u32 {
    (n.div_ceil(BLOCK as usize)).clamp(1, 65_535 * 8) as u32
}

fn suffix(op: &'static str, dtype: DType) -> Result<&'static str> {
    match dtype {
        DType::BF16 => Ok("bf16"),
        DType::F32 => Ok("f32"),
        other => Err(KernelError::invalid(
            op,
            format!("CUDA kernel takes BF16 or F32, not {other}"),
        )),
    }
}

fn alloc_like(op: &'static str, like: &Tensor, dtype: DType) -> Result<cudarc::driver::CudaSlice<u8>> {
    let (buffer, _, _) = like.cuda_parts()?;
    let bytes = (like.numel() * dtype.size_in_bytes()).max(1);
    // SAFETY: every byte of the allocation is written by the kernel that follows before anyone reads it.
    unsafe { buffer.device.stream().alloc::<u8>(bytes) }.map_err(KernelError::cuda(op))
}

/// RMSNorm on the device: one block per row.
pub(crate) fn rms_norm(x: &Tensor, weight: &Tensor, eps: f32) -> Result<Tensor> {
    const OP: &str = "rms_norm";
    crate::check::same_dtype(OP, weight, x)?;
    let name = format!("rms_norm_{}", suffix(OP, x.dtype())?);
    let (xb, xo, xl) = x.cuda_parts()?;
    let (wb, wo, wl) = weight.cuda_parts()?;
    let device = xb.device.clone();
    let func = function(&device, "rms_norm", &name)?;
    let mut out = alloc_like(OP, x, x.dtype())?;
    let (rows, width) = (x.rows() as u32, x.last_dim() as i32);
    if rows > 0 {
        let (xv, wv) = (xb.slice.slice(xo..xo + xl), wb.slice.slice(wo..wo + wl));
        let cfg = LaunchConfig {
            grid_dim: (rows, 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut launch = device.stream().launch_builder(&func);
        launch.arg(&xv).arg(&wv).arg(&mut out).arg(&width).arg(&eps);
        // SAFETY: argument types and counts match `rms_norm_{bf16,f32}`; every buffer holds rows*width elements.
        unsafe { launch.launch(cfg) }.map_err(KernelError::cuda(OP))?;
    }
    Ok(Tensor::from_cuda(out, device, x.dtype(), x.shape()))
}

/// Launches a grid-stride elementwise kernel `function(inputs..., out, n)` over the `numel` of `inputs[0]`, writing a
/// new tensor of `out_dtype` with the shape of `inputs[0]`.
fn launch_elementwise(
    op: &'static str,
    kernel: &'static str,
    function_name: &str,
    inputs: &[&Tensor],
    out_dtype: DType,
) -> Result<Tensor> {
    let first = inputs[0];
    let (buffer, _, _) = first.cuda_parts()?;
    let device = buffer.device.clone();
    let func = function(&device, kernel, function_name)?;
    let mut out = alloc_like(op, first, out_dtype)?;
    let n = first.numel() as i64;
    if n > 0 {
        let mut views = Vec::with_capacity(inputs.len());
        for t in inputs {
            let (b, offset, len) = t.cuda_parts()?;
            views.push(b.slice.slice(offset..offset + len));
        }
        let cfg = LaunchConfig {
            grid_dim: (grid_for(n as usize), 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut launch = device.stream().launch_builder(&func);
        for v in &views {
            launch.arg(v);
        }
        launch.arg(&mut out).arg(&n);
        // SAFETY: every elementwise kernel takes (inputs..., out, long n) and all buffers hold n elements.
        unsafe { launch.launch(cfg) }.map_err(KernelError::cuda(op))?;
    }
    Ok(Tensor::from_cuda(out, device, out_dtype, first.shape()))
}

/// `silu(gate) · up` on the device.
pub(crate) fn silu_mul(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    const OP: &str = "silu_mul";
    let name = format!("silu_mul_{}", suffix(OP, gate.dtype())?);
    launch_elementwise(OP, "silu_mul", &name, &[gate, up], gate.dtype())
}

/// f32 <-> bf16 conversion on the device.
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
    launch_elementwise(OP, "cast", name, &[x], dtype)
}
