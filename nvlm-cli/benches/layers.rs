//! Layer benchmark (plain harness): one Qwen2-72B decoder layer and one InternViT-6B layer at NVLM-D's real
//! dimensions, random bf16 weights, on the GPU: prefill of a 1,852-token image prompt, decode steps over its cache,
//! and the vision tower on 7 tiles. Each model is timed with one and with two layers; the difference is the cost of
//! a layer, and the full model is extrapolated from it (80 LLM layers, 45 ViT layers, TP 1). Decode is set beside
//! the weight-bytes roofline. Without a GPU it says so and exits 0 (the CPU reference at these sizes would take
//! hours). Run with `cargo xtask bench`; the GPU bundle runs it too.

use std::time::Instant;

use half::bf16;
use nvlm_kernels::validate::random_values;
use nvlm_qwen2::{Qwen2Config, Qwen2Model};
use nvlm_tensor::{cuda_available, CudaDevice, DType, Device, MemoryWeights, Tensor};
use nvlm_vit::{VisionConfig, VisionTower};

/// H200 HBM3e peak bandwidth (bytes/s), the ceiling of a weight-streaming decode step.
const HBM_BYTES_PER_S: f64 = 4.8e12;
const PROMPT: usize = 1852;
const DECODE_STEPS: usize = 20;
const TILES: usize = 7;
/// The LM head and embedding are not part of a layer: a small vocabulary keeps them out of the figures.
const VOCAB: usize = 2048;

fn main() -> anyhow::Result<()> {
    if !cuda_available() {
        println!("layers bench: no CUDA device here, skipped (it runs in the GPU bundle)");
        return Ok(());
    }
    let device = Device::cuda(0)?;
    println!("{:<44} {:>12} {:>14}", "case", "ms", "note");
    llm(device)?;
    vit(device)?;
    Ok(())
}

fn sync(device: Device) -> anyhow::Result<()> {
    let Device::Cuda(ordinal) = device else {
        return Ok(());
    };
    CudaDevice::get(ordinal)?.synchronize()?;
    Ok(())
}

/// Inserts `shape` of small random bf16 values (`offset` added: 1 for norm weights).
fn put(
    weights: &mut MemoryWeights,
    name: &str,
    shape: &[usize],
    seed: u64,
    offset: f32,
) -> anyhow::Result<()> {
    let n: usize = shape.iter().product();
    let values: Vec<bf16> = random_values(seed, n)
        .into_iter()
        .map(|v| bf16::from_f32(offset + 0.02 * v))
        .collect();
    weights.insert(name, shape, &values)?;
    Ok(())
}

fn llm_config(layers: usize) -> anyhow::Result<Qwen2Config> {
    let json = serde_json::json!({"llm_config": {
        "architectures": ["Qwen2ForCausalLM"], "hidden_size": 8192, "num_attention_heads": 64,
        "num_key_value_heads": 8, "num_hidden_layers": layers, "intermediate_size": 29568, "vocab_size": VOCAB,
        "rms_norm_eps": 1e-6, "rope_theta": 1e6, "max_position_embeddings": 32768, "tie_word_embeddings": false,
    }});
    Ok(Qwen2Config::from_json(&json, false)?)
}

fn llm(device: Device) -> anyhow::Result<()> {
    let (h, kv, ffn) = (8192, 1024, 29568);
    let mut w = MemoryWeights::new();
    let p = "language_model.";
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
        let q = format!("{p}model.layers.{l}.");
        let seed = 100 * (l as u64 + 1);
        for (name, shape, offset) in [
            ("input_layernorm.weight", vec![h], 1.0),
            ("post_attention_layernorm.weight", vec![h], 1.0),
            ("self_attn.q_proj.weight", vec![h, h], 0.0),
            ("self_attn.q_proj.bias", vec![h], 0.0),
            ("self_attn.k_proj.weight", vec![kv, h], 0.0),
            ("self_attn.k_proj.bias", vec![kv], 0.0),
            ("self_attn.v_proj.weight", vec![kv, h], 0.0),
            ("self_attn.v_proj.bias", vec![kv], 0.0),
            ("self_attn.o_proj.weight", vec![h, h], 0.0),
            ("mlp.gate_proj.weight", vec![ffn, h], 0.0),
            ("mlp.up_proj.weight", vec![ffn, h], 0.0),
            ("mlp.down_proj.weight", vec![h, ffn], 0.0),
        ] {
            put(
                &mut w,
                &format!("{q}{name}"),
                &shape,
                seed + shape.len() as u64 + name.len() as u64,
                offset,
            )?;
        }
    }
    let layer_bytes = 2.0 * (2 * h * h + 2 * kv * h + 3 * ffn * h) as f64;
    let mut per_model = Vec::new();
    for layers in [1, 2] {
        let model = Qwen2Model::load(&w, p, &llm_config(layers)?, device)?;
        let embeds = Tensor::from_vec(random_values(7, PROMPT * h), &[PROMPT, h])?
            .to_dtype(DType::BF16)?
            .to_device(device)?;
        let step = Tensor::from_vec(random_values(8, h), &[1, h])?
            .to_dtype(DType::BF16)?
            .to_device(device)?;
        let mut times = [0.0; 2];
        for round in 0..2 {
            // Round 0 warms up (kernel compilation, cuBLASLt heuristics, the memory pool); round 1 is timed.
            let mut cache = model.new_cache(PROMPT + DECODE_STEPS)?;
            let seq = cache.add_sequence()?;
            sync(device)?;
            let start = Instant::now();
            model.forward(&embeds, &mut cache, seq)?;
            sync(device)?;
            let prefill = start.elapsed().as_secs_f64() * 1e3;
            let start = Instant::now();
            for _ in 0..DECODE_STEPS {
                model.forward(&step, &mut cache, seq)?;
            }
            sync(device)?;
            let decode = start.elapsed().as_secs_f64() * 1e3 / DECODE_STEPS as f64;
            if round == 1 {
                times = [prefill, decode];
            }
        }
        per_model.push(times);
    }
    let [prefill_layer, decode_layer] = [0, 1].map(|i| per_model[1][i] - per_model[0][i]);
    let roofline_ms = layer_bytes / HBM_BYTES_PER_S * 1e3;
    let row = |case: &str, ms: f64, note: String| println!("{case:<44} {ms:>12.3} {note:>14}");
    row(
        "qwen2-72b layer prefill 1852 tokens",
        prefill_layer,
        format!(
            "{:.0} TFLOP/s",
            2.0 * layer_bytes / 2.0 * PROMPT as f64 / prefill_layer / 1e9
        ),
    );
    row(
        "qwen2-72b layer decode step (ctx 1852)",
        decode_layer,
        format!("{:.0}% of HBM", 100.0 * roofline_ms / decode_layer),
    );
    row(
        "  roofline: layer weights / 4.8 TB/s",
        roofline_ms,
        format!("{:.2} GB", layer_bytes / 1e9),
    );
    row(
        "qwen2-72b 80 layers prefill (extrapolated)",
        per_model[0][0] + 79.0 * prefill_layer,
        "TP 1".into(),
    );
    row(
        "qwen2-72b 80 layers decode (extrapolated)",
        per_model[0][1] + 79.0 * decode_layer,
        "TP 1".into(),
    );
    Ok(())
}

fn vit_config(layers: usize) -> VisionConfig {
    VisionConfig {
        hidden_size: 3200,
        num_heads: 25,
        num_dummy_heads: 7,
        num_layers: layers,
        intermediate_size: 12800,
        patch_size: 14,
        image_size: 448,
        norm_eps: 1e-6,
        projector_eps: 1e-5,
    }
}

fn vit(device: Device) -> anyhow::Result<()> {
    let (c, padded, inter, tokens) = (3200, 32 * 128, 12800, 1025);
    let (projector_hidden, llm_hidden) = (29568, 8192);
    let mut w = MemoryWeights::new();
    let e = "vision_model.embeddings";
    put(&mut w, &format!("{e}.class_embedding"), &[1, 1, c], 1, 0.0)?;
    put(
        &mut w,
        &format!("{e}.position_embedding"),
        &[1, tokens, c],
        2,
        0.0,
    )?;
    put(
        &mut w,
        &format!("{e}.patch_embedding.weight"),
        &[c, 3, 14, 14],
        3,
        0.0,
    )?;
    put(&mut w, &format!("{e}.patch_embedding.bias"), &[c], 4, 0.0)?;
    for l in 0..2 {
        let p = format!("vision_model.encoder.layers.{l}");
        let seed = 100 * (l as u64 + 1);
        for (i, (name, shape, offset)) in [
            ("norm1.weight", vec![c], 1.0),
            ("attn.qkv.weight", vec![3 * padded, c], 0.0),
            ("attn.q_norm.weight", vec![padded], 1.0),
            ("attn.k_norm.weight", vec![padded], 1.0),
            ("attn.proj.weight", vec![c, padded], 0.0),
            ("attn.proj.bias", vec![c], 0.0),
            ("ls1", vec![c], 0.1),
            ("norm2.weight", vec![c], 1.0),
            ("mlp.fc1.weight", vec![inter, c], 0.0),
            ("mlp.fc1.bias", vec![inter], 0.0),
            ("mlp.fc2.weight", vec![c, inter], 0.0),
            ("mlp.fc2.bias", vec![c], 0.0),
            ("ls2", vec![c], 0.1),
        ]
        .into_iter()
        .enumerate()
        {
            put(&mut w, &format!("{p}.{name}"), &shape, seed + i as u64, offset)?;
        }
    }
    put(&mut w, "mlp1.0.weight", &[4 * c], 5, 1.0)?;
    put(&mut w, "mlp1.0.bias", &[4 * c], 6, 0.0)?;
    put(&mut w, "mlp1.1.weight", &[projector_hidden, 4 * c], 7, 0.0)?;
    put(&mut w, "mlp1.3.weight", &[llm_hidden, projector_hidden], 8, 0.0)?;
    let pixels = Tensor::from_vec(random_values(9, TILES * 3 * 448 * 448), &[TILES, 3, 448, 448])?
        .to_dtype(DType::BF16)?
        .to_device(device)?;
    let mut totals = Vec::new();
    for layers in [1, 2] {
        let tower = VisionTower::load(
            &w,
            &vit_config(layers),
            projector_hidden,
            llm_hidden,
            device,
            DType::BF16,
        )?;
        let mut ms = 0.0;
        for round in 0..2 {
            sync(device)?;
            let start = Instant::now();
            tower.forward(&pixels)?;
            sync(device)?;
            if round == 1 {
                ms = start.elapsed().as_secs_f64() * 1e3;
            }
        }
        totals.push(ms);
    }
    let layer = totals[1] - totals[0];
    // A layer's matmul FLOPs on 7 tiles: qkv, proj, fc1, fc2 (padded heads included) plus attention.
    let rows = (TILES * tokens) as f64;
    let flops = 2.0 * rows * (c * 3 * padded + padded * c + 2 * c * inter) as f64
        + 4.0 * (TILES * 25) as f64 * (tokens * tokens * 128) as f64;
    let row = |case: &str, ms: f64, note: String| println!("{case:<44} {ms:>12.3} {note:>14}");
    row(
        "internvit-6b layer, 7 tiles",
        layer,
        format!("{:.0} TFLOP/s", flops / layer / 1e9),
    );
    row(
        "internvit-6b 45 layers + projector (extrap.)",
        totals[0] + 44.0 * layer,
        "goal 120 ms".into(),
    );
    Ok(())
}
