// CUDA C++ on the host: what NVLM-D's kernels use of CUDA's device language, for compiling them with g++ and running
// them block by block under the emulated driver (each thread of a block a fiber; barriers and warp shuffles are
// scheduling points). Included first into every kernel module by the emulated NVRTC. Not a general CUDA emulator:
// what a kernel needs beyond this fails to compile, which is the point.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
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
// The byte size of each of a kernel's parameters, in order (for a launch recorded into a graph); returns the count.
template <typename... A>
static int __emu_param_sizes(void (*)(A...), unsigned* sizes) {
    int i = 0;
    ((sizes[i++] = (unsigned)sizeof(A)), ...);
    (void)sizes;
    return i;
}
static void __emu_check_copies_landed();
// Calls a kernel with its parameters given as cuLaunchKernel's array of pointers.
template <typename... A>
static void __emu_invoke(void (*f)(A...), void** params) {
    __emu_call(f, params, std::index_sequence_for<A...>{});
    __emu_check_copies_landed();
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
#define __grid_constant__

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

// `ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16 {r0..r3}, [row]`: lanes 8 j .. 8 j + 7 give the addresses of the
// 8 rows (8 b16 each) of matrix j; lane l = 4 g + t receives in r[j] row g of matrix j, elements 2t and 2t + 1
// (low half first), or with .trans column g, rows 2t and 2t + 1.
static inline void __emu_ldmatrix_x4(unsigned (&r)[4], const void* row, bool trans) {
    const unsigned short* rows[32];
    __emu.warp_gather(&row, rows, sizeof row);
    const int lane = (int)(threadIdx.x & 31), g = lane >> 2, t = lane & 3;
    for (int j = 0; j < 4; ++j) {
        const unsigned short lo = trans ? rows[8 * j + 2 * t][g] : rows[8 * j + g][2 * t];
        const unsigned short hi = trans ? rows[8 * j + 2 * t + 1][g] : rows[8 * j + g][2 * t + 1];
        r[j] = (unsigned)lo | ((unsigned)hi << 16);
    }
}

// `cp.async.cg.shared.global [dst], [src], 16, (fill ? 16 : 0)` with commit_group and wait_group: each thread's
// copies are queued in groups and land only when that thread waits for their group (zeros when not `fill`), so a
// kernel that reads a tile before waiting for it (or, in the other warp order, before the barrier after the wait)
// reads stale shared memory here as it could on the GPU.
struct __EmuCopy {
    void* dst;
    const void* src;
    bool fill;
    int group;
};
static constexpr int __emu_max_copies = 64;
static __EmuCopy __emu_copies[1024][__emu_max_copies];
static int __emu_copy_count[1024];
static int __emu_copy_group[1024];
static inline int __emu_thread_rank() {
    return (int)(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z));
}
static inline void __emu_copy_async_16(void* dst, const void* src, bool fill) {
    const int me = __emu_thread_rank();
    if (__emu_copy_count[me] == __emu_max_copies) {
        std::fprintf(stderr, "cuda-emu: thread %d has more than %d cp.async copies in flight\n", me, __emu_max_copies);
        std::abort();
    }
    __emu_copies[me][__emu_copy_count[me]++] = __EmuCopy{dst, src, fill, __emu_copy_group[me]};
}
static inline void __emu_copy_commit() { ++__emu_copy_group[__emu_thread_rank()]; }
// Lands every copy of this thread except those of its `pending` most recent committed groups (and any uncommitted).
static inline void __emu_copy_wait(int pending) {
    const int me = __emu_thread_rank(), done_below = __emu_copy_group[me] - pending;
    int kept = 0;
    for (int i = 0; i < __emu_copy_count[me]; ++i) {
        const __EmuCopy c = __emu_copies[me][i];
        if (c.group < done_below) {
            if (c.fill) std::memcpy(c.dst, c.src, 16);
            else std::memset(c.dst, 0, 16);
        } else {
            __emu_copies[me][kept++] = c;
        }
    }
    __emu_copy_count[me] = kept;
}
#include "emu_hopper.h"

// A thread that returns with copies or wgmma products in flight has lost them (its registers and its block's shared
// memory are gone): a kernel bug.
static void __emu_check_copies_landed() {
    const int me = __emu_thread_rank();
    if (__emu_wgmma_count[me] != 0) {
        std::fprintf(stderr, "cuda-emu: thread %d returned with wgmma operations not waited for (wgmma.wait_group)\n",
                     me);
        std::abort();
    }
    if (__emu_copy_count[me] == 0) return;
    std::fprintf(stderr, "cuda-emu: thread %d returned with %d cp.async copies not waited for (cp.async.wait_group)\n",
                 me, __emu_copy_count[me]);
    std::abort();
}
