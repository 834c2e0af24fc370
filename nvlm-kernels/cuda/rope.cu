// Rotary embedding (rotate-half) of x[tokens, heads, dim] by position[t] * inv_freq[i]; cos/sin rounded to T.
// One thread per (token, head, i < dim/2).

template <typename T>
__device__ void rope_pairs(const T* __restrict__ x, const int* __restrict__ pos, const float* __restrict__ inv_freq,
                           T* __restrict__ y, int tokens, int heads, int dim) {
    const int half = dim / 2;
    const long n = (long)tokens * heads * half;
    for (long k = blockIdx.x * (long)blockDim.x + threadIdx.x; k < n; k += (long)gridDim.x * blockDim.x) {
        const int i = k % half;
        const long th = k / half;
        const int t = th / heads;
        const float angle = (float)pos[t] * inv_freq[i];
        const float c = to_f32(from_f32<T>(cosf(angle))), s = to_f32(from_f32<T>(sinf(angle)));
        const size_t base = (size_t)th * dim;
        const float a = to_f32(x[base + i]), b = to_f32(x[base + i + half]);
        y[base + i] = from_f32<T>(a * c - b * s);
        y[base + i + half] = from_f32<T>(b * c + a * s);
    }
}

// The fused attention input of Qwen2 in one pass: rows of the fused projection qkv[tokens, (heads + 2 kv_heads) * dim]
// split into q[tokens, heads, dim] and k, v[tokens, kv_heads, dim], q and k rotated as above, v copied. With `slot`
// (one per token), k and v are the paged caches [slots, kv_heads, dim] and token t's rows go to slot[t].
template <typename T>
__device__ void rope_qkv_pairs(const T* __restrict__ qkv, const int* __restrict__ pos,
                               const float* __restrict__ inv_freq, const int* __restrict__ slot, T* __restrict__ q,
                               T* __restrict__ k, T* __restrict__ v, int tokens, int heads, int kv_heads, int dim) {
    const int half = dim / 2, all = heads + 2 * kv_heads;
    const long n = (long)tokens * all * half;
    for (long e = blockIdx.x * (long)blockDim.x + threadIdx.x; e < n; e += (long)gridDim.x * blockDim.x) {
        const int i = e % half;
        const long th = e / half;
        const int h = th % all;
        const long t = th / all;
        const T* x = qkv + (size_t)th * dim;
        const size_t kv_row = slot ? (size_t)slot[t] : (size_t)t;
        if (h >= heads + kv_heads) {
            T* y = v + (kv_row * kv_heads + (h - heads - kv_heads)) * dim;
            y[i] = x[i];
            y[i + half] = x[i + half];
            continue;
        }
        T* y = h < heads ? q + ((size_t)t * heads + h) * dim : k + (kv_row * kv_heads + (h - heads)) * dim;
        const float angle = (float)pos[t] * inv_freq[i];
        const float c = to_f32(from_f32<T>(cosf(angle))), s = to_f32(from_f32<T>(sinf(angle)));
        const float a = to_f32(x[i]), b = to_f32(x[i + half]);
        y[i] = from_f32<T>(a * c - b * s);
        y[i + half] = from_f32<T>(b * c + a * s);
    }
}

extern "C" __global__ void rope_f32(const float* x, const int* pos, const float* f, float* y, int t, int h, int d) {
    rope_pairs(x, pos, f, y, t, h, d);
}
extern "C" __global__ void rope_bf16(const __nv_bfloat16* x, const int* pos, const float* f, __nv_bfloat16* y, int t,
                                    int h, int d) {
    rope_pairs(x, pos, f, y, t, h, d);
}
extern "C" __global__ void rope_qkv_f32(const float* qkv, const int* pos, const float* f, float* q, float* k, float* v,
                                        int t, int h, int kv, int d) {
    rope_qkv_pairs(qkv, pos, f, (const int*)nullptr, q, k, v, t, h, kv, d);
}
extern "C" __global__ void rope_qkv_bf16(const __nv_bfloat16* qkv, const int* pos, const float* f, __nv_bfloat16* q,
                                         __nv_bfloat16* k, __nv_bfloat16* v, int t, int h, int kv, int d) {
    rope_qkv_pairs(qkv, pos, f, (const int*)nullptr, q, k, v, t, h, kv, d);
}
extern "C" __global__ void rope_qkv_paged_f32(const float* qkv, const int* pos, const float* f, const int* slot, float* q,
                                              float* k_cache, float* v_cache, int t, int h, int kv, int d) {
    rope_qkv_pairs(qkv, pos, f, slot, q, k_cache, v_cache, t, h, kv, d);
}
extern "C" __global__ void rope_qkv_paged_bf16(const __nv_bfloat16* qkv, const int* pos, const float* f, const int* slot,
                                               __nv_bfloat16* q, __nv_bfloat16* k_cache, __nv_bfloat16* v_cache, int t,
                                               int h, int kv, int d) {
    rope_qkv_pairs(qkv, pos, f, slot, q, k_cache, v_cache, t, h, kv, d);
}
