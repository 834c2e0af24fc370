// dtype conversions between f32 and bf16 (round to nearest even).

extern "C" __global__ void cast_f32_to_bf16(const float* __restrict__ x, __nv_bfloat16* __restrict__ y, long n) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
        y[i] = __float2bfloat16_rn(x[i]);
}

extern "C" __global__ void cast_bf16_to_f32(const __nv_bfloat16* __restrict__ x, float* __restrict__ y, long n) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
        y[i] = __bfloat162float(x[i]);
}
