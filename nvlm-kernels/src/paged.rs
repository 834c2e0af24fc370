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
        slot_of(&self.blocks, self.block_size, p)
    }
}

/// The cache slot of position `p` of a sequence whose blocks are `blocks`.
fn slot_of(blocks: &[usize], block_size: usize, p: usize) -> usize {
    blocks[p / block_size] * block_size + p % block_size
}

/// The cache rows `[slots, kv_heads, head_dim]` at `slots`, in order, as `[1, n, kv_heads, head_dim]` in `dtype`
/// (the CPU references of the paged attention ops run plain attention over them).
fn gather_cache_rows(
    cache: &[f32],
    shape: [usize; 2],
    slots: impl ExactSizeIterator<Item = usize>,
    dtype: nvlm_tensor::DType,
) -> Result<Tensor> {
    let (n, width) = (slots.len(), shape[0] * shape[1]);
    let mut out = Vec::with_capacity(n * width);
    for slot in slots {
        out.extend_from_slice(&cache[slot * width..(slot + 1) * width]);
    }
    from_f32(out, dtype, &[1, n, shape[0], shape[1]])
}

/// Where one step's token rows live in the paged cache, for rows of several sequences (each through its own block
/// table): each row's slot (for the cache write), position and table (for attention). On the host for checks, and
/// on the cache's device packed in one i32 buffer `[slots | positions | table starts | block ids]`, uploaded once per
/// step and shared by every layer.
#[derive(Debug, Clone)]
pub struct PagedRows {
    slots: Vec<usize>,
    positions: Vec<usize>,
    /// Per row: its sequence's table, as (first index into `blocks`, number of blocks).
    tables: Vec<(usize, usize)>,
    blocks: Vec<usize>,
    block_size: usize,
    packed: Tensor,
    /// Attention is planned (split-K ranges) for contexts of up to this many keys, not for these rows' longest.
    key_bound: Option<usize>,
}

/// The host side of [`PagedRows`].
struct RowsLayout {
    slots: Vec<usize>,
    positions: Vec<usize>,
    tables: Vec<(usize, usize)>,
    blocks: Vec<usize>,
    block_size: usize,
}

impl RowsLayout {
    /// The rows, with their packed form on the device in `packed`.
    fn with(self, packed: Tensor, key_bound: Option<usize>) -> PagedRows {
        PagedRows {
            slots: self.slots,
            positions: self.positions,
            tables: self.tables,
            blocks: self.blocks,
            block_size: self.block_size,
            packed,
            key_bound,
        }
    }
}

impl PagedRows {
    /// The rows at positions `start..start + rows` of each `(table, start, rows)`, in order; an error when a
    /// position has no block or the tables' block sizes differ.
    pub fn new(segments: &[(&BlockTable, usize, usize)], device: Device) -> Result<PagedRows> {
        let (layout, packed) = Self::layout(segments)?;
        // An empty step still needs a device buffer: one unused entry.
        let packed = if packed.is_empty() { vec![0] } else { packed };
        let len = packed.len();
        Ok(layout.with(Tensor::from_vec(packed, &[len])?.to_device(device)?, None))
    }

    /// Entries of the packed buffer for `rows` rows whose sequences' tables hold `blocks` block ids in all.
    pub fn packed_len(rows: usize, blocks: usize) -> usize {
        3 * rows + blocks
    }

    /// The same rows as [`PagedRows::new`], written into `buffer` (an i32 device tensor of at least
    /// [`PagedRows::packed_len`] entries, which the caller keeps at one address) instead of a fresh upload, with
    /// attention planned for contexts of up to `key_bound` keys: the fixed addresses and launch shapes a CUDA graph
    /// replays. The next rows written into `buffer` replace these.
    pub fn new_in(
        segments: &[(&BlockTable, usize, usize)],
        buffer: &mut Tensor,
        key_bound: usize,
    ) -> Result<PagedRows> {
        const OP: &str = "PagedRows::new_in";
        let (layout, mut packed) = Self::layout(segments)?;
        buffer.expect_dtype(OP, nvlm_tensor::DType::I32)?;
        if packed.len() > buffer.numel() {
            return Err(KernelError::invalid(
                OP,
                format!("{} entries for a buffer of {}", packed.len(), buffer.numel()),
            ));
        }
        if let Some(p) = layout.positions.iter().find(|&&p| p >= key_bound) {
            return Err(KernelError::invalid(
                OP,
                format!("position {p} is past the key bound {key_bound}"),
            ));
        }
        packed.resize(buffer.numel(), 0);
        buffer.write_from_host(&packed)?;
        Ok(layout.with(buffer.clone(), Some(key_bound)))
    }

    /// The rows' host layout and packed form `[slots | positions | table starts | block ids]`.
    fn layout(segments: &[(&BlockTable, usize, usize)]) -> Result<(RowsLayout, Vec<i32>)> {
        const OP: &str = "PagedRows";
        let block_size = segments.first().map_or(1, |s| s.0.block_size);
        let (mut slots, mut positions, mut tables, mut blocks) = (vec![], vec![], vec![], vec![]);
        for &(table, start, rows) in segments {
            if table.block_size != block_size {
                return Err(KernelError::invalid(
                    OP,
                    format!("block sizes {} and {block_size} in one step", table.block_size),
                ));
            }
            table.check(OP, usize::MAX, start + rows)?;
            let first = blocks.len();
            blocks.extend_from_slice(&table.blocks);
            for p in start..start + rows {
                slots.push(table.slot(p));
                positions.push(p);
                tables.push((first, table.blocks.len()));
            }
        }
        let starts = tables.iter().map(|t| t.0);
        let packed = slots
            .iter()
            .chain(&positions)
            .copied()
            .chain(starts)
            .chain(blocks.iter().copied())
            .map(|v| i32::try_from(v).map_err(|_| KernelError::invalid(OP, format!("{v} exceeds i32"))))
            .collect::<Result<Vec<_>>>()?;
        let layout = RowsLayout {
            slots,
            positions,
            tables,
            blocks,
            block_size,
        };
        Ok((layout, packed))
    }

    /// Each row's cache slot.
    pub fn slots(&self) -> &[usize] {
        &self.slots
    }

    /// Each row's position in its sequence.
    pub fn positions(&self) -> &[usize] {
        &self.positions
    }

    /// The rows' positions as an i32 tensor on the device (a view of the packed buffer: no upload).
    pub fn device_positions(&self) -> Result<Tensor> {
        let t = self.slots.len();
        Ok(self.packed.narrow0(t, t)?)
    }

    fn device_slots(&self) -> Result<Tensor> {
        Ok(self.packed.narrow0(0, self.slots.len())?)
    }

    /// The largest slot any row's attention reads or its write touches, for the bounds check against a cache.
    fn max_slot(&self) -> Option<usize> {
        let reads = self.blocks.iter().map(|&b| (b + 1) * self.block_size - 1);
        self.slots.iter().copied().chain(reads).max()
    }
}

/// Qwen2's attention input written straight into the paged caches: [`rope_qkv`]'s q, rotated at the positions of
/// `rows`, is returned (`[tokens, heads, head_dim]`); its rotated k and its v are stored in `k_cache` / `v_cache`
/// (`[slots, kv_heads, head_dim]`, `qkv`'s dtype) at the slots of `rows` (one per token row). One pass instead of a
/// split, two cache writes and their temporaries. An error, with nothing written, when a slot is outside the cache.
pub fn rope_qkv_paged(
    qkv: &Tensor,
    inv_freq: &Tensor,
    heads: usize,
    kv_heads: usize,
    k_cache: &mut Tensor,
    v_cache: &mut Tensor,
    rows: &PagedRows,
) -> Result<Tensor> {
    const OP: &str = "rope_qkv_paged";
    let positions = rows.device_positions()?;
    check_qkv(OP, qkv, &positions, inv_freq, heads, kv_heads)?;
    same_dtype(OP, k_cache, qkv)?;
    same_dtype(OP, v_cache, qkv)?;
    rank(OP, "k_cache", k_cache, 3)?;
    v_cache.expect_shape(OP, "v_cache", k_cache.shape())?;
    let [cache_slots, hkv, d] = [k_cache.shape()[0], k_cache.shape()[1], k_cache.shape()[2]];
    if hkv != kv_heads || d != 2 * inv_freq.numel() {
        return Err(KernelError::shape(
            OP,
            format!(
                "caches {:?} for {kv_heads} kv heads of {}",
                k_cache.shape(),
                2 * inv_freq.numel(),
            ),
        ));
    }
    if let Some(&bad) = rows.slots.iter().find(|&&s| s >= cache_slots) {
        return Err(KernelError::invalid(
            OP,
            format!("slot {bad} is outside a cache of {cache_slots} slots"),
        ));
    }
    match same_device(OP, &[qkv, inv_freq, &rows.packed, k_cache, v_cache])? {
        Device::Cpu => {
            let [q, k, v] = rope_qkv(qkv, &positions, inv_freq, heads, kv_heads)?;
            write_rows(k_cache, &k, rows.slots.iter().copied())?;
            write_rows(v_cache, &v, rows.slots.iter().copied())?;
            Ok(q)
        }
        Device::Cuda(_) => crate::cuda::elementwise::rope_qkv_paged(
            qkv,
            &positions,
            inv_freq,
            &rows.device_slots()?,
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
/// The slots of the sequence's last block past its length must hold finite values (a zeroed pool, or keys and
/// values written earlier): Hopper's TMA kernel (`NVLM_FLASH=tma`) reads whole blocks and masks those keys, and a
/// masked NaN would still poison the output.
pub fn paged_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    table: &BlockTable,
    query_offset: usize,
    scale: f32,
) -> Result<Tensor> {
    const OP: &str = "paged_attention";
    let [t, hq, d, slots, hkv] = check_attention_inputs(OP, q, k, v)?;
    let keys = query_offset + t;
    table.check(OP, slots, keys)?;
    match same_device(OP, &[q, k, v, &table.on_device])? {
        Device::Cpu => {
            let gather = |cache: &Tensor| {
                gather_cache_rows(
                    &f32_values(cache)?,
                    [hkv, d],
                    (0..keys).map(|p| table.slot(p)),
                    q.dtype(),
                )
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
        Device::Cuda(_) => crate::cuda::attention::paged_attention(
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

/// Causal attention of a step's query rows `q[t, hq, head_dim]`, each of its own sequence (`rows`): row `i` attends
/// positions `0..=positions[i]` of its sequence in the paged caches `k`/`v` `[slots, kv_heads, head_dim]` (query head
/// `h` reads KV head `h / (hq / kv_heads)`). A decode step of many sequences in one launch; output like `q`.
pub fn paged_attention_rows(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    rows: &PagedRows,
    scale: f32,
) -> Result<Tensor> {
    const OP: &str = "paged_attention_rows";
    let [t, hq, d, slots, hkv] = check_attention_inputs(OP, q, k, v)?;
    if t != rows.slots.len() {
        return Err(KernelError::shape(
            OP,
            format!("q {:?} for {} rows", q.shape(), rows.slots.len()),
        ));
    }
    if let Some(bad) = rows.max_slot().filter(|&s| s >= slots) {
        return Err(KernelError::invalid(
            OP,
            format!("slot {bad} is outside a cache of {slots} slots"),
        ));
    }
    match same_device(OP, &[q, k, v, &rows.packed])? {
        Device::Cpu => {
            let (kv, vv) = (f32_values(k)?, f32_values(v)?);
            let mut out = Vec::with_capacity(t * hq * d);
            for (i, (&position, &(first, count))) in rows.positions.iter().zip(&rows.tables).enumerate() {
                let table = &rows.blocks[first..first + count];
                let gather = |cache: &[f32]| {
                    let slots = (0..position + 1).map(|p| slot_of(table, rows.block_size, p));
                    gather_cache_rows(cache, [hkv, d], slots, q.dtype())
                };
                let row = attention(
                    &q.narrow0(i, 1)?.reshape(&[1, 1, hq, d])?,
                    &gather(&kv)?,
                    &gather(&vv)?,
                    AttentionMask::Bidirectional,
                    scale,
                )?;
                out.extend_from_slice(&f32_values(&row)?);
            }
            from_f32(out, q.dtype(), q.shape())
        }
        Device::Cuda(_) => crate::cuda::attention::paged_attention_rows(
            q,
            k,
            v,
            &rows.packed,
            rows.slots.len(),
            rows.key_bound
                .unwrap_or_else(|| rows.positions.iter().max().map_or(0, |p| p + 1)),
            rows.block_size,
            scale,
        ),
    }
}

/// The checks shared by the paged attention ops: `q[t, hq, d]` and caches `k`, `v` `[slots, hkv, d]` of one float
/// dtype, `hkv` dividing `hq`. Returns `[t, hq, d, slots, hkv]`.
fn check_attention_inputs(op: &'static str, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<[usize; 5]> {
    float_dtype(op, q)?;
    same_dtype(op, k, q)?;
    same_dtype(op, v, q)?;
    for (what, x) in [("q", q), ("k", k), ("v", v)] {
        rank(op, what, x, 3)?;
    }
    v.expect_shape(op, "v", k.shape())?;
    let [t, hq, d] = [q.shape()[0], q.shape()[1], q.shape()[2]];
    let [slots, hkv, dk] = [k.shape()[0], k.shape()[1], k.shape()[2]];
    if dk != d || hkv == 0 || hq % hkv != 0 {
        return Err(KernelError::shape(
            op,
            format!(
                "q {:?} and caches {:?}: head_dim must match, kv heads divide q heads",
                q.shape(),
                k.shape()
            ),
        ));
    }
    Ok([t, hq, d, slots, hkv])
}
