//! Launch wrappers for attention: prefill on the tensor cores (`flash_attention.cu`, or on Hopper when chosen
//! `flash_attention_wgmma.cu` / `flash_attention_tma.cu`) where it applies, else on CUDA cores (`attention.cu`);
//! decode over the paged cache, split-K.

use std::sync::atomic::{AtomicU8, Ordering};

use nvlm_tensor::{DType, Tensor};

use super::elementwise::name;
use super::launch::{launch, launch_shaped, LaunchShape, Output, Scalar};
use super::tma::{bf16_map, TensorMap};
use crate::{KernelError, Result};

/// Attention of `q[b, tq, hq, d]` over `k`/`v` `[b, tk, hkv, d]`, bidirectional or causal with the queries at
/// `offset..`; checked by the caller.
pub(crate) fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    causal_offset: Option<usize>,
    scale: f32,
) -> Result<Tensor> {
    const OP: &str = "attention";
    let [b, tq, hq, d] = [q.shape()[0], q.shape()[1], q.shape()[2], q.shape()[3]];
    let [tk, hkv] = [k.shape()[1], k.shape()[2]];
    head_dim_fits(OP, d)?;
    let causal = usize::from(causal_offset.is_some());
    let ints = [b, tq, tk, hq, hkv, d, causal, causal_offset.unwrap_or(0)];
    if tma_takes(&[q, k, v], tq, d) {
        return attention_tma(q, k, v, &ints, scale);
    }
    let plan = attention_kernel(OP, "attention", &[q, k, v], b, tq, hq, d)?;
    attention_launch(OP, &plan, &[q, k, v], &ints, scale)
}

/// Queries a block of the TMA kernel takes (two consumer warpgroups of 64).
const TMA_QUERIES: usize = 128;

/// Keys a tile of the TMA kernel holds.
const TMA_KEYS: usize = 128;

/// Dynamic shared memory of `flash_attention_tma.cu` at head_dim `d`: its `TmaLayout<D>::BYTES` (Q for 128 queries,
/// three ring slots of a 128-key K tile and V tile, ten mbarriers), plus 1024 bytes for aligning the start: 225 KiB
/// at head_dim 128, within Hopper's 227 KiB a block.
fn tma_shared_bytes(d: usize) -> u32 {
    const STAGES: usize = 3;
    const BARRIERS: usize = 8 * (1 + 3 * STAGES);
    let q = TMA_QUERIES * d * 2;
    let tile = TMA_KEYS * d * 2;
    (q + 2 * STAGES * tile + BARRIERS + 1024) as u32
}

/// The warp-specialised TMA kernel (`flash_attention_tma.cu`) on contiguous q, k, v: tensor maps with boxes of
/// 64 channels x 1 head x 128 queries (q) or 128 keys (k, v) x 1 batch entry; three warpgroups a block.
fn attention_tma(q: &Tensor, k: &Tensor, v: &Tensor, ints: &[usize; 8], scale: f32) -> Result<Tensor> {
    const OP: &str = "attention";
    let [b, tq, tk, hq, hkv, d] = [ints[0], ints[1], ints[2], ints[3], ints[4], ints[5]];
    let keys = [64, 1, TMA_KEYS as u32, 1];
    let maps = [
        bf16_map(OP, q, &[d, hq, tq, b], &[64, 1, TMA_QUERIES as u32, 1])?,
        bf16_map(OP, k, &[d, hkv, tk, b], &keys)?,
        bf16_map(OP, v, &[d, hkv, tk, b], &keys)?,
    ];
    tma_launch(
        OP,
        "attention_tma",
        &[q, k, v],
        ints,
        scale,
        maps,
        b * hq * tq.div_ceil(TMA_QUERIES),
    )
}

/// Whether the TMA kernel takes these inputs (q first): chosen ([`FlashKernel::Tma`]), on Hopper, and fitting the
/// tensor-core kernels ([`flash_fits`]).
fn tma_takes(inputs: &[&Tensor], tq: usize, d: usize) -> bool {
    flash_kernel() == FlashKernel::Tma && on_hopper(inputs[0]) && flash_fits(inputs, tq, d)
}

/// Whether the TMA kernel can read a paged cache of `block_size` slots a block: whole blocks make its 128-key tiles,
/// each block at least 8 rows (a TMA box that keeps the 128-byte swizzle's 1024-byte atoms aligned).
fn tma_pages_fit(block_size: usize) -> bool {
    block_size >= 8 && TMA_KEYS.is_multiple_of(block_size)
}

/// The TMA kernel over one sequence's paged cache: q as [1, t, hq, d]; k and v as the pool [slots, hkv, d], one box
/// of `block_size` slots per block of a tile.
fn paged_attention_tma(inputs: &[&Tensor; 4], ints: &[usize; 6], scale: f32) -> Result<Tensor> {
    const OP: &str = "paged_attention";
    let [q, k, v, _] = *inputs;
    let [t, hq, hkv, d, _, block_size] = *ints;
    let slots = k.shape()[0];
    let pages = [64, 1, block_size as u32];
    let maps = [
        bf16_map(OP, q, &[d, hq, t, 1], &[64, 1, TMA_QUERIES as u32, 1])?,
        bf16_map(OP, k, &[d, hkv, slots], &pages)?,
        bf16_map(OP, v, &[d, hkv, slots], &pages)?,
    ];
    tma_launch(
        OP,
        "paged_attention_tma",
        inputs,
        ints,
        scale,
        maps,
        hq * t.div_ceil(TMA_QUERIES),
    )
}

/// Launches `<kernel>_d<head_dim>` of `flash_attention_tma.cu` over `blocks` blocks of three warpgroups: `inputs`
/// (q first), a fresh output shaped like q, the i32 `ints`, `scale`, then the tensor maps.
fn tma_launch(
    op: &'static str,
    kernel: &str,
    inputs: &[&Tensor],
    ints: &[usize],
    scale: f32,
    maps: [TensorMap; 3],
    blocks: usize,
) -> Result<Tensor> {
    let q = inputs[0];
    let d = q.shape()[q.shape().len() - 1];
    let scalars: Vec<Scalar> = ints
        .iter()
        .map(|&v| Scalar::I32(v as i32))
        .chain([Scalar::F32(scale)])
        .chain(maps.map(Scalar::TensorMap))
        .collect();
    let shape = LaunchShape {
        grid: blocks as u32,
        block: 384,
        shared_bytes: tma_shared_bytes(d),
    };
    Ok(launch_shaped(
        op,
        "flash_attention_tma",
        &format!("{kernel}_d{d}"),
        inputs,
        vec![Output::new(q.dtype(), q.shape())],
        &scalars,
        shape,
    )?
    .remove(0))
}

/// Which attention kernel runs, on what grid.
struct Plan {
    /// Kernel source (`attention` or `flash_attention`).
    module: &'static str,
    /// The function's full name.
    function: String,
    grid: u32,
    block: u32,
}

/// Environment variable that chooses the tensor-core prefill kernel: unset, the `mma.sync` one; `wgmma` or `tma`,
/// the Hopper ones (opt-in until an H200 has run them); `0`, none (the CUDA-core kernels), for comparing kernels.
pub const FLASH_ENV: &str = "NVLM_FLASH";

/// The prefill attention kernel on the tensor cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlashKernel {
    /// None: the CUDA-core tiled kernel.
    Off,
    /// `flash_attention.cu`: `mma.sync` m16n8k16 (the default).
    MmaSync,
    /// `flash_attention_wgmma.cu`: Hopper's `wgmma` (sm_90a only; elsewhere `MmaSync`).
    Wgmma,
    /// `flash_attention_tma.cu`: FlashAttention-3's structure (a TMA producer warpgroup, two `wgmma` consumer
    /// warpgroups), for contiguous keys and paged caches whose blocks divide its 128-key tiles (others take
    /// `Wgmma`'s kernel; sm_90a only, elsewhere `MmaSync`).
    Tma,
}

/// 0: not yet read from [`FLASH_ENV`]; else 1 + the [`FlashKernel`] index.
static FLASH: AtomicU8 = AtomicU8::new(0);

/// The prefill kernel in use ([`FLASH_ENV`] until [`set_flash_kernel`]).
pub fn flash_kernel() -> FlashKernel {
    const KERNELS: [FlashKernel; 4] = [
        FlashKernel::Off,
        FlashKernel::MmaSync,
        FlashKernel::Wgmma,
        FlashKernel::Tma,
    ];
    match FLASH.load(Ordering::Relaxed) {
        0 => {
            let chosen = match std::env::var(FLASH_ENV).as_deref() {
                Ok("0") => FlashKernel::Off,
                Ok("wgmma") => FlashKernel::Wgmma,
                Ok("tma") => FlashKernel::Tma,
                _ => FlashKernel::MmaSync,
            };
            set_flash_kernel(chosen);
            chosen
        }
        state => KERNELS[usize::from(state - 1)],
    }
}

/// Chooses the prefill attention kernel for the whole process: for a benchmark or a check that runs each kernel on
/// the same inputs.
pub fn set_flash_kernel(kernel: FlashKernel) {
    FLASH.store(1 + kernel as u8, Ordering::Relaxed);
}

/// Whether a tensor-core kernel can take these inputs (q first): one chosen ([`flash_kernel`]), bf16, head_dim 64 or
/// 128, at least 16 queries (fewer would leave most of a block's 64 rows idle), and q, k, v 16-byte aligned (the
/// kernels move 8 bf16 at a time).
fn flash_fits(inputs: &[&Tensor], tq: usize, d: usize) -> bool {
    flash_kernel() != FlashKernel::Off
        && inputs[0].dtype() == DType::BF16
        && (d == 64 || d == 128)
        && tq >= 16
        && inputs[..3]
            .iter()
            .all(|t| matches!(t.cuda_parts(), Ok((_, offset, _)) if offset % 16 == 0))
}

/// Whether `t` lives on a Hopper GPU (`sm_90a`: the `wgmma` instructions).
fn on_hopper(t: &Tensor) -> bool {
    t.cuda_parts()
        .ok()
        .and_then(|(buffer, _, _)| buffer.device.arch().ok())
        .is_some_and(|arch| arch == "sm_90a")
}

/// The kernel for `b x tq` queries of `hq` heads of `head_dim` `d` (`base` names the CUDA-core variant):
/// - the tensor-core flash kernel ([`flash_kernel`]: `mma.sync`, or `wgmma` on Hopper; the TMA kernel is chosen
///   before this, for contiguous keys), 64 queries a block, where [`flash_fits`];
/// - else the tiled kernel (16 queries a block, K/V tiles staged once in shared memory) from 16 queries and
///   head_dim <= 128;
/// - else one warp per (batch, query, head), 4 warps a block.
fn attention_kernel(
    op: &'static str,
    base: &'static str,
    inputs: &[&Tensor],
    b: usize,
    tq: usize,
    hq: usize,
    d: usize,
) -> Result<Plan> {
    const FLASH_Q: usize = 64;
    const TILE_Q: usize = 16;
    const WARPS: u32 = 4;
    let paged = base != "attention";
    let dtype = inputs[0].dtype();
    if base != "paged_attention_rows" && flash_fits(inputs, tq, d) {
        let (module, kernel) = match flash_kernel() {
            FlashKernel::Wgmma | FlashKernel::Tma if on_hopper(inputs[0]) => {
                ("flash_attention_wgmma", "attention_wgmma")
            }
            _ => ("flash_attention", "attention_flash"),
        };
        let paged_prefix = if paged { "paged_" } else { "" };
        return Ok(Plan {
            module,
            function: format!("{paged_prefix}{kernel}_d{d}"),
            grid: (b * hq * tq.div_ceil(FLASH_Q)) as u32,
            block: WARPS * 32,
        });
    }
    if tq >= TILE_Q && d <= 128 {
        let tiled = if paged {
            "paged_attention_tiled"
        } else {
            "attention_tiled"
        };
        return Ok(Plan {
            module: "attention",
            function: name(op, tiled, dtype)?,
            grid: (b * hq * tq.div_ceil(TILE_Q)) as u32,
            block: WARPS * 32,
        });
    }
    Ok(Plan {
        module: "attention",
        function: name(op, base, dtype)?,
        grid: (b * tq * hq).div_ceil(WARPS as usize) as u32,
        block: WARPS * 32,
    })
}

/// Causal attention of `q[t, hq, d]` at positions `offset..offset + t` over one sequence's paged cache (`k`/`v`
/// `[slots, hkv, d]`, `table` i32 block ids); checked by the caller.
#[allow(clippy::too_many_arguments)]
pub(crate) fn paged_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    table: &Tensor,
    block_size: usize,
    offset: usize,
    scale: f32,
) -> Result<Tensor> {
    const OP: &str = "paged_attention";
    let [t, hq, d] = [q.shape()[0], q.shape()[1], q.shape()[2]];
    let hkv = k.shape()[1];
    head_dim_fits(OP, d)?;
    let ints = [t, hq, hkv, d, offset, block_size];
    if tma_takes(&[q, k, v], t, d) && tma_pages_fit(block_size) {
        return paged_attention_tma(&[q, k, v, table], &ints, scale);
    }
    let plan = attention_kernel(OP, "paged_attention", &[q, k, v], 1, t, hq, d)?;
    attention_launch(OP, &plan, &[q, k, v, table], &ints, scale)
}

/// The attention kernels keep a query row in registers, 8 channels a lane: head_dim at most 256.
fn head_dim_fits(op: &'static str, d: usize) -> Result<()> {
    if d > 256 {
        return Err(KernelError::invalid(
            op,
            format!("the CUDA attention kernel supports head_dim <= 256, found {d}"),
        ));
    }
    Ok(())
}

/// Launches `plan` on `inputs` (q first) with the i32 `ints` and then `scale` as its scalars; the output is shaped
/// like q.
fn attention_launch(
    op: &'static str,
    plan: &Plan,
    inputs: &[&Tensor],
    ints: &[usize],
    scale: f32,
) -> Result<Tensor> {
    let q = inputs[0];
    let scalars: Vec<Scalar> = ints
        .iter()
        .map(|&v| Scalar::I32(v as i32))
        .chain([Scalar::F32(scale)])
        .collect();
    Ok(launch(
        op,
        plan.module,
        &plan.function,
        inputs,
        vec![Output::new(q.dtype(), q.shape())],
        &scalars,
        plan.grid,
        plan.block,
    )?
    .remove(0))
}

/// Causal attention of `q[t, hq, d]`, one row per sequence, over the paged caches; `rows` packs i32
/// `[slots | positions | table starts | block ids]` (checked by the caller), `max_keys` is the longest row's context.
/// Split-K (flash-decoding) when the GQA group fits a block: enough (row, KV head, key range) blocks to fill the GPU,
/// then a merge; otherwise one warp per (row, head) over the whole context.
#[allow(clippy::too_many_arguments)]
pub(crate) fn paged_attention_rows(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    rows: &Tensor,
    t: usize,
    max_keys: usize,
    block_size: usize,
    scale: f32,
) -> Result<Tensor> {
    const OP: &str = "paged_attention_rows";
    let [hq, d] = [q.shape()[1], q.shape()[2]];
    let hkv = k.shape()[1];
    head_dim_fits(OP, d)?;
    if t == 0 {
        return Ok(Tensor::zeros(q.shape(), q.dtype(), q.device())?);
    }
    let group = hq / hkv;
    if group <= 32 {
        let (splits, chunk) = decode_splits(t * hkv, max_keys);
        let scalars = [t, hq, hkv, d, block_size, splits, chunk]
            .map(|v| Scalar::I32(v as i32))
            .into_iter()
            .chain([Scalar::F32(scale)])
            .collect::<Vec<_>>();
        let mut partials = launch(
            OP,
            "attention",
            &name(OP, "paged_decode_partial", q.dtype())?,
            &[q, k, v, rows],
            vec![
                Output::new(DType::F32, &[t, hq, splits, 2]),
                Output::new(DType::F32, &[t, hq, splits, d]),
            ],
            &scalars,
            (t * hkv * splits) as u32,
            (group * 32) as u32,
        )?;
        let partial = partials.remove(1);
        let ml = partials.remove(0);
        return Ok(launch(
            OP,
            "attention",
            &name(OP, "paged_decode_combine", q.dtype())?,
            &[&ml, &partial],
            vec![Output::new(q.dtype(), q.shape())],
            &[Scalar::I32(d as i32), Scalar::I32(splits as i32)],
            (t * hq) as u32,
            d.next_multiple_of(32).min(256) as u32,
        )?
        .remove(0));
    }
    let plan = attention_kernel(OP, "paged_attention_rows", &[q, k, v], t, 1, hq, d)?;
    let ints = [t, hq, hkv, d, block_size];
    attention_launch(OP, &plan, &[q, k, v, rows], &ints, scale)
}

/// Key ranges per (row, KV head) for split-K decode: enough blocks for two per SM of an H200 (132 SMs), each range at
/// least 32 keys, at most 128 ranges. Returns (ranges, keys per range).
pub(crate) fn decode_splits(row_heads: usize, max_keys: usize) -> (usize, usize) {
    const TARGET_BLOCKS: usize = 2 * 132;
    const MIN_KEYS: usize = 32;
    let wanted = TARGET_BLOCKS.div_ceil(row_heads.max(1));
    let splits = wanted.min(max_keys / MIN_KEYS).clamp(1, 128);
    (splits, max_keys.max(1).div_ceil(splits))
}

#[cfg(test)]
mod tests {
    use super::decode_splits;

    #[test]
    fn decode_splits_cover_the_context_and_fill_the_gpu() {
        for (row_heads, max_keys) in [
            (8, 1),
            (8, 90),
            (8, 2048),
            (8, 32_768),
            (256, 32_768),
            (1024, 100),
        ] {
            let (splits, chunk) = decode_splits(row_heads, max_keys);
            assert!(
                splits * chunk >= max_keys,
                "{row_heads} {max_keys}: keys left out"
            );
            assert!((1..=128).contains(&splits));
            assert!(
                chunk >= 32 || splits == 1,
                "{row_heads} {max_keys}: ranges of {chunk} keys"
            );
            if max_keys >= 32 * 264 {
                assert!(
                    row_heads * splits >= 264 || splits == 128,
                    "{row_heads} {max_keys}: too few blocks"
                );
            }
        }
        // Batch-1 decode of Qwen2-72B (8 KV heads) at 32k: 33 ranges of 993 keys, 264 blocks.
        assert_eq!(decode_splits(8, 32_768), (33, 993));
    }
}
