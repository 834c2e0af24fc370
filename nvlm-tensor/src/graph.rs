//! CUDA graphs: the work one closure queues on a device's compute stream, captured once and replayed with one launch.
//! What a captured step reads must stay at fixed addresses (inputs are rewritten in place before each replay, see
//! [`crate::Tensor::write_from_host`]), and everything it allocates must be freed inside it: memory the capture
//! allocates belongs to the graph and is at the same address in every replay.

use std::sync::Arc;

use cudarc::driver::{sys, CudaGraph};

use crate::{CudaDevice, Device, Result, TensorError};

/// A captured graph of one device's compute stream.
pub struct DeviceGraph {
    graph: CudaGraph,
    device: Arc<CudaDevice>,
}

// SAFETY: a CUDA graph may be used from any thread as long as calls on it are serialised; `launch` takes `&self`,
// and every owner keeps a `DeviceGraph` behind `&mut` or a lock.
unsafe impl Send for DeviceGraph {}

impl std::fmt::Debug for DeviceGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceGraph(cuda:{})", self.device.ordinal())
    }
}

impl DeviceGraph {
    /// Captures what `queue` puts on `device`'s compute stream (nothing runs yet; [`DeviceGraph::launch`] runs it)
    /// and returns the graph beside `queue`'s result. The capture is thread-local: this thread may not synchronise
    /// or free device memory the capture did not allocate until it ends. An error from `queue` or from the driver
    /// ends the capture and discards it.
    pub fn capture<T>(device: Device, queue: impl FnOnce() -> Result<T>) -> Result<(DeviceGraph, T)> {
        let Device::Cuda(ordinal) = device else {
            return Err(TensorError::Device {
                op: "DeviceGraph::capture",
                detail: "CUDA graphs need a CUDA device".into(),
            });
        };
        let device = CudaDevice::get(ordinal)?;
        let stream = device.stream().clone();
        stream
            .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(TensorError::driver("beginning a stream capture"))?;
        let queued = queue();
        let mut ended = stream.end_capture(sys::CUgraphInstantiate_flags(0));
        if ended.is_err() {
            // cudarc returns an error recorded earlier (a failed free) before it reaches the driver: end the
            // capture for real, or every later call on the stream would fail.
            let still = stream.capture_status();
            if still.is_ok_and(|s| s != sys::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE) {
                ended = stream.end_capture(sys::CUgraphInstantiate_flags(0));
            }
        }
        let value = queued?;
        let graph = ended
            .map_err(TensorError::driver("ending a stream capture"))?
            .ok_or_else(|| TensorError::Device {
                op: "DeviceGraph::capture",
                detail: "the capture recorded no work".into(),
            })?;
        Ok((DeviceGraph { graph, device }, value))
    }

    /// Queues one replay of the captured work on the device's compute stream.
    pub fn launch(&self) -> Result<()> {
        self.graph
            .launch()
            .map_err(TensorError::driver("launching a CUDA graph"))
    }
}
