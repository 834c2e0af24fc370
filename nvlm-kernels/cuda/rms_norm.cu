// RMSNorm in the InternViT/Qwen2 order: f32 statistics, x * rsqrt(mean(x^2) + eps) cast to the activation type,
// then multiplied by the weight (in f32, rounded once). One block per row.

template <typename T>
__device__ void rms_norm_row(const T* __restrict__ x, const T* __restrict__ w, T* __restrict__ y, int width,
                             float eps) {
    const T* xr = x + (size_t)blockIdx.x * width;
    T* yr = y + (size_t)blockIdx.x * width;
    float sum = 0.0f;
    for (int i = threadIdx.x; i < width; i += blockDim.x) {
        const float v = to_f32(xr[i]);
        sum += v * v;
    }
    const float inv = rsqrtf(block_sum(sum) / (float)width + eps);
    for (int i = threadIdx.x; i < width; i += blockDim.x) {
        const float normed = to_f32(from_f32<T>(to_f32(xr[i]) * inv));
        yr[i] = from_f32<T>(normed * to_f32(w[i]));
    }
}

extern "C" __global__ void rms_norm_bf16(const __nv_bfloat16* x, const __nv_bfloat16* w, __nv_bfloat16* y,
                                         int width, float eps) {
    rms_norm_row(x, w, y, width, eps);
}

extern "C" __global__ void rms_norm_f32(const float* x, const float* w, float* y, int width, float eps) {
    rms_norm_row(x, w, y, width, eps);
}
