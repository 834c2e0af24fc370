// Hopper's warpgroup MMA (`wgmma.mma_async`, sm_90a) for the attention kernels: operands in shared memory described
// by descriptors, or A in registers; queued, committed in groups and waited for. Each function calls the CUDA
// emulator's model under NVLM_CUDA_EMU (nvlm-testkit/cuda-emu/emu_hopper.h).

// How an operand is laid out in shared memory (PTX ISA, "Shared Memory Matrix Layout").
enum SmemLayout {
    // K-major 8 x 8 core matrices of 128 contiguous bytes, no swizzle: `lbo` bytes between core matrices along K,
    // `sbo` along M / N.
    K_MAJOR_INTERLEAVE = 0,
    // K-major, 128-byte swizzle (as TMA writes it): rows of 64 elements along K, 128 bytes apart; `sbo` between
    // groups of 8 rows (1024 for a dense tile); `lbo` unused.
    K_MAJOR_SW128 = 1,
    // M/N-major (transposed), 128-byte swizzle: rows of 64 elements along M / N, 128 bytes apart along K; `sbo`
    // between groups of 8 K rows, `lbo` between 64-wide M / N panels.
    MN_MAJOR_SW128 = 2,
};

// A wgmma operand in shared memory: where it starts, its two byte offsets, its layout.
struct SmemOperand {
    const void* start;
    unsigned lbo, sbo;
    SmemLayout layout;
};

// The operand's 64-bit descriptor (PTX ISA, "Matrix Descriptor Format": bits 0-13 address >> 4, 16-29 lbo >> 4,
// 32-45 sbo >> 4, 62-63 swizzle: 0 none, 1 128-byte).
__device__ __forceinline__ unsigned long long wgmma_desc(const SmemOperand& m) {
#ifdef NVLM_CUDA_EMU
    (void)m;
    return 0;  // the emulator's model takes the operand itself
#else
    const unsigned long long at = (unsigned long long)__cvta_generic_to_shared(m.start);
    const unsigned long long swizzle = m.layout == K_MAJOR_INTERLEAVE ? 0ull : 1ull;
    return ((at & 0x3FFFFull) >> 4) | ((unsigned long long)(m.lbo >> 4) << 16) |
           ((unsigned long long)(m.sbo >> 4) << 32) | (swizzle << 62);
#endif
}

#ifdef NVLM_CUDA_EMU
__device__ __forceinline__ __EmuSmemOperand emu_operand(const SmemOperand& m) {
    return __EmuSmemOperand{static_cast<const unsigned char*>(m.start), m.lbo, m.sbo, (int)m.layout};
}
// The transpose flag an instruction is issued with must match the operand's layout.
__device__ __forceinline__ void emu_check_transpose(const SmemOperand& m, bool transposed) {
    if (transposed != (m.layout == MN_MAJOR_SW128)) {
        std::fprintf(stderr, "cuda-emu: wgmma issued with imm-trans %d on an operand of layout %d\n", (int)transposed,
                     (int)m.layout);
        std::abort();
    }
}
#endif

// A compiler barrier on accumulator registers: wgmma writes them asynchronously, so their reads and writes must not
// move across the fence before it or the wait after it.
template <int N>
__device__ __forceinline__ void fence_registers(float* d) {
#ifndef NVLM_CUDA_EMU
#pragma unroll
    for (int i = 0; i < N; ++i) asm volatile("" : "+f"(d[i])::"memory");
#else
    (void)d;
#endif
}

// Orders this thread's shared-memory writes so far (generic proxy: stores, cp.async) before later reads by wgmma
// (async proxy). Each writer runs it before the barrier that hands the tile to the warpgroup.
__device__ __forceinline__ void fence_shared_for_async() {
#ifndef NVLM_CUDA_EMU
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

// Orders the warpgroup's register writes (zeroed or rescaled accumulators, A fragments) before the wgmma that
// follow.
__device__ __forceinline__ void wgmma_fence() {
#ifndef NVLM_CUDA_EMU
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}

#define WGMMA_D8(i) "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), \
                    "+f"(d[i + 6]), "+f"(d[i + 7])
#define WGMMA_D32 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
                  "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}"
#define WGMMA_D64 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
                  "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, " \
                  "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, " \
                  "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}"

// d[64 x N] += A[64 x 16] B[16 x N] by the warpgroup, both operands in shared memory (B transposed when TRANS_B:
// M/N-major), N 64 or 128; queued, not done: see wgmma_commit / wgmma_wait. Accumulators as in flash_common.cuh's
// header comment, d[4 n + e] for n8 tile n.
template <int N, bool TRANS_B = false>
__device__ __forceinline__ void wgmma_bf16_ss(float (&d)[N / 2], const SmemOperand& a, const SmemOperand& b) {
#ifdef NVLM_CUDA_EMU
    emu_check_transpose(a, false);
    emu_check_transpose(b, TRANS_B);
    __emu_wgmma_ss(d, emu_operand(a), emu_operand(b), N);
#else
    const unsigned long long da = wgmma_desc(a), db = wgmma_desc(b);
    if constexpr (N == 64) {
        asm volatile("wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " WGMMA_D32 ", %32, %33, 1, 1, 1, 0, %34;\n"
                     : WGMMA_D8(0), WGMMA_D8(8), WGMMA_D8(16), WGMMA_D8(24)
                     : "l"(da), "l"(db), "n"(int(TRANS_B)));
    } else {
        static_assert(N == 128, "wgmma_bf16_ss: N is 64 or 128");
        asm volatile("wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " WGMMA_D64 ", %64, %65, 1, 1, 1, 0, %66;\n"
                     : WGMMA_D8(0), WGMMA_D8(8), WGMMA_D8(16), WGMMA_D8(24), WGMMA_D8(32), WGMMA_D8(40), WGMMA_D8(48),
                       WGMMA_D8(56)
                     : "l"(da), "l"(db), "n"(int(TRANS_B)));
    }
#endif
}

// The same with A[64 x 16] in registers: each warp's 16 rows in mma.m16n8k16's A fragment layout (a[0] = rows g,
// k 2t, 2t + 1; a[1] = row g + 8; a[2], a[3] = k + 8), which is how an S accumulator tile turns into P without
// passing through shared memory.
template <int N, bool TRANS_B = false>
__device__ __forceinline__ void wgmma_bf16_rs(float (&d)[N / 2], const unsigned (&a)[4], const SmemOperand& b) {
#ifdef NVLM_CUDA_EMU
    emu_check_transpose(b, TRANS_B);
    __emu_wgmma_rs(d, a, emu_operand(b), N);
#else
    const unsigned long long db = wgmma_desc(b);
    if constexpr (N == 64) {
        asm volatile("wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " WGMMA_D32
                     ", {%32, %33, %34, %35}, %36, 1, 1, 1, %37;\n"
                     : WGMMA_D8(0), WGMMA_D8(8), WGMMA_D8(16), WGMMA_D8(24)
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "n"(int(TRANS_B)));
    } else {
        static_assert(N == 128, "wgmma_bf16_rs: N is 64 or 128");
        asm volatile("wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " WGMMA_D64
                     ", {%64, %65, %66, %67}, %68, 1, 1, 1, %69;\n"
                     : WGMMA_D8(0), WGMMA_D8(8), WGMMA_D8(16), WGMMA_D8(24), WGMMA_D8(32), WGMMA_D8(40), WGMMA_D8(48),
                       WGMMA_D8(56)
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "n"(int(TRANS_B)));
    }
#endif
}

// Closes the group of wgmma operations queued since the last commit.
__device__ __forceinline__ void wgmma_commit() {
#ifdef NVLM_CUDA_EMU
    __emu_wgmma_commit();
#else
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}

// Waits until at most PENDING of this warpgroup's committed wgmma groups are still running (groups complete in
// order).
template <int PENDING>
__device__ __forceinline__ void wgmma_wait() {
#ifdef NVLM_CUDA_EMU
    __emu_wgmma_wait(PENDING);
#else
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(PENDING) : "memory");
#endif
}

// Waits until every committed wgmma group has completed.
__device__ __forceinline__ void wgmma_wait_all() { wgmma_wait<0>(); }
