//! The CUDA probe and the per-ordinal context/stream registry.
//!
//! cudarc, built with `dynamic-loading`, panics when asked to load a library that is not there. Everything here
//! checks `is_culib_present()` before the first driver call, so a machine without CUDA gets `false` or an error.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{CudaContext, CudaStream};

use crate::staging::Uploader;
use crate::{Result, TensorError};

/// One CUDA device as the engine uses it: its context, its compute stream, and (from the first upload) a copy stream
/// with pinned staging buffers and a pinned ring for small uploads.
#[derive(Debug)]
pub struct CudaDevice {
    ordinal: usize,
    context: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    uploader: Mutex<Option<Uploader>>,
    /// `sm_XY[a]`, read once (kernel dispatch asks for it per launch).
    arch: OnceLock<String>,
}

fn driver_library_present() -> bool {
    // SAFETY: only tries to dlopen the driver library by its candidate names.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Number of CUDA devices, or an error saying why there are none usable.
pub fn cuda_device_count() -> Result<usize> {
    if !driver_library_present() {
        return Err(TensorError::CudaUnavailable(
            "the NVIDIA driver library (libcuda.so) was not found; install the driver or add its folder to \
             LD_LIBRARY_PATH, or run with --device cpu"
                .into(),
        ));
    }
    let n = CudaContext::device_count().map_err(|e| {
        TensorError::CudaUnavailable(format!(
            "the driver is present but cuInit/cuDeviceGetCount failed: {e}"
        ))
    })?;
    Ok(n.max(0) as usize)
}

/// True when at least one CUDA device can be used. Never panics.
pub fn cuda_available() -> bool {
    matches!(cuda_device_count(), Ok(n) if n > 0)
}

fn registry() -> &'static Mutex<HashMap<usize, Arc<CudaDevice>>> {
    static DEVICES: OnceLock<Mutex<HashMap<usize, Arc<CudaDevice>>>> = OnceLock::new();
    DEVICES.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The caching allocator: buffers come from the driver's stream-ordered pool (`cuMemAllocAsync`, as cudarc
/// allocates), and a release threshold of "never" keeps freed memory in the pool for the next request of the stream
/// instead of returning it to the device at each synchronisation: after the first decode step, steps allocate
/// without a driver allocation (PyTorch's `cudaMallocAsync` backend does the same).
fn keep_freed_memory(context: &Arc<CudaContext>) -> Result<()> {
    use cudarc::driver::sys;
    if !context.has_async_alloc() {
        return Ok(());
    }
    // SAFETY: the device handle comes from a live context; the attribute takes a pointer to a u64.
    unsafe {
        let pool = cudarc::driver::result::device::get_default_mem_pool(context.cu_device())
            .map_err(TensorError::driver("reading the device memory pool"))?;
        let mut threshold = u64::MAX;
        sys::cuMemPoolSetAttribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            (&mut threshold as *mut u64).cast(),
        )
        .result()
        .map_err(TensorError::driver("configuring the device memory pool"))?;
    }
    Ok(())
}

impl CudaDevice {
    /// The device for `ordinal`, created on first use (context + compute stream), or a clear error.
    pub fn get(ordinal: usize) -> Result<Arc<CudaDevice>> {
        let mut devices = registry().lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(device) = devices.get(&ordinal) {
            return Ok(device.clone());
        }
        let count = cuda_device_count()?;
        if ordinal >= count {
            return Err(TensorError::CudaUnavailable(format!(
                "cuda:{ordinal} requested but this machine has {count} CUDA device(s)"
            )));
        }
        let context = CudaContext::new(ordinal).map_err(TensorError::driver("creating a CUDA context"))?;
        // SAFETY: every buffer of this device is allocated, used and freed on its one compute stream, so stream
        // order alone keeps uses apart; cudarc's per-allocation events (two per buffer) would only cost time.
        unsafe { context.disable_event_tracking() };
        keep_freed_memory(&context)?;
        let stream = context
            .new_stream()
            .map_err(TensorError::driver("creating a CUDA stream"))?;
        let device = Arc::new(CudaDevice {
            ordinal,
            context,
            stream,
            uploader: Mutex::new(None),
            arch: OnceLock::new(),
        });
        devices.insert(ordinal, device.clone());
        Ok(device)
    }

    /// The device ordinal.
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    /// The cudarc context.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.context
    }

    /// The compute stream every op of this device is queued on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// `sm_XY` (with the `a` suffix on Hopper, whose wgmma/TMA instructions need `sm_90a`).
    pub fn arch(&self) -> Result<String> {
        if let Some(arch) = self.arch.get() {
            return Ok(arch.clone());
        }
        let (major, minor) = self
            .context
            .compute_capability()
            .map_err(TensorError::driver("reading compute capability"))?;
        let suffix = if major == 9 && minor == 0 { "a" } else { "" };
        Ok(self
            .arch
            .get_or_init(|| format!("sm_{major}{minor}{suffix}"))
            .clone())
    }

    /// `bytes` (not empty) in fresh device memory, ordered on the compute stream, through pinned memory (see
    /// `staging`): large uploads on the copy stream, small ones through a ring without waiting for the device.
    pub(crate) fn upload(&self, bytes: &[u8]) -> Result<cudarc::driver::CudaSlice<u8>> {
        self.with_uploader(|u, stream| u.upload(stream, bytes))
    }

    /// `bytes` into the existing device memory `dst` (same length), ordered on the compute stream like
    /// [`CudaDevice::upload`].
    pub(crate) fn upload_into(
        &self,
        bytes: &[u8],
        dst: &mut cudarc::driver::CudaViewMut<'_, u8>,
    ) -> Result<()> {
        self.with_uploader(|u, stream| u.upload_into(stream, bytes, dst))
    }

    /// Runs `f` with this device's uploader (created on first use) and compute stream.
    fn with_uploader<T>(&self, f: impl FnOnce(&mut Uploader, &Arc<CudaStream>) -> Result<T>) -> Result<T> {
        let mut uploader = self.uploader.lock().unwrap_or_else(|p| p.into_inner());
        if uploader.is_none() {
            *uploader = Some(Uploader::new(&self.context)?);
        }
        f(uploader.as_mut().expect("created above"), &self.stream)
    }

    /// Waits for all work queued on the compute stream.
    pub fn synchronize(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(TensorError::driver("synchronizing the stream"))
    }
}
