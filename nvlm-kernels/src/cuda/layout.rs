//! Launch wrappers for the data-movement kernels (`cuda/layout.cu`): concat, split, transpose of the last two
//! dimensions, pixel shuffle and patch unfold, all exact word copies.

use cudarc::driver::CudaSlice;
use nvlm_tensor::{DType, Tensor};

use super::launch::{alloc_like, grid_for, launch, run, Output, Scalar, BLOCK};
use crate::shape::around;
use crate::{KernelError, Result};

/// The kernel suffix for an element of `dtype`: `b16` or `b32`.
fn word(op: &'static str, dtype: DType) -> Result<&'static str> {
    match dtype.size_in_bytes() {
        2 => Ok("b16"),
        4 => Ok("b32"),
        _ => Err(KernelError::invalid(
            op,
            format!("the CUDA data-movement kernels take 2- or 4-byte elements, not {dtype}"),
        )),
    }
}

/// One `copy_rows` launch: `rows` rows of `width` elements from `src` (pitch, offset) into `dst` (pitch, offset).
#[allow(clippy::too_many_arguments)]
fn copy_rows(
    op: &'static str,
    src: &Tensor,
    dst: &mut CudaSlice<u8>,
    rows: usize,
    width: usize,
    (src_pitch, src_offset): (usize, usize),
    (dst_pitch, dst_offset): (usize, usize),
) -> Result<()> {
    let n = rows * width;
    let name = format!("copy_rows_{}", word(op, src.dtype())?);
    let scalars = [rows, width, src_pitch, src_offset, dst_pitch, dst_offset].map(|v| Scalar::I64(v as i64));
    let grid = if n == 0 { 0 } else { grid_for(n) };
    run(
        op,
        "layout",
        &name,
        &[src],
        &mut [dst.slice_mut(..)],
        &scalars,
        grid,
        BLOCK,
    )
}

/// Concatenation of device tensors along `dim` into `shape` (checked by the caller): one launch per input.
pub(crate) fn concat(tensors: &[&Tensor], dim: usize, shape: &[usize]) -> Result<Tensor> {
    const OP: &str = "concat";
    let first = tensors[0];
    let (outer, _, inner) = around(shape, dim);
    let mut out = alloc_like(OP, first, first.dtype(), shape)?;
    let mut start = 0;
    for t in tensors {
        let width = t.shape()[dim] * inner;
        copy_rows(
            OP,
            t,
            &mut out,
            outer,
            width,
            (width, 0),
            (shape[dim] * inner, start),
        )?;
        start += width;
    }
    let (buffer, _, _) = first.cuda_parts()?;
    Ok(Tensor::from_cuda(
        out,
        buffer.device.clone(),
        first.dtype(),
        shape,
    ))
}

/// Pieces of `x` along `dim` of the given sizes (checked by the caller): one launch per piece.
pub(crate) fn split(x: &Tensor, dim: usize, sizes: &[usize]) -> Result<Vec<Tensor>> {
    const OP: &str = "split";
    let shape = x.shape();
    let (outer, _, inner) = around(shape, dim);
    let (buffer, _, _) = x.cuda_parts()?;
    let mut start = 0;
    let mut pieces = Vec::with_capacity(sizes.len());
    for &size in sizes {
        let mut piece_shape = shape.to_vec();
        piece_shape[dim] = size;
        let mut out = alloc_like(OP, x, x.dtype(), &piece_shape)?;
        let width = size * inner;
        copy_rows(
            OP,
            x,
            &mut out,
            outer,
            width,
            (shape[dim] * inner, start),
            (width, 0),
        )?;
        pieces.push(Tensor::from_cuda(
            out,
            buffer.device.clone(),
            x.dtype(),
            &piece_shape,
        ));
        start += width;
    }
    Ok(pieces)
}

/// A grid-stride layout kernel over every element of `x`, into a fresh `[out_shape]` tensor.
fn permute(op: &'static str, base: &str, x: &Tensor, out_shape: &[usize], dims: &[usize]) -> Result<Tensor> {
    let n = x.numel();
    let name = format!("{base}_{}", word(op, x.dtype())?);
    let scalars: Vec<Scalar> = dims.iter().map(|&d| Scalar::I64(d as i64)).collect();
    let grid = if n == 0 { 0 } else { grid_for(n) };
    Ok(launch(
        op,
        "layout",
        &name,
        &[x],
        vec![Output::new(x.dtype(), out_shape)],
        &scalars,
        grid,
        BLOCK,
    )?
    .remove(0))
}

/// `[..., a, b]` → `[..., b, a]` on the device.
pub(crate) fn transpose_last2(x: &Tensor) -> Result<Tensor> {
    let r = x.rank();
    let (a, b) = (x.shape()[r - 2], x.shape()[r - 1]);
    let mut shape = x.shape().to_vec();
    shape.swap(r - 2, r - 1);
    permute(
        "transpose_last2",
        "transpose_last2",
        x,
        &shape,
        &[x.numel() / (a * b).max(1), a, b],
    )
}

/// Pixel shuffle v2 on the device: `[T, s, s, C]` → `[T, (s/2)^2, 4C]`.
pub(crate) fn pixel_shuffle(x: &Tensor) -> Result<Tensor> {
    let [t, s, _, c] = [x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]];
    permute(
        "pixel_shuffle",
        "pixel_shuffle",
        x,
        &[t, s * s / 4, 4 * c],
        &[t, s, c],
    )
}

/// Patch unfold on the device: `[T, C, H, W]` → `[T, (H/p)(W/p), C·p·p]`.
pub(crate) fn unfold_patches(pixels: &Tensor, patch: usize) -> Result<Tensor> {
    let [t, c, h, w] = [
        pixels.shape()[0],
        pixels.shape()[1],
        pixels.shape()[2],
        pixels.shape()[3],
    ];
    let out = [t, (h / patch) * (w / patch), c * patch * patch];
    permute(
        "unfold_patches",
        "unfold_patches",
        pixels,
        &out,
        &[t, c, h, w, patch],
    )
}

/// Writes `rows[t, width...]` into `cache[slots, width...]` in place at the slots of positions `start..start + t`
/// through `table` (i32 block ids, checked by the caller), `block_size` positions a block.
pub(crate) fn paged_write(
    cache: &mut Tensor,
    rows: &Tensor,
    table: &Tensor,
    block_size: usize,
    start: usize,
) -> Result<()> {
    const OP: &str = "paged_write";
    let (t, slots) = (rows.shape()[0], cache.shape()[0]);
    let width = rows.numel() / t.max(1);
    let name = format!("paged_write_{}", word(OP, rows.dtype())?);
    let scalars = [t, width, start, block_size, slots].map(|v| Scalar::I64(v as i64));
    let n = t * width;
    let grid = if n == 0 { 0 } else { grid_for(n) };
    let mut view = cache.cuda_view_mut()?;
    run(
        OP,
        "layout",
        &name,
        &[rows, table],
        std::slice::from_mut(&mut view),
        &scalars,
        grid,
        BLOCK,
    )
}
