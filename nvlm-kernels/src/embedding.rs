//! The embedding gather, and the LLM's input in one pass ([`gather_rows`]: token rows with the image rows spliced in
//! at the `<|vision_pad|>` positions).

use nvlm_tensor::{DType, Device, Tensor};

use crate::check::{float_dtype, index_dtype, rank, same_device};
use crate::cpu::{f32_values, from_f32, index_values};
use crate::{KernelError, Result};

/// Rows of `table[vocab, d]` at `ids[n]` → `[n, d]` in the table's dtype; an id outside the vocabulary is an error.
/// Ids on a GPU are read back to be checked: callers that hold the ids on the host (the model) use [`gather_rows`].
pub fn embedding(ids: &Tensor, table: &Tensor) -> Result<Tensor> {
    const OP: &str = "embedding";
    index_dtype(OP, ids)?;
    rank(OP, "ids", ids, 1)?;
    rank(OP, "table", table, 2)?;
    let dtype = float_dtype(OP, table)?;
    same_device(OP, &[ids, table])?;
    let vocab = table.shape()[0];
    let sources = index_values(&ids.to_device(Device::Cpu)?)?
        .into_iter()
        .map(|id| match usize::try_from(id) {
            Ok(row) if row < vocab => Ok(RowSource::Table(row)),
            _ => Err(KernelError::invalid(
                OP,
                format!("token id {id} outside a vocabulary of {vocab}"),
            )),
        })
        .collect::<Result<Vec<_>>>()?;
    gather_rows(&sources, table, None, dtype)
}

/// Where one row of [`gather_rows`]'s output comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowSource {
    /// Row `i` of the table (a token's embedding).
    Table(usize),
    /// Row `j` of the extra rows (an image embedding row).
    Extra(usize),
    /// Zeros (a token that another vocabulary-parallel rank embeds).
    Zero,
}

impl RowSource {
    /// This source in the gather kernel's i32 encoding: a table row index, -1 for zeros, -2 - j for extra row `j`.
    pub fn code(self) -> i64 {
        match self {
            RowSource::Table(i) => i as i64,
            RowSource::Extra(j) => -2 - j as i64,
            RowSource::Zero => -1,
        }
    }
}

/// [`gather_rows`] from table rows and zero rows whose sources are already on the device, i32 `[n]` in
/// [`RowSource::code`]'s encoding and checked by the caller: for a step that a CUDA graph replays, whose inputs are
/// rewritten in place before each replay. CUDA only.
pub fn gather_table_rows_encoded(codes: &Tensor, table: &Tensor, dtype: DType) -> Result<Tensor> {
    const OP: &str = "gather_table_rows_encoded";
    codes.expect_dtype(OP, DType::I32)?;
    rank(OP, "codes", codes, 1)?;
    rank(OP, "table", table, 2)?;
    float_dtype(OP, table)?;
    match same_device(OP, &[codes, table])? {
        Device::Cuda(_) => crate::cuda::elementwise::gather_rows(codes, table, None, dtype),
        Device::Cpu => Err(KernelError::invalid(
            OP,
            "device sources are a CUDA path; use gather_rows",
        )),
    }
}

/// The embedding gather and the image-row scatter in one pass: output row `i` (`[sources.len(), d]` in `dtype`) is
/// the row `sources[i]` names, of `table[vocab, d]`, of `extra[m, d]` (in `dtype`, on the table's device), or
/// zeros. The sources are checked on the host and uploaded in one copy, so nothing is read back from a GPU.
pub fn gather_rows(
    sources: &[RowSource],
    table: &Tensor,
    extra: Option<&Tensor>,
    dtype: DType,
) -> Result<Tensor> {
    const OP: &str = "gather_rows";
    rank(OP, "table", table, 2)?;
    float_dtype(OP, table)?;
    let (vocab, d) = (table.shape()[0], table.shape()[1]);
    let extra_rows = match extra {
        Some(e) => {
            rank(OP, "extra", e, 2)?;
            if e.dtype() != dtype || e.shape()[1] != d {
                return Err(KernelError::shape(
                    OP,
                    format!(
                        "extra rows {:?} {} do not fit [_, {d}] {dtype}",
                        e.shape(),
                        e.dtype()
                    ),
                ));
            }
            same_device(OP, &[table, e])?;
            e.shape()[0]
        }
        None => 0,
    };
    let encoded = sources
        .iter()
        .map(|&s| {
            let (index, limit, what) = match s {
                RowSource::Table(i) => (i, vocab, "table"),
                RowSource::Extra(j) => (j, extra_rows, "extra"),
                RowSource::Zero => return Ok(-1),
            };
            if index >= limit {
                return Err(KernelError::invalid(
                    OP,
                    format!("{what} row {index} outside {limit} rows"),
                ));
            }
            i32::try_from(s.code()).map_err(|_| KernelError::invalid(OP, format!("row {index} exceeds i32")))
        })
        .collect::<Result<Vec<i32>>>()?;
    match table.device() {
        Device::Cpu => {
            let tv = f32_values(table)?;
            let ev = match extra {
                Some(e) => f32_values(e)?,
                None => Default::default(),
            };
            let mut out = Vec::with_capacity(sources.len() * d);
            for s in sources {
                match *s {
                    RowSource::Table(i) => out.extend_from_slice(&tv[i * d..(i + 1) * d]),
                    RowSource::Extra(j) => out.extend_from_slice(&ev[j * d..(j + 1) * d]),
                    RowSource::Zero => out.resize(out.len() + d, 0.0),
                }
            }
            from_f32(out, dtype, &[sources.len(), d])
        }
        Device::Cuda(_) => {
            let len = encoded.len();
            let on_device = Tensor::from_vec(encoded, &[len])?.to_device(table.device())?;
            crate::cuda::elementwise::gather_rows(&on_device, table, extra, dtype)
        }
    }
}
