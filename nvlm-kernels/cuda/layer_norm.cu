// LayerNorm (mean/variance and affine in f32, one rounding) and the fused residual-add + RMSNorm. One block per row.

template <typename T>
__device__ void layer_norm_row(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ b,
                               T* __restrict__ y, int width, float eps) {
    const T* xr = x + (size_t)blockIdx.x * width;
    T* yr = y + (size_t)blockIdx.x * width;
    float sum = 0.0f;
    for (int i = threadIdx.x; i < width; i += blockDim.x) sum += to_f32(xr[i]);
    const float mean = block_sum(sum) / (float)width;
    float sq = 0.0f;
    for (int i = threadIdx.x; i < width; i += blockDim.x) {
        const float d = to_f32(xr[i]) - mean;
        sq += d * d;
    }
    const float inv = rsqrtf(block_sum(sq) / (float)width + eps);
    for (int i = threadIdx.x; i < width; i += blockDim.x)
        yr[i] = from_f32<T>((to_f32(xr[i]) - mean) * inv * to_f32(w[i]) + to_f32(b[i]));
}

// sum = x + residual (rounded to T), y = w * T(sum * rsqrt(mean(sum^2) + eps)).
template <typename T>
__device__ void add_rms_norm_row(const T* __restrict__ x, const T* __restrict__ r, const T* __restrict__ w,
                                 T* __restrict__ y, T* __restrict__ sum_out, int width, float eps) {
    const size_t row = (size_t)blockIdx.x * width;
    float sq = 0.0f;
    for (int i = threadIdx.x; i < width; i += blockDim.x) {
        const T s = from_f32<T>(to_f32(x[row + i]) + to_f32(r[row + i]));
        sum_out[row + i] = s;
        const float v = to_f32(s);
        sq += v * v;
    }
    const float inv = rsqrtf(block_sum(sq) / (float)width + eps);
    for (int i = threadIdx.x; i < width; i += blockDim.x) {
        const float normed = to_f32(from_f32<T>(to_f32(sum_out[row + i]) * inv));
        y[row + i] = from_f32<T>(normed * to_f32(w[i]));
    }
}

extern "C" __global__ void layer_norm_f32(const float* x, const float* w, const float* b, float* y, int width, float eps) {
    layer_norm_row(x, w, b, y, width, eps);
}
extern "C" __global__ void layer_norm_bf16(const __nv_bfloat16* x, const __nv_bfloat16* w, const __nv_bfloat16* b,
                                           __nv_bfloat16* y, int width, float eps) {
    layer_norm_row(x, w, b, y, width, eps);
}
extern "C" __global__ void add_rms_norm_f32(const float* x, const float* r, const float* w, float* y, float* s, int width,
                                            float eps) {
    add_rms_norm_row(x, r, w, y, s, width, eps);
}
extern "C" __global__ void add_rms_norm_bf16(const __nv_bfloat16* x, const __nv_bfloat16* r, const __nv_bfloat16* w,
                                             __nv_bfloat16* y, __nv_bfloat16* s, int width, float eps) {
    add_rms_norm_row(x, r, w, y, s, width, eps);
}
