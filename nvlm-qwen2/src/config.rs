//! `llm_config` of an NVLM-D `config.json` (Qwen2).

use nvlm_kernels::{DynamicNtk, RopeConfig};

use crate::{Qwen2Error, Result};

/// Qwen2 hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Qwen2Config {
    /// Width (8192).
    pub hidden_size: usize,
    /// Query heads (64).
    pub num_heads: usize,
    /// Key/value heads (8).
    pub num_kv_heads: usize,
    /// Decoder layers (80).
    pub num_layers: usize,
    /// SwiGLU width (29568).
    pub intermediate_size: usize,
    /// Vocabulary rows (152064).
    pub vocab_size: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f32,
    /// Rotary embedding (theta, dynamic NTK scaling).
    pub rope: RopeConfig,
    /// End-of-sequence ids from the config.
    pub eos_token_ids: Vec<u32>,
    /// Input and output embeddings shared.
    pub tie_word_embeddings: bool,
}

impl Qwen2Config {
    /// From the whole `config.json` (reads `llm_config`). `dynamic_rope = false` gives transformers v4.39's plain RoPE.
    pub fn from_json(config: &serde_json::Value, dynamic_rope: bool) -> Result<Qwen2Config> {
        let c = &config["llm_config"];
        let int = |key: &str| -> Result<usize> {
            c[key]
                .as_u64()
                .map(|x| x as usize)
                .ok_or_else(|| Qwen2Error::Config(format!("`llm_config.{key}` is missing")))
        };
        if let Some(arch) = c["architectures"].get(0).and_then(|a| a.as_str()) {
            if arch != "Qwen2ForCausalLM" && arch != "LlamaForCausalLM" {
                return Err(Qwen2Error::Config(format!(
                    "unknown LLM architecture `{arch}` (NVLM-D uses Qwen2ForCausalLM)"
                )));
            }
        }
        let hidden_size = int("hidden_size")?;
        let num_heads = int("num_attention_heads")?;
        let num_kv_heads = int("num_key_value_heads").unwrap_or(num_heads);
        if num_heads == 0
            || hidden_size % num_heads != 0
            || num_kv_heads == 0
            || num_heads % num_kv_heads != 0
        {
            return Err(Qwen2Error::Config(format!(
                "{num_heads} heads / {num_kv_heads} kv heads do not fit width {hidden_size}"
            )));
        }
        let max_positions = int("max_position_embeddings").unwrap_or(32768);
        let scaling = &c["rope_scaling"];
        let dynamic = (dynamic_rope
            && scaling["type"].as_str().or(scaling["rope_type"].as_str()) == Some("dynamic"))
        .then(|| DynamicNtk {
            factor: scaling["factor"].as_f64().unwrap_or(1.0),
            original_max_positions: max_positions,
        });
        let eos_token_ids = match &c["eos_token_id"] {
            serde_json::Value::Array(ids) => {
                ids.iter().filter_map(|v| v.as_u64().map(|x| x as u32)).collect()
            }
            v => v.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
        };
        Ok(Qwen2Config {
            hidden_size,
            num_heads,
            num_kv_heads,
            num_layers: int("num_hidden_layers")?,
            intermediate_size: int("intermediate_size")?,
            vocab_size: int("vocab_size")?,
            rms_norm_eps: c["rms_norm_eps"].as_f64().unwrap_or(1e-6) as f32,
            rope: RopeConfig {
                theta: c["rope_theta"].as_f64().unwrap_or(1e6),
                head_dim: hidden_size / num_heads,
                dynamic,
            },
            eos_token_ids,
            tie_word_embeddings: c["tie_word_embeddings"].as_bool().unwrap_or(false),
        })
    }

    /// Channels per head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }
}
