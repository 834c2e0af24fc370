//! The vision side of NVLM-D: InternViT-6B, pixel shuffle and the `mlp1` projector, built on `nvlm-kernels`.
//!
//! Reads like the spec (`nvlm-d.md` §4-6): `embeddings` (patch conv as unfold + matmul, CLS, positions), then per
//! layer `rms_norm` → `qkv` → QK-`rms_norm` over all heads → attention → `proj` → LayerScale, `rms_norm` → MLP (GELU)
//! → LayerScale; the last layer's output without CLS; `pixel_shuffle`; the projector.

mod config;
mod error;
mod projector;
mod tensor_parallel;
mod vit;

pub use config::VisionConfig;
pub use error::{Result, VitError};
pub use projector::Projector;
pub use tensor_parallel::ViTSharding;
pub use vit::{InternVit, VisionOutput, VisionTower};
