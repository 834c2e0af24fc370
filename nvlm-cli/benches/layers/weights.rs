//! Random bf16 weights for the benchmark models.

use half::bf16;
use nvlm_kernels::validate::random_values;
use nvlm_tensor::{DType, Device, MemoryWeights, Tensor};

/// Inserts `shape` of small random bf16 values (`offset` added: 1 for norm weights).
pub fn put(
    weights: &mut MemoryWeights,
    name: &str,
    shape: &[usize],
    seed: u64,
    offset: f32,
) -> anyhow::Result<()> {
    put_zeroed(weights, name, shape, seed, offset, |_| false)
}

/// [`put`], with the elements whose flat index `zero` accepts set to 0 (the dummy heads of the HF ViT layout).
pub fn put_zeroed(
    weights: &mut MemoryWeights,
    name: &str,
    shape: &[usize],
    seed: u64,
    offset: f32,
    zero: impl Fn(usize) -> bool,
) -> anyhow::Result<()> {
    let n: usize = shape.iter().product();
    let values: Vec<bf16> = random_values(seed, n)
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            if zero(i) {
                bf16::ZERO
            } else {
                bf16::from_f32(offset + 0.02 * v)
            }
        })
        .collect();
    weights.insert(name, shape, &values)?;
    Ok(())
}

/// A random bf16 tensor of `shape` on `device`.
pub fn random_tensor(seed: u64, shape: &[usize], device: Device) -> anyhow::Result<Tensor> {
    let n: usize = shape.iter().product();
    Ok(Tensor::from_vec(random_values(seed, n), shape)?
        .to_dtype(DType::BF16)?
        .to_device(device)?)
}
