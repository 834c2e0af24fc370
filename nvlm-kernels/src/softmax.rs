//! Softmax over the last dimension, in f32.

use nvlm_tensor::{Device, Tensor};

use crate::check::float_dtype;
use crate::cpu::{f32_values, from_f32, map_rows};
use crate::Result;

/// Numerically stable softmax over the last dimension, computed in f32, returned in `x`'s dtype. Rows that are all
/// `-inf` (fully masked) give zeros rather than NaN.
pub fn softmax(x: &Tensor) -> Result<Tensor> {
    const OP: &str = "softmax";
    let dtype = float_dtype(OP, x)?;
    let width = x.last_dim();
    match x.device() {
        Device::Cpu => {
            let y = map_rows(&f32_values(x)?, width, width, |_, row, out| softmax_row(row, out));
            from_f32(y, dtype, x.shape())
        }
        Device::Cuda(_) => crate::cuda::elementwise::softmax(x),
    }
}

/// Softmax of one row into `out` (which may be longer than needed: only `row.len()` entries are written).
pub(crate) fn softmax_row(row: &[f32], out: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        out[..row.len()].fill(0.0);
        return;
    }
    let mut sum = 0f32;
    for (o, &v) in out.iter_mut().zip(row) {
        *o = (v - max).exp();
        sum += *o;
    }
    let inv = 1.0 / sum;
    out[..row.len()].iter_mut().for_each(|o| *o *= inv);
}
