// SwiGLU gate: y = silu(gate) * up, elementwise, f32 arithmetic, one rounding.

template <typename T>
__device__ void silu_mul_range(const T* __restrict__ gate, const T* __restrict__ up, T* __restrict__ y, long n) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        const float g = to_f32(gate[i]);
        y[i] = from_f32<T>(g / (1.0f + __expf(-g)) * to_f32(up[i]));
    }
}

extern "C" __global__ void silu_mul_bf16(const __nv_bfloat16* gate, const __nv_bfloat16* up, __nv_bfloat16* y,
                                         long n) {
    silu_mul_range(gate, up, y, n);
}

extern "C" __global__ void silu_mul_f32(const float* gate, const float* up, float* y, long n) {
    silu_mul_range(gate, up, y, n);
}
