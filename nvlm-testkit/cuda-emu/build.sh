#!/bin/sh
# Builds the CUDA emulator into $1 (default: target/cuda-emu of the workspace): libcuda.so, libnvrtc.so and
# libcublasLt.so (with the sonames cudarc looks for) and the device-language headers the emulated NVRTC includes.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/../../target/cuda-emu}
cxx=${CXX:-c++}
mkdir -p "$out/include"
$cxx -std=c++17 -O2 -fPIC -shared -Wall -Wextra "$here/fibers.cpp" "$here/driver.cpp" "$here/capture.cpp" -o "$out/libcuda.so"
$cxx -std=c++17 -O2 -fPIC -shared -Wall -Wextra "$here/nvrtc.cpp" -ldl -o "$out/libnvrtc.so"
$cxx -std=c++17 -O3 -fPIC -shared -Wall -Wextra "$here/cublaslt.cpp" -ldl -o "$out/libcublasLt.so"
$cxx -std=c++17 -O2 -fPIC -shared -Wall -Wextra "$here/nccl.cpp" -lpthread -ldl -o "$out/libnccl.so"
cp "$here/bf16.h" "$here/emu_api.h" "$here/emu_kernel.h" "$here/emu_hopper.h" "$out/"
cp "$here/include/cuda_bf16.h" "$out/include/"
ln -sf libcuda.so "$out/libcuda.so.1"
ln -sf libnvrtc.so "$out/libnvrtc.so.13"
ln -sf libcublasLt.so "$out/libcublasLt.so.13"
ln -sf libnccl.so "$out/libnccl.so.2"
# Kernel modules cached under $out/kernel-cache were compiled by the previous emulator: drop them when its sources
# change (the cache key is the kernel source, not the emulator's).
sources=$(cat "$here"/*.cpp "$here"/*.h "$here"/include/*.h | cksum)
if [ "$(cat "$out/.emulator-sources" 2>/dev/null)" != "$sources" ]; then
  rm -rf "$out/kernel-cache"
  echo "$sources" > "$out/.emulator-sources"
fi
