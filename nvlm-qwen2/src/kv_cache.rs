//! A paged KV cache: fixed-size blocks from one pool, a block table per sequence. Prefill and decode append to it;
//! attention reads a sequence's keys and values back in order.

use nvlm_tensor::Tensor;

use crate::{Qwen2Error, Result};

/// Keys and values of every layer, in blocks of `block_size` positions.
pub struct PagedKvCache {
    block_size: usize,
    /// `kv_heads * head_dim` floats per position.
    row: usize,
    /// Per layer: keys and values of all blocks, `[blocks, block_size, row]`.
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    free: Vec<usize>,
    sequences: Vec<Option<Sequence>>,
}

struct Sequence {
    blocks: Vec<usize>,
    len: usize,
}

/// A sequence's handle in the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SequenceId(usize);

impl PagedKvCache {
    /// A pool of `num_blocks` blocks of `block_size` positions for `layers` layers of `kv_heads x head_dim`.
    pub fn new(
        layers: usize,
        kv_heads: usize,
        head_dim: usize,
        block_size: usize,
        num_blocks: usize,
    ) -> PagedKvCache {
        let row = kv_heads * head_dim;
        let size = num_blocks * block_size * row;
        PagedKvCache {
            block_size,
            row,
            keys: (0..layers).map(|_| vec![0f32; size]).collect(),
            values: (0..layers).map(|_| vec![0f32; size]).collect(),
            free: (0..num_blocks).rev().collect(),
            sequences: Vec::new(),
        }
    }

    /// Starts an empty sequence.
    pub fn add_sequence(&mut self) -> SequenceId {
        self.sequences.push(Some(Sequence {
            blocks: Vec::new(),
            len: 0,
        }));
        SequenceId(self.sequences.len() - 1)
    }

    /// Releases a sequence's blocks.
    pub fn free_sequence(&mut self, id: SequenceId) {
        if let Some(seq) = self.sequences.get_mut(id.0).and_then(Option::take) {
            self.free.extend(seq.blocks);
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
        Ok(&self.sequence(id)?.blocks)
    }

    /// Makes room for `extra` more positions of `id` (allocating blocks); an error when the pool is exhausted.
    pub fn reserve(&mut self, id: SequenceId, extra: usize) -> Result<()> {
        let block_size = self.block_size;
        let needed = {
            let seq = self.sequence(id)?;
            (seq.len + extra)
                .div_ceil(block_size)
                .saturating_sub(seq.blocks.len())
        };
        if needed > self.free.len() {
            return Err(Qwen2Error::Cache(format!(
                "the KV cache is full: {needed} more blocks of {block_size} positions needed, {} free",
                self.free.len()
            )));
        }
        let blocks: Vec<usize> = (0..needed).map(|_| self.free.pop().expect("checked")).collect();
        self.sequences[id.0]
            .as_mut()
            .expect("checked")
            .blocks
            .extend(blocks);
        Ok(())
    }

    /// Writes `k`, `v` (`[t, kv_heads, head_dim]`, f32) of `layer` at positions `len..len + t` of `id` (reserved
    /// beforehand). The sequence length advances with [`PagedKvCache::advance`] once every layer is written.
    pub fn write(&mut self, layer: usize, id: SequenceId, k: &Tensor, v: &Tensor) -> Result<()> {
        let (kv, vv) = (k.to_f32_vec()?, v.to_f32_vec()?);
        let (row, block_size) = (self.row, self.block_size);
        let seq = self.sequence(id)?;
        let (start, blocks) = (seq.len, seq.blocks.clone());
        for (i, (kr, vr)) in kv.chunks(row).zip(vv.chunks(row)).enumerate() {
            let pos = start + i;
            let block = *blocks
                .get(pos / block_size)
                .ok_or_else(|| Qwen2Error::Cache("position not reserved".into()))?;
            let at = (block * block_size + pos % block_size) * row;
            self.keys[layer][at..at + row].copy_from_slice(kr);
            self.values[layer][at..at + row].copy_from_slice(vr);
        }
        Ok(())
    }

    /// Marks `t` more positions of `id` as stored.
    pub fn advance(&mut self, id: SequenceId, t: usize) -> Result<()> {
        self.sequence(id)?;
        self.sequences[id.0].as_mut().expect("checked").len += t;
        Ok(())
    }

    /// Keys and values of `layer` for the first `len` positions of `id`, as `[1, len, kv_heads, head_dim]`.
    pub fn read(
        &self,
        layer: usize,
        id: SequenceId,
        len: usize,
        kv_heads: usize,
    ) -> Result<(Tensor, Tensor)> {
        let (row, block_size) = (self.row, self.block_size);
        let seq = self.sequence(id)?;
        let mut k = Vec::with_capacity(len * row);
        let mut v = Vec::with_capacity(len * row);
        for pos in 0..len {
            let block = *seq
                .blocks
                .get(pos / block_size)
                .ok_or_else(|| Qwen2Error::Cache("position not stored".into()))?;
            let at = (block * block_size + pos % block_size) * row;
            k.extend_from_slice(&self.keys[layer][at..at + row]);
            v.extend_from_slice(&self.values[layer][at..at + row]);
        }
        let shape = [1, len, kv_heads, row / kv_heads];
        Ok((Tensor::from_vec(k, &shape)?, Tensor::from_vec(v, &shape)?))
    }
}
