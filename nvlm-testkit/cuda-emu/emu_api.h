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
};
