// The emulator's models of Hopper's asynchronous instructions, as the PTX ISA documents them: warpgroup MMA
// (`wgmma.mma_async`, operands in shared memory without swizzle or with the 128-byte swizzle, or A in registers),
// mbarriers (arrivals, transaction bytes, phases), and TMA tensor loads (`cp.async.bulk.tensor`) that complete
// transaction bytes on an mbarrier. Included by emu_kernel.h; kernels call these under NVLM_CUDA_EMU where they
// would write inline PTX.
#pragma once

// ---- Shared memory as wgmma and TMA address it ----

// The 128-byte swizzle (CUTLASS's Swizzle<3, 4, 3> on byte addresses): the 16-byte chunk index within each 128-byte
// row (address bits 4-6) is XORed with the row's index within its 1024-byte atom (bits 7-9). Both TMA's writes and
// wgmma's reads go through it, so they agree only if a kernel lays tiles out as the hardware expects (atoms
// 1024-byte aligned: the emulator's dynamic shared memory is).
static inline const unsigned char* __emu_swizzle(const unsigned char* at, unsigned span) {
    if (span == 0) return at;
    const auto a = reinterpret_cast<std::uintptr_t>(at);
    const std::uintptr_t rows = span / 16 - 1;  // 128 B: 7, 64 B: 3, 32 B: 1
    return reinterpret_cast<const unsigned char*>(a ^ (((a >> 7) & rows) << 4));
}

// A wgmma operand in shared memory, as its descriptor describes it: the start address, the leading and stride
// byte offsets, and the layout.
enum __EmuSmemLayout {
    // K-major 8 x 8 core matrices of 128 contiguous bytes, no swizzle: element (mn, k) at
    // (mn / 8) sbo + (k / 8) lbo + (mn % 8) 16 + (k % 8) 2.
    EMU_K_MAJOR_INTERLEAVE = 0,
    // K-major, 128-byte swizzle: rows of 64 bf16 along K, 128 bytes apart, 8-row groups `sbo` apart (lbo unused):
    // element (mn, k) at (mn / 8) sbo + (mn % 8) 128 + 2 k, swizzled.
    EMU_K_MAJOR_SW128 = 1,
    // MN-major (transposed), 128-byte swizzle: rows of 64 bf16 along MN, 128 bytes apart along K, 8-row groups `sbo`
    // apart, 64-wide MN atoms `lbo` apart: element (mn, k) at (mn / 64) lbo + (k / 8) sbo + (k % 8) 128 +
    // (mn % 64) 2, swizzled.
    EMU_MN_MAJOR_SW128 = 2,
};
struct __EmuSmemOperand {
    const unsigned char* start;
    unsigned lbo, sbo;
    int layout;
};
static inline float __emu_operand_at(const __EmuSmemOperand& o, int mn, int k) {
    const unsigned char* at = nullptr;
    switch (o.layout) {
        case EMU_K_MAJOR_INTERLEAVE:
            at = o.start + (mn / 8) * o.sbo + (k / 8) * o.lbo + (mn % 8) * 16 + (k % 8) * 2;
            break;
        case EMU_K_MAJOR_SW128:
            at = __emu_swizzle(o.start + (mn / 8) * o.sbo + (mn % 8) * 128 + k * 2, 128);
            break;
        case EMU_MN_MAJOR_SW128:
            at = __emu_swizzle(o.start + (mn / 64) * o.lbo + (k / 8) * o.sbo + (k % 8) * 128 + (mn % 64) * 2, 128);
            break;
        default:
            std::fprintf(stderr, "cuda-emu: wgmma operand layout %d is not emulated\n", o.layout);
            std::abort();
    }
    unsigned short bits;
    std::memcpy(&bits, at, 2);
    return emu_bf16_to_float(bits);
}

// ---- Warpgroup MMA ----

// `wgmma.mma_async.sync.aligned.m64nNk16.f32.bf16.bf16` (scale-d = 1) and its commit_group / wait_group. Each
// warpgroup (4 consecutive warps) computes D[64][N] += A[64][16] B[16][N]; thread (warp w of its warpgroup, lane
// 4 g + t) holds d[4 i + 0, 1] = D[16 w + g][8 i + 2 t, + 1] and d[4 i + 2, 3] = D[16 w + g + 8][same], i < N / 8.
// A comes from shared memory (`a`) or, for the register form, from each warp's four A registers with
// mma.m16n8k16's fragment layout (rows 16 w ..), captured when the instruction is issued. B always comes from
// shared memory, read when the issuing thread waits for its group, as is the product's landing in d: reading the
// accumulators earlier, or overwriting an operand before the wait, gives a wrong answer here too.
struct __EmuWgmma {
    float* d;
    __EmuSmemOperand a, b;
    bool a_in_registers;
    float a_rows[2][16];  // the register form: A[row g (+ 8) of the warp][k]
    int n, group;
};
static constexpr int __emu_max_wgmma = 32;
static __EmuWgmma __emu_wgmma[1024][__emu_max_wgmma];
static int __emu_wgmma_count[1024];
static int __emu_wgmma_group[1024];
static inline __EmuWgmma& __emu_wgmma_slot() {
    const int me = __emu_thread_rank();
    if ((blockDim.x * blockDim.y * blockDim.z) % 128 != 0 || __emu_wgmma_count[me] == __emu_max_wgmma) {
        std::fprintf(stderr, "cuda-emu: wgmma model: whole warpgroups (128 threads), at most %d in flight\n",
                     __emu_max_wgmma);
        std::abort();
    }
    __EmuWgmma& op = __emu_wgmma[me][__emu_wgmma_count[me]++];
    op.group = __emu_wgmma_group[me];
    return op;
}
static inline void __emu_wgmma_ss(float* d, __EmuSmemOperand a, __EmuSmemOperand b, int n) {
    __EmuWgmma& op = __emu_wgmma_slot();
    op.d = d;
    op.a = a;
    op.b = b;
    op.a_in_registers = false;
    op.n = n;
}
static inline void __emu_wgmma_rs(float* d, const unsigned (&a)[4], __EmuSmemOperand b, int n) {
    struct Fragment {
        unsigned a[4];
    };
    const Fragment mine = {{a[0], a[1], a[2], a[3]}};
    Fragment all[32];
    __emu.warp_gather(&mine, all, sizeof mine);  // the warp's 16 rows of A, as mma.m16n8k16 holds them
    __EmuWgmma& op = __emu_wgmma_slot();
    const int g = (int)(threadIdx.x & 31) / 4;
    for (int r = 0; r < 2; ++r)
        for (int k = 0; k < 16; ++k) {
            const int row = g + 8 * r;
            op.a_rows[r][k] = __emu_bf16_half(all[4 * (row % 8) + (k % 8) / 2].a[row / 8 + 2 * (k / 8)], k % 2);
        }
    op.d = d;
    op.b = b;
    op.a_in_registers = true;
    op.n = n;
}
static inline void __emu_wgmma_commit() { ++__emu_wgmma_group[__emu_thread_rank()]; }
static inline void __emu_wgmma_wait(int pending) {
    const int me = __emu_thread_rank(), done_below = __emu_wgmma_group[me] - pending;
    const int warp = (me / 32) % 4, lane = me % 32, g = lane / 4, t = lane % 4;
    int kept = 0;
    for (int i = 0; i < __emu_wgmma_count[me]; ++i) {
        const __EmuWgmma op = __emu_wgmma[me][i];
        if (op.group >= done_below) {
            __emu_wgmma[me][kept++] = op;
            continue;
        }
        for (int j = 0; j < op.n / 8; ++j)
            for (int e = 0; e < 4; ++e) {
                const int r = e / 2, row = 16 * warp + g + 8 * r, col = 8 * j + 2 * t + e % 2;
                float sum = op.d[4 * j + e];
                for (int k = 0; k < 16; ++k) {
                    const float a = op.a_in_registers ? op.a_rows[r][k] : __emu_operand_at(op.a, row, k);
                    sum += a * __emu_operand_at(op.b, col, k);
                }
                op.d[4 * j + e] = sum;
            }
    }
    __emu_wgmma_count[me] = kept;
}

// ---- Dynamic shared memory ----

// The block's dynamic shared memory (`extern __shared__`): 1024-byte aligned, as much as the launch asked for.
static inline unsigned char* __emu_dynamic_smem() { return *__emu.dynamic_smem; }

// ---- mbarriers ----

// An mbarrier's state, kept beside shared memory (keyed by its address and the block that initialised it):
// arrivals still expected in the current phase, transaction bytes still expected, and the phase's parity. A phase
// completes when both reach zero; the arrivals then reset to the count given at init.
struct __EmuMbarrier {
    const void* at;
    unsigned long long block;
    int count, pending;
    long long tx;
    unsigned phase;
};
static constexpr int __emu_max_mbarriers = 64;
static __EmuMbarrier __emu_mbarriers[__emu_max_mbarriers];
static __EmuMbarrier& __emu_mbarrier(const void* at) {
    for (__EmuMbarrier& b : __emu_mbarriers)
        if (b.at == at && b.block == *__emu.block_serial) return b;
    std::fprintf(stderr, "cuda-emu: an mbarrier used before mbarrier.init in this block\n");
    std::abort();
}
static inline void __emu_mbarrier_init(void* at, int count) {
    __EmuMbarrier* slot = nullptr;
    for (__EmuMbarrier& b : __emu_mbarriers)
        if (b.at == at || b.block != *__emu.block_serial) {
            slot = &b;
            if (b.at == at) break;
        }
    if (!slot) {
        std::fprintf(stderr, "cuda-emu: more than %d mbarriers in one block\n", __emu_max_mbarriers);
        std::abort();
    }
    *slot = __EmuMbarrier{at, *__emu.block_serial, count, count, 0, 0};
}
static inline void __emu_mbarrier_complete_if_done(__EmuMbarrier& b) {
    if (b.pending == 0 && b.tx == 0) {
        b.phase ^= 1u;
        b.pending = b.count;
    }
}
static inline void __emu_mbarrier_arrive(void* at) {
    __EmuMbarrier& b = __emu_mbarrier(at);
    if (b.pending == 0) {
        std::fprintf(stderr, "cuda-emu: more arrivals on an mbarrier than its count\n");
        std::abort();
    }
    --b.pending;
    __emu_mbarrier_complete_if_done(b);
}
static inline void __emu_mbarrier_arrive_expect_tx(void* at, unsigned bytes) {
    __emu_mbarrier(at).tx += bytes;
    __emu_mbarrier_arrive(at);
}

// ---- TMA ----

// `cp.async.bulk.tensor.Nd.shared::cluster.global.mbarrier::complete_tx::bytes [dst], [map, {coords}], [bar]`: the
// box of the tensor map at `coords` (innermost first) into shared memory, box element (i0, i1, ..) at offset
// ((.. i1) box0 + i0) element_bytes from dst, through the map's swizzle, zeros where a coordinate falls outside the
// tensor; then the box's bytes complete on `bar`. The copy is queued and lands when a thread waits on `bar`, so a
// kernel that reads a tile without waiting for its barrier reads stale shared memory here.
struct __EmuTmaLoad {
    unsigned char* dst;
    EmuTensorMap map;
    long long coords[5];
    void* bar;
    unsigned long long block;
};
static constexpr int __emu_max_tma = 256;
static __EmuTmaLoad __emu_tma[__emu_max_tma];
static int __emu_tma_count;
static inline unsigned long long __emu_tma_bytes(const EmuTensorMap& m) {
    unsigned long long n = m.element_bytes;
    for (unsigned i = 0; i < m.rank; ++i) n *= m.box[i];
    return n;
}
static inline void __emu_tma_land(const __EmuTmaLoad& c) {
    const EmuTensorMap& m = c.map;
    const unsigned long long elements = __emu_tma_bytes(m) / m.element_bytes;
    for (unsigned long long e = 0; e < elements; ++e) {
        unsigned long long rest = e;
        bool inside = true;
        const unsigned char* src = m.base;
        for (unsigned i = 0; i < m.rank; ++i) {
            const long long at = c.coords[i] + (long long)(rest % m.box[i]);
            rest /= m.box[i];
            inside = inside && at >= 0 && (unsigned long long)at < m.dims[i];
            if (inside) src += (unsigned long long)at * (i == 0 ? m.element_bytes : m.strides[i - 1]);
        }
        unsigned char* to = const_cast<unsigned char*>(__emu_swizzle(c.dst + e * m.element_bytes, m.swizzle_bytes));
        if (inside) std::memcpy(to, src, m.element_bytes);
        else std::memset(to, 0, m.element_bytes);
    }
}
static inline void __emu_tma_load(void* dst, const void* map, const int* coords, int rank, void* bar) {
    EmuTensorMap m;
    std::memcpy(&m, map, sizeof m);
    const auto d = reinterpret_cast<std::uintptr_t>(dst);
    if (m.magic != kEmuTensorMapMagic || (int)m.rank != rank) {
        std::fprintf(stderr, "cuda-emu: TMA load with a tensor map that cuTensorMapEncodeTiled did not make (or of "
                             "another rank)\n");
        std::abort();
    }
    if (d % 128 != 0 || (m.swizzle_bytes == 128 && d % 1024 != 0)) {
        std::fprintf(stderr, "cuda-emu: TMA destination %p not aligned (128 bytes; 1024 with the 128-byte swizzle)\n",
                     dst);
        std::abort();
    }
    for (int i = 0; i < __emu_tma_count; ++i)
        if (__emu_tma[i].block != *__emu.block_serial) {
            std::fprintf(stderr, "cuda-emu: a TMA load of an earlier block was never waited for\n");
            std::abort();
        }
    if (__emu_tma_count == __emu_max_tma) {
        std::fprintf(stderr, "cuda-emu: more than %d TMA loads in flight\n", __emu_max_tma);
        std::abort();
    }
    (void)__emu_mbarrier(bar);  // initialised in this block
    __EmuTmaLoad& c = __emu_tma[__emu_tma_count++];
    c.dst = static_cast<unsigned char*>(dst);
    c.map = m;
    for (int i = 0; i < 5; ++i) c.coords[i] = i < rank ? coords[i] : 0;
    c.bar = bar;
    c.block = *__emu.block_serial;
}

// `mbarrier.try_wait.parity` in a loop: returns once the phase of parity `parity` has completed (the current
// phase's parity differs), landing first the TMA loads queued on the barrier.
struct __EmuPhaseWait {
    void* bar;
    unsigned parity;
};
static inline bool __emu_phase_done(const void* arg) {
    const __EmuPhaseWait& w = *static_cast<const __EmuPhaseWait*>(arg);
    __EmuMbarrier& b = __emu_mbarrier(w.bar);
    int kept = 0;
    for (int i = 0; i < __emu_tma_count; ++i) {
        if (__emu_tma[i].bar == w.bar && __emu_tma[i].block == b.block) {
            __emu_tma_land(__emu_tma[i]);
            b.tx -= (long long)__emu_tma_bytes(__emu_tma[i].map);
        } else {
            __emu_tma[kept++] = __emu_tma[i];
        }
    }
    __emu_tma_count = kept;
    __emu_mbarrier_complete_if_done(b);
    return b.phase != (w.parity & 1u);
}
static inline void __emu_mbarrier_wait(void* bar, unsigned parity) {
    const __EmuPhaseWait w{bar, parity};
    __emu.wait_until(&__emu_phase_done, &w);
}
