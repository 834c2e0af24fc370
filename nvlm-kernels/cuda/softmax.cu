// Row softmax in f32 (max, exp, sum), one rounding; a fully masked (-inf) row gives zeros. One block per row.

__device__ __forceinline__ float block_max(float v) {
    __shared__ float partial[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    v = (threadIdx.x < (blockDim.x >> 5)) ? partial[threadIdx.x] : -INFINITY;
    if (warp == 0) {
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    }
    if (threadIdx.x == 0) partial[0] = v;
    __syncthreads();
    v = partial[0];
    __syncthreads();
    return v;
}

template <typename T> __device__ void softmax_row(const T* __restrict__ x, T* __restrict__ y, int width) {
    const T* xr = x + (size_t)blockIdx.x * width;
    T* yr = y + (size_t)blockIdx.x * width;
    float m = -INFINITY;
    for (int i = threadIdx.x; i < width; i += blockDim.x) m = fmaxf(m, to_f32(xr[i]));
    m = block_max(m);
    if (m == -INFINITY) {
        for (int i = threadIdx.x; i < width; i += blockDim.x) yr[i] = from_f32<T>(0.0f);
        return;
    }
    float s = 0.0f;
    for (int i = threadIdx.x; i < width; i += blockDim.x) s += __expf(to_f32(xr[i]) - m);
    const float inv = 1.0f / block_sum(s);
    for (int i = threadIdx.x; i < width; i += blockDim.x) yr[i] = from_f32<T>(__expf(to_f32(xr[i]) - m) * inv);
}

extern "C" __global__ void softmax_f32(const float* x, float* y, int width) { softmax_row(x, y, width); }
extern "C" __global__ void softmax_bf16(const __nv_bfloat16* x, __nv_bfloat16* y, int width) { softmax_row(x, y, width); }
