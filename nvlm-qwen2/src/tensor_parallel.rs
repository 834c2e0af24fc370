//! How a Qwen2 model splits across tensor-parallel ranks, and reading only one rank's slices of the weights.

use nvlm_tensor::{load_weight_columns, load_weight_rows, Device, Tensor, Weights};

use crate::{Qwen2Config, Qwen2Error, Result};

/// One rank's share: query heads, key/value heads, FFN rows and vocabulary rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sharding {
    /// First query head of this rank.
    pub heads_start: usize,
    /// Query heads on this rank.
    pub heads: usize,
    /// First KV head of this rank.
    pub kv_start: usize,
    /// KV heads on this rank (one, replicated, when there are fewer KV heads than ranks).
    pub kv_heads: usize,
    /// First FFN row (gate/up) / column (down).
    pub ffn_start: usize,
    /// FFN rows on this rank.
    pub ffn: usize,
    /// First vocabulary row.
    pub vocab_start: usize,
    /// Vocabulary rows on this rank.
    pub vocab: usize,
}

impl Sharding {
    /// Everything (no tensor parallelism).
    pub fn whole(c: &Qwen2Config) -> Sharding {
        Sharding {
            heads_start: 0,
            heads: c.num_heads,
            kv_start: 0,
            kv_heads: c.num_kv_heads,
            ffn_start: 0,
            ffn: c.intermediate_size,
            vocab_start: 0,
            vocab: c.vocab_size,
        }
    }

    /// Rank `rank` of `size`; an error when the heads, KV heads, FFN or vocabulary do not divide.
    pub fn new(c: &Qwen2Config, rank: usize, size: usize) -> Result<Sharding> {
        let fits = |what: &str, n: usize| -> Result<usize> {
            if size == 0 || !n.is_multiple_of(size) {
                return Err(Qwen2Error::Config(format!(
                    "tensor parallelism {size} does not divide the {n} {what}"
                )));
            }
            Ok(n / size)
        };
        let heads = fits("attention heads", c.num_heads)?;
        let ffn = fits("FFN rows", c.intermediate_size)?;
        let vocab = fits("vocabulary rows", c.vocab_size)?;
        let (kv_start, kv_heads) = if c.num_kv_heads >= size {
            let per = fits("key/value heads", c.num_kv_heads)?;
            (rank * per, per)
        } else if size.is_multiple_of(c.num_kv_heads) {
            // Fewer KV heads than ranks: each rank keeps the one KV head its query heads use.
            (rank * c.num_kv_heads / size, 1)
        } else {
            return Err(Qwen2Error::Config(format!(
                "tensor parallelism {size} and {} key/value heads: one must divide the other",
                c.num_kv_heads
            )));
        };
        Ok(Sharding {
            heads_start: rank * heads,
            heads,
            kv_start,
            kv_heads,
            ffn_start: rank * ffn,
            ffn,
            vocab_start: rank * vocab,
            vocab,
        })
    }
}

/// Reads slices of named weights, copying only the slice.
pub(crate) struct ShardedLoader<'a> {
    pub weights: &'a dyn Weights,
    pub prefix: &'a str,
    pub device: Device,
}

impl ShardedLoader<'_> {
    /// Rows `start..start + len` of `name` (all of a vector when `len` is its length).
    pub fn rows(&self, name: &str, shape: &[usize], start: usize, len: usize) -> Result<Tensor> {
        let name = format!("{}{name}", self.prefix);
        Ok(load_weight_rows(
            self.weights,
            &name,
            shape,
            start,
            len,
            self.device,
        )?)
    }

    /// Columns `start..start + len` of the matrix `name`.
    pub fn columns(&self, name: &str, shape: &[usize], start: usize, len: usize) -> Result<Tensor> {
        let name = format!("{}{name}", self.prefix);
        Ok(load_weight_columns(
            self.weights,
            &name,
            shape,
            start,
            len,
            self.device,
        )?)
    }
}
