// The LLM's input rows (gather_rows): each output row from the embedding table, from the extra image rows, or zeros.
// Indices are checked on the host before launch.

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
