// What the tensor-core attention kernels share (flash_attention.cu: mma.sync; flash_attention_wgmma.cu and
// flash_attention_tma.cu: wgmma, with wgmma.cuh): the tile sizes, the PTX instructions they use as device functions
// (each with the CUDA emulator's model of it under NVLM_CUDA_EMU, nvlm-testkit/cuda-emu/emu_kernel.h), and the
// per-row online softmax all run on the accumulator layout of an m16n8 (or m64nN, per warp the same) tile: thread
// 4 g + t of a warp holds rows g and g + 8 of the warp's 16, columns 8 n + 2 t and + 1 of each n8 tile n.

#define FLASH_Q 64
#define FLASH_K 64
#define FLASH_WARPS 4

// d = a b + d for one m16n8k16 tile (fragment layouts as in the PTX ISA, summarised in emu_kernel.h).
__device__ __forceinline__ void mma_m16n8k16_bf16(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
#ifdef NVLM_CUDA_EMU
    __emu_mma_m16n8k16_bf16(d, a, b);
#else
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

// Four 8x8 b16 matrices from shared memory: this lane gives the address of row lane % 8 of matrix lane / 8; r[j]
// gets row g, elements 2t, 2t + 1 of matrix j (TRANS: column g, rows 2t, 2t + 1).
template <bool TRANS>
__device__ __forceinline__ void ldmatrix_x4(unsigned (&r)[4], const __nv_bfloat16* row) {
#ifdef NVLM_CUDA_EMU
    __emu_ldmatrix_x4(r, row, TRANS);
#else
    const unsigned at = (unsigned)__cvta_generic_to_shared(row);
    if (TRANS)
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                     : "r"(at)
                     : "memory");
    else
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                     : "r"(at)
                     : "memory");
#endif
}

// 16 bytes global -> shared without passing through registers (zeros when !fill; src must still be a valid address).
__device__ __forceinline__ void copy_async_16(__nv_bfloat16* dst, const __nv_bfloat16* src, bool fill) {
#ifdef NVLM_CUDA_EMU
    __emu_copy_async_16(dst, src, fill);
#else
    const unsigned at = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(at), "l"(src), "r"(fill ? 16 : 0)
                 : "memory");
#endif
}

// Closes this thread's group of copies issued since the last commit.
__device__ __forceinline__ void copy_async_commit() {
#ifdef NVLM_CUDA_EMU
    __emu_copy_commit();
#else
    asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

// Waits until at most PENDING of this thread's committed groups are still in flight.
template <int PENDING>
__device__ __forceinline__ void copy_async_wait() {
#ifdef NVLM_CUDA_EMU
    __emu_copy_wait(PENDING);
#else
    asm volatile("cp.async.wait_group %0;\n" ::"n"(PENDING) : "memory");
#endif
}

// Two f32 as a bf16 pair in one register, the first in the low half (the order of a fragment register).
__device__ __forceinline__ unsigned pack_bf16x2(float lo, float hi) {
    return (unsigned)__bfloat16_as_ushort(__float2bfloat16_rn(lo)) |
           ((unsigned)__bfloat16_as_ushort(__float2bfloat16_rn(hi)) << 16);
}

// Queues the copy of keys k0 .. k0 + FLASH_K (of head kh) of `src` (K or V) into `tile` [FLASH_K][LD], zeros past
// key_end; the block's threads share the 16-byte pieces.
template <int D, int LD, typename Keys>
__device__ __forceinline__ void load_tile_async(__nv_bfloat16* tile, const __nv_bfloat16* __restrict__ src,
                                                const Keys& keys, int bi, int kh, int hkv, int k0, int key_end) {
    constexpr int CHUNKS = D / 8;
    for (int idx = threadIdx.x; idx < FLASH_K * CHUNKS; idx += blockDim.x) {
        const int r = idx / CHUNKS, c = (idx % CHUNKS) * 8, key = k0 + r;
        const bool inside = key < key_end;
        const __nv_bfloat16* from = inside ? src + (keys.row(bi, key) * hkv + kh) * D + c : src;
        copy_async_16(tile + r * LD + c, from, inside);
    }
    copy_async_commit();
}

// The (batch entry, head, first of 64 queries) a block owns, its KV head, and the end of the keys its queries see.
struct FlashBlock {
    int bi, h, kh, q0, key_end;
};

__device__ __forceinline__ FlashBlock flash_block(int tq, int tk, int hq, int hkv, int causal, int offset) {
    const int tiles = (tq + FLASH_Q - 1) / FLASH_Q;
    FlashBlock b;
    b.q0 = (blockIdx.x % tiles) * FLASH_Q;
    b.h = (blockIdx.x / tiles) % hq;
    b.bi = blockIdx.x / (tiles * hq);
    b.kh = b.h / (hq / hkv);
    const int last = min(b.q0 + FLASH_Q, tq) - 1;
    b.key_end = causal ? min(offset + last + 1, tk) : tk;
    return b;
}

// The block's 64 query rows of head h into shared memory, 16 bytes at a time (zeros past tq): channels c .. c + 7 of
// row r go to dst + at(r, c), so each kernel picks its layout.
template <int D, typename Layout>
__device__ __forceinline__ void stage_queries(__nv_bfloat16* dst, const __nv_bfloat16* __restrict__ q,
                                              const FlashBlock& blk, int tq, int hq, Layout at) {
    constexpr int CHUNKS = D / 8;
    for (int idx = threadIdx.x; idx < FLASH_Q * CHUNKS; idx += blockDim.x) {
        const int r = idx / CHUNKS, c = (idx % CHUNKS) * 8, i = blk.q0 + r;
        uint4 piece = {0u, 0u, 0u, 0u};
        if (i < tq) piece = *reinterpret_cast<const uint4*>(q + (((size_t)blk.bi * tq + i) * hq + blk.h) * D + c);
        *reinterpret_cast<uint4*>(dst + at(r, c)) = piece;
    }
}

// A thread's two query rows (g and g + 8 of its warp's 16): their query indices, the keys each sees, the scale to
// base-2 logits, and the running softmax state: max of the base-2 logits and this lane's part of the sum.
struct FlashRows {
    int q[2], visible[2];
    float scale_log2;
    float m[2], l[2];
};

// The starting state of the rows of lane group g of the warp whose 16 rows start at query `first`.
__device__ __forceinline__ FlashRows flash_rows(int first, int g, int causal, int offset, int tk, float scale) {
    FlashRows rows;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        rows.q[r] = first + g + 8 * r;
        rows.visible[r] = causal ? min(offset + rows.q[r] + 1, tk) : tk;
        rows.m[r] = -INFINITY;
        rows.l[r] = 0.0f;
    }
    rows.scale_log2 = scale * 1.4426950408889634f;
    return rows;
}

// Zeros TILES n8 accumulator tiles (four registers each).
template <int TILES>
__device__ __forceinline__ void zero_tiles(float (&a)[TILES][4]) {
#pragma unroll
    for (int n = 0; n < TILES; ++n) a[n][0] = a[n][1] = a[n][2] = a[n][3] = 0.0f;
}

// Scales one tile's scores s (TILES n8 tiles: keys k0 + 8 n + 2 t + e % 2) to base-2 logits, masks the keys a row
// does not see, folds the tile into the rows' running max and sum, and leaves the unnormalised probabilities in s;
// `correction` gets the factor the rows' accumulated outputs must be scaled by.
template <int TILES>
__device__ __forceinline__ void online_softmax_tile(float (&s)[TILES][4], int k0, int t, FlashRows& rows,
                                                    float (&correction)[2]) {
    float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nt = 0; nt < TILES; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int key = k0 + nt * 8 + 2 * t + (e & 1);
            s[nt][e] = key < rows.visible[e >> 1] ? s[nt][e] * rows.scale_log2 : -INFINITY;
            tile_max[e >> 1] = fmaxf(tile_max[e >> 1], s[nt][e]);
        }
    }
    float base[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        // The four lanes of a row group hold its 8 TILES scores between them.
        tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 1));
        tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 2));
        const float m_new = fmaxf(rows.m[r], tile_max[r]);
        base[r] = m_new == -INFINITY ? 0.0f : m_new;  // a row that has seen no key yet stays at zero
        correction[r] = exp2f(rows.m[r] - base[r]);
        rows.m[r] = m_new;
    }
    float tile_sum[2] = {0.0f, 0.0f};
#pragma unroll
    for (int nt = 0; nt < TILES; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            s[nt][e] = exp2f(s[nt][e] - base[e >> 1]);
            tile_sum[e >> 1] += s[nt][e];
        }
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) rows.l[r] = rows.l[r] * correction[r] + tile_sum[r];
}

// Scales the accumulated outputs of the two rows by their corrections.
template <int D>
__device__ __forceinline__ void rescale_rows(float (&acc)[D / 8][4], const float (&correction)[2]) {
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
        acc[n][0] *= correction[0];
        acc[n][1] *= correction[0];
        acc[n][2] *= correction[1];
        acc[n][3] *= correction[1];
    }
}

// O / l of the thread's two rows (those at or past tq skipped) into o[b, tq, hq, D] as bf16 pairs, after summing
// each row's l over the four lanes of its group.
template <int D>
__device__ __forceinline__ void store_rows(const float (&acc)[D / 8][4], FlashRows& rows, int t,
                                           __nv_bfloat16* __restrict__ o, int bi, int tq, int hq, int h) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        rows.l[r] += __shfl_xor_sync(0xffffffffu, rows.l[r], 1);
        rows.l[r] += __shfl_xor_sync(0xffffffffu, rows.l[r], 2);
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        if (rows.q[r] >= tq) continue;
        const float inv = rows.l[r] > 0.0f ? 1.0f / rows.l[r] : 0.0f;
        unsigned* orow = reinterpret_cast<unsigned*>(o + (((size_t)bi * tq + rows.q[r]) * hq + h) * D);
#pragma unroll
        for (int dn = 0; dn < D / 8; ++dn)
            orow[(dn * 8 + 2 * t) / 2] = pack_bf16x2(acc[dn][2 * r] * inv, acc[dn][2 * r + 1] * inv);
    }
}

// The entry points of a tensor-core prefill kernel KERNEL<D> (contiguous keys, then one sequence's paged cache),
// named KERNEL_dD and paged_KERNEL_dD, with the CUDA-core kernels' parameters (head_dim among them, fixed by D).
#define FLASH_ENTRY_POINTS(KERNEL, D)                                                                        \
    extern "C" __global__ void __launch_bounds__(FLASH_WARPS * 32, 2)                                              \
        KERNEL##_d##D(const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v, __nv_bfloat16* o,     \
                    int b, int tq, int tk, int hq, int hkv, int, int causal, int offset, float scale) {            \
        KERNEL<D>(q, k, v, o, b, tq, tk, hq, hkv, causal, offset, scale, ContiguousKeys{tk});                      \
    }                                                                                                              \
    extern "C" __global__ void __launch_bounds__(FLASH_WARPS * 32, 2)                                              \
        paged_##KERNEL##_d##D(const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v,             \
                              const int* table, __nv_bfloat16* o, int t, int hq, int hkv, int, int offset,         \
                              int block_size, float scale) {                                                       \
        KERNEL<D>(q, k, v, o, 1, t, offset + t, hq, hkv, 1, offset, scale, PagedKeys{table, block_size});          \
    }
