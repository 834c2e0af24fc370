//! The `mlp1` projector: LayerNorm, Linear (no bias), exact GELU, Linear (no bias).

use nvlm_kernels as k;
use std::sync::Arc;

use nvlm_dist::Comm;
use nvlm_tensor::{load_weight, load_weight_columns, load_weight_rows, Device, Tensor, Weights};

use crate::{Result, VitError};

/// `mlp1` weights.
pub struct Projector {
    norm_weight: Tensor,
    norm_bias: Tensor,
    fc1: Tensor,
    fc2: Tensor,
    eps: f32,
    /// The tensor-parallel group (`fc1` column-parallel, `fc2` row-parallel); `None` without.
    comm: Option<Arc<dyn Comm>>,
}

impl Projector {
    /// Loads `mlp1.{0,1,3}` for `input` (4 x ViT width) -> `hidden` -> `output` (LLM width).
    pub fn load(
        weights: &dyn Weights,
        input: usize,
        hidden: usize,
        output: usize,
        eps: f32,
        device: Device,
    ) -> Result<Projector> {
        Projector::load_ranked(weights, [input, hidden, output], eps, device, None)
    }

    /// Loads rank `comm.rank()`'s share: rows of the first Linear, the matching columns of the second, whose
    /// partial outputs are all-reduced.
    pub fn load_shard(
        weights: &dyn Weights,
        [input, hidden, output]: [usize; 3],
        eps: f32,
        device: Device,
        comm: Arc<dyn Comm>,
    ) -> Result<Projector> {
        Projector::load_ranked(weights, [input, hidden, output], eps, device, Some(comm))
    }

    fn load_ranked(
        weights: &dyn Weights,
        [input, hidden, output]: [usize; 3],
        eps: f32,
        device: Device,
        comm: Option<Arc<dyn Comm>>,
    ) -> Result<Projector> {
        let (rank, size) = comm.as_ref().map_or((0, 1), |comm| (comm.rank(), comm.size()));
        if !hidden.is_multiple_of(size) {
            return Err(VitError::Config(format!(
                "tensor parallelism {size} does not divide the projector's {hidden} hidden rows"
            )));
        }
        let share = hidden / size;
        Ok(Projector {
            norm_weight: load_weight(weights, "mlp1.0.weight", &[input], device)?,
            norm_bias: load_weight(weights, "mlp1.0.bias", &[input], device)?,
            fc1: load_weight_rows(
                weights,
                "mlp1.1.weight",
                &[hidden, input],
                rank * share,
                share,
                device,
            )?,
            fc2: load_weight_columns(
                weights,
                "mlp1.3.weight",
                &[output, hidden],
                rank * share,
                share,
                device,
            )?,
            eps,
            comm,
        })
    }

    /// Returns (LayerNorm output, first Linear output (this rank's rows under tensor parallelism), projector
    /// output).
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let norm = k::layer_norm(x, &self.norm_weight, &self.norm_bias, self.eps)?;
        let fc1 = k::matmul(&norm, &self.fc1, None)?;
        let out = k::matmul(&k::gelu(&fc1)?, &self.fc2, None)?;
        let out = match &self.comm {
            Some(comm) => comm.all_reduce_sum(&out)?,
            None => out,
        };
        Ok((norm, fc1, out))
    }
}
