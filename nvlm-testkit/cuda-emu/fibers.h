// Fibers for one thread block: each CUDA thread of the block runs on its own stack, all on the calling OS thread,
// switched only at barriers (block), warp exchanges and waits for a condition, so a run is deterministic. x86-64
// System V only.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "emu_api.h"

namespace emu {

/// Runs `entry(params)` once per thread of one block: threads `block_dim` (x fastest), block `block_idx`, with
/// `dynamic_smem_bytes` of dynamic shared memory. Returns an empty string, or why the block could not finish (a
/// barrier some threads never reach, a wait that never ends).
std::string run_block(void (*entry)(void**), void** params, EmuDim3 grid_dim, EmuDim3 block_dim, EmuDim3 block_idx,
                      unsigned dynamic_smem_bytes);

/// The coordinates and barrier entry points a kernel module binds to.
const EmuApi* kernel_api();

}  // namespace emu
