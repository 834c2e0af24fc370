//! The tensor type: contiguous row-major storage, shape, dtype, device.

use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaViewMut};
use half::{bf16, f16};

use crate::storage::{CpuBuffer, CudaBuffer, Storage};
use crate::{CudaDevice, DType, Device, Element, Result, TensorError, TensorView};

/// A contiguous row-major tensor. Cloning is cheap (the storage is shared); views along the leading dimension share
/// storage too.
#[derive(Debug, Clone)]
pub struct Tensor {
    storage: Storage,
    offset: usize,
    shape: Vec<usize>,
    dtype: DType,
}

/// The error of an in-place write to storage that other tensors share.
fn shared(op: &'static str) -> TensorError {
    TensorError::Device {
        op,
        detail: "the storage is shared with another tensor; drop its views before writing in place"
            .to_string(),
    }
}

fn numel_of(shape: &[usize]) -> usize {
    shape.iter().product()
}

impl Tensor {
    // ---------------------------------------------------------------- construction

    /// A host tensor from typed values; fails when `values` does not fill `shape`.
    pub fn from_vec<T: Element>(values: Vec<T>, shape: &[usize]) -> Result<Tensor> {
        Tensor::from_slice(&values, shape, Device::Cpu)
    }

    /// A tensor on `device` holding a copy of `values`.
    pub fn from_slice<T: Element>(values: &[T], shape: &[usize], device: Device) -> Result<Tensor> {
        if numel_of(shape) != values.len() {
            return Err(TensorError::shape(
                "Tensor::from_slice",
                format!(
                    "shape {shape:?} needs {} values, got {}",
                    numel_of(shape),
                    values.len()
                ),
            ));
        }
        Tensor::from_bytes(bytemuck::cast_slice(values), T::DTYPE, shape, device)
    }

    /// A tensor on `device` from little-endian bytes (any alignment).
    pub fn from_bytes(bytes: &[u8], dtype: DType, shape: &[usize], device: Device) -> Result<Tensor> {
        let expected = numel_of(shape) * dtype.size_in_bytes();
        if bytes.len() != expected {
            return Err(TensorError::shape(
                "Tensor::from_bytes",
                format!("{dtype} {shape:?} needs {expected} bytes, got {}", bytes.len()),
            ));
        }
        let storage = match device {
            Device::Cpu => Storage::Cpu(Arc::new(CpuBuffer::from_bytes(bytes))),
            Device::Cuda(ordinal) => {
                let device = CudaDevice::get(ordinal)?;
                let slice = upload(&device, bytes)?;
                Storage::Cuda(Arc::new(CudaBuffer { slice, device }))
            }
        };
        Ok(Tensor {
            storage,
            offset: 0,
            shape: shape.to_vec(),
            dtype,
        })
    }

    /// A copy of a borrowed host view (e.g. a weight in an mmap) on `device`.
    pub fn from_view(view: &TensorView<'_>, device: Device) -> Result<Tensor> {
        Tensor::from_bytes(view.data, view.dtype, &view.shape, device)
    }

    /// Zeros of `dtype` (all-zero bytes are zero for every dtype).
    pub fn zeros(shape: &[usize], dtype: DType, device: Device) -> Result<Tensor> {
        let bytes = numel_of(shape) * dtype.size_in_bytes();
        match device {
            Device::Cpu => Ok(Tensor {
                storage: Storage::Cpu(Arc::new(CpuBuffer::zeroed(bytes))),
                offset: 0,
                shape: shape.to_vec(),
                dtype,
            }),
            Device::Cuda(ordinal) => {
                let device = CudaDevice::get(ordinal)?;
                let slice = device
                    .stream()
                    .alloc_zeros::<u8>(bytes.max(1))
                    .map_err(TensorError::driver("allocating device memory"))?;
                Ok(Tensor::from_cuda(slice, device, dtype, shape))
            }
        }
    }

    /// Wraps a host buffer (as CPU kernels produce them).
    pub fn from_cpu_buffer(buffer: CpuBuffer, dtype: DType, shape: &[usize]) -> Result<Tensor> {
        if buffer.len() != numel_of(shape) * dtype.size_in_bytes() {
            return Err(TensorError::shape(
                "Tensor::from_cpu_buffer",
                format!(
                    "{dtype} {shape:?} does not match a buffer of {} bytes",
                    buffer.len()
                ),
            ));
        }
        Ok(Tensor {
            storage: Storage::Cpu(Arc::new(buffer)),
            offset: 0,
            shape: shape.to_vec(),
            dtype,
        })
    }

    /// Wraps a device allocation (as CUDA kernels produce them). The allocation must hold at least
    /// `numel * dtype size` bytes.
    pub fn from_cuda(slice: CudaSlice<u8>, device: Arc<CudaDevice>, dtype: DType, shape: &[usize]) -> Tensor {
        debug_assert!(slice.len() >= numel_of(shape) * dtype.size_in_bytes());
        Tensor {
            storage: Storage::Cuda(Arc::new(CudaBuffer { slice, device })),
            offset: 0,
            shape: shape.to_vec(),
            dtype,
        }
    }

    // ---------------------------------------------------------------- metadata

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        numel_of(&self.shape)
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Where the data lives.
    pub fn device(&self) -> Device {
        self.storage.device()
    }

    /// Size of the data in bytes.
    pub fn size_in_bytes(&self) -> usize {
        self.numel() * self.dtype.size_in_bytes()
    }

    /// The last dimension (1 for a scalar).
    pub fn last_dim(&self) -> usize {
        self.shape.last().copied().unwrap_or(1)
    }

    /// Product of all dimensions but the last: the number of rows a row-wise op sees.
    pub fn rows(&self) -> usize {
        self.numel().checked_div(self.last_dim()).unwrap_or(0)
    }

    /// Fails unless the dtype is `dtype`.
    pub fn expect_dtype(&self, op: &'static str, dtype: DType) -> Result<()> {
        if self.dtype != dtype {
            return Err(TensorError::DType {
                op,
                expected: dtype.to_string(),
                found: self.dtype,
            });
        }
        Ok(())
    }

    /// Fails unless the shape is `shape`.
    pub fn expect_shape(&self, op: &'static str, what: &str, shape: &[usize]) -> Result<()> {
        if self.shape != shape {
            return Err(TensorError::shape(
                op,
                format!("{what}: expected {shape:?}, found {:?}", self.shape),
            ));
        }
        Ok(())
    }

    // ---------------------------------------------------------------- views

    /// The same data with another shape of the same element count (free: storage is contiguous).
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        if numel_of(shape) != self.numel() {
            return Err(TensorError::shape(
                "reshape",
                format!(
                    "{:?} ({} elements) to {shape:?} ({} elements)",
                    self.shape,
                    self.numel(),
                    numel_of(shape)
                ),
            ));
        }
        Ok(Tensor {
            shape: shape.to_vec(),
            ..self.clone()
        })
    }

    /// Rows `start..start+len` of the leading dimension, sharing storage.
    pub fn narrow0(&self, start: usize, len: usize) -> Result<Tensor> {
        let Some(&first) = self.shape.first() else {
            return Err(TensorError::shape("narrow0", "cannot narrow a scalar"));
        };
        if start + len > first {
            return Err(TensorError::shape(
                "narrow0",
                format!("rows {start}..{} of a tensor with {first} rows", start + len),
            ));
        }
        let row_bytes = numel_of(&self.shape[1..]) * self.dtype.size_in_bytes();
        let mut shape = self.shape.clone();
        shape[0] = len;
        Ok(Tensor {
            offset: self.offset + start * row_bytes,
            shape,
            ..self.clone()
        })
    }

    /// Entry `index` of the leading dimension, with that dimension dropped, sharing storage.
    pub fn index0(&self, index: usize) -> Result<Tensor> {
        let view = self.narrow0(index, 1)?;
        Ok(Tensor {
            shape: self.shape[1..].to_vec(),
            ..view
        })
    }

    // ---------------------------------------------------------------- raw access (for kernels)

    /// The host bytes of this tensor, or a device error for a CUDA tensor.
    pub fn cpu_bytes(&self) -> Result<&[u8]> {
        match &self.storage {
            Storage::Cpu(buffer) => Ok(&buffer.as_bytes()[self.offset..self.offset + self.size_in_bytes()]),
            Storage::Cuda(_) => Err(TensorError::Device {
                op: "cpu_bytes",
                detail: format!(
                    "tensor is on {}; copy it with to_device(Device::Cpu)",
                    self.device()
                ),
            }),
        }
    }

    /// The host elements as `&[T]`; fails on a dtype or device mismatch.
    pub fn as_slice<T: Element>(&self) -> Result<&[T]> {
        self.expect_dtype("as_slice", T::DTYPE)?;
        // Storage is 8-byte aligned and offsets are whole elements, so the cast cannot fail on alignment.
        Ok(bytemuck::cast_slice(self.cpu_bytes()?))
    }

    /// The device buffer, the byte offset of this tensor in it, and its byte length; fails for a host tensor.
    pub fn cuda_parts(&self) -> Result<(&CudaBuffer, usize, usize)> {
        match &self.storage {
            Storage::Cuda(buffer) => Ok((buffer, self.offset, self.size_in_bytes())),
            Storage::Cpu(_) => Err(TensorError::Device {
                op: "cuda_parts",
                detail: "tensor is on the host".to_string(),
            }),
        }
    }

    // ---------------------------------------------------------------- in-place access (for caches)

    /// The host bytes of this tensor for writing in place; fails for a device tensor or when another tensor (a
    /// clone or a view) shares the storage, since a write would change it too.
    pub fn cpu_bytes_mut(&mut self) -> Result<&mut [u8]> {
        let range = self.offset..self.offset + self.size_in_bytes();
        match &mut self.storage {
            Storage::Cpu(buffer) => Ok(&mut Arc::get_mut(buffer)
                .ok_or_else(|| shared("cpu_bytes_mut"))?
                .as_bytes_mut()[range]),
            Storage::Cuda(_) => Err(TensorError::Device {
                op: "cpu_bytes_mut",
                detail: "tensor is on a GPU".to_string(),
            }),
        }
    }

    /// This tensor's device memory for writing in place (by a kernel); fails for a host tensor or when another
    /// tensor shares the storage.
    pub fn cuda_view_mut(&mut self) -> Result<CudaViewMut<'_, u8>> {
        let range = self.offset..self.offset + self.size_in_bytes();
        match &mut self.storage {
            Storage::Cuda(buffer) => {
                let buffer = Arc::get_mut(buffer).ok_or_else(|| shared("cuda_view_mut"))?;
                Ok(buffer.slice.slice_mut(range))
            }
            Storage::Cpu(_) => Err(TensorError::Device {
                op: "cuda_view_mut",
                detail: "tensor is on the host".to_string(),
            }),
        }
    }

    /// Overwrites this device tensor with `values` (as many elements as it holds, of its dtype), ordered on the
    /// compute stream: what is queued next sees them. For inputs that must stay at one address (a CUDA graph's).
    /// Fails for a host tensor, a dtype or length mismatch, or a storage shared with another tensor.
    pub fn write_from_host<T: Element>(&mut self, values: &[T]) -> Result<()> {
        const OP: &str = "write_from_host";
        self.expect_dtype(OP, T::DTYPE)?;
        if values.len() != self.numel() {
            return Err(TensorError::Shape {
                op: OP,
                detail: format!("{} values for a tensor of {:?}", values.len(), self.shape),
            });
        }
        if values.is_empty() {
            return Ok(());
        }
        let device = match &self.storage {
            Storage::Cuda(buffer) => buffer.device.clone(),
            Storage::Cpu(_) => {
                return Err(TensorError::Device {
                    op: OP,
                    detail: "tensor is on the host".to_string(),
                })
            }
        };
        device.upload_into(bytemuck::cast_slice(values), &mut self.cuda_view_mut()?)
    }

    // ---------------------------------------------------------------- copies and conversions

    /// Overwrites this tensor with `src` (same dtype, shape and device), ordered on the device's stream: a copy into
    /// memory that stays at one address (a CUDA graph's output). Fails when another tensor shares this storage.
    pub fn copy_from(&mut self, src: &Tensor) -> Result<()> {
        const OP: &str = "copy_from";
        src.expect_dtype(OP, self.dtype)?;
        src.expect_shape(OP, "source", &self.shape.clone())?;
        if src.device() != self.device() {
            return Err(TensorError::Device {
                op: OP,
                detail: format!("source on {}, destination on {}", src.device(), self.device()),
            });
        }
        match &src.storage {
            Storage::Cpu(_) => {
                let from = src.cpu_bytes()?.to_vec();
                self.cpu_bytes_mut()?.copy_from_slice(&from);
            }
            Storage::Cuda(buffer) => {
                let stream = buffer.device.stream().clone();
                let from = buffer.slice.slice(src.offset..src.offset + src.size_in_bytes());
                stream
                    .memcpy_dtod(&from, &mut self.cuda_view_mut()?)
                    .map_err(TensorError::driver("device-to-device copy"))?;
            }
        }
        Ok(())
    }

    /// A copy in fresh memory on the same device (unlike `clone`, which shares the storage).
    pub fn deep_copy(&self) -> Result<Tensor> {
        match &self.storage {
            Storage::Cpu(_) => Tensor::from_bytes(self.cpu_bytes()?, self.dtype, &self.shape, Device::Cpu),
            Storage::Cuda(buffer) => {
                let slice = buffer
                    .device
                    .stream()
                    .clone_dtod(
                        &buffer
                            .slice
                            .slice(self.offset..self.offset + self.size_in_bytes()),
                    )
                    .map_err(TensorError::driver("device-to-device copy"))?;
                Ok(Tensor::from_cuda(
                    slice,
                    buffer.device.clone(),
                    self.dtype,
                    &self.shape,
                ))
            }
        }
    }

    /// A copy on `device` (a cheap clone when it is already there).
    pub fn to_device(&self, device: Device) -> Result<Tensor> {
        if self.device() == device {
            return Ok(self.clone());
        }
        let host;
        let bytes = match &self.storage {
            Storage::Cpu(_) => self.cpu_bytes()?,
            Storage::Cuda(buffer) => {
                host = download(buffer, self.offset, self.size_in_bytes())?;
                &host[..]
            }
        };
        Tensor::from_bytes(bytes, self.dtype, &self.shape, device)
    }

    /// A host weight placed on `device` in the dtype that device computes with: unchanged on the CPU (which computes
    /// in f32 from any float dtype); on a GPU, float weights become bf16 before the upload (an F32 checkpoint tensor
    /// costs bf16 bytes there), other dtypes are uploaded as they are.
    pub fn weight_on(&self, device: Device) -> Result<Tensor> {
        match device {
            Device::Cpu => self.to_device(device),
            Device::Cuda(_) if matches!(self.dtype, DType::F32 | DType::F16) => self
                .to_device(Device::Cpu)?
                .to_dtype(DType::BF16)?
                .to_device(device),
            Device::Cuda(_) => self.to_device(device),
        }
    }

    /// The elements as a `Vec<T>` (downloads from the GPU when needed); fails on a dtype mismatch.
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        self.expect_dtype("to_vec", T::DTYPE)?;
        Ok(self.to_device(Device::Cpu)?.as_slice::<T>()?.to_vec())
    }

    /// The elements widened to f64, whatever the dtype (for tests and references).
    pub fn to_f64_vec(&self) -> Result<Vec<f64>> {
        let host = self.to_device(Device::Cpu)?;
        Ok(match self.dtype {
            DType::F32 => widen::<f32>(&host)?,
            DType::BF16 => widen::<bf16>(&host)?,
            DType::F16 => widen::<f16>(&host)?,
            DType::I32 => widen::<i32>(&host)?,
            DType::I64 => widen::<i64>(&host)?,
            DType::U8 => widen::<u8>(&host)?,
            DType::F8E4M3 => return Err(TensorError::Unsupported("reading fp8-e4m3 values".into())),
        })
    }

    /// The elements as f32, whatever the dtype.
    pub fn to_f32_vec(&self) -> Result<Vec<f32>> {
        if self.dtype == DType::F32 {
            return self.to_vec::<f32>();
        }
        Ok(self.to_f64_vec()?.into_iter().map(|v| v as f32).collect())
    }

    /// A host copy converted to `dtype` (round-to-nearest-even for floats; float to int truncates and saturates).
    /// Device tensors are converted by `nvlm_kernels::cast`, which keeps them on the device.
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        if dtype == self.dtype {
            return Ok(self.clone());
        }
        if !self.device().is_cpu() {
            return Err(TensorError::Device {
                op: "to_dtype",
                detail: format!(
                    "tensor is on {}; use nvlm_kernels::cast for device tensors",
                    self.device()
                ),
            });
        }
        match (self.dtype, dtype) {
            (DType::BF16, DType::F32) => self.map_host(|x: bf16| x.to_f32()),
            (DType::F16, DType::F32) => self.map_host(|x: f16| x.to_f32()),
            (DType::F32, DType::BF16) => self.map_host(bf16::from_f32),
            (DType::F32, DType::F16) => self.map_host(f16::from_f32),
            (DType::F8E4M3, _) | (_, DType::F8E4M3) => {
                Err(TensorError::Unsupported("conversions to or from fp8-e4m3".into()))
            }
            (_, target) => {
                let values = self.to_f64_vec()?;
                match target {
                    DType::F32 => narrow::<f32>(&values, &self.shape),
                    DType::BF16 => narrow::<bf16>(&values, &self.shape),
                    DType::F16 => narrow::<f16>(&values, &self.shape),
                    DType::I32 => narrow::<i32>(&values, &self.shape),
                    DType::I64 => narrow::<i64>(&values, &self.shape),
                    DType::U8 => narrow::<u8>(&values, &self.shape),
                    DType::F8E4M3 => unreachable!("handled above"),
                }
            }
        }
    }

    fn map_host<A: Element, B: Element>(&self, f: impl Fn(A) -> B) -> Result<Tensor> {
        let out: Vec<B> = self.as_slice::<A>()?.iter().map(|&x| f(x)).collect();
        Tensor::from_vec(out, &self.shape)
    }
}

fn widen<T: Element>(host: &Tensor) -> Result<Vec<f64>> {
    Ok(host.as_slice::<T>()?.iter().map(|x| x.to_f64()).collect())
}

fn narrow<T: Element>(values: &[f64], shape: &[usize]) -> Result<Tensor> {
    Tensor::from_vec(values.iter().map(|&v| T::from_f64(v)).collect(), shape)
}

fn upload(device: &CudaDevice, bytes: &[u8]) -> Result<CudaSlice<u8>> {
    let stream = device.stream();
    if bytes.is_empty() {
        return stream
            .alloc_zeros::<u8>(1)
            .map_err(TensorError::driver("allocating device memory"));
    }
    device.upload(bytes)
}

fn download(buffer: &CudaBuffer, offset: usize, len: usize) -> Result<Vec<u8>> {
    if len == 0 {
        return Ok(Vec::new());
    }
    let stream = buffer.device.stream();
    stream
        .clone_dtoh(&buffer.slice.slice(offset..offset + len))
        .map_err(TensorError::driver("device-to-host copy"))
}
