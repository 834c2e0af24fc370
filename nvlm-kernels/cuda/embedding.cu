// Embedding gather (ids i32) and row scatter (overwrite rows at positions). Out-of-range ids are checked on the
// host before launch.

template <typename T>
__device__ void gather_rows(const int* __restrict__ ids, const T* __restrict__ table, T* __restrict__ y, int n, int d) {
    const long total = (long)n * d;
    for (long k = blockIdx.x * (long)blockDim.x + threadIdx.x; k < total; k += (long)gridDim.x * blockDim.x)
        y[k] = table[(size_t)ids[k / d] * d + k % d];
}

template <typename T>
__device__ void scatter_rows_(const int* __restrict__ pos, const T* __restrict__ rows, T* __restrict__ y, int m, int d) {
    const long total = (long)m * d;
    for (long k = blockIdx.x * (long)blockDim.x + threadIdx.x; k < total; k += (long)gridDim.x * blockDim.x)
        y[(size_t)pos[k / d] * d + k % d] = rows[k];
}

extern "C" __global__ void embedding_f32(const int* ids, const float* t, float* y, int n, int d) { gather_rows(ids, t, y, n, d); }
extern "C" __global__ void embedding_bf16(const int* ids, const __nv_bfloat16* t, __nv_bfloat16* y, int n, int d) {
    gather_rows(ids, t, y, n, d);
}
extern "C" __global__ void scatter_rows_f32(const int* p, const float* r, float* y, int m, int d) { scatter_rows_(p, r, y, m, d); }
extern "C" __global__ void scatter_rows_bf16(const int* p, const __nv_bfloat16* r, __nv_bfloat16* y, int m, int d) {
    scatter_rows_(p, r, y, m, d);
}
