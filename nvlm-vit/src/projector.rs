//! The `mlp1` projector: LayerNorm, Linear (no bias), exact GELU, Linear (no bias).

use nvlm_kernels as k;
use nvlm_tensor::{load_weight, Device, Tensor, Weights};

use crate::Result;

/// `mlp1` weights.
pub struct Projector {
    norm_weight: Tensor,
    norm_bias: Tensor,
    fc1: Tensor,
    fc2: Tensor,
    eps: f32,
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
        Ok(Projector {
            norm_weight: load_weight(weights, "mlp1.0.weight", &[input], device)?,
            norm_bias: load_weight(weights, "mlp1.0.bias", &[input], device)?,
            fc1: load_weight(weights, "mlp1.1.weight", &[hidden, input], device)?,
            fc2: load_weight(weights, "mlp1.3.weight", &[output, hidden], device)?,
            eps,
        })
    }

    /// Returns (LayerNorm output, first Linear output, projector output).
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let norm = k::layer_norm(x, &self.norm_weight, &self.norm_bias, self.eps)?;
        let fc1 = k::matmul(&norm, &self.fc1, None)?;
        let out = k::matmul(&k::gelu(&fc1)?, &self.fc2, None)?;
        Ok((norm, fc1, out))
    }
}
