// Flash attention on Hopper's warpgroup MMA (`wgmma.mma_async`, bf16 in, f32 accumulate; sm_90a), for prefill:
// the same inputs, outputs and online softmax as flash_attention.cu (mma.sync), for which it is a drop-in. Needs
// attention_keys.cuh, flash_common.cuh and wgmma.cuh.
//
// One block is one warpgroup (4 warps) per (batch, head, 64 queries): wgmma's M is 64, so S = Q K^T for a tile of
// 64 keys is D/16 m64n64k16 instructions and O += P V is 4 m64nDk16 instructions, each issued once for the whole
// warpgroup where mma.sync needs 4 warps x 8 x D/16. Both operands come from shared memory through descriptors,
// in the canonical K-major layout without swizzle (8 x 8 core matrices of 128 contiguous bytes):
// - Q [64 rows][D] and K [64 keys][D], loaded once / per tile (K by cp.async);
// - V transposed, [D][64 keys], so that P V contracts over its contiguous dimension too;
// - P [64 rows][64 keys] in bf16, written by each thread from its accumulators into the K tile (K is done by then).
// The accumulators have mma.sync's layout per warp, so the online softmax is flash_common's. Loads are not
// overlapped with the MMAs here (two blocks an SM overlap each other's); a TMA / warp-specialised pipeline is the
// next step.

// Byte offsets of the K-major core-matrix layout of an operand whose contraction dimension holds `k_extent`
// elements: between core matrices along K, and along M / N.
#define CORE_LBO 128u
#define CORE_SBO(k_extent) ((unsigned)(k_extent) / 8u * 128u)

// Element (row, col) of a K-major operand [rows][k_extent] (col along the contraction) in the core-matrix layout.
__device__ __forceinline__ int core_offset(int row, int col, int k_extent) {
    return ((row >> 3) * (k_extent >> 3) + (col >> 3)) * 64 + (row & 7) * 8 + (col & 7);
}

// d[64 x N] += A[64 x K] B[K x N] by the warpgroup, then waited for: A [64][K] and B as [N][K], both K-major core
// matrices in shared memory, K / 16 wgmma steps.
template <int N, int K>
__device__ __forceinline__ void warpgroup_gemm(float (&d)[N / 2], const __nv_bfloat16* a, const __nv_bfloat16* b) {
    fence_registers<N / 2>(d);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < K / 16; ++kk)
        wgmma_bf16_ss<N>(d, SmemOperand{a + kk * 128, CORE_LBO, CORE_SBO(K), K_MAJOR_INTERLEAVE},
                         SmemOperand{b + kk * 128, CORE_LBO, CORE_SBO(K), K_MAJOR_INTERLEAVE});
    wgmma_commit();
    wgmma_wait_all();
    fence_registers<N / 2>(d);
}

template <int D, typename Keys>
__device__ void attention_wgmma(const __nv_bfloat16* __restrict__ q, const __nv_bfloat16* __restrict__ k,
                                const __nv_bfloat16* __restrict__ v, __nv_bfloat16* __restrict__ o, int batch,
                                int tq, int tk, int hq, int hkv, int causal, int offset, float scale, Keys keys) {
    constexpr int CHUNKS = D / 8;
    static_assert(FLASH_Q == 64 && FLASH_K == 64, "one warpgroup, wgmma M = 64");
    __shared__ __align__(128) __nv_bfloat16 qs[FLASH_Q * D];
    __shared__ __align__(128) __nv_bfloat16 ks[FLASH_K * D];  // K, then P (64 x 64) once S is done
    __shared__ __align__(128) __nv_bfloat16 vt[D * FLASH_K];  // V transposed

    const FlashBlock blk = flash_block(tq, tk, hq, hkv, causal, offset);
    if (blk.bi >= batch) return;
    const int bi = blk.bi, h = blk.h, kh = blk.kh, q0 = blk.q0, key_end = blk.key_end;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;

    // Q into its core-matrix layout (zeros past tq): each 16-byte piece is one core-matrix row.
    stage_queries<D>(qs, q, blk, tq, hq, [](int r, int c) { return core_offset(r, c, D); });

    float acc[D / 8][4];
    zero_tiles(acc);
    FlashRows rows = flash_rows(q0 + warp * 16, g, causal, offset, tk, scale);

    for (int k0 = 0; k0 < key_end; k0 += FLASH_K) {
        // K by cp.async into its core-matrix layout; V transposed through registers. Zeros past key_end.
        for (int idx = threadIdx.x; idx < FLASH_K * CHUNKS; idx += blockDim.x) {
            const int r = idx / CHUNKS, c = (idx % CHUNKS) * 8, key = k0 + r;
            const bool inside = key < key_end;
            const __nv_bfloat16* from = inside ? k + (keys.row(bi, key) * hkv + kh) * D + c : k;
            copy_async_16(ks + core_offset(r, c, D), from, inside);
        }
        copy_async_commit();
        for (int idx = threadIdx.x; idx < FLASH_K * CHUNKS; idx += blockDim.x) {
            const int r = idx % FLASH_K, c = (idx / FLASH_K) * 8, key = k0 + r;
            uint4 piece = {0u, 0u, 0u, 0u};
            if (key < key_end) piece = *reinterpret_cast<const uint4*>(v + (keys.row(bi, key) * hkv + kh) * D + c);
            const __nv_bfloat16* e = reinterpret_cast<const __nv_bfloat16*>(&piece);
#pragma unroll
            for (int j = 0; j < 8; ++j) vt[core_offset(c + j, r, FLASH_K)] = e[j];
        }
        copy_async_wait<0>();
        fence_shared_for_async();
        __syncthreads();  // every thread's K pieces and V^T stores (and, first time, Q) are in place

        // S = Q K^T: the K-major Q [64][D] and K [64][D] (B[kk][n] = K[n][kk]), 16 channels a step.
        float s[FLASH_K / 8][4];
        zero_tiles(s);
        warpgroup_gemm<FLASH_K, D>(reinterpret_cast<float(&)[FLASH_K / 2]>(s), qs, ks);

        float correction[2];
        online_softmax_tile(s, k0, t, rows, correction);
        rescale_rows<D>(acc, correction);

        // P (bf16) over K's tile: rows 16 warp + g (+ 8), keys 8 nt + 2 t (+ 1), two at a time.
        __syncthreads();  // the warpgroup's S is done reading ks
        __nv_bfloat16* ps = ks;
#pragma unroll
        for (int nt = 0; nt < FLASH_K / 8; ++nt)
#pragma unroll
            for (int r = 0; r < 2; ++r) {
                const int row = warp * 16 + g + 8 * r, key = nt * 8 + 2 * t;
                *reinterpret_cast<unsigned*>(ps + core_offset(row, key, FLASH_K)) =
                    pack_bf16x2(s[nt][2 * r], s[nt][2 * r + 1]);
            }
        fence_shared_for_async();
        __syncthreads();

        // O += P V: P [64][64 keys] and V^T [D][64 keys] (B[kk][n] = V[kk][n]), 16 keys a step.
        warpgroup_gemm<D, FLASH_K>(reinterpret_cast<float(&)[D / 2]>(acc), ps, vt);
        __syncthreads();  // P V is done reading ks and vt before the next tile lands there
    }
    store_rows<D>(acc, rows, t, o, bi, tq, hq, h);
}

// Entry points with the CUDA-core kernels' parameters.
FLASH_ENTRY_POINTS(attention_wgmma, 64)
FLASH_ENTRY_POINTS(attention_wgmma, 128)
