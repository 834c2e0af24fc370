//! The vision tower against the HF NVLM-D reference activations (`shared/fixtures/model`): ViT output, pixel
//! shuffle, projector LayerNorm, first Linear and output, within the fixture's f32 tolerances.

use nvlm_checkpoint::SafetensorsCheckpoint;
use nvlm_tensor::{DType, Device, Tensor};
use nvlm_testkit::{assert_close_f32_reference, fixtures};
use nvlm_vit::{VisionConfig, VisionTower};

fn f32s(file: &SafetensorsCheckpoint, name: &str) -> Vec<f32> {
    file.bytes(name)
        .unwrap()
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn vision_tower_matches_the_f32_reference() {
    let model = fixtures().join("model/tiny-nvlm-d");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("config.json")).unwrap()).unwrap();
    let weights = SafetensorsCheckpoint::open(&model).unwrap();
    let vision = VisionConfig::from_json(&config).unwrap();
    let llm_hidden = config["llm_config"]["hidden_size"].as_u64().unwrap() as usize;
    let ffn = config["llm_config"]["intermediate_size"].as_u64().unwrap() as usize;
    let tower = VisionTower::load(&weights, &vision, ffn, llm_hidden, Device::Cpu, DType::F32).unwrap();
    assert!(
        tower.vit.dummy_heads_sliced(),
        "the fixture's dummy heads are zero, so they are sliced away"
    );

    let reference =
        SafetensorsCheckpoint::open(&fixtures().join("model/reference/activations.safetensors")).unwrap();
    let tiles = reference.bytes("input.tiles_u8").unwrap();
    let pixels = Tensor::from_vec(nvlm_tiling::pixel_values(tiles, 448), &[3, 3, 448, 448]).unwrap();
    let out = tower.forward(&pixels).unwrap();
    for (name, tensor) in [
        ("vit_last_hidden_state", &out.vit_last_hidden_state),
        ("pixel_shuffle_out", &out.pixel_shuffle),
        ("mlp1_ln_out", &out.projector_norm),
        ("mlp1_fc1_out", &out.projector_fc1),
        ("mlp1_out", &out.embeddings),
    ] {
        assert_close_f32_reference(
            name,
            &tensor.to_f32_vec().unwrap(),
            &f32s(&reference, &format!("f32.image.{name}")),
        );
    }
}

#[test]
fn every_vit_layer_of_tile_0_matches_the_reference() {
    let model = fixtures().join("model/tiny-nvlm-d");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("config.json")).unwrap()).unwrap();
    let weights = SafetensorsCheckpoint::open(&model).unwrap();
    let vit = nvlm_vit::InternVit::load(
        &weights,
        &VisionConfig::from_json(&config).unwrap(),
        Device::Cpu,
        DType::F32,
    )
    .unwrap();
    let reference =
        SafetensorsCheckpoint::open(&fixtures().join("model/reference/activations.safetensors")).unwrap();
    let tiles = reference.bytes("input.tiles_u8").unwrap();
    let tile0 = Tensor::from_vec(
        nvlm_tiling::pixel_values(&tiles[..448 * 448 * 3], 448),
        &[1, 3, 448, 448],
    )
    .unwrap();
    // vit_hidden_states_tile0: [embeddings, after layer 0, after layer 1] of tile 0, each [1025, 64].
    let want = f32s(&reference, "f32.image.vit_hidden_states_tile0");
    let per = 1025 * 64;
    let mut seen = 0;
    vit.forward_traced(&tile0, |i, hidden| {
        assert_close_f32_reference(
            &format!("vit hidden state {i}"),
            &hidden.to_f32_vec().unwrap(),
            &want[i * per..(i + 1) * per],
        );
        seen += 1;
    })
    .unwrap();
    assert_eq!(seen, 3);
}
