// Stream capture and graphs for the emulated driver (capture.cpp): while a stream is captured, the work submitted to
// it is recorded instead of run (kernel arguments by value, host pointers as pointers, read when the graph runs, as
// CUDA does), and a graph launch runs the record again, in order. What CUDA forbids during capture fails here too
// and invalidates the capture: a synchronising call, a blocking copy, freeing memory the graph does not own, or
// ending a capture whose allocations are not all freed inside it.
#pragma once

#include <cstdint>
#include <functional>

namespace emu {

/// One stream operation: returns a CUresult.
using Work = std::function<int()>;

/// Runs `work` now, or records it when `stream` is being captured (returning success).
int submit(void* stream, Work work);

/// Whether `stream` is being captured.
bool capturing(void* stream);

/// For a call CUDA forbids on a thread that is capturing (`what` names it): when this thread captures, prints why,
/// invalidates its captures and returns CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED; else 0.
int forbid_during_capture(const char* what);

/// A stream-ordered allocation on `stream`: while it is captured, the graph owns `ptr` (freed with the graph).
void note_allocation(void* stream, std::uintptr_t ptr);

/// A stream-ordered free on `stream`: 1 when the capture owns `ptr` (the graph keeps it), 0 when `stream` is not
/// captured (free it now), or an error code (freeing memory the graph does not own, which invalidates the capture).
int capture_free(void* stream, std::uintptr_t ptr);

/// Releases device memory (driver.cpp).
int release_device(std::uintptr_t ptr);

}  // namespace emu
