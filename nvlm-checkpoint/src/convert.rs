//! Megatron NVLM-D checkpoint to a Hugging Face safetensors folder, streamed: one source layer in memory at a time,
//! shards of at most `max_shard_bytes`, written into a temporary folder beside the target and renamed at the end.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::common_state::CommonState;
use crate::megatron::MegatronCheckpoint;
use crate::nvlm_layout::{NvlmDims, OutputTensor, Plan, Transform};
use crate::torch_save::HostTensor;
use crate::{CheckpointError, Result, SafetensorsCheckpoint, SAFETENSORS_INDEX};

/// HF's default shard limit (5 GB).
pub const DEFAULT_MAX_SHARD_BYTES: u64 = 5_000_000_000;

/// What to convert and how.
#[derive(Debug, Clone)]
pub struct ConvertOptions {
    /// Output folder (must not exist unless `force`).
    pub output: PathBuf,
    /// The HF `config.json` to use; built from the checkpoint's `args` when `None`.
    pub config: Option<PathBuf>,
    /// A folder whose tokenizer files are copied next to the weights.
    pub tokenizer: Option<PathBuf>,
    /// Replace an existing output folder.
    pub force: bool,
    /// Largest shard in bytes.
    pub max_shard_bytes: u64,
}

/// Reads the tensors a plan needs, keeping only the last source layer in memory.
pub struct SourceReader<'a> {
    checkpoint: &'a MegatronCheckpoint,
    dims: NvlmDims,
    cached: Option<((String, Option<u64>), HostTensor)>,
}

impl<'a> SourceReader<'a> {
    /// A reader over `checkpoint` using `dims` for the layout changes.
    pub fn new(checkpoint: &'a MegatronCheckpoint, dims: NvlmDims) -> Self {
        SourceReader {
            checkpoint,
            dims,
            cached: None,
        }
    }

    /// The HF tensor `out`, checked against its planned dtype and shape.
    pub fn produce(&mut self, out: &OutputTensor) -> Result<HostTensor> {
        let key = (out.source.clone(), out.layer);
        if self.cached.as_ref().map(|(k, _)| k) != Some(&key) {
            self.cached = None; // free the previous layer before reading the next
            let tensor = match out.layer {
                Some(layer) => self.checkpoint.read_leading(&out.source, layer)?,
                None => self.checkpoint.read(&out.source)?,
            };
            self.cached = Some((key, tensor));
        }
        let tensor = match out.transform {
            // Single-output transforms take the source instead of copying it (each source feeds one output).
            Transform::Copy | Transform::TrimRows => {
                let (_, mut source) = self.cached.take().expect("just filled");
                source
                    .data
                    .truncate(out.shape.iter().product::<u64>() as usize * source.dtype.size());
                HostTensor {
                    shape: out.shape.clone(),
                    ..source
                }
            }
            _ => {
                let (_, source) = self.cached.as_ref().expect("just filled");
                self.dims.apply(&out.transform, source, &out.shape)
            }
        };
        if tensor.dtype != out.dtype
            || tensor.data.len() as u64 != out.shape.iter().product::<u64>() * out.dtype.size() as u64
        {
            return Err(CheckpointError::tensor(
                &out.name,
                &out.source,
                "conversion produced the wrong size",
            ));
        }
        Ok(tensor)
    }
}

/// The dims from `config` when given, else from the checkpoint's `args`.
pub fn dims_for(checkpoint: &MegatronCheckpoint, config: Option<&serde_json::Value>) -> Result<NvlmDims> {
    match config {
        Some(config) => NvlmDims::from_hf_config(config),
        None => NvlmDims::from_args(checkpoint.common().ok_or_else(|| {
            CheckpointError::Unsupported("the checkpoint has no common.pt with args: pass --config".into())
        })?),
    }
}

/// Groups the plan into shards of at most `limit` bytes (a larger tensor gets a shard of its own).
pub fn assign_shards(outputs: &[OutputTensor], limit: u64) -> Vec<Vec<usize>> {
    let mut shards: Vec<Vec<usize>> = Vec::new();
    let mut size = 0u64;
    for (i, out) in outputs.iter().enumerate() {
        let bytes = out.shape.iter().product::<u64>() * out.dtype.size() as u64;
        if shards.is_empty() || (size + bytes > limit && !shards.last().expect("non-empty").is_empty()) {
            shards.push(Vec::new());
            size = 0;
        }
        shards.last_mut().expect("pushed").push(i);
        size += bytes;
    }
    shards
}

fn shard_name(i: usize, n: usize) -> String {
    if n == 1 {
        "model.safetensors".to_string()
    } else {
        format!("model-{:05}-of-{n:05}.safetensors", i + 1)
    }
}

fn header(outputs: &[OutputTensor], members: &[usize]) -> Vec<u8> {
    let mut map = serde_json::Map::new();
    map.insert("__metadata__".into(), serde_json::json!({ "format": "pt" }));
    let mut offset = 0u64;
    for &i in members {
        let out = &outputs[i];
        let bytes = out.shape.iter().product::<u64>() * out.dtype.size() as u64;
        map.insert(
            out.name.clone(),
            serde_json::json!({ "dtype": out.dtype.safetensors_name(), "shape": out.shape, "data_offsets": [offset, offset + bytes] }),
        );
        offset += bytes;
    }
    let mut text = serde_json::to_vec(&serde_json::Value::Object(map)).expect("JSON");
    while !text.len().is_multiple_of(8) {
        text.push(b' ');
    }
    text
}

/// Converts `checkpoint` per `options`, calling `progress(bytes_written)` as it goes. Returns the plan it wrote.
pub fn convert(
    checkpoint: &MegatronCheckpoint,
    options: &ConvertOptions,
    mut progress: impl FnMut(u64),
) -> Result<Plan> {
    let output = &options.output;
    if output.exists() && !options.force {
        return Err(CheckpointError::Unsupported(format!(
            "{} already exists: choose another output or pass --force",
            output.display()
        )));
    }
    let config: Option<serde_json::Value> =
        match &options.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(CheckpointError::io(path))?;
                Some(serde_json::from_str(&text).map_err(|e| {
                    CheckpointError::format(path.display().to_string(), format!("not JSON: {e}"))
                })?)
            }
            None => None,
        };
    let dims = dims_for(checkpoint, config.as_ref())?;
    let plan = dims.plan(&checkpoint.tensors())?;
    let config = match config {
        Some(c) => c,
        None => config_from_args(checkpoint.common().expect("dims_for checked"), &dims, &plan),
    };
    let name = output
        .file_name()
        .ok_or_else(|| CheckpointError::Unsupported(format!("bad output path {}", output.display())))?;
    let tmp = output.with_file_name(format!(
        ".{}.partial-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    let result = write_folder(checkpoint, dims, &plan, &config, options, &tmp, &mut progress);
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if output.exists() {
        let old = output.with_file_name(format!(".{}.old-{}", name.to_string_lossy(), std::process::id()));
        std::fs::rename(output, &old).map_err(CheckpointError::io(output))?;
        std::fs::rename(&tmp, output).map_err(CheckpointError::io(output))?;
        let _ = std::fs::remove_dir_all(&old);
    } else {
        std::fs::rename(&tmp, output).map_err(CheckpointError::io(output))?;
    }
    Ok(plan)
}

fn write_folder(
    checkpoint: &MegatronCheckpoint,
    dims: NvlmDims,
    plan: &Plan,
    config: &serde_json::Value,
    options: &ConvertOptions,
    dir: &Path,
    progress: &mut impl FnMut(u64),
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(CheckpointError::io(dir))?;
    let shards = assign_shards(&plan.outputs, options.max_shard_bytes);
    let mut reader = SourceReader::new(checkpoint, dims);
    let mut weight_map = BTreeMap::new();
    let mut total = 0u64;
    for (s, members) in shards.iter().enumerate() {
        let file_name = shard_name(s, shards.len());
        let path = dir.join(&file_name);
        let file = std::fs::File::create(&path).map_err(CheckpointError::io(&path))?;
        let mut out = BufWriter::with_capacity(8 << 20, file);
        let head = header(&plan.outputs, members);
        out.write_all(&(head.len() as u64).to_le_bytes())
            .map_err(CheckpointError::io(&path))?;
        out.write_all(&head).map_err(CheckpointError::io(&path))?;
        for &i in members {
            let tensor = reader.produce(&plan.outputs[i])?;
            out.write_all(&tensor.data).map_err(CheckpointError::io(&path))?;
            total += tensor.data.len() as u64;
            progress(tensor.data.len() as u64);
            weight_map.insert(plan.outputs[i].name.clone(), file_name.clone());
        }
        let file = out
            .into_inner()
            .map_err(|e| CheckpointError::io(&path)(e.into_error()))?;
        file.sync_all().map_err(CheckpointError::io(&path))?;
    }
    let index = serde_json::json!({ "metadata": { "total_size": total }, "weight_map": weight_map });
    write_json(&dir.join(SAFETENSORS_INDEX), &index)?;
    write_json(&dir.join("config.json"), config)?;
    if let Some(tokenizer) = &options.tokenizer {
        copy_tokenizer(tokenizer, dir)?;
    }
    Ok(())
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("JSON") + "\n";
    std::fs::write(path, text).map_err(CheckpointError::io(path))
}

/// Copies the tokenizer files of `from` (the usual HF names, those present).
fn copy_tokenizer(from: &Path, to: &Path) -> Result<()> {
    const FILES: &[&str] = &[
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "vocab.json",
        "merges.txt",
        "added_tokens.json",
        "generation_config.json",
    ];
    let mut copied = 0;
    for name in FILES {
        let src = from.join(name);
        if src.is_file() {
            std::fs::copy(&src, to.join(name)).map_err(CheckpointError::io(&src))?;
            copied += 1;
        }
    }
    if copied == 0 {
        return Err(CheckpointError::Unsupported(format!(
            "{} holds no tokenizer files",
            from.display()
        )));
    }
    Ok(())
}

/// An NVLM-D `config.json` from Megatron's `args`, for conversions without `--config`.
pub fn config_from_args(common: &CommonState, dims: &NvlmDims, plan: &Plan) -> serde_json::Value {
    let int = |k: &str, default: i64| common.int(k).unwrap_or(default);
    let float = |k: &str, default: f64| common.args.get(k).and_then(|v| v.as_float()).unwrap_or(default);
    let layers = |prefix: &str| {
        plan.outputs
            .iter()
            .filter(|o| {
                o.name.starts_with(prefix) && o.name.ends_with("norm1.weight")
                    || o.name.starts_with(prefix) && o.name.ends_with("input_layernorm.weight")
            })
            .count()
    };
    let tied = common
        .args
        .get("untie_embeddings_and_output_weights")
        .and_then(|v| v.as_bool())
        .map(|u| !u)
        .unwrap_or(false);
    serde_json::json!({
        "architectures": ["NVLM_D"],
        "auto_map": {
            "AutoConfig": "configuration_nvlm_d.NVLM_D_Config",
            "AutoModel": "modeling_nvlm_d.NVLM_D_Model",
            "AutoModelForCausalLM": "modeling_nvlm_d.NVLM_D_Model"
        },
        "model_type": "NVLM_D",
        "downsample_ratio": 0.5,
        "dynamic_image_size": true,
        "force_image_size": int("img_h", 448),
        "max_dynamic_patch": int("max_num_tiles", 6),
        "min_dynamic_patch": 1,
        "ps_version": "v2",
        "select_layer": -1,
        "template": "chatml",
        "torch_dtype": "bfloat16",
        "use_backbone_lora": 0,
        "use_llm_lora": 0,
        "use_thumbnail": common.args.get("use_thumbnail").and_then(|v| v.as_bool()).unwrap_or(true),
        "llm_config": {
            "architectures": ["Qwen2ForCausalLM"],
            "model_type": "qwen2",
            "attention_bias": true,
            "hidden_act": "silu",
            "hidden_size": dims.llm_hidden,
            "intermediate_size": int("ffn_hidden_size", 0),
            "num_hidden_layers": layers("language_model.model.layers."),
            "num_attention_heads": dims.llm_heads,
            "num_key_value_heads": dims.llm_groups,
            "vocab_size": dims.vocab,
            "max_position_embeddings": int("max_position_embeddings", 32768),
            "rope_theta": float("rotary_base", 1_000_000.0),
            "rope_scaling": { "factor": 3.0, "type": "dynamic" },
            "rms_norm_eps": float("norm_epsilon", 1e-6),
            "tie_word_embeddings": tied,
            "bos_token_id": 151643,
            "eos_token_id": 151645,
            "torch_dtype": "bfloat16",
            "use_cache": true
        },
        "vision_config": {
            "architectures": ["InternVisionModel"],
            "model_type": "intern_vit_6b",
            "hidden_act": "gelu",
            "hidden_size": dims.vit_hidden,
            "intermediate_size": int("vit_ffn_hidden_size", 0),
            "num_hidden_layers": layers("vision_model.encoder.layers."),
            "num_attention_heads": dims.vit_heads,
            "image_size": int("img_h", 448),
            "patch_size": int("patch_dim", 14),
            "num_channels": 3,
            "norm_type": "rms_norm",
            "layer_norm_eps": 1e-6,
            "qk_normalization": true,
            "qkv_bias": false,
            "use_flash_attn": false,
            "drop_path_rate": 0.0,
            "torch_dtype": "bfloat16"
        }
    })
}

/// Re-reads every tensor of a converted folder and compares it, byte for byte, with a fresh conversion of its
/// source. Returns the number of tensors checked.
pub fn verify(checkpoint: &MegatronCheckpoint, dims: NvlmDims, plan: &Plan, output: &Path) -> Result<usize> {
    let written = SafetensorsCheckpoint::open(output)?;
    let mut reader = SourceReader::new(checkpoint, dims);
    for out in &plan.outputs {
        let expected = reader.produce(out)?;
        let entry = written
            .tensors()
            .get(&out.name)
            .ok_or_else(|| CheckpointError::Missing(out.name.clone()))?;
        if entry.dtype != out.dtype
            || entry.shape != out.shape
            || written.bytes(&out.name)? != expected.data.as_slice()
        {
            return Err(CheckpointError::tensor(
                &out.name,
                output.display().to_string(),
                "differs from its source after conversion",
            ));
        }
    }
    if written.tensors().len() != plan.outputs.len() {
        return Err(CheckpointError::format(
            output.display().to_string(),
            "holds tensors the conversion did not write",
        ));
    }
    Ok(plan.outputs.len())
}
