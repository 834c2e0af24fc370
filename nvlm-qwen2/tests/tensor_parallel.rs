//! Tensor parallelism on CPU: the tiny NVLM-D language model sharded over 2 and 4 in-process ranks gives the
//! unsharded model's logits (to float-reassociation tolerance) and greedy ids (exactly), and each rank holds only its
//! share of the weights. TP=4 exercises the replicated-KV-head case (the tiny model has 2 KV heads).

use std::sync::Arc;

mod common;

use nvlm_checkpoint::SafetensorsCheckpoint;
use nvlm_dist::{Comm, ThreadGroup};
use nvlm_kernels::SamplingParams;
use nvlm_qwen2::{
    generate, GenerateOptions, Qwen2Config, Qwen2Model, Sampler, SamplerConfig, Sharding, IM_END_TOKEN_ID,
};
use nvlm_tensor::{DType, Device};
use nvlm_testkit::assert_close_f32_reference;

/// A short chat-shaped prompt of text ids (from the tokenizer fixture's vocabulary range).
const PROMPT: [u32; 9] = [151644, 872, 198, 3838, 374, 304, 279, 2168, 30];

struct Run {
    logits: Vec<f32>,
    /// Greedy ids (vocabulary-parallel argmax under tensor parallelism).
    tokens: Vec<u32>,
    /// Greedy ids with a repetition penalty (applied to each rank's slice).
    penalized: Vec<u32>,
    /// Sampled ids (temperature, top-k, top-p): the ranks exchange their top-k candidates, not the logits.
    sampled: Vec<u32>,
    /// Sampled ids with top-p alone (candidates when they reach top-p, else the logits gathered) and with a
    /// temperature alone (the logits gathered).
    top_p_only: Vec<u32>,
    temperature_only: Vec<u32>,
}

fn weights_and_config() -> (SafetensorsCheckpoint, Qwen2Config) {
    common::tiny_weights_and_config()
}

fn run(model: &Qwen2Model) -> Run {
    let embeds = model.embed(&PROMPT, DType::F32).unwrap();
    let mut cache = model.new_cache(PROMPT.len()).unwrap();
    let seq = cache.add_sequence().unwrap();
    let hidden = model.forward(&embeds, &mut cache, seq).unwrap();
    let logits = model.logits(&hidden).unwrap().to_f32_vec().unwrap();
    let options = GenerateOptions {
        max_new_tokens: 10,
        stop_ids: vec![IM_END_TOKEN_ID],
        record: false,
    };
    let tokens_with = |config: SamplerConfig| {
        let mut sampler = Sampler::new(config);
        generate(model, &embeds, &PROMPT, &mut sampler, &options, |_| {
            std::ops::ControlFlow::Continue(())
        })
        .unwrap()
        .tokens
    };
    let sampling = SamplingParams {
        temperature: 0.8,
        top_k: 50,
        top_p: 0.9,
        seed: 7,
    };
    Run {
        logits,
        tokens: tokens_with(SamplerConfig::default()),
        penalized: tokens_with(SamplerConfig {
            repetition_penalty: 1.3,
            ..SamplerConfig::default()
        }),
        sampled: tokens_with(SamplerConfig {
            params: sampling,
            repetition_penalty: 1.1,
        }),
        top_p_only: tokens_with(SamplerConfig {
            params: SamplingParams {
                temperature: 0.05,
                top_k: 0,
                top_p: 0.6,
                seed: 11,
            },
            repetition_penalty: 1.0,
        }),
        temperature_only: tokens_with(SamplerConfig {
            params: SamplingParams {
                temperature: 1.0,
                top_k: 0,
                top_p: 1.0,
                seed: 12,
            },
            repetition_penalty: 1.0,
        }),
    }
}

fn sharded(size: usize) -> Vec<Run> {
    let (weights, config) = weights_and_config();
    let (weights, config) = (Arc::new(weights), Arc::new(config));
    let handles: Vec<_> = ThreadGroup::new(size)
        .into_iter()
        .map(|comm| {
            let (weights, config) = (weights.clone(), config.clone());
            std::thread::spawn(move || {
                let comm: Arc<dyn Comm> = Arc::new(comm);
                let model =
                    Qwen2Model::load_shard(weights.as_ref(), "language_model.", &config, Device::Cpu, comm)
                        .unwrap();
                assert_eq!(
                    model.sharding().heads,
                    config.num_heads / size,
                    "query heads per rank"
                );
                run(&model)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

fn check(size: usize) {
    let (weights, config) = weights_and_config();
    let whole = run(&Qwen2Model::load(&weights, "language_model.", &config, Device::Cpu).unwrap());
    for (rank, got) in sharded(size).iter().enumerate() {
        assert_close_f32_reference(
            &format!("TP={size} rank {rank}: logits"),
            &got.logits,
            &whole.logits,
        );
        assert_eq!(got.tokens, whole.tokens, "TP={size} rank {rank}: greedy ids");
        assert_eq!(
            got.penalized, whole.penalized,
            "TP={size} rank {rank}: greedy ids with a repetition penalty"
        );
        assert_eq!(got.sampled, whole.sampled, "TP={size} rank {rank}: sampled ids");
        assert_eq!(
            got.top_p_only, whole.top_p_only,
            "TP={size} rank {rank}: top-p ids"
        );
        assert_eq!(
            got.temperature_only, whole.temperature_only,
            "TP={size} rank {rank}: temperature-only ids"
        );
    }
}

#[test]
fn two_ranks_match_one() {
    check(2);
}

#[test]
fn four_ranks_with_replicated_kv_heads_match_one() {
    check(4);
}

#[test]
fn sharding_that_does_not_divide_is_an_error() {
    let (_, config) = weights_and_config();
    let err = Sharding::new(&config, 0, 3).unwrap_err().to_string();
    assert!(err.contains("does not divide"), "{err}");
}

#[test]
fn each_rank_owns_a_disjoint_share() {
    let (_, config) = weights_and_config();
    let shards: Vec<Sharding> = (0..2).map(|r| Sharding::new(&config, r, 2).unwrap()).collect();
    assert_eq!(shards[0].heads + shards[1].heads, config.num_heads);
    assert_eq!(shards[1].heads_start, shards[0].heads);
    assert_eq!(shards[0].ffn + shards[1].ffn, config.intermediate_size);
    assert_eq!(shards[0].vocab + shards[1].vocab, config.vocab_size);
    assert_eq!(shards[1].kv_start, shards[0].kv_heads);
}

#[test]
fn rank_zeros_stop_decision_holds_on_every_rank() {
    // Only rank 0's callback asks to stop (after 3 tokens); the others would go on, and must not be left waiting.
    let (weights, config) = weights_and_config();
    let (weights, config) = (Arc::new(weights), Arc::new(config));
    let handles: Vec<_> = ThreadGroup::new(2)
        .into_iter()
        .map(|comm| {
            let (weights, config) = (weights.clone(), config.clone());
            std::thread::spawn(move || {
                let rank = comm.rank();
                let model = Qwen2Model::load_shard(
                    weights.as_ref(),
                    "language_model.",
                    &config,
                    Device::Cpu,
                    Arc::new(comm),
                )
                .unwrap();
                let embeds = model.embed(&PROMPT, DType::F32).unwrap();
                let options = GenerateOptions {
                    max_new_tokens: 10,
                    stop_ids: vec![],
                    record: false,
                };
                let mut seen = 0;
                let mut sampler = Sampler::new(SamplerConfig::default());
                generate(&model, &embeds, &PROMPT, &mut sampler, &options, |_| {
                    seen += 1;
                    if rank == 0 && seen == 3 {
                        std::ops::ControlFlow::Break(())
                    } else {
                        std::ops::ControlFlow::Continue(())
                    }
                })
                .unwrap()
                .tokens
                .len()
            })
        })
        .collect();
    let lengths: Vec<usize> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(lengths, vec![3, 3]);
}
