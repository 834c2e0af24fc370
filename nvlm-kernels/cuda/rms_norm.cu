// RMSNorm in the InternViT/Qwen2 order: f32 statistics, x * rsqrt(mean(x^2) + eps) cast to the activation type,
// then multiplied by the weight (in f32, rounded once). One block per row. The mean square may cover only the first
// `stat_channels` channels (InternViT's QK-norm over the real heads of a padded layout), or come from sums of squares
// computed elsewhere (`row_sum_squares`, all-reduced over tensor-parallel ranks).

template <typename T>
__device__ void normalise_row(const T* __restrict__ xr, const T* __restrict__ w, T* __restrict__ yr, int width,
                              float inv) {
    for (int i = threadIdx.x; i < width; i += blockDim.x) {
        const float normed = to_f32(from_f32<T>(to_f32(xr[i]) * inv));
        yr[i] = from_f32<T>(normed * to_f32(w[i]));
    }
}

template <typename T>
__device__ float row_squares(const T* __restrict__ xr, int start, int len) {
    float sum = 0.0f;
    for (int i = threadIdx.x; i < len; i += blockDim.x) {
        const float v = to_f32(xr[start + i]);
        sum += v * v;
    }
    return block_sum(sum);
}

template <typename T>
__device__ void rms_norm_row(const T* __restrict__ x, const T* __restrict__ w, T* __restrict__ y, int width,
                             int stat_channels, float eps) {
    const size_t row = (size_t)blockIdx.x * width;
    const float inv = rsqrtf(row_squares(x + row, 0, stat_channels) / (float)stat_channels + eps);
    normalise_row(x + row, w, y + row, width, inv);
}

template <typename T>
__device__ void rms_norm_given_row(const T* __restrict__ x, const T* __restrict__ w, const float* __restrict__ sums,
                                   T* __restrict__ y, int width, int count, float eps) {
    const size_t row = (size_t)blockIdx.x * width;
    normalise_row(x + row, w, y + row, width, rsqrtf(sums[blockIdx.x] / (float)count + eps));
}

template <typename T>
__device__ void row_sum_squares_row(const T* __restrict__ x, float* __restrict__ out, int width, int start, int len) {
    const float sum = row_squares(x + (size_t)blockIdx.x * width, start, len);
    if (threadIdx.x == 0) out[blockIdx.x] = sum;
}

// InternViT's attention input in one pass: a row of the fused qkv projection [q | k | v] (each `width` wide) is split
// into q, k and v, q and k RMSNormed with the mean square over their first `stat_channels` channels.
template <typename T>
__device__ void qkv_qk_norm_row(const T* __restrict__ qkv, const T* __restrict__ wq, const T* __restrict__ wk,
                                T* __restrict__ q, T* __restrict__ k, T* __restrict__ v, int width, int stat_channels,
                                float eps) {
    const T* xr = qkv + (size_t)blockIdx.x * 3 * width;
    const size_t row = (size_t)blockIdx.x * width;
    const float inv_q = rsqrtf(row_squares(xr, 0, stat_channels) / (float)stat_channels + eps);
    const float inv_k = rsqrtf(row_squares(xr, width, stat_channels) / (float)stat_channels + eps);
    normalise_row(xr, wq, q + row, width, inv_q);
    normalise_row(xr + width, wk, k + row, width, inv_k);
    for (int i = threadIdx.x; i < width; i += blockDim.x) v[row + i] = xr[2 * width + i];
}

#define RMS_NORM_KERNELS(SUFFIX, T)                                                                                \
    extern "C" __global__ void rms_norm_##SUFFIX(const T* x, const T* w, T* y, int width, int stat_channels,      \
                                                 float eps) {                                                      \
        rms_norm_row(x, w, y, width, stat_channels, eps);                                                          \
    }                                                                                                              \
    extern "C" __global__ void rms_norm_with_sum_squares_##SUFFIX(const T* x, const T* w, const float* sums, T* y, \
                                                                  int width, int count, float eps) {               \
        rms_norm_given_row(x, w, sums, y, width, count, eps);                                                      \
    }                                                                                                              \
    extern "C" __global__ void row_sum_squares_##SUFFIX(const T* x, float* out, int width, int start, int len) {  \
        row_sum_squares_row(x, out, width, start, len);                                                            \
    }                                                                                                              \
    extern "C" __global__ void qkv_qk_norm_##SUFFIX(const T* qkv, const T* wq, const T* wk, T* q, T* k, T* v,      \
                                                    int width, int stat_channels, float eps) {                     \
        qkv_qk_norm_row(qkv, wq, wk, q, k, v, width, stat_channels, eps);                                          \
    }

RMS_NORM_KERNELS(bf16, __nv_bfloat16)
RMS_NORM_KERNELS(f32, float)
