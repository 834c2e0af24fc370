//! The NCCL communicator for GPUs, through cudarc with NCCL loaded at run time (building needs no NCCL; using it
//! without `libnccl.so.2` is a clear error). One communicator per GPU; collectives are enqueued on the device's
//! compute stream, so they order after the kernels that produce their inputs and need no host synchronisation.

use std::sync::{Arc, Mutex};

use cudarc::nccl::{Comm as RawComm, Id, ReduceOp};
use nvlm_tensor::{CudaDevice, DType, Tensor};

use crate::{Comm, DistError, Result};

/// The bytes of an NCCL unique id: made by rank 0, handed to every rank (see [`crate::rendezvous`]).
pub type NcclUniqueId = [u8; 128];

/// cudarc's communicator holds a raw NCCL handle; NCCL allows any thread to use it, one at a time, which the mutex
/// in [`NcclComm`] ensures.
struct Handle(RawComm);
// SAFETY: see above; the handle is only used under `NcclComm::comm`'s lock.
unsafe impl Send for Handle {}

/// One rank of an NCCL group, bound to one GPU.
pub struct NcclComm {
    comm: Mutex<Handle>,
    device: Arc<CudaDevice>,
    rank: usize,
    size: usize,
}

fn nccl_error(what: &str, e: impl std::fmt::Debug) -> DistError {
    DistError::Group(format!("NCCL {what} failed: {e:?}"))
}

/// Whether the NCCL library can be loaded (it never panics).
pub fn nccl_available() -> bool {
    // SAFETY: only tries to dlopen the library by its candidate names.
    unsafe { cudarc::nccl::sys::is_culib_present() }
}

fn require_nccl() -> Result<()> {
    if nccl_available() {
        Ok(())
    } else {
        Err(DistError::Group(
            "the NCCL library (libnccl.so.2) was not found: install NCCL (e.g. `pip install nvidia-nccl-cu13`) and \
             add its lib folder to LD_LIBRARY_PATH"
                .into(),
        ))
    }
}

impl NcclComm {
    /// A fresh unique id (on rank 0, to hand to the others).
    pub fn unique_id() -> Result<NcclUniqueId> {
        require_nccl()?;
        let id = Id::new().map_err(|e| nccl_error("ncclGetUniqueId", e))?;
        Ok(id.internal().map(|c| c as u8))
    }

    /// Joins the group `id` as `rank` of `size` on `device` (every rank must call this; it blocks until all have).
    pub fn new(device: Arc<CudaDevice>, rank: usize, size: usize, id: &NcclUniqueId) -> Result<NcclComm> {
        require_nccl()?;
        if rank >= size {
            return Err(DistError::Group(format!(
                "rank {rank} does not fit a group of {size}"
            )));
        }
        let id = Id::uninit(id.map(|b| b as core::ffi::c_char));
        let comm = RawComm::from_rank(device.stream().clone(), rank, size, id)
            .map_err(|e| nccl_error("ncclCommInitRank", e))?;
        Ok(NcclComm {
            comm: Mutex::new(Handle(comm)),
            device,
            rank,
            size,
        })
    }

    /// One process driving several GPUs: a communicator per device, rank `i` on `devices[i]`, created together
    /// (`ncclCommInitAll`), for one driving thread per GPU.
    pub fn group(devices: &[Arc<CudaDevice>]) -> Result<Vec<NcclComm>> {
        require_nccl()?;
        let streams = devices.iter().map(|d| d.stream().clone()).collect();
        let comms = RawComm::from_devices(streams).map_err(|e| nccl_error("ncclCommInitAll", e))?;
        let size = devices.len();
        Ok(comms
            .into_iter()
            .zip(devices)
            .enumerate()
            .map(|(rank, (comm, device))| NcclComm {
                comm: Mutex::new(Handle(comm)),
                device: device.clone(),
                rank,
                size,
            })
            .collect())
    }

    /// A group of one on `device` (what a single GPU can check).
    pub fn single(device: Arc<CudaDevice>) -> Result<NcclComm> {
        NcclComm::new(device, 0, 1, &NcclComm::unique_id()?)
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Handle>> {
        self.comm
            .lock()
            .map_err(|_| DistError::Group("a thread panicked while using the NCCL communicator".into()))
    }

    /// A fresh device buffer of `bytes` on this rank's GPU.
    fn alloc(&self, bytes: usize) -> Result<cudarc::driver::CudaSlice<u8>> {
        self.device
            .stream()
            .alloc_zeros::<u8>(bytes)
            .map_err(|e| DistError::Group(format!("allocating {bytes} bytes for a collective: {e:?}")))
    }

    /// An empty result (collectives of nothing move nothing; every rank takes this path together).
    fn empty(&self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        Ok(Tensor::zeros(
            shape,
            dtype,
            nvlm_tensor::Device::Cuda(self.device.ordinal()),
        )?)
    }

    /// `tensor` on this rank's GPU: host tensors (small control values such as a stop flag or a (value, id) pair)
    /// are uploaded; results of collectives always live on the GPU.
    /// A tensor on another GPU is left as it is (and refused by `device_bytes`).
    fn on_gpu(&self, tensor: &Tensor) -> Result<Tensor> {
        match tensor.device() {
            nvlm_tensor::Device::Cpu => {
                Ok(tensor.to_device(nvlm_tensor::Device::Cuda(self.device.ordinal()))?)
            }
            _ => Ok(tensor.clone()),
        }
    }

    /// `tensor`'s device bytes, checking it lives on this rank's GPU.
    fn device_bytes<'t>(
        &self,
        op: &'static str,
        tensor: &'t Tensor,
    ) -> Result<cudarc::driver::CudaView<'t, u8>> {
        let (buffer, offset, len) = tensor.cuda_parts()?;
        if buffer.device.ordinal() != self.device.ordinal() {
            return Err(DistError::Mismatch {
                op,
                rank: self.rank,
                detail: format!(
                    "a tensor on cuda:{} to a communicator on cuda:{}",
                    buffer.device.ordinal(),
                    self.device.ordinal()
                ),
            });
        }
        Ok(buffer.slice.slice(offset..offset + len))
    }
}

impl Comm for NcclComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn all_reduce_sum(&self, tensor: &Tensor) -> Result<Tensor> {
        const OP: &str = "all_reduce_sum";
        if tensor.numel() == 0 {
            return self.empty(tensor.shape(), tensor.dtype());
        }
        let local = self.on_gpu(tensor)?;
        let src = self.device_bytes(OP, &local)?;
        let n = tensor.numel();
        let mut out = self.alloc(tensor.size_in_bytes())?;
        {
            let handle = self.lock()?;
            // SAFETY: the views cover exactly `n` elements of the tensor's dtype (contiguous, aligned storage).
            macro_rules! reduce {
                ($t:ty) => {{
                    let src = unsafe { src.transmute::<$t>(n) }.ok_or_else(|| nccl_error("view", OP))?;
                    let mut dst =
                        unsafe { out.transmute_mut::<$t>(n) }.ok_or_else(|| nccl_error("view", OP))?;
                    handle
                        .0
                        .all_reduce(&src, &mut dst, &ReduceOp::Sum)
                        .map_err(|e| nccl_error("ncclAllReduce", e))?;
                }};
            }
            match tensor.dtype() {
                DType::F32 => reduce!(f32),
                DType::BF16 => reduce!(half::bf16),
                DType::F16 => reduce!(half::f16),
                DType::I32 => reduce!(i32),
                DType::I64 => reduce!(i64),
                other => {
                    return Err(DistError::Mismatch {
                        op: OP,
                        rank: self.rank,
                        detail: format!("a {other:?} tensor, which NCCL cannot sum"),
                    })
                }
            }
        }
        Ok(Tensor::from_cuda(
            out,
            self.device.clone(),
            tensor.dtype(),
            tensor.shape(),
        ))
    }

    fn all_gather(&self, tensor: &Tensor) -> Result<Tensor> {
        let mut shape = tensor.shape().to_vec();
        if shape.is_empty() {
            shape.push(1);
        }
        shape[0] *= self.size;
        if tensor.numel() == 0 {
            return self.empty(&shape, tensor.dtype());
        }
        let local = self.on_gpu(tensor)?;
        let src = self.device_bytes("all_gather", &local)?;
        let mut out = self.alloc(tensor.size_in_bytes() * self.size)?;
        self.lock()?
            .0
            .all_gather(&src, &mut out)
            .map_err(|e| nccl_error("ncclAllGather", e))?;
        Ok(Tensor::from_cuda(
            out,
            self.device.clone(),
            tensor.dtype(),
            &shape,
        ))
    }

    fn broadcast(&self, tensor: &Tensor, root: usize) -> Result<Tensor> {
        if root >= self.size {
            return Err(DistError::Group(format!(
                "broadcast from rank {root} in a group of {}",
                self.size
            )));
        }
        if tensor.numel() == 0 {
            return self.empty(tensor.shape(), tensor.dtype());
        }
        let local = self.on_gpu(tensor)?;
        let src = self.device_bytes("broadcast", &local)?;
        let mut out = self.alloc(tensor.size_in_bytes())?;
        self.lock()?
            .0
            .broadcast(Some(&src), &mut out, root as i32)
            .map_err(|e| nccl_error("ncclBroadcast", e))?;
        Ok(Tensor::from_cuda(
            out,
            self.device.clone(),
            tensor.dtype(),
            tensor.shape(),
        ))
    }

    fn barrier(&self) -> Result<()> {
        // An all-reduce of one value, then wait for it: every rank has arrived when it completes.
        self.all_reduce_sum(&Tensor::from_vec(vec![0f32], &[1])?)?;
        self.device.synchronize()?;
        Ok(())
    }
}
