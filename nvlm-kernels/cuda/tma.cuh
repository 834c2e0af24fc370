// Hopper's asynchronous copies for warp-specialised kernels (sm_90a): mbarriers (arrivals plus transaction bytes,
// completing in phases), TMA tensor loads (`cp.async.bulk.tensor`) that complete on an mbarrier, and the block's
// dynamic shared memory. Each function calls the CUDA emulator's model under NVLM_CUDA_EMU
// (nvlm-testkit/cuda-emu/emu_hopper.h).

// A CUtensorMap (cuTensorMapEncodeTiled's 128 opaque bytes), passed by value as a `const __grid_constant__`
// kernel parameter so that TMA can read it where it lies.
struct __align__(64) TensorMap {
    unsigned long long opaque[16];
};

#ifndef NVLM_CUDA_EMU
extern __shared__ __align__(1024) unsigned char nvlm_dynamic_smem[];
#endif

// The block's dynamic shared memory rounded up to 1024 bytes (the 128-byte swizzle's atom; launches ask for 1024
// bytes more than they use), after checking that the launch gave at least `needed` bytes from there.
__device__ __forceinline__ unsigned char* dynamic_smem_1024(unsigned needed) {
#ifdef NVLM_CUDA_EMU
    unsigned char* base = __emu_dynamic_smem();
    const unsigned size = *__emu.dynamic_smem_bytes;
#else
    unsigned char* base = nvlm_dynamic_smem;
    unsigned size;
    asm volatile("mov.u32 %0, %%dynamic_smem_size;\n" : "=r"(size));
#endif
    const unsigned skip = (1024u - (unsigned)((unsigned long long)base % 1024u)) % 1024u;
    if (size < skip + needed) {
#ifdef NVLM_CUDA_EMU
        std::fprintf(stderr, "cuda-emu: kernel launched with %u bytes of dynamic shared memory, needs %u\n", size,
                     skip + needed);
        std::abort();
#else
        __trap();
#endif
    }
    return base + skip;
}

// setmaxnreg: every thread of the calling warpgroup gives up registers down to / asks for registers up to REGS
// (a multiple of 8 in 24 .. 256), so that a warp-specialised kernel's producers lend theirs to its consumers.
template <int REGS>
__device__ __forceinline__ void registers_decrease() {
#ifndef NVLM_CUDA_EMU
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(REGS));
#endif
}
template <int REGS>
__device__ __forceinline__ void registers_increase() {
#ifndef NVLM_CUDA_EMU
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(REGS));
#endif
}

__device__ __forceinline__ unsigned smem_address(const void* p) {
#ifdef NVLM_CUDA_EMU
    (void)p;
    return 0;
#else
    return (unsigned)__cvta_generic_to_shared(p);
#endif
}

// Sets up an mbarrier for `count` arrivals a phase (one thread, before the block's first barrier).
__device__ __forceinline__ void mbarrier_init(unsigned long long* bar, unsigned count) {
#ifdef NVLM_CUDA_EMU
    __emu_mbarrier_init(bar, (int)count);
#else
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_address(bar)), "r"(count) : "memory");
#endif
}

// Makes this thread's mbarrier initialisations visible to the other threads and to TMA; the __syncthreads after it
// publishes them.
__device__ __forceinline__ void mbarrier_init_fence() {
#ifndef NVLM_CUDA_EMU
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#endif
}

// One arrival on `bar`.
__device__ __forceinline__ void mbarrier_arrive(unsigned long long* bar) {
#ifdef NVLM_CUDA_EMU
    __emu_mbarrier_arrive(bar);
#else
    asm volatile("{\n.reg .b64 state;\nmbarrier.arrive.shared::cta.b64 state, [%0];\n}\n" ::"r"(smem_address(bar))
                 : "memory");
#endif
}

// One arrival on `bar` that also tells it to expect `bytes` more transaction bytes this phase (the TMA loads that
// will complete on it).
__device__ __forceinline__ void mbarrier_arrive_expect_tx(unsigned long long* bar, unsigned bytes) {
#ifdef NVLM_CUDA_EMU
    __emu_mbarrier_arrive_expect_tx(bar, bytes);
#else
    asm volatile("{\n.reg .b64 state;\nmbarrier.arrive.expect_tx.shared::cta.b64 state, [%0], %1;\n}\n" ::"r"(
                     smem_address(bar)),
                 "r"(bytes)
                 : "memory");
#endif
}

// A wait on an mbarrier longer than about two seconds (2^31 ns; the GPU's global timer read in units of 2^20 ns) is
// a bug: every wait in these kernels is for work of the same block, microseconds away. The kernel then traps, so a
// launch fails in seconds instead of hanging its process.
#define MBARRIER_TIMEOUT_UNITS 2048u

__device__ __forceinline__ unsigned timer_units() {
#ifdef NVLM_CUDA_EMU
    return 0;
#else
    unsigned long long ns;
    asm volatile("mov.u64 %0, %%globaltimer;\n" : "=l"(ns));
    return (unsigned)(ns >> 20);
#endif
}

// Waits until the phase of `bar` with parity `parity` has completed (a fresh barrier is in phase 0; waiting for
// parity 1 on it returns at once, which is how a producer's first pass through an empty ring goes).
__device__ __forceinline__ void mbarrier_wait(unsigned long long* bar, unsigned parity) {
#ifdef NVLM_CUDA_EMU
    __emu_mbarrier_wait(bar, parity);  // the emulator reports a wait no thread can end as a deadlock
#else
    const unsigned at = smem_address(bar);
    unsigned done = 0, started = 0;
    for (unsigned tries = 0;; ++tries) {
        asm volatile(
            "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
            : "=r"(done)
            : "r"(at), "r"(parity)
            : "memory");
        if (done) break;
        if (tries == 0) started = timer_units();
        else if (timer_units() - started > MBARRIER_TIMEOUT_UNITS) __trap();
    }
#endif
}

// TMA: the box of the 3-D tensor `map` at coordinates c0 (innermost) .. c2 into shared memory at `dst` (laid out
// and swizzled as the map says, zeros outside the tensor), its bytes completing on `bar`. Issued by one thread.
__device__ __forceinline__ void tma_load_3d(void* dst, const TensorMap* map, unsigned long long* bar, int c0, int c1,
                                            int c2) {
#ifdef NVLM_CUDA_EMU
    const int coords[3] = {c0, c1, c2};
    __emu_tma_load(dst, map, coords, 3, bar);
#else
    asm volatile(
        "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], "
        "[%5];\n" ::"r"(smem_address(dst)),
        "l"((unsigned long long)map), "r"(c0), "r"(c1), "r"(c2), "r"(smem_address(bar))
        : "memory");
#endif
}

// The same for a 4-D tensor, coordinates c0 (innermost) .. c3.
__device__ __forceinline__ void tma_load_4d(void* dst, const TensorMap* map, unsigned long long* bar, int c0, int c1,
                                            int c2, int c3) {
#ifdef NVLM_CUDA_EMU
    const int coords[4] = {c0, c1, c2, c3};
    __emu_tma_load(dst, map, coords, 4, bar);
#else
    asm volatile(
        "cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4, %5}], "
        "[%6];\n" ::"r"(smem_address(dst)),
        "l"((unsigned long long)map), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(smem_address(bar))
        : "memory");
#endif
}
