//! The embedded default: a tiny NVLM-D of the real architecture (InternViT with QK-norm, LayerScale and 7 zero dummy
//! heads; pixel shuffle; the projector; Qwen2 with GQA and the real 152,064-row vocabulary, embeddings tied) trained
//! on the project's synthetic shapes task (`scripts/demo_model/train.py`), compiled into the binary together with the
//! real Qwen2 tokenizer. It runs everywhere with no download and answers questions about coloured circles, squares
//! and triangles (which shape, how many, what colour, which is on the left or right) and a few text questions.

use nvlm_tensor::{DType, TensorError, TensorView, Weights};
use safetensors::SafeTensors;

/// The real Qwen2 `tokenizer.json` (NVLM-D's vocabulary and added tokens).
pub const TOKENIZER_JSON: &[u8] = include_bytes!("../assets/tokenizer.json");

/// The demo model's HF `config.json`.
const CONFIG_JSON: &str = include_str!("../../assets/demo-model/config.json");

/// The demo model's weights: HF NVLM-D tensor names, bf16.
const MODEL_SAFETENSORS: &[u8] = include_bytes!("../../assets/demo-model/model.safetensors");

/// The demo model's `config.json`.
pub fn config() -> serde_json::Value {
    serde_json::from_str(CONFIG_JSON).expect("the embedded config.json is valid JSON (checked by a test)")
}

/// The demo weights, read in place from the binary.
pub struct DemoWeights(SafeTensors<'static>);

/// Opens the embedded weights.
pub fn weights() -> anyhow::Result<DemoWeights> {
    Ok(DemoWeights(SafeTensors::deserialize(MODEL_SAFETENSORS)?))
}

impl Weights for DemoWeights {
    fn get(&self, name: &str) -> nvlm_tensor::Result<TensorView<'_>> {
        let view = self
            .0
            .tensor(name)
            .map_err(|_| TensorError::MissingWeight(name.to_string()))?;
        let dtype = match view.dtype() {
            safetensors::Dtype::BF16 => DType::BF16,
            safetensors::Dtype::F32 => DType::F32,
            other => {
                return Err(TensorError::Unsupported(format!(
                    "demo weight `{name}` is {other:?}"
                )))
            }
        };
        Ok(TensorView {
            dtype,
            shape: view.shape().to_vec(),
            data: view.data(),
        })
    }

    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.0.names().into_iter().map(str::to_string).collect();
        names.sort();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_model_is_a_complete_nvlm_d() {
        let config = config();
        assert_eq!(config["architectures"][0], "NVLM_D");
        assert_eq!(config["llm_config"]["tie_word_embeddings"], true);
        let w = weights().unwrap();
        let embed = w.get("language_model.model.embed_tokens.weight").unwrap();
        assert_eq!(embed.shape, [152_064, 64]);
        assert_eq!(embed.dtype, DType::BF16);
        assert!(!w.contains("language_model.lm_head.weight"), "tied: no lm_head");
        assert!(w.names().iter().any(|n| n.ends_with("attn.q_norm.weight")));
    }
}
