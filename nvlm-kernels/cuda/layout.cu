// Data movement on the device: strided row copies (concat, split), the last-two-dims transpose, NVLM-D's pixel
// shuffle (v2, 2x2) and the patch unfold of the ViT's patch embedding. Elements move as raw 2- or 4-byte words
// (suffix b16: bf16/f16, b32: f32/i32), so every kernel is exact.

// dst[o * dst_pitch + dst_offset + r] = src[o * src_pitch + src_offset + r] for o < rows, r < width.
template <typename T>
__device__ void copy_rows(const T* __restrict__ src, T* __restrict__ dst, long rows, long width, long src_pitch,
                          long src_offset, long dst_pitch, long dst_offset) {
    long n = rows * width;
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        long o = i / width, r = i - o * width;
        dst[o * dst_pitch + dst_offset + r] = src[o * src_pitch + src_offset + r];
    }
}

// x[batches, a, b] -> y[batches, b, a].
template <typename T>
__device__ void transpose_last2(const T* __restrict__ x, T* __restrict__ y, long batches, long a, long b) {
    long plane = a * b, n = batches * plane;
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        long nb = i / plane, rem = i - nb * plane;
        long row = rem / b, col = rem - row * b;
        y[nb * plane + col * a + row] = x[i];
    }
}

// x[T, s, s, C] -> y[T, (s/2)^2, 4C]: output token (i, j) holds blocks (2i+dr, 2j+dc) at channel block 2*dr+dc.
template <typename T>
__device__ void pixel_shuffle(const T* __restrict__ x, T* __restrict__ y, long tiles, long s, long c) {
    long h = s / 2, n = tiles * s * s * c;
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        long ch = i % c, q = i / c;
        long blk = q % 4;
        q /= 4;
        long j = q % h;
        q /= h;
        long ii = q % h, t = q / h;
        long dr = blk >> 1, dc = blk & 1;
        y[i] = x[((t * s + 2 * ii + dr) * s + 2 * j + dc) * c + ch];
    }
}

// pixels[T, C, H, W] -> y[T, (H/p)(W/p), C*p*p], each patch in (channel, row, column) order.
template <typename T>
__device__ void unfold_patches(const T* __restrict__ x, T* __restrict__ y, long tiles, long c, long h, long w,
                               long p) {
    long gw = w / p, gh = h / p, n = tiles * c * h * w;
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        long xx = i % p, q = i / p;
        long yy = q % p;
        q /= p;
        long ch = q % c;
        q /= c;
        long px = q % gw;
        q /= gw;
        long py = q % gh, t = q / gh;
        y[i] = x[((t * c + ch) * h + py * p + yy) * w + px * p + xx];
    }
}

// Paged KV-cache write: row r of rows[t, width] goes to slot table[(start + r) / bs] * bs + (start + r) % bs of
// cache[slots, width]; a slot outside the cache is skipped (the caller's table is checked on the host).
template <typename T>
__device__ void paged_write(const T* __restrict__ rows, const int* __restrict__ table, T* __restrict__ cache, long t,
                            long width, long start, long block_size, long slots) {
    long n = t * width;
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        long r = i / width, col = i - r * width, pos = start + r;
        long slot = (long)table[pos / block_size] * block_size + pos % block_size;
        if (slot >= 0 && slot < slots) cache[slot * width + col] = rows[i];
    }
}

#define LAYOUT_KERNELS(SUFFIX, T)                                                                                  \
    extern "C" __global__ void copy_rows_##SUFFIX(const T* src, T* dst, long rows, long width, long src_pitch,    \
                                                  long src_offset, long dst_pitch, long dst_offset) {             \
        copy_rows(src, dst, rows, width, src_pitch, src_offset, dst_pitch, dst_offset);                           \
    }                                                                                                              \
    extern "C" __global__ void transpose_last2_##SUFFIX(const T* x, T* y, long batches, long a, long b) {         \
        transpose_last2(x, y, batches, a, b);                                                                      \
    }                                                                                                              \
    extern "C" __global__ void pixel_shuffle_##SUFFIX(const T* x, T* y, long tiles, long s, long c) {             \
        pixel_shuffle(x, y, tiles, s, c);                                                                          \
    }                                                                                                              \
    extern "C" __global__ void unfold_patches_##SUFFIX(const T* x, T* y, long tiles, long c, long h, long w,      \
                                                       long p) {                                                   \
        unfold_patches(x, y, tiles, c, h, w, p);                                                                   \
    }                                                                                                              \
    extern "C" __global__ void paged_write_##SUFFIX(const T* rows, const int* table, T* cache, long t, long width, \
                                                    long start, long block_size, long slots) {                     \
        paged_write(rows, table, cache, t, width, start, block_size, slots);                                      \
    }

LAYOUT_KERNELS(b16, unsigned short)
LAYOUT_KERNELS(b32, unsigned int)
