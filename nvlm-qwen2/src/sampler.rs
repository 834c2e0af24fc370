//! Choosing tokens: greedy or sampled (temperature, top-k, top-p, seed) with a repetition penalty, and stop
//! conditions.

use nvlm_dist::Comm;
use nvlm_kernels::{argmax, sample, SamplingParams};
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

    /// True when the next token is the argmax (temperature 0).
    pub fn is_greedy(&self) -> bool {
        self.config.params.temperature == 0.0
    }

    /// Applies the repetition penalty to `row`, the logits of ids `first_id..first_id + row.len()`.
    fn penalize(&self, row: &mut [f32], context: &[u32], first_id: usize) {
        if self.config.repetition_penalty == 1.0 {
            return;
        }
        let mut seen = vec![false; row.len()];
        for &id in context {
            if let Some(s) = (id as usize).checked_sub(first_id).and_then(|i| seen.get_mut(i)) {
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

    /// The greedy next token when each rank holds only its slice of the vocabulary: `local[len]` (f32) are the
    /// logits of ids `first_id..first_id + len`. Ranks exchange one (value, id) pair each, not the logits; the
    /// highest value wins, ties to the lowest id, as a whole-vocabulary argmax.
    pub fn next_greedy_sharded(
        &mut self,
        local: &Tensor,
        context: &[u32],
        first_id: usize,
        comm: &dyn Comm,
    ) -> Result<u32> {
        let mut row = local.to_f32_vec()?;
        self.penalize(&mut row, context, first_id);
        let width = row.len();
        let row = Tensor::from_vec(row, &[1, width])?;
        let best = argmax(&row)?.to_vec::<i32>()?[0] as usize;
        // Ids below 2^24 are exact in f32.
        let pair = Tensor::from_vec(
            vec![row.as_slice::<f32>()?[best], (first_id + best) as f32],
            &[1, 2],
        )?;
        let pairs = comm.all_gather(&pair)?.to_f32_vec()?;
        let mut winner = (f32::NEG_INFINITY, 0.0);
        for (i, pair) in pairs.chunks(2).enumerate() {
            if i == 0 || pair[0] > winner.0 || winner.0.is_nan() {
                winner = (pair[0], pair[1]);
            }
        }
        self.step += 1;
        Ok(winner.1 as u32)
    }

    /// The next token from `logits[vocab]` (f32) given the tokens so far (`context`, for the repetition penalty).
    pub fn next(&mut self, logits: &Tensor, context: &[u32]) -> Result<u32> {
        let vocab = logits.numel();
        if self.config.repetition_penalty == 1.0 {
            // Greedy or sampled where the logits are (on a GPU, a kernel): only the id crosses to the host.
            let id =
                sample(&logits.reshape(&[1, vocab])?, &self.config.params, self.step)?.to_vec::<i32>()?[0];
            self.step += 1;
            return Ok(id as u32);
        }
        let mut row = logits.to_f32_vec()?;
        self.penalize(&mut row, context, 0);
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
