//! Decode steps replayed from CUDA graphs. A decode step of `B` sequences is some ten launches per layer, each a few
//! microseconds of host work; at tensor parallelism 8 a step's GPU time is a few milliseconds, so launching it op by
//! op would leave the GPU waiting on the host. Per (batch size, context bucket) the step is captured once and then
//! launched whole:
//! - its inputs live in buffers at fixed addresses (the embedding rows' sources, the paged rows), rewritten before
//!   each launch (one small upload each, queued without waiting for the device);
//! - attention is planned for the bucket's context bound (a power of two) instead of the rows' longest context, so
//!   the split-K launch shapes stay fixed while the context grows inside the bucket;
//! - the graph writes the final-normed hidden states into an output buffer, which each step copies out.
//!
//! The first step of a shape runs op by op (it loads every kernel it needs), the second is captured. Graphs belong to
//! one KV cache (they hold its buffers' addresses): a step on another cache drops them. `NVLM_CUDA_GRAPHS=0` turns
//! them off.

use std::collections::HashMap;

use nvlm_tensor::{DType, DeviceGraph, Tensor};

/// Environment variable that turns decode graphs off (`NVLM_CUDA_GRAPHS=0`).
pub const CUDA_GRAPHS_ENV: &str = "NVLM_CUDA_GRAPHS";

/// Context bounds are powers of two from this many keys.
const MIN_KEY_BOUND: usize = 256;
/// Shapes kept per cache: each graph holds its own device memory for the step's temporaries, so a server whose batch
/// size wanders keeps the most recently used ones.
const MAX_SHAPES: usize = 24;

/// Whether decode steps on a GPU use graphs (read once).
pub(crate) fn graphs_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var(CUDA_GRAPHS_ENV).as_deref() != Ok("0"))
}

/// The context bucket of a step whose longest row is at position `max_position`: keys its attention plans for.
pub(crate) fn key_bound(max_position: usize) -> usize {
    (max_position + 1).next_power_of_two().max(MIN_KEY_BOUND)
}

/// One captured (or about to be captured) decode shape: its fixed-address inputs and output, and its graph.
pub(crate) struct DecodeShape {
    /// When it was last used (the [`DecodeGraphs`] step counter).
    last_used: u64,
    /// i32 `[B]`: each row's embedding source (`RowSource::code`).
    pub codes: Tensor,
    /// i32: the packed paged rows (`PagedRows::new_in`).
    pub rows: Tensor,
    /// `[B, H]`: the final-normed hidden states the step writes.
    pub hidden: Tensor,
    /// Set once captured.
    pub graph: Option<DeviceGraph>,
}

/// Every decode shape of one KV cache.
#[derive(Default)]
pub(crate) struct DecodeGraphs {
    cache: Option<u64>,
    shapes: HashMap<(usize, usize), DecodeShape>,
    steps: u64,
}

impl DecodeGraphs {
    /// The shape for `batch` rows in context bucket `key_bound` of cache `cache`, made with `make` when new (which
    /// runs the step op by op this time). Graphs of another cache are dropped first.
    pub(crate) fn shape(
        &mut self,
        cache: u64,
        batch: usize,
        key_bound: usize,
        make: impl FnOnce() -> crate::Result<DecodeShape>,
    ) -> crate::Result<(&mut DecodeShape, bool)> {
        if self.cache != Some(cache) {
            self.shapes.clear();
            self.cache = Some(cache);
        }
        let key = (batch, key_bound);
        let new = !self.shapes.contains_key(&key);
        if new {
            if self.shapes.len() >= MAX_SHAPES {
                let oldest = self
                    .shapes
                    .iter()
                    .min_by_key(|(_, s)| s.last_used)
                    .map(|(k, _)| *k);
                oldest.map(|k| self.shapes.remove(&k));
            }
            self.shapes.insert(key, make()?);
        }
        self.steps += 1;
        let shape = self.shapes.get_mut(&key).expect("inserted above");
        shape.last_used = self.steps;
        Ok((shape, new))
    }

    /// Shapes captured so far.
    pub(crate) fn captured(&self) -> usize {
        self.shapes.values().filter(|s| s.graph.is_some()).count()
    }
}

/// Fixed-address buffers for `batch` rows, with room for a packed table of `blocks` block ids and hidden states of
/// `hidden` channels in `dtype`, on `device`.
pub(crate) fn new_shape(
    device: nvlm_tensor::Device,
    batch: usize,
    blocks: usize,
    hidden: usize,
    dtype: DType,
) -> crate::Result<DecodeShape> {
    let rows_len = nvlm_kernels::PagedRows::packed_len(batch, blocks);
    Ok(DecodeShape {
        last_used: 0,
        codes: Tensor::zeros(&[batch], DType::I32, device)?,
        rows: Tensor::zeros(&[rows_len], DType::I32, device)?,
        hidden: Tensor::zeros(&[batch, hidden], dtype, device)?,
        graph: None,
    })
}

#[cfg(test)]
mod tests {
    use super::{key_bound, new_shape, DecodeGraphs, MAX_SHAPES};
    use nvlm_tensor::{DType, Device};

    #[test]
    fn the_least_recently_used_shape_goes_first_and_another_cache_drops_all() {
        let mut graphs = DecodeGraphs::default();
        let make = || new_shape(Device::Cpu, 1, 4, 8, DType::F32);
        for batch in 1..=MAX_SHAPES {
            assert!(
                graphs.shape(7, batch, 256, make).unwrap().1,
                "batch {batch} is new"
            );
        }
        assert!(!graphs.shape(7, 1, 256, make).unwrap().1, "batch 1 kept");
        // Full: batch 2 is now the least recently used.
        assert!(graphs.shape(7, MAX_SHAPES + 1, 256, make).unwrap().1);
        assert!(
            !graphs.shape(7, 1, 256, make).unwrap().1,
            "batch 1 evicted though used last"
        );
        assert!(
            graphs.shape(7, 2, 256, make).unwrap().1,
            "batch 2 was not evicted"
        );
        assert_eq!(graphs.shapes.len(), MAX_SHAPES);
        assert!(
            graphs.shape(8, 1, 256, make).unwrap().1,
            "a shape of another cache reused"
        );
        assert_eq!(graphs.shapes.len(), 1);
    }

    #[test]
    fn key_bounds_are_powers_of_two_above_every_position() {
        assert_eq!(key_bound(0), 256);
        assert_eq!(key_bound(255), 256);
        assert_eq!(key_bound(256), 512);
        assert_eq!(key_bound(1851), 2048);
        for p in [0, 1, 300, 4095, 4096, 100_000] {
            let b = key_bound(p);
            assert!(b > p && b.is_power_of_two(), "{p} -> {b}");
        }
    }
}
