//! Embedding gather and row scatter (image rows overwriting text embeddings at `<|vision_pad|>` positions), and the
//! two in one pass ([`gather_rows`]), which is what the LLM's input uses.

use nvlm_tensor::{DType, Device, Tensor};

use crate::check::{float_dtype, index_dtype, rank, same_device, same_dtype};
use crate::cpu::{f32_values, from_f32, index_values};
use crate::{KernelError, Result};

/// Rows of `table[vocab, d]` at `ids[n]` → `[n, d]` in the table's dtype; an id outside the vocabulary is an error.
pub fn embedding(ids: &Tensor, table: &Tensor) -> Result<Tensor> {
    const OP: &str = "embedding";
    index_dtype(OP, ids)?;
    rank(OP, "ids", ids, 1)?;
    rank(OP, "table", table, 2)?;
    let dtype = float_dtype(OP, table)?;
    let (vocab, d) = (table.shape()[0], table.shape()[1]);
    match same_device(OP, &[ids, table])? {
        Device::Cpu => {
            let ids = index_values(ids)?;
            let tv = f32_values(table)?;
            let mut out = Vec::with_capacity(ids.len() * d);
            for &id in &ids {
                if id < 0 || id as usize >= vocab {
                    return Err(KernelError::invalid(
                        OP,
                        format!("token id {id} outside a vocabulary of {vocab}"),
                    ));
                }
                out.extend_from_slice(&tv[id as usize * d..(id as usize + 1) * d]);
            }
            from_f32(out, dtype, &[ids.len(), d])
        }
        Device::Cuda(_) => {
            let host = index_values(&ids.to_device(Device::Cpu)?)?;
            if let Some(&bad) = host.iter().find(|&&id| id < 0 || id as usize >= vocab) {
                return Err(KernelError::invalid(
                    OP,
                    format!("token id {bad} outside a vocabulary of {vocab}"),
                ));
            }
            let ids32 = Tensor::from_vec(host.iter().map(|&v| v as i32).collect::<Vec<_>>(), &[host.len()])?
                .to_device(ids.device())?;
            crate::cuda::elementwise::embedding(&ids32, table)
        }
    }
}

/// A copy of `x[n, d]` whose rows at `positions[m]` are replaced, in order, by `rows[m, d]`.
pub fn scatter_rows(x: &Tensor, positions: &Tensor, rows: &Tensor) -> Result<Tensor> {
    const OP: &str = "scatter_rows";
    let dtype = float_dtype(OP, x)?;
    same_dtype(OP, rows, x)?;
    index_dtype(OP, positions)?;
    rank(OP, "x", x, 2)?;
    rank(OP, "positions", positions, 1)?;
    let (n, d) = (x.shape()[0], x.shape()[1]);
    rows.expect_shape(OP, "rows", &[positions.numel(), d])?;
    match same_device(OP, &[x, positions, rows])? {
        Device::Cpu => {
            let mut out = f32_values(x)?.into_owned();
            let rv = f32_values(rows)?;
            for (i, &p) in index_values(positions)?.iter().enumerate() {
                if p < 0 || p as usize >= n {
                    return Err(KernelError::invalid(
                        OP,
                        format!("row {p} outside a tensor of {n} rows"),
                    ));
                }
                out[p as usize * d..(p as usize + 1) * d].copy_from_slice(&rv[i * d..(i + 1) * d]);
            }
            from_f32(out, dtype, x.shape())
        }
        Device::Cuda(_) => {
            let host = index_values(&positions.to_device(Device::Cpu)?)?;
            if let Some(&bad) = host.iter().find(|&&p| p < 0 || p as usize >= n) {
                return Err(KernelError::invalid(
                    OP,
                    format!("row {bad} outside a tensor of {n} rows"),
                ));
            }
            let pos32 = Tensor::from_vec(host.iter().map(|&v| v as i32).collect::<Vec<_>>(), &[host.len()])?
                .to_device(x.device())?;
            crate::cuda::elementwise::scatter_rows(x, &pos32, rows)
        }
    }
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
            let code = match s {
                RowSource::Extra(j) => -2 - j as i64,
                _ => index as i64,
            };
            i32::try_from(code).map_err(|_| KernelError::invalid(OP, format!("row {index} exceeds i32")))
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
