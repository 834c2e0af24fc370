//! A stand-in communicator for timing one rank's share of a tensor-parallel model on one GPU: rank 0 of `size`,
//! every collective local (the all-reduces are not timed; one GPU cannot host the other ranks).

use nvlm_dist::{Comm, DistError, Result};
use nvlm_tensor::Tensor;

/// Rank 0 of a group of `size` whose collectives do no communication.
pub struct SoloShare {
    /// The tensor-parallel size this rank pretends to belong to.
    pub size: usize,
}

impl Comm for SoloShare {
    fn rank(&self) -> usize {
        0
    }

    fn size(&self) -> usize {
        self.size
    }

    fn all_reduce_sum(&self, tensor: &Tensor) -> Result<Tensor> {
        Ok(tensor.clone())
    }

    fn all_gather(&self, tensor: &Tensor) -> Result<Tensor> {
        let copies = vec![tensor; self.size];
        nvlm_kernels::concat(&copies, 0).map_err(|e| DistError::Group(e.to_string()))
    }

    fn broadcast(&self, tensor: &Tensor, _root: usize) -> Result<Tensor> {
        Ok(tensor.clone())
    }

    fn barrier(&self) -> Result<()> {
        Ok(())
    }
}
