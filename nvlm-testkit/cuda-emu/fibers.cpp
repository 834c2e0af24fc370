// The block scheduler behind fibers.h. Each fiber runs until it waits at a barrier, waits for a condition (an
// mbarrier phase) or finishes; a barrier opens when every live thread of its scope (block, or warp for exchanges)
// waits at it, a condition when it holds. Threads that have returned no longer count, as on the GPU.

#include "fibers.h"

#include <sys/mman.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#if !defined(__x86_64__)
#error "the CUDA emulator's fibers are written for x86-64"
#endif

extern "C" void emu_switch_context(void** save_sp, void* load_sp);
asm(R"(
    .text
    .globl emu_switch_context
    .type emu_switch_context,@function
emu_switch_context:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size emu_switch_context, .-emu_switch_context
)");

namespace emu {
namespace {

constexpr std::size_t kStackBytes = 256 * 1024;
constexpr std::size_t kGuardBytes = 4096;

enum class State { Runnable, AtBlockBarrier, AtWarpBarrier, Waiting, Done };

struct Fiber {
    void* sp = nullptr;
    char* stack = nullptr;  // lowest usable byte; a guard page lies below it
    State state = State::Runnable;
    EmuDim3 thread_idx{};
    unsigned long long offered = 0;
    int source = 0;
    // A warp gather's offer (`source` is kGather then).
    unsigned char record[32] = {};
    unsigned record_bytes = 0;
    // What a Waiting fiber waits for.
    bool (*ready)(const void*) = nullptr;
    const void* ready_arg = nullptr;
};

constexpr int kGather = -1000;

struct Block {
    std::vector<Fiber> fibers;
    std::size_t count = 0;
    Fiber* current = nullptr;
    void* scheduler_sp = nullptr;
    void (*entry)(void**) = nullptr;
    void** params = nullptr;
    EmuDim3 grid_dim{}, block_dim{}, block_idx{};
    EmuDim3 thread_idx{};
    // Results of the last warp exchange, per thread, read when the thread resumes.
    std::vector<unsigned long long> received;
    // Results of the last warp gather, 32 x 32 bytes per warp, read when the lanes resume.
    std::vector<unsigned char> gathered;
    // Dynamic shared memory: `dynamic_bytes` from the 1024-byte aligned `dynamic`.
    std::vector<unsigned char> dynamic_storage;
    unsigned char* dynamic = nullptr;
    unsigned dynamic_bytes = 0;
    unsigned long long serial = 0;
};

Block g;

void yield_to_scheduler() { emu_switch_context(&g.current->sp, g.scheduler_sp); }

void sync_block() {
    g.current->state = State::AtBlockBarrier;
    yield_to_scheduler();
}

unsigned long long warp_exchange(unsigned long long value, int source) {
    Fiber* me = g.current;
    me->offered = value;
    me->source = source;
    me->state = State::AtWarpBarrier;
    yield_to_scheduler();
    return g.received[me - g.fibers.data()];
}

void warp_gather(const void* mine, void* all, unsigned bytes) {
    Fiber* me = g.current;
    if (bytes > sizeof me->record) std::abort();  // emu_kernel.h gathers fixed small records
    std::memcpy(me->record, mine, bytes);
    me->record_bytes = bytes;
    me->source = kGather;
    me->state = State::AtWarpBarrier;
    yield_to_scheduler();
    const std::size_t warp = (std::size_t)(me - g.fibers.data()) / 32;
    std::memcpy(all, &g.gathered[warp * 32 * 32], 32 * (std::size_t)bytes);
}

void wait_until(bool (*ready)(const void*), const void* arg) {
    if (ready(arg)) return;
    Fiber* me = g.current;
    me->ready = ready;
    me->ready_arg = arg;
    me->state = State::Waiting;
    yield_to_scheduler();
}

[[noreturn]] void fiber_main() {
    g.entry(g.params);
    g.current->state = State::Done;
    yield_to_scheduler();
    std::abort();  // a finished fiber is never resumed
}

char* new_stack() {
    void* base = mmap(nullptr, kStackBytes + kGuardBytes, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED) {
        std::perror("cuda-emu: fiber stack");
        std::abort();
    }
    mprotect(base, kGuardBytes, PROT_NONE);
    return static_cast<char*>(base) + kGuardBytes;
}

void prepare(Fiber& f, std::size_t index) {
    // Stack tops staggered by 64-byte lines: at one offset in every 256 KiB stack, the threads' hot frames would
    // share one L1 set and evict each other at every switch.
    const std::size_t stagger = (index * 64) % 4096;
    auto top = reinterpret_cast<std::uintptr_t>(f.stack + kStackBytes - stagger) & ~std::uintptr_t(15);
    auto* slot = reinterpret_cast<void**>(top);
    *--slot = nullptr;                                   // fiber_main's (never used) return address
    *--slot = reinterpret_cast<void*>(&fiber_main);      // where emu_switch_context's ret goes
    for (int i = 0; i < 6; ++i) *--slot = nullptr;       // rbp rbx r12 r13 r14 r15
    f.sp = slot;
    f.state = State::Runnable;
}

void resume(Fiber& f) {
    g.current = &f;
    g.thread_idx = f.thread_idx;
    emu_switch_context(&g.scheduler_sp, f.sp);
    g.current = nullptr;
}

// Completes the exchange of warp [w0, w1) when every live lane waits at it: each lane receives its source lane's
// value (its own when the source is outside the warp or has returned). Returns whether it did.
bool exchange_if_ready(std::size_t w0, std::size_t w1) {
    bool any = false;
    for (std::size_t i = w0; i < w1; ++i) {
        const State s = g.fibers[i].state;
        if (s == State::Done) continue;
        if (s != State::AtWarpBarrier) return false;
        any = true;
    }
    if (!any) return false;
    for (std::size_t i = w0; i < w1; ++i) {
        Fiber& f = g.fibers[i];
        if (f.state != State::AtWarpBarrier) continue;
        if (f.source == kGather) {
            // Snapshot every lane's offer (lanes resume one by one and may offer again before the others read).
            const unsigned bytes = f.record_bytes;
            unsigned char* out = &g.gathered[(w0 / 32) * 32 * 32];
            std::memset(out, 0, 32 * 32);
            for (std::size_t j = w0; j < w1; ++j)
                if (g.fibers[j].state == State::AtWarpBarrier && g.fibers[j].source == kGather)
                    std::memcpy(out + (j - w0) * bytes, g.fibers[j].record, bytes);
            break;
        }
    }
    for (std::size_t i = w0; i < w1; ++i) {
        Fiber& f = g.fibers[i];
        if (f.state != State::AtWarpBarrier || f.source == kGather) continue;
        const std::size_t src = w0 + (std::size_t)f.source;
        const bool valid = f.source >= 0 && f.source < 32 && src < w1 && g.fibers[src].state == State::AtWarpBarrier;
        g.received[i] = valid ? g.fibers[src].offered : f.offered;
    }
    for (std::size_t i = w0; i < w1; ++i)
        if (g.fibers[i].state == State::AtWarpBarrier) g.fibers[i].state = State::Runnable;
    return true;
}

// Runs warp [w0, w1) until each of its live lanes waits at __syncthreads or has returned, completing its warp
// exchanges as they fill. Returns false when the lanes are stuck (some at an exchange, others at __syncthreads).
// $NVLM_CUDA_EMU_ORDER=reverse runs warps, and lanes within a warp, last first. A kernel that reads shared memory
// another thread writes without a barrier between them gets one answer in one order and another in the other:
// the tests run in both.
bool reverse_order() {
    static const bool reverse = [] {
        const char* v = getenv("NVLM_CUDA_EMU_ORDER");
        return v && std::string(v) == "reverse";
    }();
    return reverse;
}

// Runs warp [w0, w1) until each of its live lanes waits at __syncthreads, waits for a condition that does not hold
// yet, or has returned, completing its warp exchanges as they fill; `progress` is set when a lane ran. Returns false
// when the lanes are stuck for good (some at an exchange, the others at __syncthreads or returned).
bool run_warp(std::size_t w0, std::size_t w1, bool& progress) {
    const bool reverse = reverse_order();
    for (;;) {
        bool ran = false;
        for (std::size_t j = w0; j < w1; ++j) {
            const std::size_t i = reverse ? w0 + w1 - 1 - j : j;
            Fiber& f = g.fibers[i];
            if (f.state == State::Waiting && f.ready(f.ready_arg)) f.state = State::Runnable;
            if (f.state != State::Runnable) continue;
            resume(f);  // until its next exchange, wait, __syncthreads or return
            ran = true;
            progress = true;
        }
        if (exchange_if_ready(w0, w1)) continue;
        if (!ran) {
            bool exchanging = false, waiting = false;
            for (std::size_t i = w0; i < w1; ++i) {
                exchanging = exchanging || g.fibers[i].state == State::AtWarpBarrier;
                waiting = waiting || g.fibers[i].state == State::Waiting;
            }
            return !exchanging || waiting;
        }
    }
}

bool open_block_barrier() {
    bool any = false;
    for (std::size_t i = 0; i < g.count; ++i) {
        const State s = g.fibers[i].state;
        if (s == State::Done) continue;
        if (s != State::AtBlockBarrier) return false;
        any = true;
    }
    if (!any) return false;
    for (std::size_t i = 0; i < g.count; ++i)
        if (g.fibers[i].state == State::AtBlockBarrier) g.fibers[i].state = State::Runnable;
    return true;
}

EmuApi g_api = {&g.thread_idx,  &g.block_idx,     &g.block_dim,      &g.grid_dim,    &sync_block,
                &warp_exchange, &warp_gather,     &wait_until,       &g.dynamic,     &g.dynamic_bytes,
                &g.serial};

}  // namespace

const EmuApi* kernel_api() { return &g_api; }

std::string run_block(void (*entry)(void**), void** params, EmuDim3 grid_dim, EmuDim3 block_dim, EmuDim3 block_idx,
                      unsigned dynamic_smem_bytes) {
    const std::size_t n = (std::size_t)block_dim.x * block_dim.y * block_dim.z;
    if (n == 0 || n > 1024) return "block of " + std::to_string(n) + " threads (1..1024 allowed)";
    ++g.serial;
    g.dynamic_bytes = dynamic_smem_bytes;
    g.dynamic = nullptr;
    if (dynamic_smem_bytes > 0) {
        g.dynamic_storage.resize((std::size_t)dynamic_smem_bytes + 1024);
        auto at = reinterpret_cast<std::uintptr_t>(g.dynamic_storage.data());
        g.dynamic = g.dynamic_storage.data() + ((1024 - at % 1024) % 1024);
        std::memset(g.dynamic, 0x7f, dynamic_smem_bytes);  // not zeros: a kernel reading what nobody wrote shows it
    }
    while (g.fibers.size() < n) {
        g.fibers.emplace_back();
        g.fibers.back().stack = new_stack();
    }
    g.received.assign(n, 0);
    g.gathered.assign(((n + 31) / 32) * 32 * 32, 0);
    g.count = n;
    g.entry = entry;
    g.params = params;
    g.grid_dim = grid_dim;
    g.block_dim = block_dim;
    g.block_idx = block_idx;
    for (std::size_t i = 0; i < n; ++i) {
        Fiber& f = g.fibers[i];
        prepare(f, i);
        f.thread_idx = EmuDim3{(unsigned)(i % block_dim.x), (unsigned)((i / block_dim.x) % block_dim.y),
                               (unsigned)(i / ((std::size_t)block_dim.x * block_dim.y))};
    }
    // Warp by warp up to the next __syncthreads (or wait), then open it; until every thread has returned.
    for (;;) {
        const std::size_t warps = (n + 31) / 32;
        bool progress = false;
        for (std::size_t wi = 0; wi < warps; ++wi) {
            const std::size_t w0 = 32 * (reverse_order() ? warps - 1 - wi : wi);
            if (!run_warp(w0, std::min(n, w0 + 32), progress)) {
                return "deadlock: in warp " + std::to_string(w0 / 32) +
                       ", some threads wait at a warp shuffle while others wait at __syncthreads or have returned";
            }
        }
        bool done = true;
        for (std::size_t i = 0; i < n; ++i) done = done && g.fibers[i].state == State::Done;
        if (done) return {};
        if (open_block_barrier()) continue;
        if (!progress) {
            bool waiting = false;
            for (std::size_t i = 0; i < n; ++i) waiting = waiting || g.fibers[i].state == State::Waiting;
            return waiting ? "deadlock: threads wait for an mbarrier phase that no thread can complete"
                           : "deadlock: a barrier that no thread can pass";
        }
    }
}

}  // namespace emu
