//! Test support: the shared fixtures folder and typed views of host tensors.
#![allow(dead_code)]

use half::bf16;
use nvlm_checkpoint::{HostTensor, StoredDType};

pub use nvlm_testkit::fixtures;

/// The values of a float or int tensor as f64.
pub fn values(t: &HostTensor) -> Vec<f64> {
    let b = &t.data;
    match t.dtype {
        StoredDType::F32 => b
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        StoredDType::BF16 => b
            .chunks(2)
            .map(|c| bf16::from_le_bytes(c.try_into().unwrap()).to_f64())
            .collect(),
        StoredDType::F16 => b
            .chunks(2)
            .map(|c| half::f16::from_le_bytes(c.try_into().unwrap()).to_f64())
            .collect(),
        StoredDType::I64 => b
            .chunks(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        other => panic!("no test view for {other}"),
    }
}

/// `start, start+1, ...` (n values).
pub fn range(start: f64, n: usize) -> Vec<f64> {
    (0..n).map(|i| start + i as f64).collect()
}
