// Embedding gather (ids i32), row scatter (overwrite rows at positions), and the two fused (gather_rows: each output
// row from the table, from the extra image rows, or zeros). Indices are checked on the host before launch.

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

// y[i, :] = table[src[i], :] for src[i] >= 0, zeros for src[i] == -1, extra[-src[i] - 2, :] below: the LLM's input
// embeddings with the image rows spliced in, in one pass. Without extra rows no source is below -1 and `extra` is not
// read.
template <typename Ti, typename To>
__device__ void gather_sources(const int* __restrict__ src, const Ti* __restrict__ table, const To* __restrict__ extra,
                               To* __restrict__ y, int n, int d) {
    const long total = (long)n * d;
    for (long k = blockIdx.x * (long)blockDim.x + threadIdx.x; k < total; k += (long)gridDim.x * blockDim.x) {
        const int s = src[k / d];
        const long c = k % d;
        if (s >= 0) y[k] = from_f32<To>(to_f32(table[(size_t)s * d + c]));
        else if (s == -1) y[k] = from_f32<To>(0.0f);
        else y[k] = extra[(size_t)(-s - 2) * d + c];
    }
}

#define GATHER_ROWS(TN, TI, ON, TO)                                                                                   \
    extern "C" __global__ void gather_rows_##TN##_##ON(const int* s, const TI* t, const TO* e, TO* y, int n, int d) { \
        gather_sources(s, t, e, y, n, d);                                                                             \
    }
GATHER_ROWS(f32, float, f32, float)
GATHER_ROWS(f32, float, bf16, __nv_bfloat16)
GATHER_ROWS(bf16, __nv_bfloat16, f32, float)
GATHER_ROWS(bf16, __nv_bfloat16, bf16, __nv_bfloat16)
