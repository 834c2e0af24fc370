//! What the model tests share: the tiny NVLM-D fixture's language model, and a first-max argmax.
#![allow(dead_code)] // each test binary uses its own subset

use nvlm_checkpoint::SafetensorsCheckpoint;
use nvlm_qwen2::{Qwen2Config, Qwen2Model};
use nvlm_tensor::Device;
use nvlm_testkit::fixtures;

/// The fixture's weights and its language-model config.
pub fn tiny_weights_and_config() -> (SafetensorsCheckpoint, Qwen2Config) {
    let dir = fixtures().join("model/tiny-nvlm-d");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    (
        SafetensorsCheckpoint::open(&dir).unwrap(),
        Qwen2Config::from_json(&config, true).unwrap(),
    )
}

/// The fixture's language model, whole, on the CPU.
pub fn tiny_model() -> Qwen2Model {
    let (weights, config) = tiny_weights_and_config();
    Qwen2Model::load(&weights, "language_model.", &config, Device::Cpu).unwrap()
}

/// Index of the first largest value.
pub fn argmax(row: &[f32]) -> u32 {
    row.iter()
        .enumerate()
        .fold(
            (0, f32::NEG_INFINITY),
            |best, (i, &v)| if v > best.1 { (i, v) } else { best },
        )
        .0 as u32
}
