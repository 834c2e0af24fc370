//! TMA tensor maps (`CUtensorMap`): what a kernel that loads tiles with Hopper's Tensor Memory Accelerator is given
//! to describe a tensor in device memory and the box one load moves.

use std::ffi::c_void;

use cudarc::driver::{sys, DevicePtr, DeviceRepr};
use nvlm_tensor::{DType, Tensor};

use crate::{KernelError, Result};

/// A `CUtensorMap`: 128 opaque bytes, 64-byte aligned, passed to a kernel by value (its `TensorMap` parameter in
/// `cuda/tma.cuh`).
#[repr(C, align(64))]
#[derive(Debug, Clone, Copy)]
pub(crate) struct TensorMap([u64; 16]);

// SAFETY: plain bytes of CUtensorMap's size and alignment, which the kernel reads as its `TensorMap` parameter.
unsafe impl DeviceRepr for TensorMap {}

/// The map of the contiguous bf16 tensor `t` viewed as `dims` (innermost first; 1 to 5 of them), loading boxes of
/// `box_dims` elements into shared memory with the 128-byte swizzle (the layout wgmma's swizzled descriptors read),
/// zeros where a box reaches past the tensor. The innermost box dimension is at most 64 bf16 (one 128-byte row).
pub(crate) fn bf16_map(op: &'static str, t: &Tensor, dims: &[usize], box_dims: &[u32]) -> Result<TensorMap> {
    let rank = dims.len();
    if t.dtype() != DType::BF16
        || !(1..=5).contains(&rank)
        || box_dims.len() != rank
        || dims.iter().product::<usize>() != t.shape().iter().product::<usize>()
    {
        return Err(KernelError::invalid(
            op,
            format!(
                "a TMA map of {dims:?} over a {:?} {} tensor",
                t.shape(),
                t.dtype()
            ),
        ));
    }
    let (buffer, offset, len) = t.cuda_parts()?;
    let stream = buffer.device.stream();
    let view = buffer.slice.slice(offset..offset + len);
    let (address, _read) = view.device_ptr(stream);
    let global_dims: Vec<u64> = dims.iter().map(|&d| d as u64).collect();
    // Bytes between consecutive indices of dims 1.. (dim 0 is contiguous).
    let strides: Vec<u64> = global_dims[..rank - 1]
        .iter()
        .scan(2u64, |stride, &d| {
            *stride *= d;
            Some(*stride)
        })
        .collect();
    let element_strides = vec![1u32; rank];
    let mut map = TensorMap([0; 16]);
    // SAFETY: `map` is 128 writable bytes, 64-byte aligned; the arrays hold `rank` entries, strides rank - 1;
    // `address` is the tensor's live device memory, which the launch using the map also takes as an argument.
    let status = unsafe {
        sys::cuTensorMapEncodeTiled(
            map.0.as_mut_ptr().cast(),
            sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
            rank as u32,
            address as *mut c_void,
            global_dims.as_ptr(),
            strides.as_ptr(),
            box_dims.as_ptr(),
            element_strides.as_ptr(),
            sys::CUtensorMapInterleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
            sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_128B,
            sys::CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
            sys::CUtensorMapFloatOOBfill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
        )
    };
    status.result().map_err(KernelError::cuda(op)).map(|()| map)
}
