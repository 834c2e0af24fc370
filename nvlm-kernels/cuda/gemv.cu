// Decode-size products y[m, n] = x[m, k] . w[n, k]^T (+ bias[n]) for m <= 8: bf16 in and out, f32 accumulation.
// At decode the weight bytes are the whole cost, so each weight row is read exactly once: one warp per output
// column streams its row of w with 16-byte loads (8 bf16 a lane per step) against the m rows of x (small, served
// from L1/L2), keeps m partial sums per lane, then folds them across the warp. Needs k % 8 == 0 and 16-byte
// aligned rows (the launcher checks).
#define GEMV_WARPS 8

__device__ __forceinline__ void bf16x8_to_f32(const uint4 v, float* out) {
    const __nv_bfloat16* h = reinterpret_cast<const __nv_bfloat16*>(&v);
#pragma unroll
    for (int i = 0; i < 8; ++i) out[i] = __bfloat162float(h[i]);
}

template <int M>
__device__ void gemv_columns(const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ w,
                             const __nv_bfloat16* __restrict__ bias, __nv_bfloat16* __restrict__ y, int n, int k,
                             int has_bias) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int col = blockIdx.x * GEMV_WARPS + warp;
    if (col >= n) return;  // the whole warp
    const uint4* wrow = reinterpret_cast<const uint4*>(w + (size_t)col * k);
    const int chunks = k >> 3;
    float acc[M];
#pragma unroll
    for (int r = 0; r < M; ++r) acc[r] = 0.0f;
    for (int c = lane; c < chunks; c += 32) {
        float wf[8];
        bf16x8_to_f32(wrow[c], wf);
#pragma unroll
        for (int r = 0; r < M; ++r) {
            float xf[8];
            bf16x8_to_f32(reinterpret_cast<const uint4*>(x + (size_t)r * k)[c], xf);
#pragma unroll
            for (int i = 0; i < 8; ++i) acc[r] += wf[i] * xf[i];
        }
    }
#pragma unroll
    for (int r = 0; r < M; ++r) {
        float v = warp_sum(acc[r]);
        if (lane == 0) {
            if (has_bias) v += __bfloat162float(bias[col]);
            y[(size_t)r * n + col] = __float2bfloat16_rn(v);
        }
    }
}

#define GEMV(M)                                                                                                  \
    extern "C" __global__ void __launch_bounds__(GEMV_WARPS * 32)                                                 \
        gemv_bf16_m##M(const __nv_bfloat16* x, const __nv_bfloat16* w, const __nv_bfloat16* bias,                \
                       __nv_bfloat16* y, int n, int k, int has_bias) {                                            \
        gemv_columns<M>(x, w, bias, y, n, k, has_bias);                                                           \
    }
GEMV(1)
GEMV(2)
GEMV(3)
GEMV(4)
GEMV(5)
GEMV(6)
GEMV(7)
GEMV(8)
