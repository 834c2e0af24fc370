//! Choosing tokens: greedy or sampled (temperature, top-k, top-p, seed) with a repetition penalty, and stop
//! conditions.

use nvlm_kernels::{sample, SamplingParams};
use nvlm_tensor::Tensor;

use crate::Result;

/// Sampling settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerConfig {
    /// Temperature, top-k, top-p, seed (temperature 0 = greedy).
    pub params: SamplingParams,
    /// transformers' repetition penalty: logits of tokens already present are divided by it when positive and
    /// multiplied when negative; 1.0 disables.
    pub repetition_penalty: f32,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            params: SamplingParams::default(),
            repetition_penalty: 1.0,
        }
    }
}

/// Picks the next token of one sequence.
pub struct Sampler {
    config: SamplerConfig,
    step: u64,
}

impl Sampler {
    /// A sampler at step 0.
    pub fn new(config: SamplerConfig) -> Sampler {
        Sampler { config, step: 0 }
    }

    /// The next token from `logits[vocab]` (f32) given the tokens so far (`context`, for the repetition penalty).
    pub fn next(&mut self, logits: &Tensor, context: &[u32]) -> Result<u32> {
        let vocab = logits.numel();
        let mut row = logits.to_f32_vec()?;
        if self.config.repetition_penalty != 1.0 {
            let mut seen = vec![false; vocab];
            for &id in context {
                if let Some(s) = seen.get_mut(id as usize) {
                    *s = true;
                }
            }
            for (v, _) in row.iter_mut().zip(&seen).filter(|(_, s)| **s) {
                *v = if *v > 0.0 {
                    *v / self.config.repetition_penalty
                } else {
                    *v * self.config.repetition_penalty
                };
            }
        }
        let id = sample(
            &Tensor::from_vec(row, &[1, vocab])?,
            &self.config.params,
            self.step,
        )?
        .to_vec::<i32>()?[0];
        self.step += 1;
        Ok(id as u32)
    }
}
