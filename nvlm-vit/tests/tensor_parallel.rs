//! The vision tower split over in-process tensor-parallel ranks. On the tiny NVLM-D (4 real heads, 7 zero dummy
//! heads) TP=2 and TP=4 split the real heads and still match the HF f32 reference; on a tower whose dummy heads are
//! nonzero (so they run), TP=2 and TP=8 split the stored heads, some ranks holding only dummy heads, and match TP=1.

use std::sync::Arc;

use nvlm_checkpoint::SafetensorsCheckpoint;
use nvlm_dist::{Comm, ThreadGroup};
use nvlm_tensor::{DType, Device, MemoryWeights, Tensor, Weights};
use nvlm_testkit::{assert_close_f32_reference, fixtures};
use nvlm_vit::{ViTSharding, VisionConfig, VisionTower};

fn f32s(file: &SafetensorsCheckpoint, name: &str) -> Vec<f32> {
    file.bytes(name)
        .unwrap()
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Runs the tower on `size` ranks (threads) and returns every rank's image embeddings.
fn sharded_embeddings<W: Weights + Sync>(
    weights: &W,
    config: &VisionConfig,
    [projector_hidden, llm_hidden]: [usize; 2],
    pixels: &Tensor,
    size: usize,
) -> Vec<Vec<f32>> {
    std::thread::scope(|scope| {
        let ranks: Vec<_> = ThreadGroup::new(size)
            .into_iter()
            .map(|comm| {
                scope.spawn(move || {
                    let comm: Arc<dyn Comm> = Arc::new(comm);
                    let tower = VisionTower::load_shard(
                        weights,
                        config,
                        projector_hidden,
                        llm_hidden,
                        Device::Cpu,
                        DType::F32,
                        comm,
                    )
                    .unwrap();
                    tower.forward(pixels).unwrap().embeddings.to_f32_vec().unwrap()
                })
            })
            .collect();
        ranks.into_iter().map(|r| r.join().unwrap()).collect()
    })
}

#[test]
fn the_tiny_model_split_over_its_real_heads_matches_the_reference() {
    let model = fixtures().join("model/tiny-nvlm-d");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("config.json")).unwrap()).unwrap();
    let weights = SafetensorsCheckpoint::open(&model).unwrap();
    let config = VisionConfig::from_json(&json).unwrap();
    let llm_hidden = json["llm_config"]["hidden_size"].as_u64().unwrap() as usize;
    let ffn = json["llm_config"]["intermediate_size"].as_u64().unwrap() as usize;
    let reference =
        SafetensorsCheckpoint::open(&fixtures().join("model/reference/activations.safetensors")).unwrap();
    let tiles = reference.bytes("input.tiles_u8").unwrap();
    let pixels = Tensor::from_vec(nvlm_tiling::pixel_values(tiles, 448), &[3, 3, 448, 448]).unwrap();
    let want = f32s(&reference, "f32.image.mlp1_out");
    for size in [2, 4] {
        let sharding = ViTSharding::new(&config, 1, size, || Ok(true)).unwrap();
        assert!(
            !sharding.padded,
            "TP={size}: the zero dummy heads are sliced away"
        );
        for (rank, got) in sharded_embeddings(&weights, &config, [ffn, llm_hidden], &pixels, size)
            .iter()
            .enumerate()
        {
            assert_close_f32_reference(&format!("TP={size} rank {rank}: mlp1_out"), got, &want);
        }
    }
}

/// A small random tower with 4 real heads padded by 4 nonzero dummy heads (so the padded form runs).
fn padded_tower() -> (MemoryWeights, VisionConfig, [usize; 2]) {
    let config = VisionConfig {
        hidden_size: 64,
        num_heads: 4,
        num_dummy_heads: 4,
        num_layers: 2,
        intermediate_size: 128,
        patch_size: 14,
        image_size: 56,
        norm_eps: 1e-6,
        projector_eps: 1e-5,
    };
    let [projector_hidden, llm_hidden] = [96, 48];
    let (c, padded, inter) = (64, 8 * 16, 128);
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut random = |n: usize, scale: f32, offset: f32| -> Vec<f32> {
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                offset + scale * ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5)
            })
            .collect()
    };
    let mut weights = MemoryWeights::new();
    let mut put = |name: &str, shape: &[usize], scale: f32, offset: f32| {
        let values = random(shape.iter().product(), scale, offset);
        weights.insert(name, shape, &values).unwrap();
    };
    let e = "vision_model.embeddings";
    put(&format!("{e}.class_embedding"), &[1, 1, c], 1.0, 0.0);
    put(&format!("{e}.position_embedding"), &[1, 17, c], 1.0, 0.0);
    put(&format!("{e}.patch_embedding.weight"), &[c, 3, 14, 14], 0.1, 0.0);
    put(&format!("{e}.patch_embedding.bias"), &[c], 0.2, 0.0);
    for l in 0..2 {
        let p = format!("vision_model.encoder.layers.{l}");
        put(&format!("{p}.norm1.weight"), &[c], 0.5, 1.0);
        put(&format!("{p}.attn.qkv.weight"), &[3 * padded, c], 0.4, 0.0);
        put(&format!("{p}.attn.q_norm.weight"), &[padded], 0.5, 1.0);
        put(&format!("{p}.attn.k_norm.weight"), &[padded], 0.5, 1.0);
        put(&format!("{p}.attn.proj.weight"), &[c, padded], 0.2, 0.0);
        put(&format!("{p}.attn.proj.bias"), &[c], 0.2, 0.0);
        put(&format!("{p}.ls1"), &[c], 0.5, 0.5);
        put(&format!("{p}.norm2.weight"), &[c], 0.5, 1.0);
        put(&format!("{p}.mlp.fc1.weight"), &[inter, c], 0.2, 0.0);
        put(&format!("{p}.mlp.fc1.bias"), &[inter], 0.2, 0.0);
        put(&format!("{p}.mlp.fc2.weight"), &[c, inter], 0.2, 0.0);
        put(&format!("{p}.mlp.fc2.bias"), &[c], 0.2, 0.0);
        put(&format!("{p}.ls2"), &[c], 0.5, 0.5);
    }
    put("mlp1.0.weight", &[4 * c], 0.5, 1.0);
    put("mlp1.0.bias", &[4 * c], 0.2, 0.0);
    put("mlp1.1.weight", &[projector_hidden, 4 * c], 0.1, 0.0);
    put("mlp1.3.weight", &[llm_hidden, projector_hidden], 0.1, 0.0);
    (weights, config, [projector_hidden, llm_hidden])
}

#[test]
fn nonzero_dummy_heads_split_over_ranks_match_one_rank() {
    let (weights, config, widths) = padded_tower();
    let whole = VisionTower::load(&weights, &config, widths[0], widths[1], Device::Cpu, DType::F32).unwrap();
    assert!(!whole.vit.dummy_heads_sliced(), "nonzero dummy heads run");
    let pixels = Tensor::from_vec(
        (0..2 * 3 * 56 * 56)
            .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
            .collect(),
        &[2, 3, 56, 56],
    )
    .unwrap();
    let want = whole.forward(&pixels).unwrap().embeddings.to_f32_vec().unwrap();
    // TP=2: 4 stored heads a rank (rank 1 only dummies); TP=8: one head a rank (ranks 4-7 only dummies).
    for size in [2, 8] {
        for (rank, got) in sharded_embeddings(&weights, &config, widths, &pixels, size)
            .iter()
            .enumerate()
        {
            assert_close_f32_reference(&format!("TP={size} rank {rank}: embeddings"), got, &want);
        }
    }
}

#[test]
fn nvlm_d_72b_shards_as_megatron_does() {
    let config = VisionConfig {
        hidden_size: 3200,
        num_heads: 25,
        num_dummy_heads: 7,
        num_layers: 45,
        intermediate_size: 12800,
        patch_size: 14,
        image_size: 448,
        norm_eps: 1e-6,
        projector_eps: 1e-5,
    };
    let at = |rank, size, zero| ViTSharding::new(&config, rank, size, || Ok(zero));
    let rank6 = at(6, 8, true).unwrap();
    assert_eq!(
        (rank6.padded, rank6.heads_start, rank6.heads, rank6.real_heads),
        (true, 24, 4, 1)
    );
    assert_eq!(at(7, 8, true).unwrap().real_heads, 0);
    assert_eq!(at(3, 8, true).unwrap().ffn_start, 3 * 1600);
    let five = at(4, 5, true).unwrap();
    assert_eq!((five.padded, five.heads, five.real_heads), (false, 5, 5));
    assert!(
        at(0, 5, false).is_err(),
        "nonzero dummies: 32 stored heads do not split 5 ways"
    );
    let err = at(0, 3, true).unwrap_err().to_string();
    assert!(err.contains("tensor parallelism 3"), "{err}");
    assert!(at(0, 1, true).is_ok_and(|s| !s.padded && s.heads == 25));
}
