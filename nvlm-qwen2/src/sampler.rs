//! Choosing tokens: greedy or sampled (temperature, top-k, top-p, seed) with a repetition penalty, and stop
//! conditions.

use nvlm_dist::Comm;
use nvlm_kernels::{
    argmax_with_value, draw_index, fixed_weight, repetition_penalty, sample, top_p_count, uniform,
    SamplingParams, FIXED_ONE,
};
use nvlm_tensor::Tensor;

use crate::Result;

/// Candidates each rank offers for top-p sampling without top-k ([`Sampler::next_sampled_sharded`]).
pub const SHARDED_CANDIDATES: usize = 1024;

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

    /// `local`, the logits of ids `first_id..first_id + len`, with the repetition penalty applied where they are
    /// (the same op as the whole-vocabulary path, given the context ids that fall in this slice, made local), as one
    /// row `[1, len]`.
    fn penalized(&self, local: &Tensor, context: &[u32], first_id: usize) -> Result<Tensor> {
        let width = local.numel();
        if self.config.repetition_penalty == 1.0 {
            return Ok(local.reshape(&[1, width])?);
        }
        let ids: Vec<u32> = context
            .iter()
            .filter_map(|&id| (id as usize).checked_sub(first_id).filter(|&i| i < width))
            .map(|i| i as u32)
            .collect();
        Ok(repetition_penalty(
            &local.reshape(&[1, width])?,
            &ids,
            self.config.repetition_penalty,
        )?)
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
        // The rank's (value, id) pair is found where its logits are; only the gathered pairs reach the host.
        let pair = argmax_with_value(&self.penalized(local, context, first_id)?, first_id)?;
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

    /// Sampling (temperature, top-k, top-p) when each rank holds only its slice of the vocabulary (`local`, ids
    /// `first_id..`): ranks exchange their best candidates (`top_k` of them, or up to [`SHARDED_CANDIDATES`] for top-p
    /// alone) and their slice's (max, sum of weights), not the logits. With top-k the draw is exactly the unsharded
    /// one (the same fixed-point weights, top-p and draw); with top-p alone the total mass is summed per rank in
    /// floating point, so a top-p cut within rounding of a boundary may differ. `None` (the caller gathers the logits) when the candidates cannot decide: plain temperature sampling,
    /// or a top-p set wider than the candidates. Every rank takes the same branch (they decide on the same data).
    pub fn next_sampled_sharded(
        &mut self,
        local: &Tensor,
        context: &[u32],
        first_id: usize,
        comm: &dyn Comm,
    ) -> Result<Option<u32>> {
        let p = self.config.params;
        if p.temperature == 0.0 || (p.top_k == 0 && p.top_p >= 1.0) {
            return Ok(None);
        }
        let row = self.penalized(local, context, first_id)?.to_f32_vec()?;
        let by_rank = |a: &(f32, usize), b: &(f32, usize)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
        let mut mine: Vec<(f32, usize)> = row.iter().enumerate().map(|(i, &x)| (x, first_id + i)).collect();
        let m = if p.top_k > 0 { p.top_k } else { SHARDED_CANDIDATES }.min(mine.len());
        if m == 0 {
            return Ok(None);
        }
        if m < mine.len() {
            mine.select_nth_unstable_by(m - 1, by_rank);
            mine.truncate(m);
        }
        mine.sort_by(by_rank);
        let inv_t = 1.0 / p.temperature;
        let local_max = mine[0].0;
        // The slice's total weight relative to its own largest logit (f64, sent as f32: only the top-p-alone path
        // uses it, as the mass of the whole vocabulary).
        let local_sum: f64 = row.iter().map(|&x| ((x - local_max) * inv_t).exp() as f64).sum();
        // [max, sum, (value, id) x m]: ids below 2^24 are exact in f32.
        let width = 2 + 2 * m;
        let mut message = Vec::with_capacity(width);
        message.extend([local_max, local_sum as f32]);
        message.extend(mine.iter().flat_map(|&(x, id)| [x, id as f32]));
        let all = comm
            .all_gather(&Tensor::from_vec(message, &[1, width])?)?
            .to_f32_vec()?;
        let mut candidates = Vec::with_capacity(m * comm.size());
        let mut slices = Vec::with_capacity(comm.size());
        for rank in all.chunks(width) {
            slices.push((rank[0], rank[1]));
            candidates.extend(rank[2..].chunks(2).map(|pair| (pair[0], pair[1] as usize)));
        }
        candidates.sort_by(by_rank);
        if p.top_k > 0 {
            candidates.truncate(p.top_k);
        }
        // The unsharded filter and draw (`filtered_distribution`, `draw_index`) over the merged candidates, with the
        // same fixed-point weights.
        let max = candidates[0].0;
        let weights: Vec<u64> = candidates
            .iter()
            .map(|&(x, _)| fixed_weight(x, max, inv_t))
            .collect();
        let kept = if p.top_p >= 1.0 {
            weights.len()
        } else if p.top_k > 0 {
            top_p_count(&weights, weights.iter().sum(), p.top_p).unwrap_or(weights.len())
        } else {
            let total: f64 = slices
                .iter()
                .map(|&(mx, sum)| sum as f64 * ((mx - max) * inv_t).exp() as f64 * FIXED_ONE)
                .sum();
            match top_p_count(&weights, total as u64, p.top_p) {
                Some(kept) => kept,
                None => return Ok(None), // the top-p set is wider than the candidates
            }
        };
        let chosen = candidates[draw_index(&weights[..kept], uniform(p.seed, self.step, 0))].1;
        self.step += 1;
        Ok(Some(chosen as u32))
    }

    /// The next token from `logits[vocab]` (f32) given the tokens so far (`context`, for the repetition penalty).
    pub fn next(&mut self, logits: &Tensor, context: &[u32]) -> Result<u32> {
        let row = logits.reshape(&[1, logits.numel()])?;
        let row = match self.config.repetition_penalty {
            1.0 => row,
            penalty => repetition_penalty(&row, context, penalty)?,
        };
        // Greedy or sampled where the logits are (on a GPU, kernels): only the id crosses to the host.
        let id = sample(&row, &self.config.params, self.step)?.to_vec::<i32>()?[0];
        self.step += 1;
        Ok(id as u32)
    }
}
