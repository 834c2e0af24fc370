// CUDA C++ on the host: what NVLM-D's kernels use of CUDA's device language, for compiling them with g++ and running
// them block by block under the emulated driver (each thread of a block a fiber; barriers and warp shuffles are
// scheduling points). Included first into every kernel module by the emulated NVRTC. Not a general CUDA emulator:
// what a kernel needs beyond this fails to compile, which is the point.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <utility>
#include <type_traits>

#include "bf16.h"
#include "emu_api.h"

// Kernel sources test this where a device instruction has no C++ spelling (inline PTX): they call the emulator's
// model of that instruction instead (below, `__emu_mma_*`).
#define NVLM_CUDA_EMU 1

static EmuApi __emu;
extern "C" void __emu_bind(const EmuApi* api) { __emu = *api; }

template <typename... A, std::size_t... I>
static void __emu_call(void (*f)(A...), void** params, std::index_sequence<I...>) {
    f(*static_cast<std::remove_reference_t<A>*>(params[I])...);
}
// Calls a kernel with its parameters given as cuLaunchKernel's array of pointers.
template <typename... A>
static void __emu_invoke(void (*f)(A...), void** params) {
    __emu_call(f, params, std::index_sequence_for<A...>{});
}

#define __global__ __attribute__((visibility("default"), used))
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __shared__ static
#define __launch_bounds__(...)
#define __noinline__ __attribute__((noinline))
#define __align__(n) __attribute__((aligned(n)))

#define threadIdx (*__emu.thread_idx)
#define blockIdx (*__emu.block_idx)
#define blockDim (*__emu.block_dim)
#define gridDim (*__emu.grid_dim)
#define warpSize 32

static inline void __syncthreads() { __emu.sync_block(); }

template <typename T>
static inline T __emu_shfl(T v, int source) {
    static_assert(sizeof(T) <= 8, "shuffle of a type wider than 8 bytes");
    unsigned long long bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    bits = __emu.warp_exchange(bits, source);
    T out;
    std::memcpy(&out, &bits, sizeof(T));
    return out;
}
template <typename T>
static inline T __shfl_xor_sync(unsigned, T v, int lane_mask, int width = 32) {
    const int lane = (int)(threadIdx.x & 31);
    return __emu_shfl(v, (lane & ~(width - 1)) | ((lane ^ lane_mask) & (width - 1)));
}
template <typename T>
static inline T __shfl_sync(unsigned, T v, int src, int width = 32) {
    const int lane = (int)(threadIdx.x & 31);
    return __emu_shfl(v, (lane & ~(width - 1)) | (src & (width - 1)));
}
template <typename T>
static inline T __shfl_down_sync(unsigned, T v, unsigned delta, int width = 32) {
    const int lane = (int)(threadIdx.x & 31);
    const int within = (lane & (width - 1)) + (int)delta;
    return __emu_shfl(v, within < width ? lane + (int)delta : lane);
}
static inline void __syncwarp(unsigned = 0xffffffffu) { (void)__emu_shfl(0, 0); }

// One OS thread runs every fiber, so read-modify-write is atomic by construction.
template <typename T>
static inline T atomicAdd(T* address, T value) {
    const T old = *address;
    *address = old + value;
    return old;
}
template <typename T>
static inline T atomicMax(T* address, T value) {
    const T old = *address;
    *address = old > value ? old : value;
    return old;
}

static inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
static inline int __float_as_int(float f) { int i; std::memcpy(&i, &f, 4); return i; }
static inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
static inline float __uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
// glibc declares __expf and __logf itself, so the device spellings are macros onto the emulator's own.
static inline float __emu_expf(float x) { return std::exp(x); }
static inline float __emu_logf(float x) { return std::log(x); }
#define __expf __emu_expf
#define __logf __emu_logf
static inline float __fdividef(float a, float b) { return a / b; }
static inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
static inline int __popc(unsigned x) { return __builtin_popcount(x); }
static inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
static inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
static inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll((unsigned long long)x); }
using std::max;
using std::min;
static inline int max(int a, int b) { return a > b ? a : b; }
static inline int min(int a, int b) { return a < b ? a : b; }
static inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
static inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
static inline long long max(long long a, long long b) { return a > b ? a : b; }
static inline long long min(long long a, long long b) { return a < b ? a : b; }

// CUDA's built-in vector types that the kernels use (16-byte loads).
struct alignas(16) uint4 {
    unsigned x, y, z, w;
};
struct alignas(16) float4 {
    float x, y, z, w;
};
struct alignas(8) uint2 {
    unsigned x, y;
};

// bf16 as CUDA stores it (bf16.h).
struct __nv_bfloat16 {
    unsigned short __x;
};
static inline float __bfloat162float(__nv_bfloat16 h) { return emu_bf16_to_float(h.__x); }
static inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16{emu_float_to_bf16(f)}; }
static inline __nv_bfloat16 __float2bfloat16(float f) { return __float2bfloat16_rn(f); }
static inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.__x; }
static inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short u) { return __nv_bfloat16{u}; }

// `mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 d, a, b, c` with d = c, warp-wide, with the PTX ISA's
// fragment layouts ("Matrix Fragments for mma.m16n8k16 with floating point type"): lane = 4 g + t holds
//   A (16 x 16, row major), 2 bf16 a register, low half first: a[0] = A[g][2t, 2t+1], a[1] = A[g+8][2t, 2t+1],
//     a[2] = A[g][2t+8, 2t+9], a[3] = A[g+8][2t+8, 2t+9];
//   B (16 x 8, k by n): b[0] = B[2t, 2t+1][g], b[1] = B[2t+8, 2t+9][g];
//   C/D (16 x 8, f32): c[0], c[1] = C[g][2t, 2t+1], c[2], c[3] = C[g+8][2t, 2t+1].
// One warp gather of every lane's fragments, then each lane sums its four outputs from the lanes holding the
// rows and columns it needs, so a kernel that puts an element in the wrong register gets a wrong product here too.
// Products are exact in f32 (8-bit significands); the sum is f32, in k order.
static inline float __emu_bf16_half(unsigned x, int high) {
    return emu_bf16_to_float((std::uint16_t)(high ? x >> 16 : x & 0xffffu));
}
static inline void __emu_mma_m16n8k16_bf16(float (&c)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
    struct Fragments {
        unsigned a[4], b[2];
    };
    const Fragments mine = {{a[0], a[1], a[2], a[3]}, {b[0], b[1]}};
    Fragments all[32];
    __emu.warp_gather(&mine, all, sizeof mine);
    // A[row][k] and B[k][n] from the lanes that hold them.
    auto a_at = [&](int row, int k) {
        const Fragments& f = all[4 * (row % 8) + (k % 8) / 2];
        return __emu_bf16_half(f.a[(row / 8) + 2 * (k / 8)], k % 2);
    };
    auto b_at = [&](int k, int n) { return __emu_bf16_half(all[4 * n + (k % 8) / 2].b[k / 8], k % 2); };
    const int lane = (int)(threadIdx.x & 31), g = lane >> 2, t = lane & 3;
    for (int i = 0; i < 4; ++i) {
        const int row = g + 8 * (i / 2), n = 2 * t + i % 2;
        float sum = c[i];
        for (int k = 0; k < 16; ++k) sum += a_at(row, k) * b_at(k, n);
        c[i] = sum;
    }
}
