//! NVLM-D's Megatron-core names and layouts mapped to the Hugging Face release's (`nvlm-d.md` §12): which HF tensor
//! comes from which mcore tensor, and how (ViT per-head QKV back to `[q;k;v]` with zero dummy heads, LLM QKV
//! de-interleaved per query group, SwiGLU `fc1` split into gate and up, fused norms unfused, vocabulary trimmed).

use std::collections::BTreeMap;

use crate::common_state::CommonState;
use crate::dcp::TensorEntry;
use crate::dtype::StoredDType;
use crate::torch_save::HostTensor;
use crate::{CheckpointError, Result};

/// The sizes the layout conversions need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NvlmDims {
    /// Real ViT attention heads (25 for NVLM-D-72B).
    pub vit_heads: u64,
    /// Dummy heads the HF ViT adds (7, hard-coded in the HF code).
    pub vit_dummy_heads: u64,
    /// ViT width.
    pub vit_hidden: u64,
    /// LLM query heads.
    pub llm_heads: u64,
    /// LLM key/value heads (query groups).
    pub llm_groups: u64,
    /// LLM width.
    pub llm_hidden: u64,
    /// Vocabulary rows in the HF release (the Megatron tensors may be padded beyond it).
    pub vocab: u64,
}

impl NvlmDims {
    /// From an HF NVLM-D `config.json`.
    pub fn from_hf_config(config: &serde_json::Value) -> Result<NvlmDims> {
        let get = |section: &str, key: &str| -> Result<u64> {
            config[section][key].as_u64().ok_or_else(|| {
                CheckpointError::format(
                    "config.json",
                    format!("`{section}.{key}` is missing or not an integer"),
                )
            })
        };
        Ok(NvlmDims {
            vit_heads: get("vision_config", "num_attention_heads")?,
            vit_dummy_heads: 7,
            vit_hidden: get("vision_config", "hidden_size")?,
            llm_heads: get("llm_config", "num_attention_heads")?,
            llm_groups: get("llm_config", "num_key_value_heads")?,
            llm_hidden: get("llm_config", "hidden_size")?,
            vocab: get("llm_config", "vocab_size")?,
        })
    }

    /// From Megatron's `args` (NVLM's `vit_*` arguments), for checkpoints converted without a `config.json`.
    pub fn from_args(common: &CommonState) -> Result<NvlmDims> {
        let get = |key: &str| -> Result<u64> {
            common
                .int(key)
                .and_then(|v| u64::try_from(v).ok())
                .ok_or_else(|| {
                    CheckpointError::format(
                        "common.pt",
                        format!("`args.{key}` is missing: pass --config with the HF config.json"),
                    )
                })
        };
        let heads = get("num_attention_heads")?;
        Ok(NvlmDims {
            vit_heads: get("vit_real_attention_heads").or_else(|_| get("vit_num_attention_heads"))?,
            vit_dummy_heads: 7,
            vit_hidden: get("vit_hidden_size")?,
            llm_heads: heads,
            llm_groups: get("num_query_groups").unwrap_or(heads),
            llm_hidden: get("hidden_size")?,
            vocab: get("padded_vocab_size")?,
        })
    }
}

/// How one HF tensor is made from one mcore tensor (or one layer of it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transform {
    /// The same values (the shape may gain or lose leading 1s).
    Copy,
    /// ViT QKV part 0/1/2 (q/k/v) from per-head `[q_j; k_j; v_j]` rows, padded with zero dummy heads.
    VitQkv(u8),
    /// First `real` entries kept, then zeros (ViT q/k norms over padded heads).
    PadVector,
    /// First `real` input columns kept, then zeros (ViT output projection).
    PadColumns,
    /// LLM QKV part 0/1/2 (q/k/v) from per-query-group `[q_g; k_g; v_g]` rows (weights or biases).
    LlmQkv(u8),
    /// Half 0 (gate) or 1 (up) of the SwiGLU `[gate; up]` rows.
    SwigluHalf(u8),
    /// The first `vocab` rows (vocabulary padding removed).
    TrimRows,
}

/// One tensor of the HF checkpoint to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputTensor {
    /// HF name.
    pub name: String,
    /// Element type (the source's).
    pub dtype: StoredDType,
    /// HF shape.
    pub shape: Vec<u64>,
    /// Source mcore tensor.
    pub source: String,
    /// Layer along the source's stacked axis, if stacked.
    pub layer: Option<u64>,
    /// The layout change.
    pub transform: Transform,
}

/// The conversion plan: HF tensors in writing order, and the mcore tensors deliberately skipped.
#[derive(Debug, Clone)]
pub struct Plan {
    /// What to write.
    pub outputs: Vec<OutputTensor>,
    /// Optimizer state, RNG state and TransformerEngine `_extra_state` (not weights).
    pub skipped: Vec<String>,
}

/// Which HF tensors one mcore layer parameter makes: `(hf suffix, transform)`.
fn layer_targets(tower: &str, sub: &str) -> Option<Vec<(&'static str, Transform)>> {
    use Transform::*;
    Some(match (tower, sub) {
        ("vision", "input_layernorm.weight") => vec![("norm1.weight", Copy)],
        ("vision", "pre_mlp_layernorm.weight") => vec![("norm2.weight", Copy)],
        ("vision", "ls1") => vec![("ls1", Copy)],
        ("vision", "ls2") => vec![("ls2", Copy)],
        ("vision", "self_attention.linear_qkv.weight") => {
            vec![("attn.qkv.weight", VitQkv(0))]
        }
        ("vision", "self_attention.q_layernorm.weight") => vec![("attn.q_norm.weight", PadVector)],
        ("vision", "self_attention.k_layernorm.weight") => vec![("attn.k_norm.weight", PadVector)],
        ("vision", "self_attention.linear_proj.weight") => vec![("attn.proj.weight", PadColumns)],
        ("vision", "self_attention.linear_proj.bias") => vec![("attn.proj.bias", Copy)],
        ("vision", "mlp.linear_fc1.weight") => vec![("mlp.fc1.weight", Copy)],
        ("vision", "mlp.linear_fc1.bias") => vec![("mlp.fc1.bias", Copy)],
        ("vision", "mlp.linear_fc2.weight") => vec![("mlp.fc2.weight", Copy)],
        ("vision", "mlp.linear_fc2.bias") => vec![("mlp.fc2.bias", Copy)],
        ("language", "self_attention.linear_qkv.layer_norm_weight") => vec![("input_layernorm.weight", Copy)],
        ("language", "self_attention.linear_qkv.weight") => vec![
            ("self_attn.q_proj.weight", LlmQkv(0)),
            ("self_attn.k_proj.weight", LlmQkv(1)),
            ("self_attn.v_proj.weight", LlmQkv(2)),
        ],
        ("language", "self_attention.linear_qkv.bias") => vec![
            ("self_attn.q_proj.bias", LlmQkv(0)),
            ("self_attn.k_proj.bias", LlmQkv(1)),
            ("self_attn.v_proj.bias", LlmQkv(2)),
        ],
        ("language", "self_attention.linear_proj.weight") => vec![("self_attn.o_proj.weight", Copy)],
        ("language", "mlp.linear_fc1.layer_norm_weight") => vec![("post_attention_layernorm.weight", Copy)],
        ("language", "mlp.linear_fc1.weight") => {
            vec![
                ("mlp.gate_proj.weight", SwigluHalf(0)),
                ("mlp.up_proj.weight", SwigluHalf(1)),
            ]
        }
        ("language", "mlp.linear_fc2.weight") => vec![("mlp.down_proj.weight", Copy)],
        _ => return None,
    })
}

/// Non-layer tensors: `(mcore name, hf name, transform, hf shape from the mcore shape)`.
fn global_target(name: &str) -> Option<(&'static str, Transform)> {
    use Transform::*;
    Some(match name {
        "vision_model.class_token" => ("vision_model.embeddings.class_embedding", Copy),
        "vision_model.conv1.weight" => ("vision_model.embeddings.patch_embedding.weight", Copy),
        "vision_model.conv1.bias" => ("vision_model.embeddings.patch_embedding.bias", Copy),
        "vision_model.position_embeddings.weight" => ("vision_model.embeddings.position_embedding", Copy),
        "vision_projection.encoder.linear_fc1.layer_norm_weight" => ("mlp1.0.weight", Copy),
        "vision_projection.encoder.linear_fc1.layer_norm_bias" => ("mlp1.0.bias", Copy),
        "vision_projection.encoder.linear_fc1.weight" => ("mlp1.1.weight", Copy),
        "vision_projection.encoder.linear_fc2.weight" => ("mlp1.3.weight", Copy),
        "language_model.embedding.word_embeddings.weight" => {
            ("language_model.model.embed_tokens.weight", TrimRows)
        }
        "language_model.output_layer.weight" => ("language_model.lm_head.weight", TrimRows),
        "language_model.decoder.final_layernorm.weight" => ("language_model.model.norm.weight", Copy),
        _ => return None,
    })
}

/// True for mcore entries that are not model weights.
pub fn is_skipped(name: &str) -> bool {
    name.contains("_extra_state") || name.starts_with("optimizer.") || name.starts_with("rng_state")
}

/// Splits `<tower>_model.decoder.layers.[<i>.]<sub>` into (tower, layer index for per-layer keys, sub).
fn split_layer_key(name: &str) -> Option<(&'static str, Option<u64>, &str)> {
    let (tower, rest) = if let Some(rest) = name.strip_prefix("vision_model.decoder.layers.") {
        ("vision", rest)
    } else if let Some(rest) = name.strip_prefix("language_model.decoder.layers.") {
        ("language", rest)
    } else {
        return None;
    };
    match rest.split_once('.') {
        Some((index, sub)) if index.chars().all(|c| c.is_ascii_digit()) => {
            Some((tower, index.parse().ok(), sub))
        }
        _ => Some((tower, None, rest)),
    }
}

impl NvlmDims {
    fn vit_head_dim(&self) -> u64 {
        self.vit_hidden / self.vit_heads
    }

    fn llm_head_dim(&self) -> u64 {
        self.llm_hidden / self.llm_heads
    }

    /// The HF shape of `transform` applied to a source of `shape` (one layer, stacked axis removed).
    fn output_shape(&self, transform: &Transform, shape: &[u64], hf_name: &str) -> Result<Vec<u64>> {
        let bad = |why: String| CheckpointError::tensor(hf_name, "", why);
        let hf_heads = self.vit_heads + self.vit_dummy_heads;
        let d = self.vit_head_dim();
        Ok(match transform {
            Transform::Copy if hf_name.ends_with("position_embedding") && shape.len() == 2 => {
                vec![1, shape[0], shape[1]]
            }
            Transform::Copy => shape.to_vec(),
            Transform::VitQkv(_) => {
                if shape.len() != 2 || !shape[0].is_multiple_of(3 * d) || shape[0] / (3 * d) < self.vit_heads
                {
                    return Err(bad(format!(
                        "ViT qkv {shape:?} does not hold {} heads of {d}",
                        self.vit_heads
                    )));
                }
                vec![3 * hf_heads * d, shape[1]]
            }
            Transform::PadVector => vec![hf_heads * d],
            Transform::PadColumns => vec![shape[0], hf_heads * d],
            Transform::LlmQkv(part) => {
                let dh = self.llm_head_dim();
                let rows = self.llm_groups * (self.llm_heads / self.llm_groups + 2) * dh;
                if shape[0] != rows {
                    return Err(bad(format!(
                        "LLM qkv has {} rows, {} groups of {}+2 heads need {rows}",
                        shape[0],
                        self.llm_groups,
                        self.llm_heads / self.llm_groups
                    )));
                }
                let out_rows = if *part == 0 {
                    self.llm_heads * dh
                } else {
                    self.llm_groups * dh
                };
                [&[out_rows][..], &shape[1..]].concat()
            }
            Transform::SwigluHalf(_) => {
                if !shape[0].is_multiple_of(2) {
                    return Err(bad(format!("SwiGLU fc1 has an odd row count {}", shape[0])));
                }
                [&[shape[0] / 2][..], &shape[1..]].concat()
            }
            Transform::TrimRows => {
                if shape[0] < self.vocab {
                    return Err(bad(format!(
                        "{} vocabulary rows, fewer than the {} of the HF model",
                        shape[0], self.vocab
                    )));
                }
                [&[self.vocab][..], &shape[1..]].concat()
            }
        })
    }

    /// Applies `transform` to one source tensor (a layer slice for stacked sources).
    pub fn apply(&self, transform: &Transform, source: &HostTensor, out_shape: &[u64]) -> HostTensor {
        let elem = source.dtype.size();
        let row_bytes = |shape: &[u64]| shape[1..].iter().product::<u64>() as usize * elem;
        let rows = |t: &HostTensor, start: u64, count: u64| -> Vec<u8> {
            let rb = row_bytes(&t.shape);
            t.data[start as usize * rb..(start + count) as usize * rb].to_vec()
        };
        let data = match transform {
            Transform::Copy => source.data.clone(),
            Transform::TrimRows => rows(source, 0, out_shape[0]),
            Transform::SwigluHalf(half) => rows(source, *half as u64 * out_shape[0], out_shape[0]),
            Transform::VitQkv(_) => {
                // mcore: per head j, [q_j; k_j; v_j] of d rows each. HF: [q(all heads); k; v], dummy heads zero.
                let d = self.vit_head_dim();
                let hf_heads = self.vit_heads + self.vit_dummy_heads;
                let rb = row_bytes(&source.shape);
                let mut out = vec![0u8; out_shape.iter().product::<u64>() as usize * elem];
                for part in 0..3u64 {
                    for j in 0..self.vit_heads {
                        let src = ((3 * j + part) * d) as usize * rb;
                        let dst = ((part * hf_heads + j) * d) as usize * rb;
                        out[dst..dst + d as usize * rb]
                            .copy_from_slice(&source.data[src..src + d as usize * rb]);
                    }
                }
                out
            }
            Transform::PadVector => {
                let keep = (self.vit_heads * self.vit_head_dim()) as usize * elem;
                let mut out = vec![0u8; out_shape[0] as usize * elem];
                out[..keep].copy_from_slice(&source.data[..keep]);
                out
            }
            Transform::PadColumns => {
                let keep = (self.vit_heads * self.vit_head_dim()) as usize * elem;
                let (src_row, dst_row) = (source.shape[1] as usize * elem, out_shape[1] as usize * elem);
                let mut out = vec![0u8; out_shape[0] as usize * dst_row];
                for r in 0..out_shape[0] as usize {
                    out[r * dst_row..r * dst_row + keep]
                        .copy_from_slice(&source.data[r * src_row..r * src_row + keep]);
                }
                out
            }
            Transform::LlmQkv(part) => {
                let dh = self.llm_head_dim();
                let q_rows = self.llm_heads / self.llm_groups * dh;
                let group_rows = q_rows + 2 * dh;
                let rb = row_bytes(&source.shape).max(elem);
                let (start, count) = match part {
                    0 => (0, q_rows),
                    1 => (q_rows, dh),
                    _ => (q_rows + dh, dh),
                };
                let mut out = Vec::with_capacity(out_shape.iter().product::<u64>() as usize * elem);
                for g in 0..self.llm_groups {
                    let from = (g * group_rows + start) as usize * rb;
                    out.extend_from_slice(&source.data[from..from + count as usize * rb]);
                }
                out
            }
        };
        HostTensor {
            dtype: source.dtype,
            shape: out_shape.to_vec(),
            data,
        }
    }

    /// The conversion plan for a checkpoint's tensors. Unknown model tensors are an error naming them.
    pub fn plan(&self, tensors: &BTreeMap<String, TensorEntry>) -> Result<Plan> {
        let mut outputs = Vec::new();
        let mut skipped = Vec::new();
        let mut unknown = Vec::new();
        for (name, entry) in tensors {
            if is_skipped(name) {
                skipped.push(name.clone());
                continue;
            }
            let shape = entry.shape();
            if let Some((hf, transform)) = global_target(name) {
                let out_shape = self.output_shape(&transform, shape, hf)?;
                outputs.push(OutputTensor {
                    name: hf.into(),
                    dtype: entry.dtype,
                    shape: out_shape,
                    source: name.clone(),
                    layer: None,
                    transform,
                });
            } else if let Some((tower, index, sub)) = split_layer_key(name) {
                let Some(targets) = layer_targets(tower, sub) else {
                    unknown.push(name.clone());
                    continue;
                };
                let hf_prefix = if tower == "vision" {
                    "vision_model.encoder.layers"
                } else {
                    "language_model.model.layers"
                };
                let (layers, layer_shape): (Vec<(u64, Option<u64>)>, &[u64]) = match index {
                    Some(i) => (vec![(i, None)], shape),
                    None => ((0..shape[0]).map(|l| (l, Some(l))).collect(), &shape[1..]),
                };
                for (hf_layer, source_layer) in layers {
                    for (suffix, transform) in &targets {
                        let hf = format!("{hf_prefix}.{hf_layer}.{suffix}");
                        let out_shape = self.output_shape(transform, layer_shape, &hf)?;
                        outputs.push(OutputTensor {
                            name: hf,
                            dtype: entry.dtype,
                            shape: out_shape,
                            source: name.clone(),
                            layer: source_layer,
                            transform: transform.clone(),
                        });
                    }
                }
            } else {
                unknown.push(name.clone());
            }
        }
        if !unknown.is_empty() {
            return Err(CheckpointError::Unsupported(format!(
                "no NVLM-D mapping for {} tensor(s): {}",
                unknown.len(),
                unknown.join(", ")
            )));
        }
        outputs.sort_by_key(|o| natural_key(&o.name));
        Ok(Plan { outputs, skipped })
    }
}

/// Sort key that orders `layers.2` before `layers.10`.
fn natural_key(name: &str) -> Vec<(String, u64)> {
    name.split('.')
        .map(|p| match p.parse::<u64>() {
            Ok(n) => (String::new(), n),
            Err(_) => (p.to_string(), 0),
        })
        .collect()
}
