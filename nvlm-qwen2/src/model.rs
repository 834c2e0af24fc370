//! The Qwen2 decoder (`nvlm-d.md` §8): embeddings, layers of RMSNorm → QKV (bias) → RoPE → GQA attention over the
//! paged KV cache → output projection, RMSNorm → SwiGLU MLP; final norm; untied LM head.

use nvlm_kernels as k;
use nvlm_kernels::AttentionMask;
use nvlm_tensor::{load_weight, Device, Tensor, Weights};

use crate::kv_cache::{PagedKvCache, SequenceId};
use crate::{Qwen2Config, Result};

struct Layer {
    input_norm: Tensor,
    q: Tensor,
    q_bias: Tensor,
    k: Tensor,
    k_bias: Tensor,
    v: Tensor,
    v_bias: Tensor,
    o: Tensor,
    post_norm: Tensor,
    gate: Tensor,
    up: Tensor,
    down: Tensor,
}

/// Qwen2 weights, ready to run.
pub struct Qwen2Model {
    /// Hyper-parameters.
    pub config: Qwen2Config,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    lm_head: Tensor,
}

impl Qwen2Model {
    /// Loads `{prefix}model.*` and `{prefix}lm_head.weight` (prefix `language_model.` in NVLM-D).
    pub fn load(
        weights: &dyn Weights,
        prefix: &str,
        config: &Qwen2Config,
        device: Device,
    ) -> Result<Qwen2Model> {
        let (h, d) = (config.hidden_size, config.head_dim());
        let (q_rows, kv_rows, ffn) = (
            config.num_heads * d,
            config.num_kv_heads * d,
            config.intermediate_size,
        );
        let w = |name: &str, shape: &[usize]| load_weight(weights, &format!("{prefix}{name}"), shape, device);
        let embed = w("model.embed_tokens.weight", &[config.vocab_size, h])?;
        let lm_head = if config.tie_word_embeddings {
            embed.clone()
        } else {
            w("lm_head.weight", &[config.vocab_size, h])?
        };
        let layers = (0..config.num_layers)
            .map(|l| {
                let p = format!("model.layers.{l}.");
                let lw = |name: &str, shape: &[usize]| w(&format!("{p}{name}"), shape);
                Ok(Layer {
                    input_norm: lw("input_layernorm.weight", &[h])?,
                    q: lw("self_attn.q_proj.weight", &[q_rows, h])?,
                    q_bias: lw("self_attn.q_proj.bias", &[q_rows])?,
                    k: lw("self_attn.k_proj.weight", &[kv_rows, h])?,
                    k_bias: lw("self_attn.k_proj.bias", &[kv_rows])?,
                    v: lw("self_attn.v_proj.weight", &[kv_rows, h])?,
                    v_bias: lw("self_attn.v_proj.bias", &[kv_rows])?,
                    o: lw("self_attn.o_proj.weight", &[h, q_rows])?,
                    post_norm: lw("post_attention_layernorm.weight", &[h])?,
                    gate: lw("mlp.gate_proj.weight", &[ffn, h])?,
                    up: lw("mlp.up_proj.weight", &[ffn, h])?,
                    down: lw("mlp.down_proj.weight", &[h, ffn])?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Qwen2Model {
            config: config.clone(),
            embed,
            layers,
            norm: w("model.norm.weight", &[h])?,
            lm_head,
        })
    }

    /// Token embeddings `[n, H]` in `dtype`.
    pub fn embed(&self, ids: &[u32], dtype: nvlm_tensor::DType) -> Result<Tensor> {
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= self.config.vocab_size) {
            return Err(crate::Qwen2Error::Input(format!(
                "token id {bad} is outside the vocabulary of {}",
                self.config.vocab_size
            )));
        }
        let ids = Tensor::from_vec(ids.iter().map(|&i| i as i32).collect::<Vec<_>>(), &[ids.len()])?
            .to_device(self.embed.device())?;
        Ok(k::cast(&k::embedding(&ids, &self.embed)?, dtype)?)
    }

    /// Runs `embeds[t, H]` (positions `len..len + t` of sequence `seq`) through every layer, appending to the KV
    /// cache, and returns the final-normed hidden states `[t, H]`.
    pub fn forward(&self, embeds: &Tensor, cache: &mut PagedKvCache, seq: SequenceId) -> Result<Tensor> {
        self.forward_traced(embeds, cache, seq, |_, _| {})
    }

    /// [`Qwen2Model::forward`], handing each layer's output (before the final norm) to `trace(layer, hidden)`.
    pub fn forward_traced(
        &self,
        embeds: &Tensor,
        cache: &mut PagedKvCache,
        seq: SequenceId,
        mut trace: impl FnMut(usize, &Tensor),
    ) -> Result<Tensor> {
        let t = embeds.shape()[0];
        let start = cache.len(seq)?;
        cache.reserve(seq, t)?;
        let positions: Vec<i32> = (start..start + t).map(|p| p as i32).collect();
        let positions = Tensor::from_vec(positions, &[t])?;
        // transformers' dynamic NTK: the frequencies of max(position) + 1.
        let inv_freq = self.config.rope.inv_freq(start + t);
        let mut x = embeds.clone();
        for (l, layer) in self.layers.iter().enumerate() {
            x = self.layer(l, layer, &x, &positions, &inv_freq, cache, seq, start)?;
            trace(l, &x);
        }
        cache.advance(seq, t)?;
        Ok(k::rms_norm(&x, &self.norm, self.config.rms_norm_eps)?)
    }

    #[allow(clippy::too_many_arguments)]
    fn layer(
        &self,
        index: usize,
        l: &Layer,
        x: &Tensor,
        positions: &Tensor,
        inv_freq: &[f32],
        cache: &mut PagedKvCache,
        seq: SequenceId,
        start: usize,
    ) -> Result<Tensor> {
        let c = &self.config;
        let (t, d) = (x.shape()[0], c.head_dim());
        let h = k::rms_norm(x, &l.input_norm, c.rms_norm_eps)?;
        let q = k::matmul(&h, &l.q, Some(&l.q_bias))?.reshape(&[t, c.num_heads, d])?;
        let key = k::matmul(&h, &l.k, Some(&l.k_bias))?.reshape(&[t, c.num_kv_heads, d])?;
        let v = k::matmul(&h, &l.v, Some(&l.v_bias))?.reshape(&[t, c.num_kv_heads, d])?;
        let q = k::rotary_embedding(&q, positions, inv_freq)?;
        let key = k::rotary_embedding(&key, positions, inv_freq)?;
        cache.write(index, seq, &key, &v)?;
        let (keys, values) = cache.read(index, seq, start + t, c.num_kv_heads)?;
        let attn = k::attention(
            &q.reshape(&[1, t, c.num_heads, d])?,
            &keys,
            &values,
            AttentionMask::Causal { query_offset: start },
            1.0 / (d as f32).sqrt(),
        )?;
        let o = k::matmul(&attn.reshape(&[t, c.num_heads * d])?, &l.o, None)?;
        let (h, x) = k::add_rms_norm(&o, x, &l.post_norm, c.rms_norm_eps)?;
        let mlp = k::matmul(
            &k::silu_mul(&k::matmul(&h, &l.gate, None)?, &k::matmul(&h, &l.up, None)?)?,
            &l.down,
            None,
        )?;
        Ok(k::add(&x, &mlp)?)
    }

    /// Logits `[n, vocab]` (f32) of final-normed hidden states `[n, H]`.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        Ok(k::cast(
            &k::matmul(hidden, &self.lm_head, None)?,
            nvlm_tensor::DType::F32,
        )?)
    }

    /// A KV cache sized for `max_positions` positions of one sequence in blocks of 16.
    pub fn new_cache(&self, max_positions: usize) -> PagedKvCache {
        const BLOCK: usize = 16;
        PagedKvCache::new(
            self.config.num_layers,
            self.config.num_kv_heads,
            self.config.head_dim(),
            BLOCK,
            max_positions.div_ceil(BLOCK),
        )
    }
}

impl Qwen2Model {
    /// Embeddings of `ids` with the rows at `<|vision_pad|>` positions replaced, in order, by `image_rows`
    /// (`[n, H]`, tile-major). The number of `<|vision_pad|>` ids must equal `n`.
    pub fn embed_multimodal(
        &self,
        ids: &[u32],
        image_rows: Option<&Tensor>,
        dtype: nvlm_tensor::DType,
    ) -> Result<Tensor> {
        let embeds = self.embed(ids, dtype)?;
        let positions: Vec<i32> = ids
            .iter()
            .enumerate()
            .filter(|(_, &id)| id == crate::IMAGE_CONTEXT_TOKEN_ID)
            .map(|(i, _)| i as i32)
            .collect();
        let rows = image_rows.map_or(0, |r| r.shape()[0]);
        if positions.len() != rows {
            return Err(crate::Qwen2Error::Input(format!(
                "the prompt has {} <|vision_pad|> tokens but the images give {rows} embedding rows (256 per tile)",
                positions.len()
            )));
        }
        match image_rows {
            Some(rows) if !positions.is_empty() => {
                let positions =
                    Tensor::from_vec(positions.clone(), &[positions.len()])?.to_device(embeds.device())?;
                Ok(k::scatter_rows(&embeds, &positions, &k::cast(rows, dtype)?)?)
            }
            _ => Ok(embeds),
        }
    }
}
