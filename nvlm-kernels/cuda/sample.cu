// Temperature / top-k / top-p sampling on the device, one block per row of logits; only the chosen id leaves it.
//
// The CPU reference sorts the row (value descending, index ascending on ties), keeps the top k, then the shortest
// prefix whose mass reaches top_p, and walks that prefix to u * (kept mass). Here every element gets a unique 64-bit
// key in that same order (ordered float bits, then the inverted index), and each of the three steps is a radix
// select over the keys: 8 passes of 8 bits, each a 256-bin histogram of either counts (top-k) or weights (top-p and
// the draw). Weights are exp((x - max) / T) in 2^-40 fixed point, summed with integer atomics, so the result does
// not depend on the order of the additions (tokens below 2^-40 of the top one are never drawn).
// The draw u = uniform(seed, step, row) is the CPU's SplitMix64 counter RNG, bit for bit.

#define SAMPLE_THREADS 1024
#define FIXED_ONE 1099511627776.0f  // 2^40

__device__ __forceinline__ unsigned long long key_of(float x, int i) {
    unsigned int bits = __float_as_uint(x);
    // Map IEEE order to unsigned order: negatives flipped entirely, positives get the sign bit set.
    bits = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
    return ((unsigned long long)bits << 32) | (unsigned int)(~(unsigned int)i);
}

__device__ __forceinline__ float uniform_draw(unsigned long long seed, unsigned long long step,
                                              unsigned long long row) {
    unsigned long long z = seed + step * 0x9E3779B97F4A7C15ull + row * 0xD1B54A32D192ED03ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)(z >> 40) * (1.0f / 16777216.0f);
}

// The weight of logit x in fixed point.
__device__ __forceinline__ unsigned long long weight_of(float x, float max, float inv_t) {
    return (unsigned long long)(__expf((x - max) * inv_t) * FIXED_ONE);
}

// The key of the element at which the running total (in descending key order, over elements with key >= floor)
// of `counts ? 1 : weight` first exceeds `target`. Every thread returns it.
template <typename T>
__device__ unsigned long long select_key(const T* __restrict__ row, int width, unsigned long long floor, bool counts,
                                         unsigned long long target, float max, float inv_t) {
    __shared__ unsigned long long hist[256];
    __shared__ unsigned long long prefix_s, target_s;
    unsigned long long prefix = 0;
    if (threadIdx.x == 0) target_s = target;
    for (int shift = 56; shift >= 0; shift -= 8) {
        for (int b = threadIdx.x; b < 256; b += blockDim.x) hist[b] = 0;
        __syncthreads();
        for (int i = threadIdx.x; i < width; i += blockDim.x) {
            const float x = to_f32(row[i]);
            const unsigned long long key = key_of(x, i);
            // Above this pass's digit the key must match the prefix chosen so far.
            if (key < floor || (shift < 56 && (key >> (shift + 8)) != prefix)) continue;
            atomicAdd(&hist[(key >> shift) & 0xff], counts ? 1ull : weight_of(x, max, inv_t));
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            unsigned long long t = target_s;
            int b = 255;
            for (; b > 0; --b) {
                if (t < hist[b]) break;
                t -= hist[b];
            }
            target_s = t;
            prefix_s = (prefix << 8) | (unsigned long long)b;
        }
        __syncthreads();
        prefix = prefix_s;
    }
    return prefix;
}

// Sum over the block of `counts ? 1 : weight` of the elements with key >= floor.
template <typename T>
__device__ unsigned long long mass_above(const T* __restrict__ row, int width, unsigned long long floor, float max,
                                         float inv_t) {
    __shared__ unsigned long long total;
    if (threadIdx.x == 0) total = 0;
    __syncthreads();
    unsigned long long mine = 0;
    for (int i = threadIdx.x; i < width; i += blockDim.x) {
        const float x = to_f32(row[i]);
        if (key_of(x, i) >= floor) mine += weight_of(x, max, inv_t);
    }
    atomicAdd(&total, mine);
    __syncthreads();
    const unsigned long long result = total;
    __syncthreads();
    return result;
}

template <typename T>
__device__ void sample_row(const T* __restrict__ logits, int* __restrict__ out, int width, float temperature,
                           int top_k, float top_p, unsigned long long seed, unsigned long long step) {
    const T* row = logits + (size_t)blockIdx.x * width;
    __shared__ float partial[32];
    float m = -INFINITY;
    for (int i = threadIdx.x; i < width; i += blockDim.x) m = fmaxf(m, to_f32(row[i]));
    for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = m;
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < (int)(blockDim.x >> 5); ++w) m = fmaxf(m, partial[w]);
        partial[0] = m;
    }
    __syncthreads();
    m = partial[0];
    const float inv_t = 1.0f / temperature;
    unsigned long long floor = 0;
    if (top_k > 0 && top_k < width) floor = select_key(row, width, 0, true, (unsigned long long)(top_k - 1), m, inv_t);
    if (top_p < 1.0f) {
        const unsigned long long total = mass_above(row, width, floor, m, inv_t);
        const double need = ceil((double)top_p * (double)total);
        const unsigned long long target = need >= 1.0 ? (unsigned long long)need - 1 : 0;
        floor = select_key(row, width, floor, false, target, m, inv_t);
    }
    const unsigned long long kept = mass_above(row, width, floor, m, inv_t);
    const float u = uniform_draw(seed, step, blockIdx.x);
    unsigned long long target = (unsigned long long)((double)u * (double)kept);
    if (target >= kept && kept > 0) target = kept - 1;
    const unsigned long long key = select_key(row, width, floor, false, target, m, inv_t);
    if (threadIdx.x == 0) out[blockIdx.x] = (int)(~(unsigned int)(key & 0xffffffffull));
}

extern "C" __global__ void __launch_bounds__(SAMPLE_THREADS)
    sample_f32(const float* x, int* out, int width, float temperature, int top_k, float top_p,
               unsigned long long seed, unsigned long long step) {
    sample_row(x, out, width, temperature, top_k, top_p, seed, step);
}
extern "C" __global__ void __launch_bounds__(SAMPLE_THREADS)
    sample_bf16(const __nv_bfloat16* x, int* out, int width, float temperature, int top_k, float top_p,
                unsigned long long seed, unsigned long long step) {
    sample_row(x, out, width, temperature, top_k, top_p, seed, step);
}

// transformers' repetition penalty on one row of logits in place: y[id] /= penalty when positive, *= penalty
// otherwise, for each distinct id of `ids` (the caller removes duplicates).
template <typename T>
__device__ void penalize_ids(const int* __restrict__ ids, T* __restrict__ y, int n, int width, float penalty) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        const int id = ids[i];
        if (id < 0 || id >= width) continue;
        const float v = to_f32(y[id]);
        y[id] = from_f32<T>(v > 0.0f ? v / penalty : v * penalty);
    }
}

extern "C" __global__ void repetition_penalty_f32(const int* ids, float* y, int n, int width, float penalty) {
    penalize_ids(ids, y, n, width, penalty);
}
extern "C" __global__ void repetition_penalty_bf16(const int* ids, __nv_bfloat16* y, int n, int width,
                                                   float penalty) {
    penalize_ids(ids, y, n, width, penalty);
}
