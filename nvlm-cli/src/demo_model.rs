//! The embedded default: a tiny NVLM-D of the real architecture (InternViT with QK-norm, LayerScale and 7 zero dummy
//! heads; pixel shuffle; the projector; Qwen2 with GQA; the real 152,064-token vocabulary) with weights made from a
//! fixed seed at start-up, and the real Qwen2 tokenizer compiled in. It runs everywhere with no download; its
//! answers are noise.

use half::bf16;
use nvlm_kernels::uniform;
use nvlm_tensor::MemoryWeights;

/// The real Qwen2 `tokenizer.json` (NVLM-D's vocabulary and added tokens).
pub const TOKENIZER_JSON: &[u8] = include_bytes!("../assets/tokenizer.json");

const VIT: (usize, usize, usize, usize) = (64, 4, 2, 256); // hidden, heads, layers, intermediate
const LLM: (usize, usize, usize, usize, usize) = (32, 4, 2, 2, 80); // hidden, heads, kv heads, layers, intermediate
const VOCAB: usize = 152_064;

/// The demo model's `config.json`.
pub fn config() -> serde_json::Value {
    serde_json::json!({
        "architectures": ["NVLM_D"],
        "model_type": "NVLM_D",
        "downsample_ratio": 0.5,
        "force_image_size": 448,
        "max_dynamic_patch": 6,
        "use_thumbnail": true,
        "ps_version": "v2",
        "select_layer": -1,
        "template": "chatml",
        "llm_config": {
            "architectures": ["Qwen2ForCausalLM"],
            "hidden_size": LLM.0, "num_attention_heads": LLM.1, "num_key_value_heads": LLM.2,
            "num_hidden_layers": LLM.3, "intermediate_size": LLM.4, "vocab_size": VOCAB,
            "rms_norm_eps": 1e-6, "rope_theta": 1_000_000.0, "max_position_embeddings": 32768,
            "rope_scaling": { "factor": 3.0, "type": "dynamic" }, "eos_token_id": 151645, "tie_word_embeddings": false
        },
        "vision_config": {
            "hidden_size": VIT.0, "num_attention_heads": VIT.1, "num_hidden_layers": VIT.2, "intermediate_size": VIT.3,
            "image_size": 448, "patch_size": 14, "layer_norm_eps": 1e-6, "qk_normalization": true, "norm_type": "rms_norm"
        }
    })
}

/// Fills `shape` with `scale * uniform[-1, 1)` from stream `seed`, or `value` for norms.
fn tensor(w: &mut MemoryWeights, name: &str, shape: &[usize], scale: f32, seed: u64) {
    let n: usize = shape.iter().product();
    let values: Vec<bf16> = (0..n)
        .map(|i| bf16::from_f32(scale * (uniform(seed, i as u64, 7) * 2.0 - 1.0)))
        .collect();
    w.insert(name, shape, &values).expect("shape and values agree");
}

fn constant(w: &mut MemoryWeights, name: &str, shape: &[usize], value: f32) {
    let n: usize = shape.iter().product();
    w.insert(name, shape, &vec![bf16::from_f32(value); n])
        .expect("shape and values agree");
}

/// The demo weights, deterministic.
pub fn weights() -> MemoryWeights {
    let mut w = MemoryWeights::new();
    let mut seed = 20_261_130u64;
    let mut next = || {
        seed += 1;
        seed
    };
    let (vh, vheads, vlayers, vffn) = VIT;
    let d = vh / vheads;
    let padded = (vheads + 7) * d;
    let e = "vision_model.embeddings";
    tensor(&mut w, &format!("{e}.class_embedding"), &[1, 1, vh], 0.5, next());
    tensor(
        &mut w,
        &format!("{e}.patch_embedding.weight"),
        &[vh, 3, 14, 14],
        0.05,
        next(),
    );
    tensor(&mut w, &format!("{e}.patch_embedding.bias"), &[vh], 0.1, next());
    tensor(
        &mut w,
        &format!("{e}.position_embedding"),
        &[1, 1025, vh],
        0.5,
        next(),
    );
    for l in 0..vlayers {
        let p = format!("vision_model.encoder.layers.{l}");
        // qkv with zero rows for the 7 dummy heads, as the HF checkpoint has them.
        let mut qkv = vec![bf16::ZERO; 3 * padded * vh];
        let s = next();
        for part in 0..3 {
            for i in 0..vheads * d * vh {
                qkv[part * padded * vh + i] =
                    bf16::from_f32(0.2 * (uniform(s, (part * padded * vh + i) as u64, 7) * 2.0 - 1.0));
            }
        }
        w.insert(&format!("{p}.attn.qkv.weight"), &[3 * padded, vh], &qkv)
            .expect("shape");
        for norm in ["q_norm", "k_norm"] {
            let mut values = vec![bf16::ZERO; padded];
            values[..vheads * d].fill(bf16::ONE);
            w.insert(&format!("{p}.attn.{norm}.weight"), &[padded], &values)
                .expect("shape");
        }
        let mut proj = vec![bf16::ZERO; vh * padded];
        let s = next();
        for r in 0..vh {
            for c in 0..vheads * d {
                proj[r * padded + c] =
                    bf16::from_f32(0.2 * (uniform(s, (r * padded + c) as u64, 7) * 2.0 - 1.0));
            }
        }
        w.insert(&format!("{p}.attn.proj.weight"), &[vh, padded], &proj)
            .expect("shape");
        tensor(&mut w, &format!("{p}.attn.proj.bias"), &[vh], 0.1, next());
        constant(&mut w, &format!("{p}.norm1.weight"), &[vh], 1.0);
        constant(&mut w, &format!("{p}.norm2.weight"), &[vh], 1.0);
        constant(&mut w, &format!("{p}.ls1"), &[vh], 0.5);
        constant(&mut w, &format!("{p}.ls2"), &[vh], 0.5);
        tensor(&mut w, &format!("{p}.mlp.fc1.weight"), &[vffn, vh], 0.2, next());
        tensor(&mut w, &format!("{p}.mlp.fc1.bias"), &[vffn], 0.1, next());
        tensor(&mut w, &format!("{p}.mlp.fc2.weight"), &[vh, vffn], 0.1, next());
        tensor(&mut w, &format!("{p}.mlp.fc2.bias"), &[vh], 0.1, next());
    }
    let (h, heads, kv, layers, ffn) = LLM;
    let dh = h / heads;
    constant(&mut w, "mlp1.0.weight", &[4 * vh], 1.0);
    constant(&mut w, "mlp1.0.bias", &[4 * vh], 0.0);
    tensor(&mut w, "mlp1.1.weight", &[ffn, 4 * vh], 0.1, next());
    tensor(&mut w, "mlp1.3.weight", &[h, ffn], 0.2, next());
    tensor(
        &mut w,
        "language_model.model.embed_tokens.weight",
        &[VOCAB, h],
        0.5,
        next(),
    );
    tensor(&mut w, "language_model.lm_head.weight", &[VOCAB, h], 0.5, next());
    constant(&mut w, "language_model.model.norm.weight", &[h], 1.0);
    for l in 0..layers {
        let p = format!("language_model.model.layers.{l}");
        constant(&mut w, &format!("{p}.input_layernorm.weight"), &[h], 1.0);
        constant(&mut w, &format!("{p}.post_attention_layernorm.weight"), &[h], 1.0);
        for (name, rows) in [("q", heads * dh), ("k", kv * dh), ("v", kv * dh)] {
            tensor(
                &mut w,
                &format!("{p}.self_attn.{name}_proj.weight"),
                &[rows, h],
                0.3,
                next(),
            );
            tensor(
                &mut w,
                &format!("{p}.self_attn.{name}_proj.bias"),
                &[rows],
                0.1,
                next(),
            );
        }
        tensor(
            &mut w,
            &format!("{p}.self_attn.o_proj.weight"),
            &[h, heads * dh],
            0.2,
            next(),
        );
        tensor(
            &mut w,
            &format!("{p}.mlp.gate_proj.weight"),
            &[ffn, h],
            0.3,
            next(),
        );
        tensor(&mut w, &format!("{p}.mlp.up_proj.weight"), &[ffn, h], 0.3, next());
        tensor(
            &mut w,
            &format!("{p}.mlp.down_proj.weight"),
            &[h, ffn],
            0.2,
            next(),
        );
    }
    w
}
