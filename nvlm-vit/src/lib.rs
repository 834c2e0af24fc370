//! InternViT-6B, pixel shuffle and the `mlp1` projector of NVLM-D (stub; see the README).

/// Tokens per 448x448 tile after pixel shuffle: (448 / 14)^2 / 4.
pub const IMAGE_TOKENS_PER_TILE: usize = 256;
