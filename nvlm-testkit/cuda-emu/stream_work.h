// Stream work for the emulated cuBLASLt and NCCL: it runs now, or, on a stream being captured into a graph, is
// recorded and runs at each launch of the graph. Both go through the emulated driver's `emu_stream_submit` (found
// at first use; without it, work runs now).
#pragma once

#include <dlfcn.h>

#include <functional>
#include <utility>

inline int emu_on_stream(void* stream, std::function<int()> work) {
    using Submit = int (*)(void*, int (*)(void*), void*, void (*)(void*));
    static const Submit submit = [] {
        void* driver = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
        if (!driver) driver = dlopen("libcuda.so", RTLD_NOW | RTLD_NOLOAD);
        return driver ? reinterpret_cast<Submit>(dlsym(driver, "emu_stream_submit")) : nullptr;
    }();
    if (!submit) return work();
    using Work = std::function<int()>;
    return submit(
        stream, [](void* w) { return (*static_cast<Work*>(w))(); }, new Work(std::move(work)),
        [](void* w) { delete static_cast<Work*>(w); });
}
