//! `vision_config` of an NVLM-D `config.json`.

use crate::{Result, VitError};

/// The InternViT hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct VisionConfig {
    /// Width (3200).
    pub hidden_size: usize,
    /// Real attention heads (25); the HF checkpoint stores `num_dummy_heads` more.
    pub num_heads: usize,
    /// Dummy heads in the HF layout (7, hard-coded by the HF code).
    pub num_dummy_heads: usize,
    /// Layers (45).
    pub num_layers: usize,
    /// MLP width (12800).
    pub intermediate_size: usize,
    /// Patch side (14).
    pub patch_size: usize,
    /// Tile side (448).
    pub image_size: usize,
    /// RMSNorm epsilon (1e-6).
    pub norm_eps: f32,
    /// Projector LayerNorm epsilon (1e-5, `nn.LayerNorm`'s default, as the HF code leaves it).
    pub projector_eps: f32,
}

impl VisionConfig {
    /// From the whole `config.json` (reads `vision_config`).
    pub fn from_json(config: &serde_json::Value) -> Result<VisionConfig> {
        let v = &config["vision_config"];
        let downsample_ratio = config["downsample_ratio"].as_f64();
        let int = |key: &str| -> Result<usize> {
            v[key]
                .as_u64()
                .map(|x| x as usize)
                .ok_or_else(|| VitError::Config(format!("`vision_config.{key}` is missing")))
        };
        if v["qk_normalization"] == false {
            return Err(VitError::Config(
                "InternViT without qk_normalization is not supported".into(),
            ));
        }
        if let Some(norm) = v["norm_type"].as_str() {
            if norm != "rms_norm" {
                return Err(VitError::Config(format!(
                    "norm_type `{norm}` is not supported (NVLM-D uses rms_norm)"
                )));
            }
        }
        let config = VisionConfig {
            hidden_size: int("hidden_size")?,
            num_heads: int("num_attention_heads")?,
            num_dummy_heads: 7,
            num_layers: int("num_hidden_layers")?,
            intermediate_size: int("intermediate_size")?,
            patch_size: int("patch_size").unwrap_or(14),
            image_size: int("image_size").unwrap_or(448),
            norm_eps: v["layer_norm_eps"].as_f64().unwrap_or(1e-6) as f32,
            projector_eps: 1e-5,
        };
        if let Some(ratio) = downsample_ratio {
            if ratio != 0.5 {
                return Err(VitError::Config(format!(
                    "downsample_ratio {ratio} is not supported (NVLM-D's pixel shuffle is 2x2: 0.5)"
                )));
            }
        }
        if config.patch_size == 0
            || !config.image_size.is_multiple_of(config.patch_size)
            || !config.grid().is_multiple_of(2)
        {
            return Err(VitError::Config(format!(
                "image_size {} must be an even number of patches of {} pixels",
                config.image_size, config.patch_size
            )));
        }
        if config.num_heads == 0 || !config.hidden_size.is_multiple_of(config.num_heads) {
            return Err(VitError::Config(format!(
                "{} heads do not divide width {}",
                config.num_heads, config.hidden_size
            )));
        }
        Ok(config)
    }

    /// Channels per head (128).
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }

    /// Patches per side (32).
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Image tokens per tile after the 2x2 pixel shuffle (256 in NVLM-D-72B: `(448 / 14)^2 / 4`).
    pub fn tokens_per_tile(&self) -> usize {
        self.grid() * self.grid() / 4
    }
}
