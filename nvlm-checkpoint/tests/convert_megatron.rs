//! The tiny NVLM-D saved by megatron-core (torch_dist at TP=2, and a zarr copy) converts to safetensors whose
//! tensors equal, name by name and bit for bit, the HF twin `shared/fixtures/model/tiny-nvlm-d/model.safetensors`.

mod common;

use std::path::{Path, PathBuf};

use common::fixtures;
use nvlm_checkpoint::convert::{convert, dims_for, verify, ConvertOptions, DEFAULT_MAX_SHARD_BYTES};
use nvlm_checkpoint::{MegatronCheckpoint, SafetensorsCheckpoint};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nvlm-convert-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn assert_equal_to_hf_twin(output: &Path) {
    let ours = SafetensorsCheckpoint::open(output).unwrap();
    let twin = SafetensorsCheckpoint::open(&fixtures().join("model/tiny-nvlm-d/model.safetensors")).unwrap();
    let names: Vec<&String> = ours.tensors().keys().collect();
    let twin_names: Vec<&String> = twin.tensors().keys().collect();
    assert_eq!(names, twin_names, "same tensor names");
    for name in names {
        let (a, b) = (&ours.tensors()[name], &twin.tensors()[name]);
        assert_eq!((a.dtype, &a.shape), (b.dtype, &b.shape), "{name}: dtype/shape");
        assert!(
            ours.bytes(name).unwrap() == twin.bytes(name).unwrap(),
            "{name}: values differ"
        );
    }
}

#[test]
fn torch_dist_and_zarr_convert_to_the_hf_release_layout() {
    for backend in ["torch_dist", "zarr"] {
        let input = fixtures().join("megatron").join(backend);
        let checkpoint = MegatronCheckpoint::open(&input).unwrap();
        let output = scratch(backend);
        let options = ConvertOptions {
            output: output.clone(),
            config: None,
            tokenizer: Some(fixtures().join("tokenizer")),
            force: false,
            max_shard_bytes: DEFAULT_MAX_SHARD_BYTES,
        };
        let mut written = 0u64;
        let plan = convert(&checkpoint, &options, |n| written += n).unwrap();
        assert_eq!(plan.outputs.len(), 61, "{backend}: every tensor of the HF twin");
        assert_eq!(
            written, 20_076_864,
            "{backend}: bytes, as the HF index's total_size"
        );
        assert_equal_to_hf_twin(&output);
        assert!(output.join("tokenizer.json").is_file());
        let dims = dims_for(&checkpoint, None).unwrap();
        assert_eq!(verify(&checkpoint, dims, &plan, &output).unwrap(), 61);
        // The output exists now: converting again needs --force.
        let again = convert(&checkpoint, &options, |_| {});
        assert!(again.unwrap_err().to_string().contains("--force"));
        let forced = ConvertOptions {
            force: true,
            ..options.clone()
        };
        convert(&checkpoint, &forced, |_| {}).unwrap();
        std::fs::remove_dir_all(&output).unwrap();
    }
}

#[test]
fn config_from_args_matches_the_release_config() {
    let checkpoint = MegatronCheckpoint::open(&fixtures().join("megatron/torch_dist")).unwrap();
    let output = scratch("config");
    let options = ConvertOptions {
        output: output.clone(),
        config: None,
        tokenizer: None,
        force: false,
        max_shard_bytes: 4_000_000,
    };
    convert(&checkpoint, &options, |_| {}).unwrap();
    let ours: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(output.join("config.json")).unwrap()).unwrap();
    let twin: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("model/tiny-nvlm-d/config.json")).unwrap(),
    )
    .unwrap();
    for key in [
        "architectures",
        "model_type",
        "downsample_ratio",
        "force_image_size",
        "max_dynamic_patch",
        "ps_version",
        "select_layer",
        "template",
        "use_thumbnail",
    ] {
        assert_eq!(ours[key], twin[key], "{key}");
    }
    for key in [
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "vocab_size",
        "rope_theta",
        "rms_norm_eps",
        "tie_word_embeddings",
        "rope_scaling",
    ] {
        assert_eq!(
            ours["llm_config"][key], twin["llm_config"][key],
            "llm_config.{key}"
        );
    }
    for key in [
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "image_size",
        "patch_size",
        "qk_normalization",
        "norm_type",
    ] {
        assert_eq!(
            ours["vision_config"][key], twin["vision_config"][key],
            "vision_config.{key}"
        );
    }
    // A 4 MB shard limit splits the 20 MB model; the index lists every tensor once.
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(output.join("model.safetensors.index.json")).unwrap())
            .unwrap();
    let files: std::collections::BTreeSet<&str> = index["weight_map"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        files.len() > 1
            && files
                .iter()
                .all(|f| f.ends_with(&format!("-of-{:05}.safetensors", files.len()))),
        "{files:?}"
    );
    assert_equal_to_hf_twin(&output);
    std::fs::remove_dir_all(&output).unwrap();
}

#[test]
fn an_explicit_config_drives_the_layout() {
    let checkpoint = MegatronCheckpoint::open(&fixtures().join("megatron/torch_dist/iter_0000001")).unwrap();
    let output = scratch("explicit");
    let config = fixtures().join("model/tiny-nvlm-d/config.json");
    let options = ConvertOptions {
        output: output.clone(),
        config: Some(config.clone()),
        tokenizer: None,
        force: false,
        max_shard_bytes: DEFAULT_MAX_SHARD_BYTES,
    };
    convert(&checkpoint, &options, |_| {}).unwrap();
    assert_equal_to_hf_twin(&output);
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(output.join("config.json")).unwrap()).unwrap();
    let given: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    assert_eq!(written, given, "the given config.json is written unchanged");
    std::fs::remove_dir_all(&output).unwrap();
}

#[test]
fn megatron_checkpoints_serve_hf_named_weights_directly() {
    use nvlm_tensor::Weights;
    let twin = SafetensorsCheckpoint::open(&fixtures().join("model/tiny-nvlm-d")).unwrap();
    let checkpoint = MegatronCheckpoint::open(&fixtures().join("megatron/zarr")).unwrap();
    let dims = dims_for(&checkpoint, None).unwrap();
    let weights = nvlm_checkpoint::MegatronWeights::new(checkpoint, dims).unwrap();
    assert_eq!(weights.names(), twin.names());
    for name in [
        "vision_model.encoder.layers.1.attn.qkv.weight",
        "language_model.model.layers.0.self_attn.k_proj.bias",
        "mlp1.1.weight",
    ] {
        let (ours, theirs) = (weights.get(name).unwrap(), twin.get(name).unwrap());
        assert_eq!((ours.dtype, &ours.shape), (theirs.dtype, &theirs.shape), "{name}");
        assert!(ours.data == theirs.data, "{name}");
    }
    assert!(weights.get("no.such.tensor").is_err());
}
