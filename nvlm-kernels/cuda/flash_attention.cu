// Flash attention on the tensor cores (FlashAttention-2's schedule on `mma.sync` m16n8k16, bf16 in, f32
// accumulate), for prefill: q[b, tq, hq, D], k/v[b, tk, hkv, D] (or one sequence's paged cache), D 64 or 128, GQA,
// bidirectional or causal with a query offset. Needs attention_keys.cuh (ContiguousKeys, PagedKeys).
//
// One block of 4 warps per (batch, head, 64 queries), each warp owning 16 query rows whose Q fragments stay in
// registers. Per tile of 64 keys: the block stages K (row major) and V (transposed) in shared memory, each warp
// computes S = Q K^T (8 x D/16 MMAs), scales, masks and folds it into its rows' running max and sum (online
// softmax in f32, base 2), turns P into bf16 A fragments in registers (the C layout of two n8 tiles is the A layout
// of one k16 step) and accumulates O += P V (D/8 x 4 MMAs). Causal blocks stop at the last key their last query
// sees. Shared rows are padded by 16 bytes, so the 8 row groups of a fragment load hit 32 distinct banks.
//
// The `mma.sync` instruction is inline PTX; under the CUDA emulator it is the emulator's model of the instruction
// with the same fragment layouts (nvlm-testkit/cuda-emu/emu_kernel.h).

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

// Two f32 as a bf16 pair in one register, the first in the low half (the order of a fragment register).
__device__ __forceinline__ unsigned pack_bf16x2(float lo, float hi) {
    return (unsigned)__bfloat16_as_ushort(__float2bfloat16_rn(lo)) |
           ((unsigned)__bfloat16_as_ushort(__float2bfloat16_rn(hi)) << 16);
}

// The 32-bit word (two bf16) at element `at` of a shared array (`at` even).
__device__ __forceinline__ unsigned shared_pair(const __nv_bfloat16* base, int at) {
    return *reinterpret_cast<const unsigned*>(base + at);
}

template <int D, typename Keys>
__device__ void attention_flash(const __nv_bfloat16* __restrict__ q, const __nv_bfloat16* __restrict__ k,
                                const __nv_bfloat16* __restrict__ v, __nv_bfloat16* __restrict__ o, int batch,
                                int tq, int tk, int hq, int hkv, int causal, int offset, float scale, Keys keys) {
    constexpr int LDK = D + 8;        // K (and, before the loop, Q) rows in shared memory
    constexpr int LDV = FLASH_K + 8;  // V^T rows: one per channel, FLASH_K keys each
    constexpr int CHUNKS = D / 8;     // 16-byte pieces of a row
    __shared__ __align__(16) __nv_bfloat16 ks[FLASH_Q > FLASH_K ? FLASH_Q * LDK : FLASH_K * LDK];
    __shared__ __align__(16) __nv_bfloat16 vt[D * LDV];

    const int tiles = (tq + FLASH_Q - 1) / FLASH_Q;
    const int q0 = (blockIdx.x % tiles) * FLASH_Q;
    const int h = (blockIdx.x / tiles) % hq;
    const int bi = blockIdx.x / (tiles * hq);
    if (bi >= batch) return;
    const int kh = h / (hq / hkv);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;

    // Q tile into shared memory (zeros past tq), then this warp's 16 rows into A fragments.
    for (int idx = threadIdx.x; idx < FLASH_Q * CHUNKS; idx += blockDim.x) {
        const int r = idx / CHUNKS, c = (idx % CHUNKS) * 8, i = q0 + r;
        uint4 piece = {0u, 0u, 0u, 0u};
        if (i < tq) piece = *reinterpret_cast<const uint4*>(q + (((size_t)bi * tq + i) * hq + h) * D + c);
        *reinterpret_cast<uint4*>(ks + r * LDK + c) = piece;
    }
    __syncthreads();
    unsigned qa[D / 16][4];
    const int row0 = warp * 16 + g;
#pragma unroll
    for (int kc = 0; kc < D / 16; ++kc) {
        qa[kc][0] = shared_pair(ks, row0 * LDK + kc * 16 + 2 * t);
        qa[kc][1] = shared_pair(ks, (row0 + 8) * LDK + kc * 16 + 2 * t);
        qa[kc][2] = shared_pair(ks, row0 * LDK + kc * 16 + 2 * t + 8);
        qa[kc][3] = shared_pair(ks, (row0 + 8) * LDK + kc * 16 + 2 * t + 8);
    }

    float acc[D / 8][4];
#pragma unroll
    for (int n = 0; n < D / 8; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
    // Rows g and g + 8 of the warp: running max (base-2 logits) and this lane's part of the running sum.
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
    const int qi[2] = {q0 + row0, q0 + row0 + 8};
    const int visible[2] = {causal ? min(offset + qi[0] + 1, tk) : tk, causal ? min(offset + qi[1] + 1, tk) : tk};
    const float scale_log2 = scale * 1.4426950408889634f;
    const int last = min(q0 + FLASH_Q, tq) - 1;
    const int key_end = causal ? min(offset + last + 1, tk) : tk;

    for (int k0 = 0; k0 < key_end; k0 += FLASH_K) {
        __syncthreads();  // every warp is done with the previous tile (or with Q)
        // K rows as they are; V transposed (lanes take consecutive keys, so a warp's 16-bit stores fill whole
        // words of one V^T row). Keys past key_end are zeros (and masked below).
        for (int idx = threadIdx.x; idx < FLASH_K * CHUNKS; idx += blockDim.x) {
            const int r = idx / CHUNKS, c = (idx % CHUNKS) * 8, key = k0 + r;
            uint4 piece = {0u, 0u, 0u, 0u};
            if (key < key_end) piece = *reinterpret_cast<const uint4*>(k + (keys.row(bi, key) * hkv + kh) * D + c);
            *reinterpret_cast<uint4*>(ks + r * LDK + c) = piece;
        }
        for (int idx = threadIdx.x; idx < FLASH_K * CHUNKS; idx += blockDim.x) {
            const int r = idx % FLASH_K, c = (idx / FLASH_K) * 8, key = k0 + r;
            uint4 piece = {0u, 0u, 0u, 0u};
            if (key < key_end) piece = *reinterpret_cast<const uint4*>(v + (keys.row(bi, key) * hkv + kh) * D + c);
            const __nv_bfloat16* e = reinterpret_cast<const __nv_bfloat16*>(&piece);
#pragma unroll
            for (int j = 0; j < 8; ++j) vt[(c + j) * LDV + r] = e[j];
        }
        __syncthreads();

        // S = Q K^T: n8 tile nt covers keys k0 + 8 nt .. + 7; B[kk][n] = K[k0 + 8 nt + n][16 kc + kk].
        float s[FLASH_K / 8][4];
#pragma unroll
        for (int nt = 0; nt < FLASH_K / 8; ++nt) {
            s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
            const int krow = (nt * 8 + g) * LDK;
#pragma unroll
            for (int kc = 0; kc < D / 16; ++kc) {
                const unsigned b[2] = {shared_pair(ks, krow + kc * 16 + 2 * t),
                                       shared_pair(ks, krow + kc * 16 + 2 * t + 8)};
                mma_m16n8k16_bf16(s[nt], qa[kc], b);
            }
        }

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

        // O += P V: k16 step kc takes P's n8 tiles 2 kc and 2 kc + 1 as its A fragment; B[kk][n] =
        // V[k0 + 16 kc + kk][8 dn + n] = V^T[8 dn + n][16 kc + kk].
#pragma unroll
        for (int kc = 0; kc < FLASH_K / 16; ++kc) {
            const unsigned pa[4] = {pack_bf16x2(s[2 * kc][0], s[2 * kc][1]), pack_bf16x2(s[2 * kc][2], s[2 * kc][3]),
                                    pack_bf16x2(s[2 * kc + 1][0], s[2 * kc + 1][1]),
                                    pack_bf16x2(s[2 * kc + 1][2], s[2 * kc + 1][3])};
#pragma unroll
            for (int dn = 0; dn < D / 8; ++dn) {
                const int vrow = (dn * 8 + g) * LDV + kc * 16 + 2 * t;
                const unsigned b[2] = {shared_pair(vt, vrow), shared_pair(vt, vrow + 8)};
                mma_m16n8k16_bf16(acc[dn], pa, b);
            }
        }
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
    extern "C" __global__ void __launch_bounds__(FLASH_WARPS * 32)                                                \
        attention_flash_d##D(const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v,              \
                             __nv_bfloat16* o, int b, int tq, int tk, int hq, int hkv, int, int causal,         \
                             int offset, float scale) {                                                                        \
        attention_flash<D>(q, k, v, o, b, tq, tk, hq, hkv, causal, offset, scale, ContiguousKeys{tk});            \
    }                                                                                                              \
    extern "C" __global__ void __launch_bounds__(FLASH_WARPS * 32)                                                \
        paged_attention_flash_d##D(const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v,        \
                                   const int* table, __nv_bfloat16* o, int t, int hq, int hkv, int, int offset,   \
                                   int block_size, float scale) {                                                  \
        attention_flash<D>(q, k, v, o, 1, t, offset + t, hq, hkv, 1, offset, scale,                                \
                           PagedKeys{table, block_size});                                                          \
    }

FLASH_ATTENTION(64)
FLASH_ATTENTION(128)
