//! One InternViT-6B layer at real dimensions on a batch of tiles, per layer (two-layer tower minus one-layer tower)
//! and the 45-layer tower with the projector, extrapolated.

use std::time::Instant;

use nvlm_tensor::{DType, Device, MemoryWeights, Tensor};
use nvlm_vit::{VisionConfig, VisionTower};

use crate::cases::{llm, vit, Case};
use crate::report::Report;
use crate::sync;
use crate::weights::{put, put_zeroed, random_tensor};

const LAYERS: usize = 45;
const PROJECTOR_HIDDEN: usize = 29568;

/// The one- and two-layer towers and the tiles' pixels.
pub struct VitBench {
    device: Device,
    towers: [VisionTower; 2],
    pixels: Tensor,
    tiles: usize,
}

fn config(layers: usize) -> VisionConfig {
    let (hidden, heads, dummy, _, ffn, _) = vit();
    VisionConfig {
        hidden_size: hidden,
        num_heads: heads,
        num_dummy_heads: dummy,
        num_layers: layers,
        intermediate_size: ffn,
        patch_size: 14,
        image_size: 448,
        norm_eps: 1e-6,
        projector_eps: 1e-5,
    }
}

impl VitBench {
    /// Two layers of random weights (the HF layout, zero dummy heads), the projector, `tiles` random tiles.
    pub fn new(device: Device, tiles: usize) -> anyhow::Result<VitBench> {
        let (c, heads, dummy, d, inter, tokens) = vit();
        let padded = (heads + dummy) * d;
        let mut w = MemoryWeights::new();
        let e = "vision_model.embeddings";
        put(&mut w, &format!("{e}.class_embedding"), &[1, 1, c], 1, 0.0)?;
        put(
            &mut w,
            &format!("{e}.position_embedding"),
            &[1, tokens, c],
            2,
            0.0,
        )?;
        put(
            &mut w,
            &format!("{e}.patch_embedding.weight"),
            &[c, 3, 14, 14],
            3,
            0.0,
        )?;
        put(&mut w, &format!("{e}.patch_embedding.bias"), &[c], 4, 0.0)?;
        for l in 0..2 {
            let p = format!("vision_model.encoder.layers.{l}");
            for (i, (name, shape, offset)) in [
                ("norm1.weight", vec![c], 1.0),
                ("attn.qkv.weight", vec![3 * padded, c], 0.0),
                ("attn.q_norm.weight", vec![padded], 1.0),
                ("attn.k_norm.weight", vec![padded], 1.0),
                ("attn.proj.weight", vec![c, padded], 0.0),
                ("attn.proj.bias", vec![c], 0.0),
                ("ls1", vec![c], 0.1),
                ("norm2.weight", vec![c], 1.0),
                ("mlp.fc1.weight", vec![inter, c], 0.0),
                ("mlp.fc1.bias", vec![inter], 0.0),
                ("mlp.fc2.weight", vec![c, inter], 0.0),
                ("mlp.fc2.bias", vec![c], 0.0),
                ("ls2", vec![c], 0.1),
            ]
            .into_iter()
            .enumerate()
            {
                // As in the real checkpoint, the dummy heads are zero: their q/k/v rows, norm entries and the
                // projection's input columns (so the tower slices them away, as it does for NVLM-D).
                let real = heads * d;
                let dummy = |i: usize| match name {
                    "attn.qkv.weight" => (i / c) % padded >= real,
                    "attn.q_norm.weight" | "attn.k_norm.weight" => i >= real,
                    "attn.proj.weight" => i % padded >= real,
                    _ => false,
                };
                let seed = 100 * (l as u64 + 1) + i as u64;
                put_zeroed(&mut w, &format!("{p}.{name}"), &shape, seed, offset, dummy)?;
            }
        }
        let llm_hidden = llm().0;
        put(&mut w, "mlp1.0.weight", &[4 * c], 5, 1.0)?;
        put(&mut w, "mlp1.0.bias", &[4 * c], 6, 0.0)?;
        put(&mut w, "mlp1.1.weight", &[PROJECTOR_HIDDEN, 4 * c], 7, 0.0)?;
        put(&mut w, "mlp1.3.weight", &[llm_hidden, PROJECTOR_HIDDEN], 8, 0.0)?;
        let load = |layers| {
            VisionTower::load(
                &w,
                &config(layers),
                PROJECTOR_HIDDEN,
                llm_hidden,
                device,
                DType::BF16,
            )
        };
        let towers = [load(1)?, load(2)?];
        let pixels = random_tensor(9, &[tiles, 3, 448, 448], device)?;
        Ok(VitBench {
            device,
            towers,
            pixels,
            tiles,
        })
    }

    /// Times each tower (a warm-up pass, then a timed one) and reports the layer and the extrapolated tower.
    pub fn run(&self, case: &Case, report: &mut Report) -> anyhow::Result<()> {
        let (c, heads, dummy, d, inter, tokens) = vit();
        let mut ms = [0.0; 2];
        for (i, tower) in self.towers.iter().enumerate() {
            for round in 0..2 {
                sync(self.device)?;
                let start = Instant::now();
                tower.forward(&self.pixels)?;
                sync(self.device)?;
                if round == 1 {
                    ms[i] = start.elapsed().as_secs_f64() * 1e3;
                }
            }
        }
        // The work a layer must do: qkv, proj, fc1, fc2 over the real heads only, and bidirectional attention.
        let rows = (self.tiles * tokens) as f64;
        let real = heads * d;
        let flops = 2.0 * rows * (c * 3 * real + real * c + 2 * c * inter) as f64
            + 4.0 * (self.tiles * heads) as f64 * (tokens * tokens * d) as f64;
        let roofline = Report::compute_roofline_ms(flops);
        let shape = format!(
            "{} tiles x {tokens} tokens, hidden {c}, {heads} heads (+{dummy} dummy)",
            self.tiles
        );
        let basis = format!("{:.1} TFLOP (real heads) / bf16 peak", flops / 1e12);
        let whole = format!("vit-{LAYERS}-layers-projector-{}-tiles-extrapolated", self.tiles);
        report.layer_and_model(
            case,
            shape,
            ms,
            LAYERS,
            roofline,
            basis,
            whole,
            "goal: 120 ms".into(),
        );
        Ok(())
    }
}
