//! Raw tensor storage: 8-byte aligned host bytes, or a CUDA allocation.

use std::sync::Arc;

use cudarc::driver::CudaSlice;

use crate::{CudaDevice, Device};

/// Host bytes with 8-byte alignment, so that any element type can be viewed in place.
#[derive(Debug, Clone)]
pub struct CpuBuffer {
    words: Vec<u64>,
    len: usize,
}

impl CpuBuffer {
    /// `len` zero bytes.
    pub fn zeroed(len: usize) -> Self {
        CpuBuffer {
            words: vec![0u64; len.div_ceil(8)],
            len,
        }
    }

    /// A copy of `bytes`.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let mut buffer = CpuBuffer::zeroed(bytes.len());
        buffer.as_bytes_mut().copy_from_slice(bytes);
        buffer
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &bytemuck::cast_slice::<u64, u8>(&self.words)[..self.len]
    }

    /// The bytes, mutably.
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut::<u64, u8>(&mut self.words)[..self.len]
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A CUDA allocation and the device (context + stream) it belongs to.
#[derive(Debug)]
pub struct CudaBuffer {
    /// The allocation, in bytes.
    pub slice: CudaSlice<u8>,
    /// The device whose stream orders all work on it.
    pub device: Arc<CudaDevice>,
}

/// Shared, immutable storage behind one or more tensors.
#[derive(Debug, Clone)]
pub enum Storage {
    /// Host memory.
    Cpu(Arc<CpuBuffer>),
    /// Device memory.
    Cuda(Arc<CudaBuffer>),
}

impl Storage {
    /// The device this storage lives on.
    pub fn device(&self) -> Device {
        match self {
            Storage::Cpu(_) => Device::Cpu,
            Storage::Cuda(b) => Device::Cuda(b.device.ordinal()),
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        match self {
            Storage::Cpu(b) => b.len(),
            Storage::Cuda(b) => b.slice.len(),
        }
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
