// Scaled dot-product attention with online softmax in f32 on CUDA cores, GQA (query head h reads KV head
// h / (hq / hkv)), bidirectional or causal with a query offset; q[b, tq, hq, d], k/v[b, tk, hkv, d] (or a paged
// cache), o like q.
// Two kernels: one warp per (batch, query, head) for decode (head_dim <= 256), and a tiled one for prefill
// (head_dim <= 128) that stages K/V tiles in shared memory once for 16 queries. Prefill in bf16 at head_dim 64
// or 128 takes the tensor-core kernel (flash_attention.cu). Needs attention_keys.cuh.

// One warp folds keys [key0, key1) of batch entry bi, KV head kh, into a query's running max m, sum l and
// unnormalised output acc (lane owns channels lane + 32 j; q in registers the same way): online softmax in f32.
template <typename T, typename Keys>
__device__ __forceinline__ void fold_keys(const float (&qv)[8], const T* __restrict__ k, const T* __restrict__ v,
                                          const Keys& keys, int bi, int kh, int hkv, int d, int key0, int key1,
                                          float scale, float& m, float& l, float (&acc)[8]) {
    const int lane = threadIdx.x & 31;
    for (int key = key0; key < key1; ++key) {
        const size_t row = (keys.row(bi, key) * hkv + kh) * d;
        float dot = 0.0f;
#pragma unroll
        for (int j = 0; j < 8; ++j) {
            const int c = lane + 32 * j;
            if (c < d) dot += qv[j] * to_f32(k[row + c]);
        }
        dot = warp_sum(dot) * scale;
        const float m_new = fmaxf(m, dot);
        const float correction = __expf(m - m_new);
        const float p = __expf(dot - m_new);
        l = l * correction + p;
#pragma unroll
        for (int j = 0; j < 8; ++j) {
            const int c = lane + 32 * j;
            acc[j] = acc[j] * correction + (c < d ? p * to_f32(v[row + c]) : 0.0f);
        }
        m = m_new;
    }
}

// A query row (d channels) into registers, lane owning channels lane + 32 j; the accumulator zeroed.
template <typename T>
__device__ __forceinline__ void load_query(const T* __restrict__ qrow, int d, float (&qv)[8], float (&acc)[8]) {
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
        const int c = lane + 32 * j;
        qv[j] = c < d ? to_f32(qrow[c]) : 0.0f;
        acc[j] = 0.0f;
    }
}

template <typename T, typename Keys>
__device__ void attention_warp(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                               T* __restrict__ o, int batch, int tq, int tk, int hq, int hkv, int d, int causal,
                               int offset, float scale, Keys keys) {
    const int warps_per_block = blockDim.x / 32;
    const long job = (long)blockIdx.x * warps_per_block + threadIdx.x / 32;
    const int lane = threadIdx.x & 31;
    if (job >= (long)batch * tq * hq) return;
    const int h = job % hq;
    const int i = (job / hq) % tq;
    const int bi = job / ((long)hq * tq);
    const int kh = h / (hq / hkv);
    const int visible = keys.visible(bi, i, causal, offset);
    float qv[8], acc[8];
    load_query(q + (((size_t)bi * tq + i) * hq + h) * d, d, qv, acc);
    float m = -INFINITY, l = 0.0f;
    fold_keys(qv, k, v, keys, bi, kh, hkv, d, 0, visible, scale, m, l, acc);
    T* orow = o + (((size_t)bi * tq + i) * hq + h) * d;
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
        const int c = lane + 32 * j;
        if (c < d) orow[c] = from_f32<T>(acc[j] * inv);
    }
}

// Split-K decode (flash-decoding) over the paged cache, one query row per sequence: block (row, KV head, split) of
// hq / hkv warps, one per query head of the GQA group (they read the same K/V rows, so all but the first read hit
// L1/L2); each folds keys [split * chunk, min((split + 1) * chunk, visible)) and writes its partial (m, l) and
// unnormalised output; decode_combine merges the splits. Many short key ranges in parallel instead of one warp
// walking the whole context.
template <typename T>
__device__ void decode_partial(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                               const PagedRowKeys keys, float* __restrict__ ml, float* __restrict__ partial, int hq,
                               int hkv, int d, int splits, int chunk, float scale) {
    const int split = blockIdx.x % splits;
    const int kh = (blockIdx.x / splits) % hkv;
    const int bi = blockIdx.x / (splits * hkv);
    const int group = hq / hkv, warp = threadIdx.x / 32, lane = threadIdx.x & 31;
    if (warp >= group) return;
    const int h = kh * group + warp;
    const int key0 = split * chunk, key1 = min(key0 + chunk, keys.visible(bi, 0, 1, 0));
    float qv[8], acc[8];
    load_query(q + ((size_t)bi * hq + h) * d, d, qv, acc);
    float m = -INFINITY, l = 0.0f;
    fold_keys(qv, k, v, keys, bi, kh, hkv, d, key0, key1, scale, m, l, acc);
    const size_t part = ((size_t)bi * hq + h) * splits + split;
    if (lane == 0) {
        ml[2 * part] = m;
        ml[2 * part + 1] = l;
    }
#pragma unroll
    for (int j = 0; j < 8; ++j) {
        const int c = lane + 32 * j;
        if (c < d) partial[part * d + c] = acc[j];
    }
}

// o[row, head] = sum_s partial_s e^(m_s - M) / sum_s l_s e^(m_s - M), M the largest m_s: one block per (row, head),
// threads over channels. Splits past a row's context (l = 0) add nothing.
template <typename T>
__device__ void decode_combine(const float* __restrict__ ml, const float* __restrict__ partial, T* __restrict__ o,
                               int d, int splits) {
    const size_t rh = blockIdx.x;
    float top = -INFINITY;
    for (int s = 0; s < splits; ++s) top = fmaxf(top, ml[2 * (rh * splits + s)]);
    for (int c = threadIdx.x; c < d; c += blockDim.x) {
        float sum = 0.0f, total = 0.0f;
        for (int s = 0; s < splits; ++s) {
            const size_t part = rh * splits + s;
            const float l = ml[2 * part + 1];
            if (l <= 0.0f) continue;
            const float w = __expf(ml[2 * part] - top);
            total += l * w;
            sum += partial[part * d + c] * w;
        }
        o[rh * d + c] = from_f32<T>(total > 0.0f ? sum / total : 0.0f);
    }
}

// Tiled prefill: one block of 4 warps per (batch, head, 16 consecutive queries). Each tile of 32 keys is staged
// in shared memory (K rows padded by one float, so the 32 lanes reading 32 rows hit 32 banks); lane j scores key j
// of the tile against a query, the warp folds the 32 scores into the query's running max / sum / output (lane c
// owning output channels c, c + 32, ...). Causal blocks stop at the last key their last query sees.
#define TILE_Q 16
#define TILE_K 32
#define TILE_WARPS 4
#define TILE_D 128

template <typename T, typename Keys>
__device__ void attention_tiled(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                                T* __restrict__ o, int batch, int tq, int tk, int hq, int hkv, int d, int causal,
                                int offset, float scale, Keys keys) {
    __shared__ float ks[TILE_K * (TILE_D + 1)];
    __shared__ float vs[TILE_K * TILE_D];
    __shared__ float qs[TILE_Q * TILE_D];
    const int tiles = (tq + TILE_Q - 1) / TILE_Q;
    const int q0 = (blockIdx.x % tiles) * TILE_Q;
    const int h = (blockIdx.x / tiles) % hq;
    const int bi = blockIdx.x / (tiles * hq);
    if (bi >= batch) return;
    const int kh = h / (hq / hkv);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int ldk = d + 1;
    constexpr int per_warp = TILE_Q / TILE_WARPS;
    for (int idx = threadIdx.x; idx < TILE_Q * d; idx += blockDim.x) {
        const int r = idx / d, c = idx - r * d, i = q0 + r;
        qs[idx] = i < tq ? to_f32(q[(((size_t)bi * tq + i) * hq + h) * d + c]) * scale : 0.0f;
    }
    float m[per_warp], l[per_warp], acc[per_warp][4];
#pragma unroll
    for (int j = 0; j < per_warp; ++j) {
        m[j] = -INFINITY;
        l[j] = 0.0f;
#pragma unroll
        for (int c = 0; c < 4; ++c) acc[j][c] = 0.0f;
    }
    const int last = min(q0 + TILE_Q, tq) - 1;
    const int key_end = causal ? min(offset + last + 1, tk) : tk;
    for (int k0 = 0; k0 < key_end; k0 += TILE_K) {
        __syncthreads();
        for (int idx = threadIdx.x; idx < TILE_K * d; idx += blockDim.x) {
            const int r = idx / d, c = idx - r * d, key = k0 + r;
            float kv = 0.0f, vv = 0.0f;
            if (key < key_end) {
                const size_t at = (keys.row(bi, key) * hkv + kh) * d + c;
                kv = to_f32(k[at]);
                vv = to_f32(v[at]);
            }
            ks[r * ldk + c] = kv;
            vs[r * d + c] = vv;
        }
        __syncthreads();
#pragma unroll
        for (int j = 0; j < per_warp; ++j) {
            const int r = warp * per_warp + j, i = q0 + r;
            if (i >= tq) continue;  // the same for the whole warp
            const int visible = causal ? min(offset + i + 1, tk) : tk;
            const int key = k0 + lane;
            float s = -INFINITY;
            if (key < visible) {
                float dot = 0.0f;
                for (int c = 0; c < d; ++c) dot += qs[r * d + c] * ks[lane * ldk + c];
                s = dot;
            }
            float tile_max = s;
#pragma unroll
            for (int off = 16; off > 0; off >>= 1) tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, off));
            if (tile_max == -INFINITY) continue;  // every key of this tile is masked for this query
            const float m_new = fmaxf(m[j], tile_max);
            const float p = s == -INFINITY ? 0.0f : __expf(s - m_new);
            const float correction = __expf(m[j] - m_new);
            l[j] = l[j] * correction + warp_sum(p);
#pragma unroll
            for (int c = 0; c < 4; ++c) acc[j][c] *= correction;
            for (int t = 0; t < TILE_K; ++t) {
                const float pt = __shfl_sync(0xffffffffu, p, t);
#pragma unroll
                for (int c = 0; c < 4; ++c) {
                    const int ch = lane + 32 * c;
                    if (ch < d) acc[j][c] += pt * vs[t * d + ch];
                }
            }
            m[j] = m_new;
        }
    }
#pragma unroll
    for (int j = 0; j < per_warp; ++j) {
        const int i = q0 + warp * per_warp + j;
        if (i >= tq) continue;
        T* orow = o + (((size_t)bi * tq + i) * hq + h) * d;
        const float inv = l[j] > 0.0f ? 1.0f / l[j] : 0.0f;
#pragma unroll
        for (int c = 0; c < 4; ++c) {
            const int ch = lane + 32 * c;
            if (ch < d) orow[ch] = from_f32<T>(acc[j][c] * inv);
        }
    }
}

extern "C" __global__ void attention_f32(const float* q, const float* k, const float* v, float* o, int b, int tq, int tk,
                                         int hq, int hkv, int d, int causal, int offset, float scale) {
    attention_warp(q, k, v, o, b, tq, tk, hq, hkv, d, causal, offset, scale, ContiguousKeys{tk});
}
extern "C" __global__ void attention_bf16(const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v,
                                          __nv_bfloat16* o, int b, int tq, int tk, int hq, int hkv, int d, int causal,
                                          int offset, float scale) {
    attention_warp(q, k, v, o, b, tq, tk, hq, hkv, d, causal, offset, scale, ContiguousKeys{tk});
}

// Causal attention of t queries at positions offset..offset+t of one sequence over its paged cache (decode and
// chunked prefill): q[t, hq, d], k/v caches [slots, hkv, d], the sequence's block table.
#define PAGED_ATTENTION(SUFFIX, T)                                                                                 \
    extern "C" __global__ void paged_attention_##SUFFIX(const T* q, const T* k, const T* v, const int* table, T* o, \
                                                        int t, int hq, int hkv, int d, int offset, int block_size,  \
                                                        float scale) {                                              \
        attention_warp(q, k, v, o, 1, t, offset + t, hq, hkv, d, 1, offset, scale, PagedKeys{table, block_size});   \
    }

PAGED_ATTENTION(f32, float)
PAGED_ATTENTION(bf16, __nv_bfloat16)

// Causal attention of t query rows, each of its own sequence, over the paged cache: q[t, hq, d], one warp per
// (row, head); `rows` packs i32 [slots (t) | positions (t) | table starts (t) | block ids].
#define PAGED_ATTENTION_ROWS(SUFFIX, T)                                                                            \
    extern "C" __global__ void paged_attention_rows_##SUFFIX(const T* q, const T* k, const T* v, const int* rows,   \
                                                             T* o, int t, int hq, int hkv, int d, int block_size,  \
                                                             float scale) {                                        \
        const PagedRowKeys keys{rows + 3 * t, rows + 2 * t, rows + t, block_size};                                  \
        attention_warp(q, k, v, o, t, 1, 0, hq, hkv, d, 1, 0, scale, keys);                                         \
    }

PAGED_ATTENTION_ROWS(f32, float)
PAGED_ATTENTION_ROWS(bf16, __nv_bfloat16)

// The split-K decode pair for the same rows: partials [t, hq, splits] (m, l) and [t, hq, splits, d], then the merge.
#define PAGED_DECODE_SPLIT(SUFFIX, T)                                                                              \
    extern "C" __global__ void paged_decode_partial_##SUFFIX(const T* q, const T* k, const T* v, const int* rows,   \
                                                             float* ml, float* partial, int t, int hq, int hkv,    \
                                                             int d, int block_size, int splits, int chunk,         \
                                                             float scale) {                                        \
        const PagedRowKeys keys{rows + 3 * t, rows + 2 * t, rows + t, block_size};                                  \
        decode_partial(q, k, v, keys, ml, partial, hq, hkv, d, splits, chunk, scale);                              \
    }                                                                                                              \
    extern "C" __global__ void paged_decode_combine_##SUFFIX(const float* ml, const float* partial, T* o, int d,   \
                                                             int splits) {                                         \
        decode_combine(ml, partial, o, d, splits);                                                                 \
    }

PAGED_DECODE_SPLIT(f32, float)
PAGED_DECODE_SPLIT(bf16, __nv_bfloat16)

#define TILED_ATTENTION(SUFFIX, T)                                                                                 \
    extern "C" __global__ void __launch_bounds__(TILE_WARPS * 32)                                                 \
        attention_tiled_##SUFFIX(const T* q, const T* k, const T* v, T* o, int b, int tq, int tk, int hq, int hkv, \
                                 int d, int causal, int offset, float scale) {                                     \
        attention_tiled(q, k, v, o, b, tq, tk, hq, hkv, d, causal, offset, scale, ContiguousKeys{tk});            \
    }                                                                                                              \
    extern "C" __global__ void __launch_bounds__(TILE_WARPS * 32)                                                 \
        paged_attention_tiled_##SUFFIX(const T* q, const T* k, const T* v, const int* table, T* o, int t, int hq,  \
                                       int hkv, int d, int offset, int block_size, float scale) {                  \
        attention_tiled(q, k, v, o, 1, t, offset + t, hq, hkv, d, 1, offset, scale, PagedKeys{table, block_size}); \
    }

TILED_ATTENTION(f32, float)
TILED_ATTENTION(bf16, __nv_bfloat16)
