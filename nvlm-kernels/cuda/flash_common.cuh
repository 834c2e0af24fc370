// What the tensor-core attention kernels share (flash_attention.cu: mma.sync; flash_attention_wgmma.cu: wgmma): the
// tile sizes, the PTX instructions they use as device functions (each with the CUDA emulator's model of it under
// NVLM_CUDA_EMU, nvlm-testkit/cuda-emu/emu_kernel.h), and the per-row online softmax both run on the accumulator
// layout of an m16n8 (or m64nN, per warp the same) tile: thread 4 g + t of a warp holds rows g and g + 8 of the
// warp's 16, columns 8 n + 2 t and + 1 of each n8 tile n.

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

// Wgmma operand descriptor for shared memory laid out as 8 x 8 core matrices (128 contiguous bytes each), no
// swizzle: start address, `lbo` bytes between core matrices along K, `sbo` along M / N (PTX ISA, "Matrix
// Descriptor Format": bits 0-13 address >> 4, 16-29 lbo >> 4, 32-45 sbo >> 4, 62-63 swizzle mode 0).
__device__ __forceinline__ unsigned long long wgmma_desc(const void* smem, unsigned lbo, unsigned sbo) {
#ifdef NVLM_CUDA_EMU
    (void)smem, (void)lbo, (void)sbo;
    return 0;  // the emulator's model takes the pointer and the offsets themselves
#else
    const unsigned long long at = (unsigned long long)__cvta_generic_to_shared(smem);
    return ((at & 0x3FFFFull) >> 4) | ((unsigned long long)(lbo >> 4) << 16) |
           ((unsigned long long)(sbo >> 4) << 32);
#endif
}

// A compiler barrier on accumulator registers: wgmma writes them asynchronously, so their reads and writes must not
// move across the fence before it or the wait after it.
template <int N>
__device__ __forceinline__ void fence_registers(float* d) {
#ifndef NVLM_CUDA_EMU
#pragma unroll
    for (int i = 0; i < N; ++i) asm volatile("" : "+f"(d[i])::"memory");
#else
    (void)d;
#endif
}

// Orders this thread's shared-memory writes so far (generic proxy: stores, cp.async) before later reads by wgmma
// (async proxy). Each writer runs it before the barrier that hands the tile to the warpgroup.
__device__ __forceinline__ void fence_shared_for_async() {
#ifndef NVLM_CUDA_EMU
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

// Orders the warpgroup's register writes (zeroed or rescaled accumulators) before the wgmma that follow.
__device__ __forceinline__ void wgmma_fence() {
#ifndef NVLM_CUDA_EMU
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}

#define WGMMA_D8(i) "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), \
                    "+f"(d[i + 6]), "+f"(d[i + 7])

// d[64 x N] += A[64 x 16] B[16 x N] by the warpgroup, both operands K-major in shared memory (descriptors, no
// swizzle), N 64 or 128; queued, not done: see wgmma_commit / wgmma_wait. Accumulators as in the header comment,
// d[4 n + e] for n8 tile n.
template <int N>
__device__ __forceinline__ void wgmma_bf16_ss(float (&d)[N / 2], const __nv_bfloat16* a, unsigned lbo_a,
                                              unsigned sbo_a, const __nv_bfloat16* b, unsigned lbo_b,
                                              unsigned sbo_b) {
#ifdef NVLM_CUDA_EMU
    __emu_wgmma_ss(d, a, lbo_a, sbo_a, b, lbo_b, sbo_b, N);
#else
    const unsigned long long da = wgmma_desc(a, lbo_a, sbo_a), db = wgmma_desc(b, lbo_b, sbo_b);
    if constexpr (N == 64) {
        asm volatile(
            "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
            "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
            "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
            "%32, %33, 1, 1, 1, 0, 0;\n"
            : WGMMA_D8(0), WGMMA_D8(8), WGMMA_D8(16), WGMMA_D8(24)
            : "l"(da), "l"(db));
    } else {
        static_assert(N == 128, "wgmma_bf16_ss: N is 64 or 128");
        asm volatile(
            "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
            "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
            "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
            "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
            "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
            "%64, %65, 1, 1, 1, 0, 0;\n"
            : WGMMA_D8(0), WGMMA_D8(8), WGMMA_D8(16), WGMMA_D8(24), WGMMA_D8(32), WGMMA_D8(40), WGMMA_D8(48),
              WGMMA_D8(56)
            : "l"(da), "l"(db));
    }
#endif
}

// Closes the group of wgmma operations queued since the last commit.
__device__ __forceinline__ void wgmma_commit() {
#ifdef NVLM_CUDA_EMU
    __emu_wgmma_commit();
#else
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}

// Waits until every committed wgmma group has completed.
__device__ __forceinline__ void wgmma_wait_all() {
#ifdef NVLM_CUDA_EMU
    __emu_wgmma_wait(0);
#else
    asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
#endif
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

// The running softmax state of a thread's two rows (g and g + 8 of its warp's 16): max of the base-2 logits, this
// lane's part of the sum, and the keys each row sees.
struct FlashRows {
    float m[2], l[2];
    int visible[2];
};

// The starting state of rows qi (query indices).
__device__ __forceinline__ FlashRows flash_rows(const int (&qi)[2], int causal, int offset, int tk) {
    return FlashRows{{-INFINITY, -INFINITY},
                     {0.0f, 0.0f},
                     {causal ? min(offset + qi[0] + 1, tk) : tk, causal ? min(offset + qi[1] + 1, tk) : tk}};
}

// Scales one tile's scores s (keys k0 + 8 n + 2 t + e % 2) to base-2 logits, masks the keys a row does not see,
// folds the tile into the rows' running max and sum, and leaves the unnormalised probabilities in s; `correction`
// gets the factor the rows' accumulated outputs must be scaled by.
__device__ __forceinline__ void online_softmax_tile(float (&s)[FLASH_K / 8][4], int k0, int t, float scale_log2,
                                                    FlashRows& rows, float (&correction)[2]) {
    float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nt = 0; nt < FLASH_K / 8; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int key = k0 + nt * 8 + 2 * t + (e & 1);
            s[nt][e] = key < rows.visible[e >> 1] ? s[nt][e] * scale_log2 : -INFINITY;
            tile_max[e >> 1] = fmaxf(tile_max[e >> 1], s[nt][e]);
        }
    }
    float base[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        // The four lanes of a row group hold its 64 scores between them.
        tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 1));
        tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 2));
        const float m_new = fmaxf(rows.m[r], tile_max[r]);
        base[r] = m_new == -INFINITY ? 0.0f : m_new;  // a row that has seen no key yet stays at zero
        correction[r] = exp2f(rows.m[r] - base[r]);
        rows.m[r] = m_new;
    }
    float tile_sum[2] = {0.0f, 0.0f};
#pragma unroll
    for (int nt = 0; nt < FLASH_K / 8; ++nt) {
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

// O / l of the thread's two rows (query indices qi, those at or past tq skipped) into o[b, tq, hq, D] as bf16 pairs,
// after summing each row's l over the four lanes of its group.
template <int D>
__device__ __forceinline__ void store_rows(const float (&acc)[D / 8][4], FlashRows& rows, const int (&qi)[2], int t,
                                           __nv_bfloat16* __restrict__ o, int bi, int tq, int hq, int h) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        rows.l[r] += __shfl_xor_sync(0xffffffffu, rows.l[r], 1);
        rows.l[r] += __shfl_xor_sync(0xffffffffu, rows.l[r], 2);
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        if (qi[r] >= tq) continue;
        const float inv = rows.l[r] > 0.0f ? 1.0f / rows.l[r] : 0.0f;
        unsigned* orow = reinterpret_cast<unsigned*>(o + (((size_t)bi * tq + qi[r]) * hq + h) * D);
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
