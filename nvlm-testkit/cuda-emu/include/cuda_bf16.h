// The emulator's stand-in for CUDA's <cuda_bf16.h>: the kernels' one include resolves to the host definitions.
#include "../emu_kernel.h"
