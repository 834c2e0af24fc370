//! The generation loop: prefill the prompt into the KV cache, then one token at a time, reusing the cache.

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use nvlm_kernels as k;
use nvlm_tensor::Tensor;

use crate::{Qwen2Model, Result, Sampler};

/// How to generate.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// At most this many new tokens.
    pub max_new_tokens: usize,
    /// Tokens that end generation (included in the output, as transformers does).
    pub stop_ids: Vec<u32>,
    /// Keep the final-normed hidden states and logits of every prompt position and every step.
    pub record: bool,
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// A stop token was produced.
    StopToken,
    /// `max_new_tokens` reached.
    Length,
    /// The caller's callback asked to stop (e.g. a stop string).
    Callback,
}

/// The result of [`generate`].
pub struct Generation {
    /// New tokens.
    pub tokens: Vec<u32>,
    /// Why it stopped.
    pub stop: StopReason,
    /// Prompt length.
    pub prompt_tokens: usize,
    /// Time spent on the prompt.
    pub prefill: Duration,
    /// Time spent on the new tokens after the first.
    pub decode: Duration,
    /// With `record`: final-normed hidden states `[S + steps, H]` and logits `[S + steps, vocab]` (prompt positions,
    /// then one row per decode step; the last generated token is never fed back, so it has no row).
    pub recorded: Option<(Tensor, Tensor)>,
}

/// Generates from prompt embeddings `embeds[S, H]`. `context` holds the prompt's ids (for the repetition penalty);
/// `on_token` sees each new token and may stop generation. With tensor parallelism every rank calls `generate` and
/// rank 0's `on_token` decides when to stop for all ranks.
pub fn generate(
    model: &Qwen2Model,
    embeds: &Tensor,
    context: &[u32],
    sampler: &mut Sampler,
    options: &GenerateOptions,
    mut on_token: impl FnMut(u32) -> ControlFlow<()>,
) -> Result<Generation> {
    let prompt_tokens = embeds.shape()[0];
    let mut cache = model.new_cache(prompt_tokens + options.max_new_tokens)?;
    let seq = cache.add_sequence()?;
    let mut history = context.to_vec();
    let mut tokens = Vec::new();
    let mut recorded: Vec<(Tensor, Tensor)> = Vec::new();
    let start = Instant::now();
    let mut hidden = model.forward(embeds, &mut cache, seq)?;
    let prefill = start.elapsed();
    let decode_start = Instant::now();
    let mut stop = StopReason::Length;
    let dtype = embeds.dtype();
    while tokens.len() < options.max_new_tokens {
        let last = hidden.narrow0(hidden.shape()[0] - 1, 1)?;
        let token = if options.record {
            let all = model.logits(&hidden)?;
            recorded.push((hidden.clone(), all.clone()));
            sampler.next(&all.narrow0(all.shape()[0] - 1, 1)?, &history)?
        } else {
            match model.local_logits(&last)? {
                // Vocabulary-parallel greedy: one (value, id) pair a rank crosses the group, not the logits.
                Some((local, first_id, comm)) if sampler.is_greedy() => {
                    sampler.next_greedy_sharded(&local, &history, first_id, comm)?
                }
                // Sampling: the ranks' best candidates cross the group; the logits only when those cannot decide.
                Some((local, first_id, comm)) => {
                    match sampler.next_sampled_sharded(&local, &history, first_id, comm)? {
                        Some(token) => token,
                        None => sampler.next(&model.gather_vocab(&local)?, &history)?,
                    }
                }
                None => sampler.next(&model.logits(&last)?, &history)?,
            }
        };
        tokens.push(token);
        history.push(token);
        if options.stop_ids.contains(&token) {
            stop = StopReason::StopToken;
            break;
        }
        if model.agree(on_token(token).is_break())? {
            stop = StopReason::Callback;
            break;
        }
        if tokens.len() == options.max_new_tokens {
            break;
        }
        hidden = if dtype == model.device().compute_dtype() {
            // One decode step (replayed from a CUDA graph on a GPU).
            model.decode_batch(&[token], &mut cache, &[seq])?
        } else {
            // Embeddings in the prompt's dtype (a bf16 run on the CPU).
            model.forward(&model.embed(&[token], dtype)?, &mut cache, seq)?
        };
    }
    let decode = decode_start.elapsed();
    let recorded = if options.record {
        let hs: Vec<&Tensor> = recorded.iter().map(|(h, _)| h).collect();
        let ls: Vec<&Tensor> = recorded.iter().map(|(_, l)| l).collect();
        Some((k::concat(&hs, 0)?, k::concat(&ls, 0)?))
    } else {
        None
    };
    Ok(Generation {
        tokens,
        stop,
        prompt_tokens,
        prefill,
        decode,
        recorded,
    })
}
