// Flash attention on the tensor cores (FlashAttention-2's schedule on `mma.sync` m16n8k16, bf16 in, f32
// accumulate), for prefill: q[b, tq, hq, D], k/v[b, tk, hkv, D] (or one sequence's paged cache), D 64 or 128, GQA,
// bidirectional or causal with a query offset. Needs attention_keys.cuh (ContiguousKeys, PagedKeys).
//
// One block of 4 warps per (batch, head, 64 queries), each warp owning 16 query rows whose Q fragments stay in
// registers. Per tile of 64 keys, each warp computes S = Q K^T (8 x D/16 MMAs), scales, masks and folds it into its
// rows' running max and sum (online softmax in f32, base 2), turns P into bf16 A fragments in registers (the C
// layout of two n8 tiles is the A layout of one k16 step) and accumulates O += P V (D/8 x 4 MMAs). K and V tiles
// arrive by cp.async, one tile ahead of use: V of this tile loads during S, K of the next tile during the softmax
// and P V. B fragments come from shared memory by ldmatrix (transposed for V). Causal blocks stop at the last key
// their last query sees. Shared rows are padded by 16 bytes, so the 8 rows an ldmatrix reads hit distinct banks.
//
// `mma.sync`, `ldmatrix` and `cp.async` are inline PTX; under the CUDA emulator they are the emulator's models of
// those instructions (nvlm-testkit/cuda-emu/emu_kernel.h).

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

template <int D, typename Keys>
__device__ void attention_flash(const __nv_bfloat16* __restrict__ q, const __nv_bfloat16* __restrict__ k,
                                const __nv_bfloat16* __restrict__ v, __nv_bfloat16* __restrict__ o, int batch,
                                int tq, int tk, int hq, int hkv, int causal, int offset, float scale, Keys keys) {
    constexpr int LD = D + 8;  // shared row stride (bf16) of the Q, K and V tiles
    constexpr int CHUNKS = D / 8;
    static_assert(FLASH_Q == FLASH_K, "Q is staged through the K tile");
    __shared__ __align__(16) __nv_bfloat16 ks[FLASH_K * LD];
    __shared__ __align__(16) __nv_bfloat16 vs[FLASH_K * LD];

    const int tiles = (tq + FLASH_Q - 1) / FLASH_Q;
    const int q0 = (blockIdx.x % tiles) * FLASH_Q;
    const int h = (blockIdx.x / tiles) % hq;
    const int bi = blockIdx.x / (tiles * hq);
    if (bi >= batch) return;
    const int kh = h / (hq / hkv);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int last = min(q0 + FLASH_Q, tq) - 1;
    const int key_end = causal ? min(offset + last + 1, tk) : tk;

    // Q tile through the K tile (zeros past tq), then this warp's 16 rows into A fragments.
    for (int idx = threadIdx.x; idx < FLASH_Q * CHUNKS; idx += blockDim.x) {
        const int r = idx / CHUNKS, c = (idx % CHUNKS) * 8, i = q0 + r;
        uint4 piece = {0u, 0u, 0u, 0u};
        if (i < tq) piece = *reinterpret_cast<const uint4*>(q + (((size_t)bi * tq + i) * hq + h) * D + c);
        *reinterpret_cast<uint4*>(ks + r * LD + c) = piece;
    }
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
#pragma unroll
    for (int n = 0; n < D / 8; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
    // Rows g and g + 8 of the warp: running max (base-2 logits) and this lane's part of the running sum.
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
    const int qi[2] = {q0 + warp * 16 + g, q0 + warp * 16 + g + 8};
    const int visible[2] = {causal ? min(offset + qi[0] + 1, tk) : tk, causal ? min(offset + qi[1] + 1, tk) : tk};
    const float scale_log2 = scale * 1.4426950408889634f;

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

        // Scale to base-2 logits, mask, and fold into the running max and sum. Element e of tile nt is row
        // g + 8 (e / 2), key k0 + 8 nt + 2 t + e % 2.
        float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
        for (int nt = 0; nt < FLASH_K / 8; ++nt) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int key = k0 + nt * 8 + 2 * t + (e & 1);
                s[nt][e] = key < visible[e >> 1] ? s[nt][e] * scale_log2 : -INFINITY;
                tile_max[e >> 1] = fmaxf(tile_max[e >> 1], s[nt][e]);
            }
        }
        float correction[2], base[2];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            // The four lanes of a row group hold its 64 scores between them.
            tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 1));
            tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 2));
            const float m_new = fmaxf(m[r], tile_max[r]);
            base[r] = m_new == -INFINITY ? 0.0f : m_new;  // a row that has seen no key yet stays at zero
            correction[r] = exp2f(m[r] - base[r]);
            m[r] = m_new;
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
        for (int r = 0; r < 2; ++r) l[r] = l[r] * correction[r] + tile_sum[r];
#pragma unroll
        for (int n = 0; n < D / 8; ++n) {
            acc[n][0] *= correction[0];
            acc[n][1] *= correction[0];
            acc[n][2] *= correction[1];
            acc[n][3] *= correction[1];
        }

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

    // The row sums from the four lanes of each row group; O / l as bf16 pairs.
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        const int i = qi[r];
        if (i >= tq) continue;
        const float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
        unsigned* orow = reinterpret_cast<unsigned*>(o + (((size_t)bi * tq + i) * hq + h) * D);
#pragma unroll
        for (int dn = 0; dn < D / 8; ++dn)
            orow[(dn * 8 + 2 * t) / 2] = pack_bf16x2(acc[dn][2 * r] * inv, acc[dn][2 * r + 1] * inv);
    }
}

// Entry points with the CUDA-core kernels' parameters (head_dim among them, fixed here by D).
#define FLASH_ATTENTION(D)                                                                                         \
    extern "C" __global__ void __launch_bounds__(FLASH_WARPS * 32, 2)                                              \
        attention_flash_d##D(const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v,              \
                             __nv_bfloat16* o, int b, int tq, int tk, int hq, int hkv, int, int causal,         \
                             int offset, float scale) {                                                                        \
        attention_flash<D>(q, k, v, o, b, tq, tk, hq, hkv, causal, offset, scale, ContiguousKeys{tk});            \
    }                                                                                                              \
    extern "C" __global__ void __launch_bounds__(FLASH_WARPS * 32, 2)                                              \
        paged_attention_flash_d##D(const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v,        \
                                   const int* table, __nv_bfloat16* o, int t, int hq, int hkv, int, int offset,   \
                                   int block_size, float scale) {                                                  \
        attention_flash<D>(q, k, v, o, 1, t, offset + t, hq, hkv, 1, offset, scale,                                \
                           PagedKeys{table, block_size});                                                          \
    }

FLASH_ATTENTION(64)
FLASH_ATTENTION(128)
