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

extern "C" __global__ void rope_f32(const float* x, const int* pos, const float* f, float* y, int t, int h, int d) {
    rope_pairs(x, pos, f, y, t, h, d);
}
extern "C" __global__ void rope_bf16(const __nv_bfloat16* x, const int* pos, const float* f, __nv_bfloat16* y, int t,
                                    int h, int d) {
    rope_pairs(x, pos, f, y, t, h, d);
}
