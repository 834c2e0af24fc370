// An emulated CUDA driver (libcuda.so) for machines without a GPU: one device whose memory is host memory, kernel
// modules that are host shared objects built by the emulated NVRTC, and launches that run every block's threads
// as fibers (fibers.h). Streams and events exist but every call completes before it returns, except on a stream being
// captured into a graph (capture.h). Device allocations
// end at a guard page, so a kernel that writes past its buffer stops the process with a message naming it.
// Only the entry points cudarc calls for NVLM-D are here; anything else is a missing symbol, loudly.

#include <dlfcn.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "capture.h"
#include "fibers.h"

#include "driver_types.h"

namespace {

std::mutex g_lock;  // one launch or copy at a time: the fibers' scheduler is global

struct Allocation {
    void* base;
    std::size_t mapped;
};
std::map<std::uintptr_t, Allocation> g_allocations;
std::size_t g_allocated = 0;
constexpr std::size_t kTotalMemory = std::size_t(16) << 30;

struct Module {
    void* handle;
};
struct Function {
    void (*entry)(void**);
    int (*sizes)(unsigned*);  // each parameter's byte size (to record a launch by value)
    std::string name;
    int max_dynamic_smem = 48 * 1024;  // CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
};

// Shared memory a block may have on Hopper (sm_90: 227 KiB).
constexpr int kMaxSharedPerBlock = 227 * 1024;

const char* g_running_kernel = nullptr;

// $NVLM_CUDA_EMU_PROFILE=1: launches and host seconds per kernel, printed to stderr at exit.
struct KernelTime {
    unsigned long long launches = 0;
    double seconds = 0;
};
std::map<std::string, KernelTime>* g_profile = nullptr;
struct ProfileReport {
    ~ProfileReport() {
        if (!g_profile) return;
        fprintf(stderr, "cuda-emu profile (host seconds per kernel):\n");
        for (const auto& [name, t] : *g_profile)
            fprintf(stderr, "  %-40s %8llu launches %10.3f s\n", name.c_str(), t.launches, t.seconds);
    }
} g_profile_report;
EmuDim3 g_running_block{};

void on_segv(int sig, siginfo_t* info, void*) {
    char msg[512];
    if (g_running_kernel) {
        snprintf(msg, sizeof msg,
                 "cuda-emu: kernel %s, block (%u,%u,%u): invalid memory access at %p (past the end of a device "
                 "buffer, or not device memory)\n",
                 g_running_kernel, g_running_block.x, g_running_block.y, g_running_block.z, info->si_addr);
    } else {
        snprintf(msg, sizeof msg, "cuda-emu: signal %d at %p outside any kernel\n", sig, info->si_addr);
    }
    ssize_t ignored = write(2, msg, strlen(msg));
    (void)ignored;
    _exit(134);
}

void install_handler() {
    static bool done = false;
    if (done) return;
    done = true;
    static char altstack[64 * 1024];
    stack_t ss{};
    ss.ss_sp = altstack;
    ss.ss_size = sizeof altstack;
    sigaltstack(&ss, nullptr);
    struct sigaction sa {};
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigaction(SIGSEGV, &sa, nullptr);
    sigaction(SIGBUS, &sa, nullptr);
}

CUresult alloc(CUdeviceptr* out, std::size_t bytes) {
    if (!out) return CUDA_ERROR_INVALID_VALUE;
    const std::size_t page = 4096;
    const std::size_t rounded = ((bytes ? bytes : 1) + 255) / 256 * 256;
    const std::size_t data_pages = (rounded + page - 1) / page;
    const std::size_t mapped = (data_pages + 1) * page;
    std::lock_guard<std::mutex> guard(g_lock);
    if (g_allocated + rounded > kTotalMemory) return CUDA_ERROR_OUT_OF_MEMORY;
    void* base = mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED) return CUDA_ERROR_OUT_OF_MEMORY;
    char* guard_page = static_cast<char*>(base) + data_pages * page;
    mprotect(guard_page, page, PROT_NONE);
    // The buffer ends at the guard page (256-byte aligned, as cudaMalloc's are); fresh memory is filled with a
    // pattern, not zeros, so a kernel that reads what nobody wrote shows it.
    char* ptr = guard_page - rounded;
    memset(ptr, 0x7f, rounded);
    g_allocations[reinterpret_cast<std::uintptr_t>(ptr)] = Allocation{base, mapped};
    g_allocated += rounded;
    *out = reinterpret_cast<CUdeviceptr>(ptr);
    return CUDA_SUCCESS;
}

CUresult release(CUdeviceptr ptr) {
    std::lock_guard<std::mutex> guard(g_lock);
    auto it = g_allocations.find(static_cast<std::uintptr_t>(ptr));
    if (it == g_allocations.end()) return ptr == 0 ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
    const std::uintptr_t end = reinterpret_cast<std::uintptr_t>(it->second.base) + it->second.mapped - 4096;
    g_allocated -= end - it->first;
    munmap(it->second.base, it->second.mapped);
    g_allocations.erase(it);
    return CUDA_SUCCESS;
}

}  // namespace

int emu::release_device(std::uintptr_t ptr) { return release(ptr); }

namespace {

int g_dummy_object;  // memory pools: a non-null handle, no state
int g_contexts[8];   // one primary context per device
void* handle() { return new int(0); }

}  // namespace

extern "C" {

CUresult cuInit(unsigned) {
    install_handler();
    return CUDA_SUCCESS;
}
CUresult cuDriverGetVersion(int* v) {
    *v = 13000;
    return CUDA_SUCCESS;
}
// $NVLM_CUDA_EMU_DEVICES devices (default 1, at most 8), all sharing the host's memory.
int device_count() {
    const char* v = getenv("NVLM_CUDA_EMU_DEVICES");
    const int n = v ? atoi(v) : 1;
    return n < 1 ? 1 : (n > 8 ? 8 : n);
}
CUresult cuDeviceGetCount(int* n) {
    *n = device_count();
    return CUDA_SUCCESS;
}
CUresult cuDeviceGet(CUdevice* d, int ordinal) {
    if (ordinal < 0 || ordinal >= device_count()) return CUDA_ERROR_INVALID_DEVICE;
    *d = ordinal;
    return CUDA_SUCCESS;
}
CUresult cuDeviceGetName(char* name, int len, CUdevice) {
    snprintf(name, (std::size_t)len, "NVLM CUDA emulator (CPU)");
    return CUDA_SUCCESS;
}
CUresult cuDeviceTotalMem_v2(std::size_t* bytes, CUdevice) {
    *bytes = kTotalMemory;
    return CUDA_SUCCESS;
}
CUresult cuMemGetInfo_v2(std::size_t* free_bytes, std::size_t* total) {
    std::lock_guard<std::mutex> guard(g_lock);
    *free_bytes = kTotalMemory - g_allocated;
    *total = kTotalMemory;
    return CUDA_SUCCESS;
}
CUresult cuDeviceGetAttribute(int* value, int attribute, CUdevice) {
    switch (attribute) {
        case 1: *value = 1024; break;    // max threads per block
        case 2: case 3: *value = 1024; break;
        case 4: *value = 65535; break;
        case 5: *value = 2147483647; break;  // max grid x
        case 6: case 7: *value = 65535; break;
        case 8: *value = 48 * 1024; break;   // shared memory per block
        case 10: *value = 32; break;         // warp size
        case 16: *value = 132; break;        // SMs, as an H100/H200
        case 75: *value = 9; break;          // compute capability 9.0
        case 76: *value = 0; break;
        case 97: *value = 227 * 1024; break; // opt-in shared memory per block
        default: *value = 1; break;          // "supported" for every feature flag (memory pools included)
    }
    return CUDA_SUCCESS;
}
CUresult cuDeviceGetUuid(void* uuid, CUdevice) {
    memset(uuid, 0, 16);
    return CUDA_SUCCESS;
}
CUresult cuDeviceGetUuid_v2(void* uuid, CUdevice d) { return cuDeviceGetUuid(uuid, d); }

CUresult cuDevicePrimaryCtxRetain(CUcontext* ctx, CUdevice d) {
    if (d < 0 || d >= device_count()) return CUDA_ERROR_INVALID_DEVICE;
    *ctx = &g_contexts[d];
    return CUDA_SUCCESS;
}
CUresult cuDevicePrimaryCtxRelease_v2(CUdevice) { return CUDA_SUCCESS; }
thread_local CUcontext t_current = nullptr;
CUresult cuCtxSetCurrent(CUcontext ctx) {
    t_current = ctx;
    return CUDA_SUCCESS;
}
CUresult cuCtxGetCurrent(CUcontext* ctx) {
    *ctx = t_current;
    return CUDA_SUCCESS;
}
CUresult cuCtxPushCurrent_v2(CUcontext ctx) { return cuCtxSetCurrent(ctx); }
CUresult cuCtxPopCurrent_v2(CUcontext* ctx) {
    if (ctx) *ctx = t_current;
    return CUDA_SUCCESS;
}
CUresult cuCtxGetDevice(CUdevice* d) {
    *d = t_current ? (int)(static_cast<int*>(t_current) - g_contexts) : 0;
    return CUDA_SUCCESS;
}
CUresult cuCtxSynchronize() { return emu::forbid_during_capture("cuCtxSynchronize"); }
CUresult cuCtxSetFlags(unsigned) { return CUDA_SUCCESS; }

CUresult cuStreamCreate(CUstream* s, unsigned) {
    *s = handle();
    return CUDA_SUCCESS;
}
CUresult cuStreamCreateWithPriority(CUstream* s, unsigned, int) {
    *s = handle();
    return CUDA_SUCCESS;
}
CUresult cuStreamDestroy_v2(CUstream s) {
    delete static_cast<int*>(s);
    return CUDA_SUCCESS;
}
CUresult cuStreamSynchronize(CUstream s) {
    return emu::capturing(s) ? emu::forbid_during_capture("cuStreamSynchronize of the capturing stream") : CUDA_SUCCESS;
}
CUresult cuStreamQuery(CUstream s) {
    return emu::capturing(s) ? emu::forbid_during_capture("cuStreamQuery of the capturing stream") : CUDA_SUCCESS;
}
CUresult cuStreamWaitEvent(CUstream, CUevent, unsigned) { return CUDA_SUCCESS; }
CUresult cuStreamGetPriority(CUstream, int* p) {
    *p = 0;
    return CUDA_SUCCESS;
}

CUresult cuEventCreate(CUevent* e, unsigned) {
    *e = handle();
    return CUDA_SUCCESS;
}
CUresult cuEventDestroy_v2(CUevent e) {
    delete static_cast<int*>(e);
    return CUDA_SUCCESS;
}
CUresult cuEventRecord(CUevent, CUstream) { return CUDA_SUCCESS; }
CUresult cuEventRecordWithFlags(CUevent, CUstream, unsigned) { return CUDA_SUCCESS; }
CUresult cuEventSynchronize(CUevent) { return CUDA_SUCCESS; }
CUresult cuEventQuery(CUevent) { return CUDA_SUCCESS; }
CUresult cuEventElapsedTime(float* ms, CUevent, CUevent) {
    *ms = 0.0f;
    return CUDA_SUCCESS;
}
CUresult cuEventElapsedTime_v2(float* ms, CUevent a, CUevent b) { return cuEventElapsedTime(ms, a, b); }

CUresult cuDeviceGetDefaultMemPool(CUmemoryPool* pool, CUdevice) {
    *pool = &g_dummy_object;
    return CUDA_SUCCESS;
}
CUresult cuMemPoolSetAttribute(CUmemoryPool, int, void*) { return CUDA_SUCCESS; }
CUresult cuMemPoolTrimTo(CUmemoryPool, std::size_t) { return CUDA_SUCCESS; }

CUresult cuMemAlloc_v2(CUdeviceptr* p, std::size_t bytes) {
    if (CUresult r = emu::forbid_during_capture("cuMemAlloc (synchronous)")) return r;
    return alloc(p, bytes);
}
CUresult cuMemAllocAsync(CUdeviceptr* p, std::size_t bytes, CUstream s) {
    const CUresult r = alloc(p, bytes);
    if (r == CUDA_SUCCESS) emu::note_allocation(s, static_cast<std::uintptr_t>(*p));
    return r;
}
CUresult cuMemFree_v2(CUdeviceptr p) {
    if (CUresult r = emu::forbid_during_capture("cuMemFree (synchronous)")) return r;
    return release(p);
}
CUresult cuMemFreeAsync(CUdeviceptr p, CUstream s) {
    const int owned = emu::capture_free(s, static_cast<std::uintptr_t>(p));
    if (owned == 1) return CUDA_SUCCESS;  // the graph keeps it
    return owned == 0 ? release(p) : owned;
}
CUresult cuMemAllocHost_v2(void** p, std::size_t bytes) {
    *p = malloc(bytes ? bytes : 1);
    return *p ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}
CUresult cuMemHostAlloc(void** p, std::size_t bytes, unsigned) { return cuMemAllocHost_v2(p, bytes); }
CUresult cuMemFreeHost(void* p) {
    if (CUresult r = emu::forbid_during_capture("cuMemFreeHost")) return r;
    free(p);
    return CUDA_SUCCESS;
}

}  // extern "C"

namespace {

// Copies and fills. The stream-ordered ones run now, or when the graph they are captured into runs (a host pointer is
// read or written then, as on a GPU); the synchronous ones are forbidden during capture.
CUresult copy(void* dst, const void* src, std::size_t n) {
    if (n) memmove(dst, src, n);
    return CUDA_SUCCESS;
}
CUresult copy_async(CUstream s, void* dst, const void* src, std::size_t n) {
    return emu::submit(s, [=] { return copy(dst, src, n); });
}
CUresult copy_sync(const char* what, void* dst, const void* src, std::size_t n) {
    if (CUresult r = emu::forbid_during_capture(what)) return r;
    return copy(dst, src, n);
}
template <typename T>
CUresult fill_async(CUstream s, CUdeviceptr dst, T v, std::size_t n) {
    return emu::submit(s, [=] {
        auto* p = reinterpret_cast<T*>(dst);
        for (std::size_t i = 0; i < n; ++i) p[i] = v;
        return (int)CUDA_SUCCESS;
    });
}

}  // namespace

extern "C" {

CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void* src, std::size_t n) {
    return copy_sync("cuMemcpyHtoD (synchronous)", reinterpret_cast<void*>(dst), src, n);
}
CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void* src, std::size_t n, CUstream s) {
    return copy_async(s, reinterpret_cast<void*>(dst), src, n);
}
CUresult cuMemcpyDtoH_v2(void* dst, CUdeviceptr src, std::size_t n) {
    return copy_sync("cuMemcpyDtoH (synchronous)", dst, reinterpret_cast<const void*>(src), n);
}
CUresult cuMemcpyDtoHAsync_v2(void* dst, CUdeviceptr src, std::size_t n, CUstream s) {
    return copy_async(s, dst, reinterpret_cast<const void*>(src), n);
}
CUresult cuMemcpyDtoD_v2(CUdeviceptr dst, CUdeviceptr src, std::size_t n) {
    return copy_sync("cuMemcpyDtoD (synchronous)", reinterpret_cast<void*>(dst), reinterpret_cast<const void*>(src), n);
}
CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, std::size_t n, CUstream s) {
    return copy_async(s, reinterpret_cast<void*>(dst), reinterpret_cast<const void*>(src), n);
}
CUresult cuMemcpyAsync(CUdeviceptr dst, CUdeviceptr src, std::size_t n, CUstream s) {
    return cuMemcpyDtoDAsync_v2(dst, src, n, s);
}
CUresult cuMemcpyPeerAsync(CUdeviceptr dst, CUcontext, CUdeviceptr src, CUcontext, std::size_t n, CUstream s) {
    return cuMemcpyDtoDAsync_v2(dst, src, n, s);
}
CUresult cuMemsetD8_v2(CUdeviceptr dst, unsigned char v, std::size_t n) {
    if (CUresult r = emu::forbid_during_capture("cuMemsetD8 (synchronous)")) return r;
    if (n) memset(reinterpret_cast<void*>(dst), v, n);
    return CUDA_SUCCESS;
}
CUresult cuMemsetD8Async(CUdeviceptr dst, unsigned char v, std::size_t n, CUstream s) {
    return fill_async(s, dst, v, n);
}
CUresult cuMemsetD32Async(CUdeviceptr dst, unsigned v, std::size_t n, CUstream s) { return fill_async(s, dst, v, n); }
CUresult cuMemsetD16Async(CUdeviceptr dst, unsigned short v, std::size_t n, CUstream s) {
    return fill_async(s, dst, v, n);
}

// A module image from the emulated NVRTC: "NVLMEMU1", the shared object's byte length (u64), the shared object.
CUresult cuModuleLoadData(void** module, const void* image) {
    static const char kMagic[8] = {'N', 'V', 'L', 'M', 'E', 'M', 'U', '1'};
    if (!image || memcmp(image, kMagic, 8) != 0) {
        fprintf(stderr, "cuda-emu: cuModuleLoadData was given a real cubin; the emulator loads only its own NVRTC's "
                        "output (clear NVLM_KERNEL_CACHE?)\n");
        return CUDA_ERROR_INVALID_IMAGE;
    }
    std::uint64_t len = 0;
    memcpy(&len, static_cast<const char*>(image) + 8, 8);
    char path[] = "/tmp/cuda-emu-module-XXXXXX";
    const int fd = mkstemp(path);
    if (fd < 0) return CUDA_ERROR_INVALID_IMAGE;
    const char* bytes = static_cast<const char*>(image) + 16;
    std::uint64_t written = 0;
    while (written < len) {
        const ssize_t w = write(fd, bytes + written, len - written);
        if (w <= 0) break;
        written += (std::uint64_t)w;
    }
    close(fd);
    void* so = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    unlink(path);
    if (!so) {
        fprintf(stderr, "cuda-emu: loading a module: %s\n", dlerror());
        return CUDA_ERROR_INVALID_IMAGE;
    }
    auto bind = reinterpret_cast<void (*)(const EmuApi*)>(dlsym(so, "__emu_bind"));
    if (!bind) return CUDA_ERROR_INVALID_IMAGE;
    bind(emu::kernel_api());
    *module = new Module{so};
    return CUDA_SUCCESS;
}
CUresult cuModuleLoadDataEx(void** module, const void* image, unsigned, void*, void**) {
    return cuModuleLoadData(module, image);
}
CUresult cuModuleUnload(void* module) {
    delete static_cast<Module*>(module);  // the code stays mapped: functions may still be referenced
    return CUDA_SUCCESS;
}
CUresult cuModuleGetFunction(void** function, void* module, const char* name) {
    auto* m = static_cast<Module*>(module);
    const std::string symbol = std::string("__emu_launch_") + name;
    void* entry = dlsym(m->handle, symbol.c_str());
    void* sizes = dlsym(m->handle, (std::string("__emu_sizes_") + name).c_str());
    if (!entry || !sizes) return CUDA_ERROR_NOT_FOUND;
    *function = new Function{reinterpret_cast<void (*)(void**)>(entry), reinterpret_cast<int (*)(unsigned*)>(sizes),
                             name};
    return CUDA_SUCCESS;
}
CUresult cuFuncGetAttribute(int* value, int attribute, void*) {
    *value = attribute == 0 ? 1024 : 0;  // CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK
    return CUDA_SUCCESS;
}
CUresult cuFuncSetAttribute(void* function, int attribute, int value) {
    constexpr int kMaxDynamicShared = 8;  // CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
    if (attribute == kMaxDynamicShared) {
        if (value < 0 || value > kMaxSharedPerBlock) return CUDA_ERROR_INVALID_VALUE;
        static_cast<Function*>(function)->max_dynamic_smem = value;
    }
    return CUDA_SUCCESS;
}
CUresult cuFuncSetCacheConfig(void*, int) { return CUDA_SUCCESS; }

// A TMA descriptor for the kernel modules' model (emu_api.h's EmuTensorMap), with the checks the documentation of
// cuTensorMapEncodeTiled states. Element strides other than 1 and interleaved layouts are not emulated.
CUresult cuTensorMapEncodeTiled(void* map, int dtype, unsigned rank, void* global, const std::uint64_t* dims,
                                const std::uint64_t* strides, const unsigned* box, const unsigned* element_strides,
                                int interleave, int swizzle, int, int) {
    auto refuse = [](const char* why) {
        fprintf(stderr, "cuda-emu: cuTensorMapEncodeTiled: %s\n", why);
        return CUDA_ERROR_INVALID_VALUE;
    };
    unsigned element_bytes = 0;
    if (dtype == 6 || dtype == 9) element_bytes = 2;  // FLOAT16, BFLOAT16
    if (dtype == 7) element_bytes = 4;                // FLOAT32
    if (!map || reinterpret_cast<std::uintptr_t>(map) % 64 != 0) return refuse("the map is not 64-byte aligned");
    if (element_bytes == 0) return refuse("data type not emulated (f16, bf16, f32 are)");
    if (rank < 1 || rank > 5) return refuse("rank outside 1..5");
    if (reinterpret_cast<std::uintptr_t>(global) % 16 != 0) return refuse("global address not 16-byte aligned");
    if (interleave != 0) return refuse("interleaved layouts are not emulated");
    if (swizzle < 0 || swizzle > 3) return refuse("unknown swizzle mode");
    const unsigned swizzle_bytes = swizzle == 0 ? 0u : 16u << swizzle;  // 32, 64, 128
    EmuTensorMap m{};
    m.magic = kEmuTensorMapMagic;
    m.base = static_cast<const unsigned char*>(global);
    m.rank = rank;
    m.element_bytes = element_bytes;
    m.swizzle_bytes = swizzle_bytes;
    for (unsigned i = 0; i < rank; ++i) {
        if (dims[i] == 0 || dims[i] > (1ull << 32)) return refuse("a dimension outside 1..2^32");
        if (box[i] == 0 || box[i] > 256) return refuse("a box dimension outside 1..256");
        if (element_strides[i] != 1) return refuse("element strides other than 1 are not emulated");
        m.dims[i] = dims[i];
        m.box[i] = box[i];
        if (i + 1 < rank) {
            if (strides[i] % 16 != 0 || strides[i] >= (1ull << 40))
                return refuse("a global stride that is not a multiple of 16 below 2^40");
            m.strides[i] = strides[i];
        }
    }
    const unsigned inner = box[0] * element_bytes;
    if (inner % 16 != 0) return refuse("the inner box dimension is not a multiple of 16 bytes");
    if (swizzle_bytes != 0 && inner > swizzle_bytes) return refuse("the inner box dimension exceeds the swizzle span");
    std::memset(map, 0, 128);
    std::memcpy(map, &m, sizeof m);
    return CUDA_SUCCESS;
}

}  // extern "C"

namespace {
CUresult run_kernel(const Function* f, EmuDim3 grid, EmuDim3 block, unsigned shared_bytes, void** params);
}  // namespace

extern "C" {

CUresult cuLaunchKernel(void* function, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                        unsigned shared_bytes, CUstream stream, void** params, void** extra) {
    auto* f = static_cast<Function*>(function);
    if (!f || extra) return CUDA_ERROR_INVALID_VALUE;
    if (shared_bytes > (unsigned)f->max_dynamic_smem) {
        fprintf(stderr,
                "cuda-emu: %s: %u bytes of dynamic shared memory, over the function's limit of %d (raise it with "
                "CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES)\n",
                f->name.c_str(), shared_bytes, f->max_dynamic_smem);
        return CUDA_ERROR_INVALID_VALUE;
    }
    if (gx == 0 || gy == 0 || gz == 0 || (std::size_t)bx * by * bz == 0 || (std::size_t)bx * by * bz > 1024 ||
        gy > 65535 || gz > 65535) {
        fprintf(stderr, "cuda-emu: %s: invalid launch grid (%u,%u,%u) block (%u,%u,%u)\n", f->name.c_str(), gx, gy,
                gz, bx, by, bz);
        return CUDA_ERROR_INVALID_VALUE;
    }
    const EmuDim3 grid{gx, gy, gz}, block{bx, by, bz};
    if (!emu::capturing(stream)) return run_kernel(f, grid, block, shared_bytes, params);
    // Recorded into a graph: the arguments' values now (the caller's array does not outlive this call).
    unsigned sizes[256];
    const int count = f->sizes(sizes);
    std::vector<std::vector<char>> args((std::size_t)count);
    for (int i = 0; i < count; ++i) args[i].assign(static_cast<char*>(params[i]), static_cast<char*>(params[i]) + sizes[i]);
    return emu::submit(stream, [f, grid, block, shared_bytes, args]() mutable {
        std::vector<void*> pointers;
        for (auto& a : args) pointers.push_back(a.data());
        return run_kernel(f, grid, block, shared_bytes, pointers.data());
    });
}

}  // extern "C"

namespace {

// Runs every block of a launch, one after another.
CUresult run_kernel(const Function* f, EmuDim3 grid, EmuDim3 block, unsigned shared_bytes, void** params) {
    const unsigned gx = grid.x, gy = grid.y, gz = grid.z;
    std::lock_guard<std::mutex> guard(g_lock);
    static const bool profile = getenv("NVLM_CUDA_EMU_PROFILE") != nullptr;
    if (profile && !g_profile) g_profile = new std::map<std::string, KernelTime>();
    const auto started = std::chrono::steady_clock::now();
    struct Record {
        const std::string& name;
        std::chrono::steady_clock::time_point started;
        ~Record() {
            if (!g_profile) return;
            KernelTime& t = (*g_profile)[name];
            ++t.launches;
            t.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
        }
    } record{f->name, started};
    g_running_kernel = f->name.c_str();
    for (unsigned z = 0; z < gz; ++z)
        for (unsigned y = 0; y < gy; ++y)
            for (unsigned x = 0; x < gx; ++x) {
                g_running_block = EmuDim3{x, y, z};
                const std::string why = emu::run_block(f->entry, params, grid, block, g_running_block, shared_bytes);
                if (!why.empty()) {
                    fprintf(stderr, "cuda-emu: kernel %s, block (%u,%u,%u): %s\n", f->name.c_str(), x, y, z,
                            why.c_str());
                    g_running_kernel = nullptr;
                    return CUDA_ERROR_LAUNCH_FAILED;
                }
            }
    g_running_kernel = nullptr;
    return CUDA_SUCCESS;
}

}  // namespace

extern "C" {

// The name and text of each code this driver returns.
struct ErrorText {
    CUresult code;
    const char* name;
    const char* text;
};
const ErrorText kErrors[] = {
    {CUDA_SUCCESS, "CUDA_SUCCESS", "no error"},
    {CUDA_ERROR_INVALID_VALUE, "CUDA_ERROR_INVALID_VALUE", "invalid argument"},
    {CUDA_ERROR_OUT_OF_MEMORY, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory"},
    {CUDA_ERROR_INVALID_DEVICE, "CUDA_ERROR_INVALID_DEVICE", "invalid device ordinal"},
    {CUDA_ERROR_INVALID_IMAGE, "CUDA_ERROR_INVALID_IMAGE", "device kernel image is invalid"},
    {CUDA_ERROR_NOT_FOUND, "CUDA_ERROR_NOT_FOUND", "named symbol not found"},
    {CUDA_ERROR_LAUNCH_FAILED, "CUDA_ERROR_LAUNCH_FAILED", "unspecified launch failure"},
    {CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED, "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED",
     "operation not permitted when stream is capturing"},
    {CUDA_ERROR_STREAM_CAPTURE_INVALIDATED, "CUDA_ERROR_STREAM_CAPTURE_INVALIDATED",
     "operation failed due to a previous error during capture"},
    {CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD, "CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD",
     "attempt to terminate a thread-local capture sequence from another thread"},
};
const ErrorText& error_text(CUresult error) {
    static const ErrorText unknown{-1, "CUDA_ERROR_UNKNOWN", "unknown error"};
    for (const ErrorText& e : kErrors)
        if (e.code == error) return e;
    return unknown;
}

CUresult cuGetErrorString(CUresult error, const char** text) {
    *text = error_text(error).text;
    return CUDA_SUCCESS;
}
CUresult cuGetErrorName(CUresult error, const char** name) {
    *name = error_text(error).name;
    return CUDA_SUCCESS;
}

}  // extern "C"
