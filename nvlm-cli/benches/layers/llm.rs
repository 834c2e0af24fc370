//! One Qwen2-72B decoder layer at real dimensions: prefill and batched decode, per layer (two-layer model minus
//! one-layer model) and extrapolated to 80 layers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use nvlm_qwen2::{Qwen2Config, Qwen2Model};
use nvlm_tensor::{Device, MemoryWeights};

use crate::cases::{llm, llm_share, Case};
use crate::report::{Report, Row};
use crate::solo::SoloShare;
use crate::sync;
use crate::weights::{put, random_tensor};

/// The LM head and embedding are not part of a layer: a small vocabulary keeps them out of the figures.
const VOCAB: usize = 2048;
/// Timed decode steps (after as many warm-up steps).
const DECODE_STEPS: usize = 20;
const LAYERS: usize = 80;
const PREFIX: &str = "language_model.";

/// Two layers of random weights, and the one- and two-layer models over them per tensor-parallel share.
pub struct LlmBench {
    device: Device,
    weights: MemoryWeights,
    models: HashMap<usize, [Qwen2Model; 2]>,
}

fn config(layers: usize) -> anyhow::Result<Qwen2Config> {
    let (hidden, heads, kv_heads, _, ffn) = llm();
    let json = serde_json::json!({"llm_config": {
        "architectures": ["Qwen2ForCausalLM"], "hidden_size": hidden, "num_attention_heads": heads,
        "num_key_value_heads": kv_heads, "num_hidden_layers": layers, "intermediate_size": ffn, "vocab_size": VOCAB,
        "rms_norm_eps": 1e-6, "rope_theta": 1e6, "max_position_embeddings": 32768, "tie_word_embeddings": false,
    }});
    Ok(Qwen2Config::from_json(&json, false)?)
}

/// Bytes of one rank's share of a layer's weights in bf16 at tensor parallelism `tp`.
fn layer_bytes(tp: usize) -> f64 {
    let (h, _, _, d, _) = llm();
    let (heads, kv_heads, ffn) = llm_share(tp);
    let (q, kv) = (heads * d, kv_heads * d);
    2.0 * (h * q + 2 * kv * h + q * h + 3 * ffn * h) as f64
}

/// What an extrapolated figure leaves out.
fn share_note(tp: usize) -> String {
    match tp {
        1 => "TP 1".into(),
        _ => format!("TP {tp}: one rank's compute, the 2 all-reduces per layer not timed"),
    }
}

impl LlmBench {
    /// Two layers of random weights (the models over them are loaded per tensor-parallel share on first use).
    pub fn new(device: Device) -> anyhow::Result<LlmBench> {
        let (h, heads, kv_heads, d, ffn) = llm();
        let (q, kv) = (heads * d, kv_heads * d);
        let mut w = MemoryWeights::new();
        let p = PREFIX;
        put(
            &mut w,
            &format!("{p}model.embed_tokens.weight"),
            &[VOCAB, h],
            1,
            0.0,
        )?;
        put(&mut w, &format!("{p}lm_head.weight"), &[VOCAB, h], 2, 0.0)?;
        put(&mut w, &format!("{p}model.norm.weight"), &[h], 3, 1.0)?;
        for l in 0..2 {
            let prefix = format!("{p}model.layers.{l}.");
            for (i, (name, shape, offset)) in [
                ("input_layernorm.weight", vec![h], 1.0),
                ("post_attention_layernorm.weight", vec![h], 1.0),
                ("self_attn.q_proj.weight", vec![q, h], 0.0),
                ("self_attn.q_proj.bias", vec![q], 0.0),
                ("self_attn.k_proj.weight", vec![kv, h], 0.0),
                ("self_attn.k_proj.bias", vec![kv], 0.0),
                ("self_attn.v_proj.weight", vec![kv, h], 0.0),
                ("self_attn.v_proj.bias", vec![kv], 0.0),
                ("self_attn.o_proj.weight", vec![h, q], 0.0),
                ("mlp.gate_proj.weight", vec![ffn, h], 0.0),
                ("mlp.up_proj.weight", vec![ffn, h], 0.0),
                ("mlp.down_proj.weight", vec![h, ffn], 0.0),
            ]
            .into_iter()
            .enumerate()
            {
                put(
                    &mut w,
                    &format!("{prefix}{name}"),
                    &shape,
                    100 * (l as u64 + 1) + i as u64,
                    offset,
                )?;
            }
        }
        Ok(LlmBench {
            device,
            weights: w,
            models: HashMap::new(),
        })
    }

    /// The one- and two-layer models of rank 0's share at `tp` (the whole layer at 1), loaded on first use.
    fn models(&mut self, tp: usize) -> anyhow::Result<&[Qwen2Model; 2]> {
        if !self.models.contains_key(&tp) {
            let load = |layers| -> anyhow::Result<Qwen2Model> {
                let config = config(layers)?;
                Ok(match tp {
                    1 => Qwen2Model::load(&self.weights, PREFIX, &config, self.device)?,
                    _ => {
                        let comm = Arc::new(SoloShare { size: tp });
                        Qwen2Model::load_shard(&self.weights, PREFIX, &config, self.device, comm)?
                    }
                })
            };
            let pair = [load(1)?, load(2)?];
            self.models.insert(tp, pair);
        }
        Ok(&self.models[&tp])
    }

    /// Prefill of `tokens` random embeddings: a round to warm up (kernel compilation, GEMM heuristics, the memory
    /// pool), then a timed one, for each model.
    pub fn prefill(
        &mut self,
        case: &Case,
        tokens: usize,
        tp: usize,
        report: &mut Report,
    ) -> anyhow::Result<()> {
        let (h, _, _, d, _) = llm();
        let (heads, kv_heads, _) = llm_share(tp);
        let device = self.device;
        let embeds = random_tensor(7, &[tokens, h], device)?;
        let mut ms = [0.0; 2];
        for (i, model) in self.models(tp)?.iter().enumerate() {
            for round in 0..2 {
                let mut cache = model.new_cache(tokens)?;
                let seq = cache.add_sequence()?;
                sync(device)?;
                let start = Instant::now();
                model.forward(&embeds, &mut cache, seq)?;
                sync(device)?;
                if round == 1 {
                    ms[i] = start.elapsed().as_secs_f64() * 1e3;
                }
            }
        }
        let t = tokens as f64;
        // Projections (2 FLOPs per weight per token) and causal attention (half of 4·T²·d per head).
        let flops = layer_bytes(tp) * t + 2.0 * t * t * (heads * d) as f64;
        let roofline = Report::compute_roofline_ms(flops);
        let shape = format!("{tokens} tokens, hidden {h}, GQA {heads}/{kv_heads} (TP {tp} share)");
        let basis = format!("{:.1} TFLOP / bf16 peak", flops / 1e12);
        let whole = format!("llm-{LAYERS}-layers-prefill-{tokens}-tp{tp}-extrapolated");
        report.layer_and_model(case, shape, ms, LAYERS, roofline, basis, whole, share_note(tp));
        Ok(())
    }

    /// Decode steps of `batch` sequences, each with `context` cached tokens, through `decode_batch`.
    pub fn decode(
        &mut self,
        case: &Case,
        batch: usize,
        context: usize,
        tp: usize,
        report: &mut Report,
    ) -> anyhow::Result<()> {
        let (h, _, _, d, _) = llm();
        let (_, kv_heads, _) = llm_share(tp);
        let device = self.device;
        let prompt = random_tensor(8, &[context, h], device)?;
        // Ids inside rank 0's vocabulary slice.
        let tokens: Vec<u32> = (0..batch as u32)
            .map(|i| (i * 37) % (VOCAB / tp) as u32)
            .collect();
        // Each step replayed from a CUDA graph (the default), and op by op.
        let mut ms = [[0.0; 2]; 2];
        for (g, graphs) in [true, false].into_iter().enumerate() {
            for (i, model) in self.models(tp)?.iter().enumerate() {
                model.set_decode_graphs(graphs);
                let timed = time_decode(model, device, &prompt, &tokens, batch, context);
                model.set_decode_graphs(true);
                ms[g][i] = timed?;
            }
        }
        // Every weight once, and every cached key and value of every sequence.
        let kv_bytes = (batch * (context + DECODE_STEPS) * kv_heads * d * 2 * 2) as f64;
        let bytes = layer_bytes(tp) + kv_bytes;
        let roofline = report.memory_roofline_ms(bytes);
        let shape = format!("batch {batch}, context {context}, hidden {h} (TP {tp} share)");
        let basis = format!("{:.2} GB weights + KV / copy bandwidth", bytes / 1e9);
        let whole = format!("llm-{LAYERS}-layers-decode-b{batch}-tp{tp}-extrapolated");
        let model_ms = |ms: [f64; 2]| ms[0] + (LAYERS - 1) as f64 * (ms[1] - ms[0]);
        let tokens_per_s = 1e3 * batch as f64 / model_ms(ms[0]);
        let whole_basis = format!("{}; {tokens_per_s:.0} tokens/s", share_note(tp));
        report.layer_and_model(
            case,
            shape.clone(),
            ms[0],
            LAYERS,
            roofline,
            basis,
            whole.clone(),
            whole_basis,
        );
        report.add(Row {
            name: format!("{whole}-op-by-op"),
            shape,
            ms: model_ms(ms[1]),
            roofline_ms: Some(LAYERS as f64 * roofline),
            basis: format!(
                "without CUDA graphs; {:.0} tokens/s",
                1e3 * batch as f64 / model_ms(ms[1])
            ),
        });
        Ok(())
    }
}

/// Milliseconds per decode step of `batch` sequences with `context` cached positions each (the prompt `prompt`),
/// through `decode_batch`, after as many warm-up steps (which capture the step's CUDA graph when graphs are on).
fn time_decode(
    model: &Qwen2Model,
    device: Device,
    prompt: &nvlm_tensor::Tensor,
    tokens: &[u32],
    batch: usize,
    context: usize,
) -> anyhow::Result<f64> {
    let mut cache = model.new_cache_for(batch, context + 2 * DECODE_STEPS)?;
    let mut seqs = Vec::with_capacity(batch);
    for _ in 0..batch {
        let seq = cache.add_sequence()?;
        model.forward(prompt, &mut cache, seq)?;
        seqs.push(seq);
    }
    for _ in 0..DECODE_STEPS {
        model.decode_batch(tokens, &mut cache, &seqs)?;
    }
    sync(device)?;
    let start = Instant::now();
    for _ in 0..DECODE_STEPS {
        model.decode_batch(tokens, &mut cache, &seqs)?;
    }
    sync(device)?;
    Ok(start.elapsed().as_secs_f64() * 1e3 / DECODE_STEPS as f64)
}
