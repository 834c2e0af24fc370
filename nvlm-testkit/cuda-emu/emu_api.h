// The contract between the emulated driver (libcuda.so) and one emulated kernel module: the driver fills this table
// when it loads a module, and the module's kernels read their thread coordinates and call the block's barriers
// through it. Shared by driver.cpp and emu_kernel.h only.
#pragma once

struct EmuDim3 {
    unsigned x, y, z;
};

struct EmuApi {
    const EmuDim3* thread_idx;
    const EmuDim3* block_idx;
    const EmuDim3* block_dim;
    const EmuDim3* grid_dim;
    // __syncthreads(): every live thread of the block arrives before any leaves.
    void (*sync_block)();
    // One warp-wide exchange: each live lane offers `value` and gets the value offered by lane `source` (its own
    // when `source` is outside the warp or has exited).
    unsigned long long (*warp_exchange)(unsigned long long value, int source);
    // One warp-wide gather: each live lane offers `bytes` (at most 32) at `mine`, and every lane receives the 32
    // lanes' offers at `all`, lane after lane (zeros for lanes that have exited). The model of warp-collective
    // instructions such as `mma.sync`.
    void (*warp_gather)(const void* mine, void* all, unsigned bytes);
    // Blocks the calling thread until `ready(arg)` holds, checked by the scheduler between other threads' runs: the
    // model of waiting for an mbarrier phase. A block whose live threads all wait for conditions that no thread can
    // change any more is a deadlock.
    void (*wait_until)(bool (*ready)(const void* arg), const void* arg);
    // The block's dynamic shared memory (cuLaunchKernel's sharedMemBytes, 1024-byte aligned, refilled with a
    // pattern for each block; null when none), and its size.
    unsigned char* const* dynamic_smem;
    const unsigned* dynamic_smem_bytes;
    // Numbers the blocks this process runs, so an mbarrier initialised by an earlier block reads as uninitialised.
    const unsigned long long* block_serial;
};

// What the emulated cuTensorMapEncodeTiled writes into a CUtensorMap's 128 opaque bytes, and its TMA model reads.
struct EmuTensorMap {
    unsigned long long magic;  // kEmuTensorMapMagic
    const unsigned char* base;
    unsigned rank, element_bytes, swizzle_bytes;  // swizzle span: 0 (none), 32, 64 or 128
    unsigned long long dims[5];
    unsigned long long strides[4];  // bytes between consecutive indices of dims 1 .. rank - 1
    unsigned box[5];
};
static_assert(sizeof(EmuTensorMap) <= 128, "a CUtensorMap holds 128 bytes");
static const unsigned long long kEmuTensorMapMagic = 0x70616d726f736e65ull;
