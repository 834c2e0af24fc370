// Argmax per row (the first index on ties), one block per row; only the id leaves the device. With `pair`, the
// row's (largest value, first_id + index) as two floats instead (a vocabulary-parallel rank's candidate).

template <typename T>
__device__ void argmax_row(const T* __restrict__ x, int* __restrict__ out, float* __restrict__ pair, int width,
                           int first_id) {
    __shared__ float best_v[32];
    __shared__ int best_i[32];
    const T* row = x + (size_t)blockIdx.x * width;
    float v = -INFINITY;
    int idx = 0x7fffffff;
    for (int i = threadIdx.x; i < width; i += blockDim.x) {
        const float x_i = to_f32(row[i]);
        if (x_i > v || (x_i == v && i < idx)) { v = x_i; idx = i; }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, v, o);
        const int oi = __shfl_xor_sync(0xffffffffu, idx, o);
        if (ov > v || (ov == v && oi < idx)) { v = ov; idx = oi; }
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) { best_v[warp] = v; best_i[warp] = idx; }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < (int)(blockDim.x >> 5); ++w)
            if (best_v[w] > v || (best_v[w] == v && best_i[w] < idx)) { v = best_v[w]; idx = best_i[w]; }
        idx = idx == 0x7fffffff ? 0 : idx;
        if (out) out[blockIdx.x] = idx;
        if (pair) {
            pair[2 * blockIdx.x] = v;
            pair[2 * blockIdx.x + 1] = (float)(first_id + idx);
        }
    }
}

extern "C" __global__ void argmax_f32(const float* x, int* out, int width) { argmax_row(x, out, nullptr, width, 0); }
extern "C" __global__ void argmax_bf16(const __nv_bfloat16* x, int* out, int width) {
    argmax_row(x, out, nullptr, width, 0);
}
extern "C" __global__ void argmax_pair_f32(const float* x, float* pair, int width, int first_id) {
    argmax_row(x, (int*)nullptr, pair, width, first_id);
}
extern "C" __global__ void argmax_pair_bf16(const __nv_bfloat16* x, float* pair, int width, int first_id) {
    argmax_row(x, (int*)nullptr, pair, width, first_id);
}
