// SwiGLU gate from the fused gate/up projection: rows [gate | up] of 2 * width values give
// y[r, c] = silu(gate[r, c]) * up[r, c]; f32 arithmetic, one rounding.

template <typename T>
__device__ void silu_mul_range(const T* __restrict__ gate_up, T* __restrict__ y, long n, int width) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        const T* row = gate_up + (i / width) * 2 * (long)width;
        const int c = i % width;
        const float g = to_f32(row[c]);
        y[i] = from_f32<T>(g / (1.0f + __expf(-g)) * to_f32(row[width + c]));
    }
}

extern "C" __global__ void silu_mul_bf16(const __nv_bfloat16* gate_up, __nv_bfloat16* y, long n, int width) {
    silu_mul_range(gate_up, y, n, width);
}

extern "C" __global__ void silu_mul_f32(const float* gate_up, float* y, long n, int width) {
    silu_mul_range(gate_up, y, n, width);
}
