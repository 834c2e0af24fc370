//! Named host tensors, as models consume them: the seam between checkpoint readers and models.

use std::collections::BTreeMap;

use crate::{DType, Element, Result, Tensor, TensorError};

/// A borrowed host tensor: dtype, shape and its little-endian bytes (possibly unaligned, e.g. inside an mmap).
#[derive(Debug, Clone)]
pub struct TensorView<'a> {
    /// Element type.
    pub dtype: DType,
    /// Row-major shape.
    pub shape: Vec<usize>,
    /// `numel * dtype.size_in_bytes()` bytes.
    pub data: &'a [u8],
}

impl TensorView<'_> {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A source of named weights (a safetensors folder, a converted Megatron checkpoint, an in-memory map).
pub trait Weights {
    /// The tensor called `name`, or [`TensorError::MissingWeight`].
    fn get(&self, name: &str) -> Result<TensorView<'_>>;
    /// All names, sorted.
    fn names(&self) -> Vec<String>;
    /// True when `name` exists.
    fn contains(&self, name: &str) -> bool {
        self.get(name).is_ok()
    }
}

/// Weights held in memory: for tests, tiny models, and tensors produced at run time.
#[derive(Debug, Default, Clone)]
pub struct MemoryWeights {
    tensors: BTreeMap<String, (DType, Vec<usize>, Vec<u8>)>,
}

impl MemoryWeights {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) `name` from typed values; fails when `values` does not fill `shape`.
    pub fn insert<T: Element>(&mut self, name: &str, shape: &[usize], values: &[T]) -> Result<()> {
        let numel: usize = shape.iter().product();
        if numel != values.len() {
            return Err(TensorError::shape(
                "MemoryWeights::insert",
                format!(
                    "`{name}`: shape {shape:?} needs {numel} values, got {}",
                    values.len()
                ),
            ));
        }
        let bytes = bytemuck::cast_slice(values).to_vec();
        self.tensors
            .insert(name.to_string(), (T::DTYPE, shape.to_vec(), bytes));
        Ok(())
    }

    /// Adds a host tensor under `name`.
    pub fn insert_tensor(&mut self, name: &str, tensor: &Tensor) -> Result<()> {
        let bytes = tensor.cpu_bytes()?.to_vec();
        self.tensors
            .insert(name.to_string(), (tensor.dtype(), tensor.shape().to_vec(), bytes));
        Ok(())
    }
}

impl Weights for MemoryWeights {
    fn get(&self, name: &str) -> Result<TensorView<'_>> {
        let (dtype, shape, data) = self
            .tensors
            .get(name)
            .ok_or_else(|| TensorError::MissingWeight(name.to_string()))?;
        Ok(TensorView {
            dtype: *dtype,
            shape: shape.clone(),
            data,
        })
    }

    fn names(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }
}

/// Loads `name` from `weights` onto `device` in the dtype that device computes with ([`Tensor::weight_on`]: as
/// stored on the CPU, float weights as bf16 on a GPU), checking its shape: the error names the tensor, the expected
/// and the stored shape (a checkpoint that does not match the config).
pub fn load_weight(
    weights: &dyn Weights,
    name: &str,
    shape: &[usize],
    device: crate::Device,
) -> Result<Tensor> {
    let view = checked_view(weights, name, shape)?;
    place(view.data, view.dtype, &view.shape, device)
}

/// Stored bytes as a weight on `device` ([`Tensor::weight_on`]).
fn place(bytes: &[u8], dtype: crate::DType, shape: &[usize], device: crate::Device) -> Result<Tensor> {
    Tensor::from_bytes(bytes, dtype, shape, crate::Device::Cpu)?.weight_on(device)
}

fn checked_view<'a>(weights: &'a dyn Weights, name: &str, shape: &[usize]) -> Result<TensorView<'a>> {
    let view = weights.get(name)?;
    if view.shape != shape {
        return Err(TensorError::shape(
            "load_weight",
            format!(
                "`{name}` has shape {:?} in the checkpoint, the config implies {shape:?}",
                view.shape
            ),
        ));
    }
    Ok(view)
}

/// Rows `start..start + len` (along the leading dimension) of `name`, checking its whole shape; only the slice is
/// copied, placed like [`load_weight`]. A tensor-parallel rank's share of a column-parallel weight or a sharded
/// vector.
pub fn load_weight_rows(
    weights: &dyn Weights,
    name: &str,
    shape: &[usize],
    start: usize,
    len: usize,
    device: crate::Device,
) -> Result<Tensor> {
    let view = checked_view(weights, name, shape)?;
    if start + len > shape[0] {
        return Err(TensorError::shape(
            "load_weight_rows",
            format!("rows {start}..{} of `{name}` with {} rows", start + len, shape[0]),
        ));
    }
    let row_bytes = view.data.len() / shape[0].max(1);
    let mut sliced = shape.to_vec();
    sliced[0] = len;
    place(
        &view.data[start * row_bytes..(start + len) * row_bytes],
        view.dtype,
        &sliced,
        device,
    )
}

/// Columns `start..start + len` of the matrix `name` (`[rows, cols]`), checking its shape, placed like
/// [`load_weight`]: a tensor-parallel rank's share of a row-parallel weight.
pub fn load_weight_columns(
    weights: &dyn Weights,
    name: &str,
    shape: &[usize],
    start: usize,
    len: usize,
    device: crate::Device,
) -> Result<Tensor> {
    let view = checked_view(weights, name, shape)?;
    let (rows, cols) = (shape[0], shape[1]);
    if shape.len() != 2 || start + len > cols {
        return Err(TensorError::shape(
            "load_weight_columns",
            format!(
                "columns {start}..{} of `{name}` with shape {shape:?}",
                start + len
            ),
        ));
    }
    let elem = view.dtype.size_in_bytes();
    let mut bytes = Vec::with_capacity(rows * len * elem);
    for r in 0..rows {
        let at = (r * cols + start) * elem;
        bytes.extend_from_slice(&view.data[at..at + len * elem]);
    }
    place(&bytes, view.dtype, &[rows, len], device)
}
