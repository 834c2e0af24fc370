//! Patch embedding as unfold + matmul (InternViT's `Conv2d(3, D, kernel = stride = 14)`).

use nvlm_tensor::{Device, Tensor};

use crate::check::{float_dtype, rank};
use crate::cpu::{f32_values, from_f32};
use crate::{matmul, KernelError, Result};

/// `pixels[T, C, H, W]` → `[T, (H/p)·(W/p), C·p·p]`: non-overlapping `p×p` patches, row-major over the patch grid,
/// each flattened in `(channel, row, column)` order: the layout of a Conv2d weight `[D, C, p, p]`.
pub fn unfold_patches(pixels: &Tensor, patch: usize) -> Result<Tensor> {
    const OP: &str = "unfold_patches";
    let dtype = float_dtype(OP, pixels)?;
    rank(OP, "pixels", pixels, 4)?;
    let [t, c, h, w] = [
        pixels.shape()[0],
        pixels.shape()[1],
        pixels.shape()[2],
        pixels.shape()[3],
    ];
    if patch == 0 || h % patch != 0 || w % patch != 0 {
        return Err(KernelError::shape(
            OP,
            format!("{h}x{w} image is not a whole number of {patch}px patches"),
        ));
    }
    let (gh, gw) = (h / patch, w / patch);
    match pixels.device() {
        Device::Cpu => {
            let src = f32_values(pixels)?;
            let mut out = Vec::with_capacity(src.len());
            for ti in 0..t {
                for py in 0..gh {
                    for px in 0..gw {
                        for ch in 0..c {
                            for y in 0..patch {
                                let row = ((ti * c + ch) * h + py * patch + y) * w + px * patch;
                                out.extend_from_slice(&src[row..row + patch]);
                            }
                        }
                    }
                }
            }
            from_f32(out, dtype, &[t, gh * gw, c * patch * patch])
        }
        Device::Cuda(_) => crate::cuda::layout::unfold_patches(pixels, patch),
    }
}

/// The convolution `Conv2d(C, D, kernel = stride = p)` with `weight[D, C, p, p]` and `bias[D]`, as
/// `unfold_patches(pixels) · weightᵀ + bias` → `[T, patches, D]`.
pub fn patch_embed(pixels: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    const OP: &str = "patch_embed";
    rank(OP, "weight", weight, 4)?;
    let [d, c, p, p2] = [
        weight.shape()[0],
        weight.shape()[1],
        weight.shape()[2],
        weight.shape()[3],
    ];
    if p != p2 || pixels.rank() != 4 || pixels.shape()[1] != c {
        return Err(KernelError::shape(
            OP,
            format!("pixels {:?} with weight {:?}", pixels.shape(), weight.shape()),
        ));
    }
    let patches = unfold_patches(pixels, p)?;
    matmul(&patches, &weight.reshape(&[d, c * p * p])?, Some(bias))
}
