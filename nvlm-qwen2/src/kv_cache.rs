//! A paged KV cache: fixed-size blocks from one pool, a block table per sequence. Prefill and decode append to it;
//! attention reads a sequence's keys and values back in order.

use nvlm_kernels::{self as k, BlockTable, PagedRows};
use nvlm_tensor::{DType, Device, Tensor};

use crate::{Qwen2Error, Result};

/// Keys and values of every layer, in blocks of `block_size` positions, on the model's device in its compute dtype:
/// new rows are written in place and attention reads them through the block table, so nothing crosses to the host.
pub struct PagedKvCache {
    /// Unique in the process: what a CUDA graph recorded against (its buffers' addresses).
    id: u64,
    block_size: usize,
    device: Device,
    /// Per layer: keys and values of all blocks, `[blocks * block_size, kv_heads, head_dim]`.
    keys: Vec<Tensor>,
    values: Vec<Tensor>,
    free: Vec<usize>,
    sequences: Vec<Option<Sequence>>,
}

struct Sequence {
    /// The block table, on the host and the device (re-uploaded only when a block is added).
    table: BlockTable,
    len: usize,
}

/// A sequence's handle in the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SequenceId(usize);

impl PagedKvCache {
    /// A pool of `num_blocks` blocks of `block_size` positions for `layers` layers of `kv_heads x head_dim`, in
    /// `dtype` on `device` (zeroed).
    pub fn new(
        layers: usize,
        [kv_heads, head_dim]: [usize; 2],
        block_size: usize,
        num_blocks: usize,
        device: Device,
        dtype: DType,
    ) -> Result<PagedKvCache> {
        let shape = [num_blocks * block_size, kv_heads, head_dim];
        let pool = || -> Result<Vec<Tensor>> {
            (0..layers)
                .map(|_| Ok(Tensor::zeros(&shape, dtype, device)?))
                .collect()
        };
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Ok(PagedKvCache {
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            block_size,
            device,
            keys: pool()?,
            values: pool()?,
            free: (0..num_blocks).rev().collect(),
            sequences: Vec::new(),
        })
    }

    /// This cache's identity in the process (caches are never reused under another's id).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Blocks in the pool (free or not).
    pub fn num_blocks(&self) -> usize {
        self.keys.first().map_or(0, |k| k.shape()[0] / self.block_size)
    }

    /// Starts an empty sequence.
    pub fn add_sequence(&mut self) -> Result<SequenceId> {
        self.sequences.push(Some(Sequence {
            table: BlockTable::new(&[], self.block_size, self.device)?,
            len: 0,
        }));
        Ok(SequenceId(self.sequences.len() - 1))
    }

    /// Releases a sequence's blocks.
    pub fn free_sequence(&mut self, id: SequenceId) {
        if let Some(seq) = self.sequences.get_mut(id.0).and_then(Option::take) {
            self.free.extend(seq.table.blocks());
        }
    }

    fn sequence(&self, id: SequenceId) -> Result<&Sequence> {
        self.sequences
            .get(id.0)
            .and_then(Option::as_ref)
            .ok_or_else(|| Qwen2Error::Cache("unknown sequence".into()))
    }

    /// Positions stored for `id`.
    pub fn len(&self, id: SequenceId) -> Result<usize> {
        Ok(self.sequence(id)?.len)
    }

    /// Blocks not in use.
    pub fn free_blocks(&self) -> usize {
        self.free.len()
    }

    /// The block table of `id`.
    pub fn block_table(&self, id: SequenceId) -> Result<&[usize]> {
        Ok(self.sequence(id)?.table.blocks())
    }

    /// Makes room for `extra` more positions of `id` (allocating blocks); an error when the pool is exhausted.
    pub fn reserve(&mut self, id: SequenceId, extra: usize) -> Result<()> {
        let block_size = self.block_size;
        let seq = self.sequence(id)?;
        let needed = (seq.len + extra)
            .div_ceil(block_size)
            .saturating_sub(seq.table.blocks().len());
        if needed == 0 {
            return Ok(());
        }
        if needed > self.free.len() {
            return Err(Qwen2Error::Cache(format!(
                "the KV cache is full: {needed} more blocks of {block_size} positions needed, {} free",
                self.free.len()
            )));
        }
        let mut blocks = seq.table.blocks().to_vec();
        blocks.extend((0..needed).map(|_| self.free.pop().expect("checked")));
        let table = BlockTable::new(&blocks, block_size, self.device)?;
        self.sequences[id.0].as_mut().expect("checked").table = table;
        Ok(())
    }

    /// Where one step's rows live: for each `(sequence, rows)`, in order, positions `len..len + rows` (reserved
    /// beforehand). Built once per step and shared by every layer's [`PagedKvCache::write_rope_qkv`] and
    /// [`PagedKvCache::attention_rows`].
    pub fn paged_rows(&self, parts: &[(SequenceId, usize)]) -> Result<PagedRows> {
        Ok(PagedRows::new(&self.segments(parts)?, self.device)?)
    }

    /// Each part's (table, first new position, rows).
    fn segments(&self, parts: &[(SequenceId, usize)]) -> Result<Vec<(&BlockTable, usize, usize)>> {
        parts
            .iter()
            .map(|&(id, rows)| self.sequence(id).map(|s| (&s.table, s.len, rows)))
            .collect()
    }

    /// [`PagedKvCache::paged_rows`] written into the caller's persistent i32 `buffer`, with attention planned for up
    /// to `key_bound` keys (see [`PagedRows::new_in`]): a step a CUDA graph replays.
    pub fn paged_rows_in(
        &self,
        parts: &[(SequenceId, usize)],
        buffer: &mut Tensor,
        key_bound: usize,
    ) -> Result<PagedRows> {
        Ok(PagedRows::new_in(&self.segments(parts)?, buffer, key_bound)?)
    }

    /// Qwen2's fused projection rows `qkv` of one step (`rows`) rotated and split, with the keys and values written
    /// into `layer`'s cache in the same pass; returns the rotated queries `[t, heads, head_dim]`.
    pub fn write_rope_qkv(
        &mut self,
        layer: usize,
        qkv: &Tensor,
        inv_freq: &Tensor,
        [heads, kv_heads]: [usize; 2],
        rows: &PagedRows,
    ) -> Result<Tensor> {
        let (keys, values) = self
            .keys
            .get_mut(layer)
            .zip(self.values.get_mut(layer))
            .ok_or_else(|| Qwen2Error::Cache(format!("no layer {layer}")))?;
        Ok(k::rope_qkv_paged(
            qkv, inv_freq, heads, kv_heads, keys, values, rows,
        )?)
    }

    /// Causal attention of a step's queries `q[t, heads, head_dim]` (`rows`, written with
    /// [`PagedKvCache::write_rope_qkv`]), each over its own sequence's keys and values of `layer`: one launch for
    /// the rows of many sequences.
    pub fn attention_rows(&self, layer: usize, q: &Tensor, rows: &PagedRows, scale: f32) -> Result<Tensor> {
        let (keys, values) = self
            .keys
            .get(layer)
            .zip(self.values.get(layer))
            .ok_or_else(|| Qwen2Error::Cache(format!("no layer {layer}")))?;
        Ok(k::paged_attention_rows(q, keys, values, rows, scale)?)
    }

    /// Marks `t` more positions of `id` as stored.
    pub fn advance(&mut self, id: SequenceId, t: usize) -> Result<()> {
        self.sequence(id)?;
        self.sequences[id.0].as_mut().expect("checked").len += t;
        Ok(())
    }

    /// Causal attention of `q[t, heads, head_dim]`, the queries of positions `len..len + t` of `id` (written with
    /// [`PagedKvCache::write_rope_qkv`], not yet advanced), over that sequence's keys and values of `layer`.
    pub fn attention(&self, layer: usize, id: SequenceId, q: &Tensor, scale: f32) -> Result<Tensor> {
        let seq = self.sequence(id)?;
        let (keys, values) = self
            .keys
            .get(layer)
            .zip(self.values.get(layer))
            .ok_or_else(|| Qwen2Error::Cache(format!("no layer {layer}")))?;
        Ok(k::paged_attention(q, keys, values, &seq.table, seq.len, scale)?)
    }
}
