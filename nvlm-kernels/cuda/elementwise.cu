// Elementwise arithmetic on the device: f32 math, one rounding to the storage type.

#define GRID_STRIDE(n) for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < (n); i += (long)gridDim.x * blockDim.x)

template <typename T> __device__ void add_range(const T* a, const T* b, T* y, long n) {
    GRID_STRIDE(n) y[i] = from_f32<T>(to_f32(a[i]) + to_f32(b[i]));
}
template <typename T> __device__ void mul_range(const T* a, const T* b, T* y, long n) {
    GRID_STRIDE(n) y[i] = from_f32<T>(to_f32(a[i]) * to_f32(b[i]));
}
template <typename T> __device__ void scale_range(const T* x, T* y, long n, float s) {
    GRID_STRIDE(n) y[i] = from_f32<T>(to_f32(x[i]) * s);
}
// y[r, c] = residual[r, c] + x[r, c] * v[c] (LayerScale and the residual in one pass); v has the activation type.
template <typename T>
__device__ void add_scaled_channels_range(const T* residual, const T* x, const T* v, T* y, long n, int width) {
    GRID_STRIDE(n) y[i] = from_f32<T>(to_f32(residual[i]) + to_f32(x[i]) * to_f32(v[i % width]));
}
// Exact GELU: 0.5 x (1 + erf(x / sqrt(2))).
template <typename T> __device__ void gelu_range(const T* x, T* y, long n) {
    GRID_STRIDE(n) {
        const float v = to_f32(x[i]);
        y[i] = from_f32<T>(0.5f * v * (1.0f + erff(v * 0.70710678118654752f)));
    }
}

#define BINARY(name, T, suffix) \
    extern "C" __global__ void name##_##suffix(const T* a, const T* b, T* y, long n) { name##_range(a, b, y, n); }
BINARY(add, float, f32)
BINARY(add, __nv_bfloat16, bf16)
BINARY(mul, float, f32)
BINARY(mul, __nv_bfloat16, bf16)

extern "C" __global__ void scale_f32(const float* x, float* y, long n, float s) { scale_range(x, y, n, s); }
extern "C" __global__ void scale_bf16(const __nv_bfloat16* x, __nv_bfloat16* y, long n, float s) { scale_range(x, y, n, s); }
extern "C" __global__ void add_scaled_channels_f32(const float* residual, const float* x, const float* v, float* y,
                                                   long n, int width) {
    add_scaled_channels_range(residual, x, v, y, n, width);
}
extern "C" __global__ void add_scaled_channels_bf16(const __nv_bfloat16* residual, const __nv_bfloat16* x,
                                                    const __nv_bfloat16* v, __nv_bfloat16* y, long n, int width) {
    add_scaled_channels_range(residual, x, v, y, n, width);
}
extern "C" __global__ void gelu_f32(const float* x, float* y, long n) { gelu_range(x, y, n); }
extern "C" __global__ void gelu_bf16(const __nv_bfloat16* x, __nv_bfloat16* y, long n) { gelu_range(x, y, n); }
