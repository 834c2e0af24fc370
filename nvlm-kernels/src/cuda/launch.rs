//! One way to launch any kernel of this crate: device views of the inputs, fresh outputs, then scalars, in the
//! order the kernel declares them.

use cudarc::driver::sys::CUfunction_attribute;
use cudarc::driver::{CudaSlice, CudaViewMut, LaunchConfig, PushKernelArg};
use nvlm_tensor::{DType, Tensor};

use super::module_cache::function;
use super::tma::TensorMap;
use crate::{KernelError, Result};

/// A kernel argument passed by value.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Scalar {
    I32(i32),
    I64(i64),
    F32(f32),
    /// A TMA descriptor (a `const __grid_constant__ TensorMap` parameter).
    TensorMap(TensorMap),
}

/// How a kernel is launched: `grid` blocks of `block` threads, with `shared_bytes` of dynamic shared memory.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LaunchShape {
    pub grid: u32,
    pub block: u32,
    pub shared_bytes: u32,
}

impl LaunchShape {
    /// `grid` blocks of `block` threads, no dynamic shared memory.
    pub fn plain(grid: u32, block: u32) -> LaunchShape {
        LaunchShape {
            grid,
            block,
            shared_bytes: 0,
        }
    }
}

/// Dynamic shared memory a block may use without opting in (CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES).
const DEFAULT_SHARED_LIMIT: u32 = 48 * 1024;

/// An output to allocate: dtype and shape.
pub(crate) struct Output {
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// Start from a copy of this tensor (in-place style kernels such as scatter); else uninitialised.
    pub init_from: Option<Tensor>,
}

impl Output {
    /// A fresh output.
    pub fn new(dtype: DType, shape: &[usize]) -> Output {
        Output {
            dtype,
            shape: shape.to_vec(),
            init_from: None,
        }
    }
}

/// Threads per block of the row and elementwise kernels.
pub(crate) const BLOCK: u32 = 256;

/// Blocks for a grid-stride loop over `n` elements.
pub(crate) fn grid_for(n: usize) -> u32 {
    (n.div_ceil(BLOCK as usize)).clamp(1, 65_535 * 8) as u32
}

/// `"bf16"` or `"f32"`: the kernel name suffix for `dtype`.
pub(crate) fn suffix(op: &'static str, dtype: DType) -> Result<&'static str> {
    match dtype {
        DType::BF16 => Ok("bf16"),
        DType::F32 => Ok("f32"),
        other => Err(KernelError::invalid(
            op,
            format!("CUDA kernel takes BF16 or F32, not {other}"),
        )),
    }
}

/// Launches `kernel::function(inputs..., outputs..., scalars...)` on the inputs' device with `grid` blocks of
/// `block` threads, and returns the outputs.
#[allow(clippy::too_many_arguments)]
pub(crate) fn launch(
    op: &'static str,
    kernel: &'static str,
    function_name: &str,
    inputs: &[&Tensor],
    outputs: Vec<Output>,
    scalars: &[Scalar],
    grid: u32,
    block: u32,
) -> Result<Vec<Tensor>> {
    let shape = LaunchShape::plain(grid, block);
    launch_shaped(op, kernel, function_name, inputs, outputs, scalars, shape)
}

/// [`launch`] with dynamic shared memory.
pub(crate) fn launch_shaped(
    op: &'static str,
    kernel: &'static str,
    function_name: &str,
    inputs: &[&Tensor],
    outputs: Vec<Output>,
    scalars: &[Scalar],
    shape: LaunchShape,
) -> Result<Vec<Tensor>> {
    let (first, _, _) = inputs[0].cuda_parts()?;
    let device = first.device.clone();
    let stream = device.stream();
    let mut slices: Vec<CudaSlice<u8>> = Vec::with_capacity(outputs.len());
    for out in &outputs {
        let slice = match &out.init_from {
            Some(t) => {
                let (b, offset, len) = t.cuda_parts()?;
                stream
                    .clone_dtod(&b.slice.slice(offset..offset + len))
                    .map_err(KernelError::cuda(op))?
            }
            None => alloc_like(op, inputs[0], out.dtype, &out.shape)?,
        };
        slices.push(slice);
    }
    let mut views: Vec<CudaViewMut<u8>> = slices.iter_mut().map(|s| s.slice_mut(..)).collect();
    run_shaped(op, kernel, function_name, inputs, &mut views, scalars, shape)?;
    drop(views);
    Ok(slices
        .into_iter()
        .zip(outputs)
        .map(|(s, o)| Tensor::from_cuda(s, device.clone(), o.dtype, &o.shape))
        .collect())
}

/// Uninitialised device memory for a `[shape]` tensor of `dtype` (at least one byte) on `like`'s device. Callers
/// launch kernels that write every element before anything reads it.
pub(crate) fn alloc_like(
    op: &'static str,
    like: &Tensor,
    dtype: DType,
    shape: &[usize],
) -> Result<CudaSlice<u8>> {
    let (buffer, _, _) = like.cuda_parts()?;
    let bytes = (shape.iter().product::<usize>() * dtype.size_in_bytes()).max(1);
    // SAFETY: see above: every caller's kernel writes the whole buffer before it is read.
    unsafe { buffer.device.stream().alloc::<u8>(bytes) }.map_err(KernelError::cuda(op))
}

/// Launches `kernel::function(inputs..., outputs..., scalars...)` on the inputs' device, writing into existing
/// device memory (`outputs`: fresh buffers, or a tensor written in place), with `grid` blocks of `block` threads.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run(
    op: &'static str,
    kernel: &'static str,
    function_name: &str,
    inputs: &[&Tensor],
    outputs: &mut [CudaViewMut<'_, u8>],
    scalars: &[Scalar],
    grid: u32,
    block: u32,
) -> Result<()> {
    let shape = LaunchShape::plain(grid, block);
    run_shaped(op, kernel, function_name, inputs, outputs, scalars, shape)
}

/// [`run`] with dynamic shared memory (opted into for the function when over 48 KiB).
fn run_shaped(
    op: &'static str,
    kernel: &'static str,
    function_name: &str,
    inputs: &[&Tensor],
    outputs: &mut [CudaViewMut<'_, u8>],
    scalars: &[Scalar],
    shape: LaunchShape,
) -> Result<()> {
    let LaunchShape {
        grid,
        block,
        shared_bytes,
    } = shape;
    let (first, _, _) = inputs[0].cuda_parts()?;
    let device = first.device.clone();
    let stream = device.stream();
    let func = function(&device, kernel, function_name)?;
    if shared_bytes > DEFAULT_SHARED_LIMIT {
        func.set_attribute(
            CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            shared_bytes as i32,
        )
        .map_err(KernelError::cuda(op))?;
    }
    let mut views = Vec::with_capacity(inputs.len());
    for t in inputs {
        let (b, offset, len) = t.cuda_parts()?;
        views.push(
            b.slice
                .slice(offset..offset + len.max(1).min(b.slice.len() - offset)),
        );
    }
    if grid > 0 {
        let cfg = LaunchConfig {
            grid_dim: (grid, 1, 1),
            block_dim: (block, 1, 1),
            shared_mem_bytes: shared_bytes,
        };
        let mut builder = stream.launch_builder(&func);
        for v in &views {
            builder.arg(v);
        }
        for s in outputs.iter_mut() {
            builder.arg(s);
        }
        for s in scalars {
            match s {
                Scalar::I32(v) => builder.arg(v),
                Scalar::I64(v) => builder.arg(v),
                Scalar::F32(v) => builder.arg(v),
                Scalar::TensorMap(v) => builder.arg(v),
            };
        }
        // SAFETY: every caller passes the arguments in the order and of the types its kernel declares, with
        // buffers sized for the shapes it launches over.
        unsafe { builder.launch(cfg) }.map_err(KernelError::cuda(op))?;
    }
    Ok(())
}
