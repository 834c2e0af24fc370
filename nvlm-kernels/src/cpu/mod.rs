//! Helpers for the f32 CPU reference implementations: reading any float tensor as f32, writing results back in the
//! caller's dtype, and splitting row-wise work across threads.

use std::borrow::Cow;

use half::{bf16, f16};
use nvlm_tensor::{DType, Element, Tensor};
use rayon::prelude::*;

use crate::Result;

/// The elements of a host float tensor as f32 (borrowed when already f32).
pub fn f32_values(t: &Tensor) -> Result<Cow<'_, [f32]>> {
    Ok(match t.dtype() {
        DType::F32 => Cow::Borrowed(t.as_slice::<f32>()?),
        DType::BF16 => Cow::Owned(t.as_slice::<bf16>()?.iter().map(|x| x.to_f32()).collect()),
        DType::F16 => Cow::Owned(t.as_slice::<f16>()?.iter().map(|x| x.to_f32()).collect()),
        _ => Cow::Owned(t.to_f32_vec()?),
    })
}

/// Integer ids of a host i32/i64 tensor as i64.
pub fn index_values(t: &Tensor) -> Result<Vec<i64>> {
    Ok(match t.dtype() {
        DType::I32 => t.as_slice::<i32>()?.iter().map(|&x| x as i64).collect(),
        _ => t.as_slice::<i64>()?.to_vec(),
    })
}

/// A host tensor of `dtype` from f32 values (rounded to nearest even for 16-bit types).
pub fn from_f32(values: Vec<f32>, dtype: DType, shape: &[usize]) -> Result<Tensor> {
    Ok(match dtype {
        DType::F32 => Tensor::from_vec(values, shape)?,
        DType::BF16 => Tensor::from_vec(values.into_iter().map(bf16::from_f32).collect::<Vec<_>>(), shape)?,
        DType::F16 => Tensor::from_vec(values.into_iter().map(f16::from_f32).collect::<Vec<_>>(), shape)?,
        other => Tensor::from_vec(values, shape)?.to_dtype(other)?,
    })
}

/// Rounds `x` to `dtype` and back, as a cast to the activation dtype does in the reference code.
pub fn round_to(x: f32, dtype: DType) -> f32 {
    match dtype {
        DType::BF16 => bf16::from_f32(x).to_f32(),
        DType::F16 => f16::from_f32(x).to_f32(),
        _ => x,
    }
}

/// Runs `f(row_index, input_row, output_row)` over rows of width `width`, in parallel.
pub fn map_rows(
    input: &[f32],
    width: usize,
    out_width: usize,
    f: impl Fn(usize, &[f32], &mut [f32]) + Sync,
) -> Vec<f32> {
    let rows = input.len().checked_div(width).unwrap_or(0);
    let mut out = vec![0f32; rows * out_width];
    if out_width == 0 {
        return out;
    }
    out.par_chunks_mut(out_width)
        .enumerate()
        .for_each(|(r, o)| f(r, &input[r * width..(r + 1) * width], o));
    out
}

/// Converts typed host values to a tensor; convenience for int outputs.
pub fn tensor_of<T: Element>(values: Vec<T>, shape: &[usize]) -> Result<Tensor> {
    Ok(Tensor::from_vec(values, shape)?)
}
