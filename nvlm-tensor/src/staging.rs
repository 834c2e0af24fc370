//! Uploads through pinned host memory. Pageable memory cannot be copied by DMA directly: the driver copies it to a
//! pinned bounce buffer first, and the call may hold the host until the stream has drained.
//! - Large uploads (weights) go through two pinned 16 MiB buffers on a copy stream of their own: each chunk fills
//!   one buffer while the other is on its way to the device, so reading the checkpoint (mmap, page faults) overlaps
//!   the transfer, and the compute stream waits for the copies only where it next uses the memory.
//! - Small uploads (a decode step's ids, positions and block tables) go through a pinned 1 MiB ring on the compute
//!   stream itself: the host copies into the ring and queues the DMA without waiting for the device, so a decode
//!   step costs no host-device round trip for its inputs. The ring has two halves; the host waits for a half's
//!   copies only when it comes back to that half, a whole half of uploads later.

use std::sync::Arc;

use cudarc::driver::{
    CudaContext, CudaEvent, CudaSlice, CudaStream, CudaViewMut, DevicePtrMut, PinnedHostSlice,
};

use crate::{Result, TensorError};

/// Bytes per chunk (each of the two pinned buffers).
const CHUNK: usize = 16 << 20;
/// Uploads at least this large go through the copy stream's buffers; smaller ones through the ring.
const STAGED_MIN: usize = 1 << 20;
/// Bytes in each half of the ring for small uploads.
const RING_HALF: usize = 512 << 10;
/// Ring offsets advance in steps of this many bytes.
const RING_ALIGN: usize = 64;

/// The copy stream, its two pinned buffers and the events that say when each buffer is free again; the ring for
/// small uploads, and the events that say when each of its halves is.
#[derive(Debug)]
pub(crate) struct Uploader {
    copy: Arc<CudaStream>,
    buffers: [PinnedHostSlice<u8>; 2],
    free_again: [CudaEvent; 2],
    ring: PinnedHostSlice<u8>,
    ring_half: usize,
    ring_offset: usize,
    ring_free_again: [CudaEvent; 2],
}

impl Uploader {
    /// The copy stream and 2 x 16 MiB of pinned host memory on `context`.
    pub(crate) fn new(context: &Arc<CudaContext>) -> Result<Uploader> {
        let err = TensorError::driver;
        let copy = context.new_stream().map_err(err("creating the copy stream"))?;
        // SAFETY: the pinned bytes are written before any copy reads them.
        let pinned = || unsafe { context.alloc_pinned::<u8>(CHUNK) }.map_err(err("allocating pinned memory"));
        let event = || context.new_event(None).map_err(err("creating an event"));
        // SAFETY: as above.
        let ring =
            unsafe { context.alloc_pinned::<u8>(2 * RING_HALF) }.map_err(err("allocating pinned memory"))?;
        Ok(Uploader {
            copy,
            buffers: [pinned()?, pinned()?],
            free_again: [event()?, event()?],
            ring,
            ring_half: 0,
            ring_offset: 0,
            ring_free_again: [event()?, event()?],
        })
    }

    /// `bytes` (not empty) in fresh device memory, ordered on `compute`: through the ring when small, else through
    /// the copy stream.
    pub(crate) fn upload(&mut self, compute: &Arc<CudaStream>, bytes: &[u8]) -> Result<CudaSlice<u8>> {
        // SAFETY: every byte is written by the copies `upload_into` queues before `compute` runs anything after them.
        let mut dst = unsafe { compute.alloc::<u8>(bytes.len()) }
            .map_err(TensorError::driver("allocating device memory"))?;
        self.upload_into(compute, bytes, &mut dst.slice_mut(..))?;
        Ok(dst)
    }

    /// `bytes` into existing device memory `dst` (of the same length), ordered on `compute` like [`Uploader::upload`]:
    /// what `compute` queues next sees them.
    pub(crate) fn upload_into(
        &mut self,
        compute: &Arc<CudaStream>,
        bytes: &[u8],
        dst: &mut CudaViewMut<'_, u8>,
    ) -> Result<()> {
        if bytes.len() < STAGED_MIN && bytes.len() <= RING_HALF {
            self.upload_small(compute, bytes, dst)
        } else {
            self.upload_staged(compute, bytes, dst)
        }
    }

    /// A small upload through the ring, queued on `compute` without waiting for the device.
    fn upload_small(
        &mut self,
        compute: &Arc<CudaStream>,
        bytes: &[u8],
        dst: &mut CudaViewMut<'_, u8>,
    ) -> Result<()> {
        let err = TensorError::driver;
        if self.ring_offset + bytes.len() > RING_HALF {
            // Leave this half (its copies end at this event) and take the other once its last copies are done.
            self.ring_free_again[self.ring_half]
                .record(compute)
                .map_err(err("recording a copy"))?;
            self.ring_half ^= 1;
            self.ring_free_again[self.ring_half]
                .synchronize()
                .map_err(err("waiting for the upload ring"))?;
            self.ring_offset = 0;
        }
        let start = self.ring_half * RING_HALF + self.ring_offset;
        let ring = self.ring.as_mut_slice().map_err(err("pinned ring"))?;
        let staged = &mut ring[start..start + bytes.len()];
        staged.copy_from_slice(bytes);
        let (ptr, record) = dst.device_ptr_mut(compute);
        // SAFETY: `staged` is pinned memory of the destination's length, not written again before the event that
        // closes its half has completed.
        unsafe { cudarc::driver::result::memcpy_htod_async(ptr, staged, compute.cu_stream()) }
            .map_err(err("host-to-device copy"))?;
        drop(record); // ends the borrow of `dst`
        self.ring_offset += bytes.len().next_multiple_of(RING_ALIGN);
        Ok(())
    }

    /// `bytes` into `dst` in `compute`'s stream order: filled on the copy stream, and `compute` made to wait for the
    /// copies before whatever it queues next.
    fn upload_staged(
        &mut self,
        compute: &Arc<CudaStream>,
        bytes: &[u8],
        dst: &mut CudaViewMut<'_, u8>,
    ) -> Result<()> {
        let err = TensorError::driver;
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
        Ok(())
    }
}
