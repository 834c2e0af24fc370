// Flash attention on the tensor cores (FlashAttention-2's schedule on `mma.sync` m16n8k16, bf16 in, f32
// accumulate), for prefill: q[b, tq, hq, D], k/v[b, tk, hkv, D] (or one sequence's paged cache), D 64 or 128, GQA,
// bidirectional or causal with a query offset. Needs attention_keys.cuh (ContiguousKeys, PagedKeys) and
// flash_common.cuh.
//
// One block of 4 warps per (batch, head, 64 queries), each warp owning 16 query rows whose Q fragments stay in
// registers. Per tile of 64 keys, each warp computes S = Q K^T (8 x D/16 MMAs), scales, masks and folds it into its
// rows' running max and sum (online softmax in f32, base 2), turns P into bf16 A fragments in registers (the C
// layout of two n8 tiles is the A layout of one k16 step) and accumulates O += P V (D/8 x 4 MMAs). K and V tiles
// arrive by cp.async, one tile ahead of use: V of this tile loads during S, K of the next tile during the softmax
// and P V. B fragments come from shared memory by ldmatrix (transposed for V). Causal blocks stop at the last key
// their last query sees. Shared rows are padded by 16 bytes, so the 8 rows an ldmatrix reads hit distinct banks.

template <int D, typename Keys>
__device__ void attention_flash(const __nv_bfloat16* __restrict__ q, const __nv_bfloat16* __restrict__ k,
                                const __nv_bfloat16* __restrict__ v, __nv_bfloat16* __restrict__ o, int batch,
                                int tq, int tk, int hq, int hkv, int causal, int offset, float scale, Keys keys) {
    constexpr int LD = D + 8;  // shared row stride (bf16) of the Q, K and V tiles
    constexpr int CHUNKS = D / 8;
    static_assert(FLASH_Q == FLASH_K, "Q is staged through the K tile");
    __shared__ __align__(16) __nv_bfloat16 ks[FLASH_K * LD];
    __shared__ __align__(16) __nv_bfloat16 vs[FLASH_K * LD];

    const FlashBlock blk = flash_block(tq, tk, hq, hkv, causal, offset);
    if (blk.bi >= batch) return;
    const int bi = blk.bi, h = blk.h, kh = blk.kh, q0 = blk.q0, key_end = blk.key_end;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;

    // Q tile through the K tile (zeros past tq), then this warp's 16 rows into A fragments.
    stage_queries<D>(ks, q, blk, tq, hq, [](int r, int c) { return r * LD + c; });
    __syncthreads();
    unsigned qa[D / 16][4];
#pragma unroll
    for (int kc = 0; kc < D / 16; ++kc) {
        // Matrices: rows 0-7 / 8-15 of the warp's 16, channels 16 kc + 0-7 / + 8-15: a[0..3] in fragment order.
        const int r = warp * 16 + (lane & 7) + ((lane >> 3) & 1) * 8, c = kc * 16 + (lane >> 4) * 8;
        ldmatrix_x4<false>(qa[kc], ks + r * LD + c);
    }
    __syncthreads();  // every warp holds its Q before K overwrites the tile
    if (key_end > 0) load_tile_async<D, LD>(ks, k, keys, bi, kh, hkv, 0, key_end);

    float acc[D / 8][4];
    zero_tiles(acc);
    FlashRows rows = flash_rows(q0 + warp * 16, g, causal, offset, tk, scale);

    for (int k0 = 0; k0 < key_end; k0 += FLASH_K) {
        load_tile_async<D, LD>(vs, v, keys, bi, kh, hkv, k0, key_end);  // vs is free: the last P V is done
        copy_async_wait<1>();                                             // this tile's K has landed
        __syncthreads();

        // S = Q K^T: n8 tile nt covers keys k0 + 8 nt .. + 7; B[kk][n] = K[k0 + 8 nt + n][16 kc + kk], i.e. the
        // K rows as ldmatrix reads them (no transpose), two k16 steps per ldmatrix.
        float s[FLASH_K / 8][4];
#pragma unroll
        for (int nt = 0; nt < FLASH_K / 8; ++nt) {
            s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
            for (int kc = 0; kc < D / 16; kc += 2) {
                unsigned b[4];
                ldmatrix_x4<false>(b, ks + (nt * 8 + (lane & 7)) * LD + kc * 16 + (lane >> 3) * 8);
                const unsigned b0[2] = {b[0], b[1]}, b1[2] = {b[2], b[3]};
                mma_m16n8k16_bf16(s[nt], qa[kc], b0);
                mma_m16n8k16_bf16(s[nt], qa[kc + 1], b1);
            }
        }
        __syncthreads();  // every warp is done with ks
        const bool more = k0 + FLASH_K < key_end;
        if (more) load_tile_async<D, LD>(ks, k, keys, bi, kh, hkv, k0 + FLASH_K, key_end);

        // Scale, mask and fold into the running max and sum; rescale the outputs so far.
        float correction[2];
        online_softmax_tile(s, k0, t, rows, correction);
        rescale_rows<D>(acc, correction);

        if (more) copy_async_wait<1>();  // this tile's V has landed (the next K may still be in flight)
        else copy_async_wait<0>();
        __syncthreads();
        // O += P V: k16 step kc takes P's n8 tiles 2 kc and 2 kc + 1 as its A fragment; B[kk][n] =
        // V[k0 + 16 kc + kk][8 dn + n], the V rows transposed by ldmatrix, two n8 tiles per ldmatrix.
#pragma unroll
        for (int kc = 0; kc < FLASH_K / 16; ++kc) {
            const unsigned pa[4] = {pack_bf16x2(s[2 * kc][0], s[2 * kc][1]), pack_bf16x2(s[2 * kc][2], s[2 * kc][3]),
                                    pack_bf16x2(s[2 * kc + 1][0], s[2 * kc + 1][1]),
                                    pack_bf16x2(s[2 * kc + 1][2], s[2 * kc + 1][3])};
#pragma unroll
            for (int dn = 0; dn < D / 8; dn += 2) {
                unsigned b[4];
                const int r = kc * 16 + (lane & 7) + ((lane >> 3) & 1) * 8, c = (dn + (lane >> 4)) * 8;
                ldmatrix_x4<true>(b, vs + r * LD + c);
                const unsigned b0[2] = {b[0], b[1]}, b1[2] = {b[2], b[3]};
                mma_m16n8k16_bf16(acc[dn], pa, b0);
                mma_m16n8k16_bf16(acc[dn + 1], pa, b1);
            }
        }
        __syncthreads();  // every warp is done with vs before the next tile's V lands there
    }

    store_rows<D>(acc, rows, t, o, bi, tq, hq, h);
}

// Entry points with the CUDA-core kernels' parameters.
FLASH_ENTRY_POINTS(attention_flash, 64)
FLASH_ENTRY_POINTS(attention_flash, 128)
