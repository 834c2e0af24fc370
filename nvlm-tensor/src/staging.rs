//! Large uploads (weights) through pinned host memory on a copy stream of their own. Pageable memory cannot be
//! copied by DMA directly: the driver copies it to a pinned bounce buffer first, and the call holds the host until
//! it is done. Here each chunk is copied into one of two pinned buffers while the other is on its way to the device,
//! so reading the checkpoint (mmap, page faults) overlaps the transfer, and the compute stream is never blocked by
//! the copies: it waits for them only where it next uses the memory.

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaEvent, CudaSlice, CudaStream, DevicePtrMut, PinnedHostSlice};

use crate::{Result, TensorError};

/// Bytes per chunk (each of the two pinned buffers).
const CHUNK: usize = 16 << 20;
/// Uploads at least this large go through the pinned buffers; smaller ones (a decode step's ids) stay direct.
pub(crate) const STAGED_MIN: usize = 1 << 20;

/// The copy stream, its two pinned buffers and the events that say when each buffer is free again.
#[derive(Debug)]
pub(crate) struct Uploader {
    copy: Arc<CudaStream>,
    buffers: [PinnedHostSlice<u8>; 2],
    free_again: [CudaEvent; 2],
}

impl Uploader {
    /// The copy stream and 2 x 16 MiB of pinned host memory on `context`.
    pub(crate) fn new(context: &Arc<CudaContext>) -> Result<Uploader> {
        let err = TensorError::driver;
        let copy = context.new_stream().map_err(err("creating the copy stream"))?;
        // SAFETY: the pinned bytes are written before any copy reads them.
        let pinned = || unsafe { context.alloc_pinned::<u8>(CHUNK) }.map_err(err("allocating pinned memory"));
        let event = || context.new_event(None).map_err(err("creating an event"));
        Ok(Uploader {
            copy,
            buffers: [pinned()?, pinned()?],
            free_again: [event()?, event()?],
        })
    }

    /// `bytes` in fresh device memory of `compute`'s stream order: allocated there, filled on the copy stream, and
    /// `compute` made to wait for the copies before whatever it queues next.
    pub(crate) fn upload(&mut self, compute: &Arc<CudaStream>, bytes: &[u8]) -> Result<CudaSlice<u8>> {
        let err = TensorError::driver;
        // SAFETY: every byte is written by the copies below before the compute stream can read it.
        let mut dst = unsafe { compute.alloc::<u8>(bytes.len()) }.map_err(err("allocating device memory"))?;
        self.copy.join(compute).map_err(err("ordering the copy stream"))?;
        for (i, chunk) in bytes.chunks(CHUNK).enumerate() {
            let b = i % 2;
            // The copy that last read this buffer has finished (an event never recorded is complete).
            self.free_again[b]
                .synchronize()
                .map_err(err("waiting for a pinned buffer"))?;
            let staged = &mut self.buffers[b].as_mut_slice().map_err(err("pinned buffer"))?[..chunk.len()];
            staged.copy_from_slice(chunk);
            let start = i * CHUNK;
            let mut target = dst.slice_mut(start..start + chunk.len());
            let (ptr, _record) = target.device_ptr_mut(&self.copy);
            // SAFETY: `staged` is pinned host memory of exactly the view's length, not touched again until
            // `free_again[b]` (recorded right after this copy) has completed.
            unsafe { cudarc::driver::result::memcpy_htod_async(ptr, staged, self.copy.cu_stream()) }
                .map_err(err("host-to-device copy"))?;
            self.free_again[b]
                .record(&self.copy)
                .map_err(err("recording a copy"))?;
        }
        compute
            .join(&self.copy)
            .map_err(err("ordering the compute stream"))?;
        Ok(dst)
    }
}
