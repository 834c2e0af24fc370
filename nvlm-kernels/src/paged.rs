//! The paged KV cache's two ops: writing a sequence's new key/value rows through its block table, and causal
//! attention over the keys and values the table addresses. Position `p` of a sequence lives at slot
//! `table[p / block_size] * block_size + p % block_size` of a cache `[slots, kv_heads, head_dim]`.

use nvlm_tensor::{Device, Tensor};

use crate::attention::{attention, AttentionMask};
use crate::check::{float_dtype, rank, same_device, same_dtype};
use crate::cpu::{f32_values, from_f32};
use crate::rope::{check_qkv, rope_qkv};
use crate::{KernelError, Result};

/// A sequence's block table: block ids in position order, `block_size` positions a block; kept on the host (for
/// checks) and on the cache's device (for the kernels), so no op reads it back from a GPU.
#[derive(Debug, Clone)]
pub struct BlockTable {
    blocks: Vec<usize>,
    block_size: usize,
    max_block: Option<usize>,
    on_device: Tensor,
}

impl BlockTable {
    /// The table of `blocks` (`block_size` positions each), uploaded to `device` as i32.
    pub fn new(blocks: &[usize], block_size: usize, device: Device) -> Result<BlockTable> {
        const OP: &str = "BlockTable";
        if block_size == 0 {
            return Err(KernelError::invalid(OP, "block size 0"));
        }
        let ids = blocks
            .iter()
            .map(|&b| {
                i32::try_from(b).map_err(|_| KernelError::invalid(OP, format!("block id {b} exceeds i32")))
            })
            .collect::<Result<Vec<_>>>()?;
        // An empty table still needs a device buffer: one unused entry.
        let ids = if ids.is_empty() { vec![0] } else { ids };
        let len = ids.len();
        Ok(BlockTable {
            blocks: blocks.to_vec(),
            block_size,
            max_block: blocks.iter().copied().max(),
            on_device: Tensor::from_vec(ids, &[len])?.to_device(device)?,
        })
    }

    /// Positions a block holds.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// The block ids, in position order.
    pub fn blocks(&self) -> &[usize] {
        &self.blocks
    }

    /// Checks, in O(1) (it runs for every layer of every step), that positions `0..end` have blocks and that every
    /// block lies inside a cache of `slots` slots.
    fn check(&self, op: &'static str, slots: usize, end: usize) -> Result<()> {
        let needed = end.div_ceil(self.block_size);
        if needed > self.blocks.len() {
            return Err(KernelError::invalid(
                op,
                format!(
                    "position {} needs block {} but the table holds {}",
                    end - 1,
                    needed - 1,
                    self.blocks.len()
                ),
            ));
        }
        match self.max_block {
            Some(block) if (block + 1) * self.block_size > slots => Err(KernelError::invalid(
                op,
                format!("block {block} is outside a cache of {slots} slots"),
            )),
            _ => Ok(()),
        }
    }

    /// The cache slot of position `p` (checked beforehand).
    fn slot(&self, p: usize) -> usize {
        self.blocks[p / self.block_size] * self.block_size + p % self.block_size
    }
}

/// The cache slots of one step's token rows, in row order, for rows from several sequences (each through its own
/// block table); on the host (for checks) and on the cache's device. Built once per step, shared by every layer.
#[derive(Debug, Clone)]
pub struct SlotMap {
    slots: Vec<usize>,
    on_device: Tensor,
}

impl SlotMap {
    /// The slots of positions `start..start + rows` of each `(table, start, rows)`, in order; an error when a
    /// position has no block.
    pub fn new(segments: &[(&BlockTable, usize, usize)], device: Device) -> Result<SlotMap> {
        const OP: &str = "SlotMap";
        let mut slots = Vec::new();
        for &(table, start, rows) in segments {
            table.check(OP, usize::MAX, start + rows)?;
            slots.extend((start..start + rows).map(|p| table.slot(p)));
        }
        let ids = slots
            .iter()
            .map(|&s| i32::try_from(s).map_err(|_| KernelError::invalid(OP, format!("slot {s} exceeds i32"))))
            .collect::<Result<Vec<_>>>()?;
        // An empty map still needs a device buffer: one unused entry.
        let ids = if ids.is_empty() { vec![0] } else { ids };
        let len = ids.len();
        Ok(SlotMap {
            slots,
            on_device: Tensor::from_vec(ids, &[len])?.to_device(device)?,
        })
    }

    /// The slots, in row order.
    pub fn slots(&self) -> &[usize] {
        &self.slots
    }
}

/// Qwen2's attention input written straight into the paged caches: [`rope_qkv`]'s rotated q is returned
/// (`[tokens, heads, head_dim]`), its rotated k and its v are stored in `k_cache` / `v_cache`
/// (`[slots, kv_heads, head_dim]`, `qkv`'s dtype) at the slots of `slots` (one per token row). One pass instead of a
/// split, two cache writes and their temporaries. An error, with nothing written, when a slot is outside the cache.
#[allow(clippy::too_many_arguments)]
pub fn rope_qkv_paged(
    qkv: &Tensor,
    positions: &Tensor,
    inv_freq: &Tensor,
    heads: usize,
    kv_heads: usize,
    k_cache: &mut Tensor,
    v_cache: &mut Tensor,
    slots: &SlotMap,
) -> Result<Tensor> {
    const OP: &str = "rope_qkv_paged";
    check_qkv(OP, qkv, positions, inv_freq, heads, kv_heads)?;
    same_dtype(OP, k_cache, qkv)?;
    same_dtype(OP, v_cache, qkv)?;
    rank(OP, "k_cache", k_cache, 3)?;
    v_cache.expect_shape(OP, "v_cache", k_cache.shape())?;
    let tokens = qkv.shape()[0];
    let [cache_slots, hkv, d] = [k_cache.shape()[0], k_cache.shape()[1], k_cache.shape()[2]];
    if hkv != kv_heads || d != 2 * inv_freq.numel() || slots.slots.len() != tokens {
        return Err(KernelError::shape(
            OP,
            format!(
                "caches {:?} for {kv_heads} kv heads of {} and {} slots for {tokens} tokens",
                k_cache.shape(),
                2 * inv_freq.numel(),
                slots.slots.len()
            ),
        ));
    }
    if let Some(&bad) = slots.slots.iter().find(|&&s| s >= cache_slots) {
        return Err(KernelError::invalid(
            OP,
            format!("slot {bad} is outside a cache of {cache_slots} slots"),
        ));
    }
    match same_device(
        OP,
        &[qkv, positions, inv_freq, &slots.on_device, k_cache, v_cache],
    )? {
        Device::Cpu => {
            let [q, k, v] = rope_qkv(qkv, positions, inv_freq, heads, kv_heads)?;
            write_rows(k_cache, &k, slots.slots.iter().copied())?;
            write_rows(v_cache, &v, slots.slots.iter().copied())?;
            Ok(q)
        }
        Device::Cuda(_) => crate::cuda::elementwise::rope_qkv_paged(
            qkv,
            positions,
            inv_freq,
            &slots.on_device,
            heads,
            kv_heads,
            k_cache,
            v_cache,
        ),
    }
}

/// Copies row `i` of host `rows[t, ...]` to row `slot_i` of host `cache[slots, ...]` (slots checked by the caller).
fn write_rows(cache: &mut Tensor, rows: &Tensor, slots: impl Iterator<Item = usize>) -> Result<()> {
    let row_bytes = rows.size_in_bytes() / rows.shape()[0].max(1);
    let src = rows.cpu_bytes()?;
    let dst = cache.cpu_bytes_mut()?;
    for (i, slot) in slots.enumerate() {
        dst[slot * row_bytes..(slot + 1) * row_bytes]
            .copy_from_slice(&src[i * row_bytes..(i + 1) * row_bytes]);
    }
    Ok(())
}

/// Writes `rows[t, kv_heads, head_dim]` in place into `cache[slots, kv_heads, head_dim]` at positions
/// `start..start + t` of the sequence whose block table is `table`. An error, with nothing written, when a position
/// has no block or a block is outside the cache.
pub fn paged_write(cache: &mut Tensor, rows: &Tensor, table: &BlockTable, start: usize) -> Result<()> {
    const OP: &str = "paged_write";
    float_dtype(OP, rows)?;
    same_dtype(OP, rows, cache)?;
    rank(OP, "cache", cache, 3)?;
    rank(OP, "rows", rows, 3)?;
    if rows.shape()[1..] != cache.shape()[1..] {
        return Err(KernelError::shape(
            OP,
            format!("rows {:?} do not fit cache {:?}", rows.shape(), cache.shape()),
        ));
    }
    let (t, slots) = (rows.shape()[0], cache.shape()[0]);
    table.check(OP, slots, start + t)?;
    match same_device(OP, &[rows, &table.on_device, cache])? {
        Device::Cpu => write_rows(cache, rows, (start..start + t).map(|p| table.slot(p))),
        Device::Cuda(_) => {
            crate::cuda::layout::paged_write(cache, rows, &table.on_device, table.block_size, start)
        }
    }
}

/// `softmax(q·kᵀ · scale + causal mask) · v` for `q[t, hq, head_dim]` at positions `query_offset..query_offset + t`
/// of one sequence, over its first `query_offset + t` positions in the paged caches `k`/`v`
/// `[slots, kv_heads, head_dim]` (query head `h` reads KV head `h / (hq / kv_heads)`). Output `[t, hq, head_dim]` in
/// `q`'s dtype. The CPU reference gathers the rows and runs [`attention`]; the GPU reads them through the table.
pub fn paged_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    table: &BlockTable,
    query_offset: usize,
    scale: f32,
) -> Result<Tensor> {
    const OP: &str = "paged_attention";
    float_dtype(OP, q)?;
    same_dtype(OP, k, q)?;
    same_dtype(OP, v, q)?;
    for (what, x) in [("q", q), ("k", k), ("v", v)] {
        rank(OP, what, x, 3)?;
    }
    v.expect_shape(OP, "v", k.shape())?;
    let [t, hq, d] = [q.shape()[0], q.shape()[1], q.shape()[2]];
    let [slots, hkv, dk] = [k.shape()[0], k.shape()[1], k.shape()[2]];
    if dk != d || hkv == 0 || hq % hkv != 0 {
        return Err(KernelError::shape(
            OP,
            format!(
                "q {:?} and caches {:?}: head_dim must match, kv heads divide q heads",
                q.shape(),
                k.shape()
            ),
        ));
    }
    let keys = query_offset + t;
    table.check(OP, slots, keys)?;
    match same_device(OP, &[q, k, v, &table.on_device])? {
        Device::Cpu => {
            let row = hkv * d;
            let gather = |cache: &Tensor| -> Result<Tensor> {
                let values = f32_values(cache)?;
                let mut out = Vec::with_capacity(keys * row);
                for slot in (0..keys).map(|p| table.slot(p)) {
                    out.extend_from_slice(&values[slot * row..(slot + 1) * row]);
                }
                from_f32(out, q.dtype(), &[1, keys, hkv, d])
            };
            let out = attention(
                &q.reshape(&[1, t, hq, d])?,
                &gather(k)?,
                &gather(v)?,
                AttentionMask::Causal { query_offset },
                scale,
            )?;
            Ok(out.reshape(&[t, hq, d])?)
        }
        Device::Cuda(_) => crate::cuda::elementwise::paged_attention(
            q,
            k,
            v,
            &table.on_device,
            table.block_size,
            query_offset,
            scale,
        ),
    }
}
