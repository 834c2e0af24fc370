// Scaled dot-product attention, one warp per (batch, query, head), online softmax in f32, GQA (query head h reads
// KV head h / (hq / hkv)), bidirectional or causal with a query offset. head_dim <= 256 (8 values per lane).
// q[b, tq, hq, d], k/v[b, tk, hkv, d], o like q. A correct reference kernel; the tiled Hopper kernel replaces it.

// Keys and values stored in order: position `key` of batch `bi` is row bi * tk + key of k/v [b, tk, hkv, d].
struct ContiguousKeys {
    int tk;
    __device__ size_t row(int bi, int key) const { return (size_t)bi * tk + key; }
};

// Keys and values of one sequence in a paged cache [slots, hkv, d]: position `key` is at slot
// table[key / block_size] * block_size + key % block_size.
struct PagedKeys {
    const int* table;
    int block_size;
    __device__ size_t row(int, int key) const {
        return (size_t)table[key / block_size] * block_size + key % block_size;
    }
};

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
    const int visible = causal ? min(offset + i + 1, tk) : tk;
    const T* qrow = q + (((size_t)bi * tq + i) * hq + h) * d;
    float qv[8], acc[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) {
        const int c = lane + 32 * j;
        qv[j] = c < d ? to_f32(qrow[c]) : 0.0f;
        acc[j] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    for (int key = 0; key < visible; ++key) {
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
    T* orow = o + (((size_t)bi * tq + i) * hq + h) * d;
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
        const int c = lane + 32 * j;
        if (c < d) orow[c] = from_f32<T>(acc[j] * inv);
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
