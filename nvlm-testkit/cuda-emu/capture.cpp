// Stream capture and CUDA graphs (capture.h), and the driver entry points for them.

#include "capture.h"
#include "driver_types.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

namespace {


// Device memory a graph owns: allocated during its capture, released when the graph and every instance are gone.
struct GraphMemory {
    std::vector<std::uintptr_t> owned;
    ~GraphMemory() {
        for (std::uintptr_t p : owned) emu::release_device(p);
    }
};

struct Graph {
    std::vector<emu::Work> work;
    std::shared_ptr<GraphMemory> memory;
};

struct Capture {
    Graph graph;
    std::set<std::uintptr_t> live;  // allocated during the capture and not yet freed in it
    std::thread::id thread;
    int mode = 0;  // CU_STREAM_CAPTURE_MODE_GLOBAL, _THREAD_LOCAL or _RELAXED
    bool invalidated = false;
};

std::mutex g_capture_lock;
std::map<void*, Capture> g_captures;

Capture* find(void* stream) {
    auto it = g_captures.find(stream);
    return it == g_captures.end() ? nullptr : &it->second;
}

}  // namespace

namespace emu {

int submit(void* stream, Work work) {
    {
        std::lock_guard<std::mutex> guard(g_capture_lock);
        if (Capture* c = find(stream)) {
            if (!c->invalidated) c->graph.work.push_back(std::move(work));
            return c->invalidated ? CUDA_ERROR_STREAM_CAPTURE_INVALIDATED : CUDA_SUCCESS;
        }
    }
    return work();
}

bool capturing(void* stream) {
    std::lock_guard<std::mutex> guard(g_capture_lock);
    return find(stream) != nullptr;
}

int forbid_during_capture(const char* what) {
    std::lock_guard<std::mutex> guard(g_capture_lock);
    bool forbidden = false;
    for (auto& [stream, c] : g_captures) {
        // Relaxed captures allow everything; a global capture on any thread forbids unsafe calls on every thread.
        const bool mine = c.thread == std::this_thread::get_id();
        if (c.mode == 2 || (!mine && c.mode != 0)) continue;
        forbidden = true;
        if (mine) c.invalidated = true;
    }
    if (!forbidden) return CUDA_SUCCESS;
    fprintf(stderr, "cuda-emu: %s during stream capture (CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED; the capture is now "
                    "invalid)\n", what);
    return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
}

void note_allocation(void* stream, std::uintptr_t ptr) {
    std::lock_guard<std::mutex> guard(g_capture_lock);
    if (Capture* c = find(stream)) {
        c->graph.memory->owned.push_back(ptr);
        c->live.insert(ptr);
    }
}

int capture_free(void* stream, std::uintptr_t ptr) {
    std::lock_guard<std::mutex> guard(g_capture_lock);
    Capture* c = find(stream);
    if (!c) return 0;
    if (c->live.erase(ptr)) return 1;
    fprintf(stderr, "cuda-emu: cuMemFreeAsync during stream capture of memory the graph did not allocate (CUDA "
                    "allows only graph allocations there; the capture is now invalid)\n");
    c->invalidated = true;
    return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
}

}  // namespace emu

extern "C" {

CUresult cuStreamBeginCapture_v2(void* stream, int mode) {
    std::lock_guard<std::mutex> guard(g_capture_lock);
    if (find(stream)) return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
    Capture& c = g_captures[stream];
    c.graph.memory = std::make_shared<GraphMemory>();
    c.thread = std::this_thread::get_id();
    c.mode = mode;
    return CUDA_SUCCESS;
}

CUresult cuStreamEndCapture(void* stream, void** graph) {
    std::lock_guard<std::mutex> guard(g_capture_lock);
    auto it = g_captures.find(stream);
    if (it == g_captures.end()) return CUDA_ERROR_INVALID_VALUE;
    if (it->second.thread != std::this_thread::get_id() && it->second.mode != 2) return CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD;
    Capture c = std::move(it->second);
    g_captures.erase(it);
    *graph = nullptr;
    if (!c.live.empty()) {
        // Those allocations stay the caller's (it frees them later): the discarded graph must not release them.
        auto& owned = c.graph.memory->owned;
        owned.erase(std::remove_if(owned.begin(), owned.end(), [&](std::uintptr_t p) { return c.live.count(p) > 0; }),
                    owned.end());
        // CUDA accepts this, but refuses to launch the graph again until those allocations are freed outside it:
        // for an engine that replays its graphs every step, that is a bug, and this emulator says so at once.
        fprintf(stderr, "cuda-emu: stream capture ended with %zu of its allocations not freed inside it (the graph "
                        "could not be launched twice)\n", c.live.size());
        return CUDA_ERROR_STREAM_CAPTURE_INVALIDATED;
    }
    if (c.invalidated) return CUDA_ERROR_STREAM_CAPTURE_INVALIDATED;
    // $NVLM_CUDA_EMU_FAIL_CAPTURE=1: every capture fails, as one on a driver or library without graph support
    // would, for testing the engine's fallback.
    static const bool fail = getenv("NVLM_CUDA_EMU_FAIL_CAPTURE") != nullptr;
    if (fail) return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
    *graph = new Graph(std::move(c.graph));
    return CUDA_SUCCESS;
}

CUresult cuStreamIsCapturing(void* stream, int* status) {
    std::lock_guard<std::mutex> guard(g_capture_lock);
    const Capture* c = find(stream);
    *status = c ? (c->invalidated ? 2 : 1) : 0;  // NONE, ACTIVE, INVALIDATED
    return CUDA_SUCCESS;
}

CUresult cuGraphInstantiateWithFlags(void** exec, void* graph, unsigned long long) {
    if (!graph) return CUDA_ERROR_INVALID_VALUE;
    *exec = new Graph(*static_cast<Graph*>(graph));
    return CUDA_SUCCESS;
}

CUresult cuGraphLaunch(void* exec, void* stream) {
    if (!exec) return CUDA_ERROR_INVALID_VALUE;
    const Graph* g = static_cast<Graph*>(exec);
    return emu::submit(stream, [g]() {
        for (const emu::Work& w : g->work) {
            const int r = w();
            if (r != CUDA_SUCCESS) return r;
        }
        return (int)CUDA_SUCCESS;
    });
}

CUresult cuGraphUpload(void*, void*) { return CUDA_SUCCESS; }

CUresult cuGraphExecDestroy(void* exec) {
    delete static_cast<Graph*>(exec);
    return CUDA_SUCCESS;
}

CUresult cuGraphDestroy(void* graph) {
    delete static_cast<Graph*>(graph);
    return CUDA_SUCCESS;
}

// For the emulated cuBLASLt and NCCL (found with dlsym): run `run(ctx)` on `stream` now, or record it while the
// stream is captured; `drop(ctx)` frees ctx when the last copy of the recorded work goes.
int emu_stream_submit(void* stream, int (*run)(void*), void* ctx, void (*drop)(void*)) {
    std::shared_ptr<void> owned(ctx, drop);
    return emu::submit(stream, [run, owned]() { return run(owned.get()); });
}

}  // extern "C"
