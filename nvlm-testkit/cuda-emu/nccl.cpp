// An emulated NCCL (libnccl.so) for the CUDA emulator: communicators of one process whose ranks are driven by one
// thread each (as nvlm-dist drives them), over the emulator's devices, which all share host memory. A collective
// blocks until every rank of the group has called it, then the last to arrive computes it for all (sums in f32, in
// rank order, for 16-bit floats; in the element type otherwise). Ranks that never arrive time out (60 s) with an
// error. Group calls are accepted and do nothing: a thread that issues several ranks' collectives between
// ncclGroupStart and ncclGroupEnd would wait for itself, and nvlm-dist never does.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "stream_work.h"

#include <unistd.h>

#include "bf16.h"

typedef int ncclResult_t;
enum : ncclResult_t { ncclSuccess = 0, ncclSystemError = 2, ncclInternalError = 3, ncclInvalidArgument = 4 };
enum { ncclInt8, ncclUint8, ncclInt32, ncclUint32, ncclInt64, ncclUint64, ncclFloat16, ncclFloat32, ncclFloat64,
       ncclBfloat16 };
enum { ncclSum, ncclProd, ncclMax, ncclMin, ncclAvg };

struct ncclUniqueId {
    char internal[128];
};

namespace {

constexpr auto kTimeout = std::chrono::seconds(60);

struct Call {
    const void* send;
    void* recv;
};

struct Group {
    int size;
    int joined = 0;
    std::mutex lock;
    std::condition_variable changed;
    // The collective in progress: arrivals, generation (bumped when it completes), each rank's buffers.
    int arrived = 0;
    std::uint64_t generation = 0;
    std::vector<Call> calls;
    explicit Group(int n) : size(n), calls((std::size_t)n) {}
};

struct Comm {
    std::shared_ptr<Group> group;
    int rank;
};

std::mutex g_groups_lock;
std::map<std::string, std::shared_ptr<Group>> g_groups;

std::size_t elem_size(int type) {
    switch (type) {
        case ncclInt8: case ncclUint8: return 1;
        case ncclFloat16: case ncclBfloat16: return 2;
        case ncclInt32: case ncclUint32: case ncclFloat32: return 4;
        default: return 8;
    }
}

float half_to_float(std::uint16_t h, int type) {
    if (type == ncclBfloat16) return emu_bf16_to_float(h);
    _Float16 f;
    memcpy(&f, &h, 2);
    return (float)f;
}
std::uint16_t float_to_half(float f, int type) {
    if (type == ncclBfloat16) return emu_float_to_bf16(f);
    // f16, round to nearest even, by the compiler's conversion.
    _Float16 h = (_Float16)f;
    std::uint16_t out;
    memcpy(&out, &h, 2);
    return out;
}

template <typename T>
T combine(T a, T b, int op) {
    switch (op) {
        case ncclProd: return a * b;
        case ncclMax: return a > b ? a : b;
        case ncclMin: return a < b ? a : b;
        default: return a + b;
    }
}

template <typename T>
void reduce_typed(const std::vector<Call>& calls, std::size_t count, int op, std::vector<char>& out) {
    out.resize(count * sizeof(T));
    T* o = reinterpret_cast<T*>(out.data());
    for (std::size_t i = 0; i < count; ++i) {
        T acc = static_cast<const T*>(calls[0].send)[i];
        for (std::size_t r = 1; r < calls.size(); ++r) acc = combine(acc, static_cast<const T*>(calls[r].send)[i], op);
        if (op == ncclAvg) acc = acc / (T)calls.size();
        o[i] = acc;
    }
}

void reduce(const std::vector<Call>& calls, std::size_t count, int type, int op, std::vector<char>& out) {
    switch (type) {
        case ncclInt8: reduce_typed<std::int8_t>(calls, count, op, out); return;
        case ncclUint8: reduce_typed<std::uint8_t>(calls, count, op, out); return;
        case ncclInt32: reduce_typed<std::int32_t>(calls, count, op, out); return;
        case ncclUint32: reduce_typed<std::uint32_t>(calls, count, op, out); return;
        case ncclInt64: reduce_typed<std::int64_t>(calls, count, op, out); return;
        case ncclUint64: reduce_typed<std::uint64_t>(calls, count, op, out); return;
        case ncclFloat32: reduce_typed<float>(calls, count, op, out); return;
        case ncclFloat64: reduce_typed<double>(calls, count, op, out); return;
        default: break;
    }
    out.resize(count * 2);
    auto* o = reinterpret_cast<std::uint16_t*>(out.data());
    for (std::size_t i = 0; i < count; ++i) {
        float acc = half_to_float(static_cast<const std::uint16_t*>(calls[0].send)[i], type);
        for (std::size_t r = 1; r < calls.size(); ++r)
            acc = combine(acc, half_to_float(static_cast<const std::uint16_t*>(calls[r].send)[i], type), op);
        if (op == ncclAvg) acc /= (float)calls.size();
        o[i] = float_to_half(acc, type);
    }
}

// Runs one collective: waits for every rank, and the last to arrive calls `complete(calls)`.
template <typename F>
ncclResult_t collective(void* comm, const void* send, void* recv, F complete) {
    auto* c = static_cast<Comm*>(comm);
    if (!c) return ncclInvalidArgument;
    Group& g = *c->group;
    std::unique_lock<std::mutex> guard(g.lock);
    const std::uint64_t mine = g.generation;
    g.calls[(std::size_t)c->rank] = Call{send, recv};
    if (++g.arrived == g.size) {
        complete(g.calls);
        g.arrived = 0;
        ++g.generation;
        g.changed.notify_all();
        return ncclSuccess;
    }
    if (!g.changed.wait_for(guard, kTimeout, [&] { return g.generation != mine; })) {
        fprintf(stderr, "cuda-emu NCCL: rank %d waited %llds for the other ranks of a collective\n", c->rank,
                (long long)kTimeout.count());
        return ncclSystemError;
    }
    return ncclSuccess;
}

}  // namespace

extern "C" {

ncclResult_t ncclGetVersion(int* version) {
    *version = 22800;
    return ncclSuccess;
}
const char* ncclGetErrorString(ncclResult_t r) {
    switch (r) {
        case ncclSuccess: return "no error";
        case ncclSystemError: return "system error (cuda-emu: a rank never arrived)";
        case ncclInvalidArgument: return "invalid argument";
        default: return "internal error";
    }
}
const char* ncclGetLastError(void*) { return ""; }

ncclResult_t ncclGetUniqueId(ncclUniqueId* id) {
    static std::mutex lock;
    static std::uint64_t counter = 0;
    std::lock_guard<std::mutex> guard(lock);
    memset(id->internal, 0, sizeof id->internal);
    snprintf(id->internal, sizeof id->internal, "cuda-emu-nccl-%d-%llu", (int)getpid(),
             (unsigned long long)++counter);
    return ncclSuccess;
}

ncclResult_t ncclCommInitRank(void** comm, int nranks, ncclUniqueId id, int rank) {
    if (nranks < 1 || rank < 0 || rank >= nranks) return ncclInvalidArgument;
    const std::string key(id.internal, strnlen(id.internal, sizeof id.internal));
    std::shared_ptr<Group> group;
    {
        std::lock_guard<std::mutex> guard(g_groups_lock);
        auto& slot = g_groups[key];
        if (!slot) slot = std::make_shared<Group>(nranks);
        group = slot;
    }
    if (group->size != nranks) return ncclInvalidArgument;
    std::unique_lock<std::mutex> guard(group->lock);
    ++group->joined;
    group->changed.notify_all();
    if (!group->changed.wait_for(guard, kTimeout, [&] { return group->joined >= group->size; })) {
        fprintf(stderr, "cuda-emu NCCL: rank %d of %d waited %llds for the others to join\n", rank, nranks,
                (long long)kTimeout.count());
        return ncclSystemError;
    }
    *comm = new Comm{group, rank};
    return ncclSuccess;
}

ncclResult_t ncclCommInitAll(void** comms, int ndev, const int*) {
    if (ndev < 1) return ncclInvalidArgument;
    auto group = std::make_shared<Group>(ndev);
    group->joined = ndev;
    for (int r = 0; r < ndev; ++r) comms[r] = new Comm{group, r};
    return ncclSuccess;
}

ncclResult_t ncclCommDestroy(void* comm) {
    delete static_cast<Comm*>(comm);
    return ncclSuccess;
}
ncclResult_t ncclCommAbort(void* comm) { return ncclCommDestroy(comm); }
ncclResult_t ncclCommFinalize(void*) { return ncclSuccess; }
ncclResult_t ncclCommCount(const void* comm, int* count) {
    *count = static_cast<const Comm*>(comm)->group->size;
    return ncclSuccess;
}
ncclResult_t ncclCommUserRank(const void* comm, int* rank) {
    *rank = static_cast<const Comm*>(comm)->rank;
    return ncclSuccess;
}
ncclResult_t ncclCommCuDevice(const void* comm, int* device) {
    *device = static_cast<const Comm*>(comm)->rank;
    return ncclSuccess;
}
ncclResult_t ncclCommGetAsyncError(void*, ncclResult_t* error) {
    *error = ncclSuccess;
    return ncclSuccess;
}
ncclResult_t ncclGroupStart() { return ncclSuccess; }
ncclResult_t ncclGroupEnd() { return ncclSuccess; }

ncclResult_t ncclAllReduce(const void* send, void* recv, std::size_t count, int type, int op, void* comm,
                           void* stream) {
    return (ncclResult_t)emu_on_stream(stream, [=] {
        return collective(comm, send, recv, [=](const std::vector<Call>& calls) {
            std::vector<char> out;
            reduce(calls, count, type, op, out);
            for (const Call& c : calls) memcpy(c.recv, out.data(), out.size());
        });
    });
}

ncclResult_t ncclAllGather(const void* send, void* recv, std::size_t count, int type, void* comm, void* stream) {
    return (ncclResult_t)emu_on_stream(stream, [=] {
        return collective(comm, send, recv, [=](const std::vector<Call>& calls) {
            const std::size_t bytes = count * elem_size(type);
            std::vector<char> all(bytes * calls.size());
            for (std::size_t r = 0; r < calls.size(); ++r) memcpy(all.data() + r * bytes, calls[r].send, bytes);
            for (const Call& c : calls) memcpy(c.recv, all.data(), all.size());
        });
    });
}

ncclResult_t ncclBroadcast(const void* send, void* recv, std::size_t count, int type, int root, void* comm,
                           void* stream) {
    auto* c = static_cast<Comm*>(comm);
    if (!c || root < 0 || root >= c->group->size) return ncclInvalidArgument;
    return (ncclResult_t)emu_on_stream(stream, [=] {
        return collective(comm, send, recv, [=](const std::vector<Call>& calls) {
            const std::size_t bytes = count * elem_size(type);
            std::vector<char> data(static_cast<const char*>(calls[(std::size_t)root].send),
                                   static_cast<const char*>(calls[(std::size_t)root].send) + bytes);
            for (const Call& call : calls) memcpy(call.recv, data.data(), bytes);
        });
    });
}

ncclResult_t ncclReduceScatter(const void* send, void* recv, std::size_t count, int type, int op, void* comm,
                               void* stream) {
    return (ncclResult_t)emu_on_stream(stream, [=] {
        return collective(comm, send, recv, [=](const std::vector<Call>& calls) {
            std::vector<char> out;
            reduce(calls, count * calls.size(), type, op, out);
            const std::size_t bytes = count * elem_size(type);
            for (std::size_t r = 0; r < calls.size(); ++r) memcpy(calls[r].recv, out.data() + r * bytes, bytes);
        });
    });
}

}  // extern "C"
