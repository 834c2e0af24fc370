//! Data movement: concatenation and splitting along a dimension, transposing the last two dimensions.

use nvlm_tensor::{Device, Tensor};

use crate::check::same_device;
use crate::{KernelError, Result};

/// Splits a shape around `dim`: (product of dims before, size at dim, product of dims after).
pub(crate) fn around(shape: &[usize], dim: usize) -> (usize, usize, usize) {
    (
        shape[..dim].iter().product(),
        shape[dim],
        shape[dim + 1..].iter().product(),
    )
}

fn host_bytes<'a>(op: &'static str, t: &'a Tensor) -> Result<&'a [u8]> {
    match t.device() {
        Device::Cpu => Ok(t.cpu_bytes()?),
        device => Err(KernelError::unsupported(op, device)),
    }
}

/// Concatenation along `dim`; every other dimension and the dtype must agree.
pub fn concat(tensors: &[&Tensor], dim: usize) -> Result<Tensor> {
    const OP: &str = "concat";
    let first = tensors
        .first()
        .ok_or_else(|| KernelError::invalid(OP, "no tensors"))?;
    if dim >= first.rank() {
        return Err(KernelError::shape(
            OP,
            format!("dim {dim} of a rank-{} tensor", first.rank()),
        ));
    }
    let device = same_device(OP, tensors)?;
    let mut shape = first.shape().to_vec();
    shape[dim] = 0;
    for t in tensors {
        crate::check::same_dtype(OP, t, first)?;
        let mut probe = t.shape().to_vec();
        if probe.len() != shape.len() {
            return Err(KernelError::shape(
                OP,
                format!("{:?} and {:?}", first.shape(), t.shape()),
            ));
        }
        shape[dim] += probe[dim];
        probe[dim] = 0;
        let mut expect = first.shape().to_vec();
        expect[dim] = 0;
        if probe != expect {
            return Err(KernelError::shape(
                OP,
                format!("{:?} and {:?} differ outside dim {dim}", first.shape(), t.shape()),
            ));
        }
    }
    match device {
        Device::Cpu => {}
        Device::Cuda(_) => return crate::cuda::layout::concat(tensors, dim, &shape),
    }
    let elem = first.dtype().size_in_bytes();
    let (outer, _, inner) = around(&shape, dim);
    let mut out = Vec::with_capacity(shape.iter().product::<usize>() * elem);
    for o in 0..outer {
        for t in tensors {
            let block = t.shape()[dim] * inner * elem;
            out.extend_from_slice(&host_bytes(OP, t)?[o * block..(o + 1) * block]);
        }
    }
    Ok(Tensor::from_bytes(&out, first.dtype(), &shape, Device::Cpu)?)
}

/// Splits along `dim` into pieces of the given sizes, which must add up to the dimension.
pub fn split(x: &Tensor, dim: usize, sizes: &[usize]) -> Result<Vec<Tensor>> {
    const OP: &str = "split";
    if dim >= x.rank() || sizes.iter().sum::<usize>() != x.shape()[dim] {
        return Err(KernelError::shape(
            OP,
            format!("sizes {sizes:?} along dim {dim} of {:?}", x.shape()),
        ));
    }
    if let Device::Cuda(_) = x.device() {
        return crate::cuda::layout::split(x, dim, sizes);
    }
    let bytes = host_bytes(OP, x)?;
    let elem = x.dtype().size_in_bytes();
    let (outer, total, inner) = around(x.shape(), dim);
    let mut start = 0;
    let mut pieces = Vec::with_capacity(sizes.len());
    for &size in sizes {
        let mut out = Vec::with_capacity(outer * size * inner * elem);
        for o in 0..outer {
            let row = (o * total + start) * inner * elem;
            out.extend_from_slice(&bytes[row..row + size * inner * elem]);
        }
        let mut shape = x.shape().to_vec();
        shape[dim] = size;
        pieces.push(Tensor::from_bytes(&out, x.dtype(), &shape, Device::Cpu)?);
        start += size;
    }
    Ok(pieces)
}

/// `[..., a, b]` → `[..., b, a]`, materialised.
pub fn transpose_last2(x: &Tensor) -> Result<Tensor> {
    const OP: &str = "transpose_last2";
    if x.rank() < 2 {
        return Err(KernelError::shape(
            OP,
            format!("needs rank >= 2, found {:?}", x.shape()),
        ));
    }
    if let Device::Cuda(_) = x.device() {
        return crate::cuda::layout::transpose_last2(x);
    }
    let bytes = host_bytes(OP, x)?;
    let elem = x.dtype().size_in_bytes();
    let r = x.rank();
    let (a, b) = (x.shape()[r - 2], x.shape()[r - 1]);
    let batches = x.numel() / (a * b).max(1);
    let mut out = vec![0u8; bytes.len()];
    for n in 0..batches {
        let base = n * a * b * elem;
        for i in 0..a {
            for j in 0..b {
                let src = base + (i * b + j) * elem;
                let dst = base + (j * a + i) * elem;
                out[dst..dst + elem].copy_from_slice(&bytes[src..src + elem]);
            }
        }
    }
    let mut shape = x.shape().to_vec();
    shape.swap(r - 2, r - 1);
    Ok(Tensor::from_bytes(&out, x.dtype(), &shape, Device::Cpu)?)
}

/// InternVL/NVLM pixel shuffle (version 2) with downsample ratio 0.5: `x[T, s, s, C]` (tokens row-major over an
/// `s x s` grid) to `[T, (s/2)^2, 4C]`, where output token `i*(s/2)+j` concatenates the 2x2 block
/// `(2i, 2j), (2i, 2j+1), (2i+1, 2j), (2i+1, 2j+1)` in that channel order.
pub fn pixel_shuffle(x: &Tensor) -> Result<Tensor> {
    const OP: &str = "pixel_shuffle";
    if x.rank() != 4 || x.shape()[1] != x.shape()[2] || !x.shape()[1].is_multiple_of(2) {
        return Err(KernelError::shape(
            OP,
            format!("expects [T, s, s, C] with even s, found {:?}", x.shape()),
        ));
    }
    if let Device::Cuda(_) = x.device() {
        return crate::cuda::layout::pixel_shuffle(x);
    }
    let bytes = host_bytes(OP, x)?;
    let elem = x.dtype().size_in_bytes();
    let [t, s, _, c] = [x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]];
    let half = s / 2;
    let row = c * elem;
    let mut out = Vec::with_capacity(bytes.len());
    for ti in 0..t {
        for i in 0..half {
            for j in 0..half {
                for (dr, dc) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                    let token = (2 * i + dr) * s + 2 * j + dc;
                    let at = (ti * s * s + token) * row;
                    out.extend_from_slice(&bytes[at..at + row]);
                }
            }
        }
    }
    Ok(Tensor::from_bytes(
        &out,
        x.dtype(),
        &[t, half * half, 4 * c],
        Device::Cpu,
    )?)
}
