//! How InternViT splits across tensor-parallel ranks, dummy heads included.

use crate::{Result, VisionConfig, VitError};

/// One rank's share of the ViT, in the form that runs: the real heads only (dummy heads sliced away) or all stored
/// heads (real + dummy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViTSharding {
    /// True when the dummy heads are kept (they are nonzero, or only the padded head count divides the ranks).
    pub padded: bool,
    /// First head of this rank.
    pub heads_start: usize,
    /// Heads on this rank.
    pub heads: usize,
    /// How many of this rank's heads are real (they come first; the rest are dummy).
    pub real_heads: usize,
    /// First MLP row of this rank.
    pub ffn_start: usize,
    /// MLP rows on this rank.
    pub ffn: usize,
}

impl ViTSharding {
    /// Rank `rank` of `size`. `dummies_zero` says whether the dummy heads contribute nothing (asked only when it
    /// matters). Without tensor parallelism the dummy heads are sliced away whenever they are zero; with it the real
    /// heads are split when the ranks divide them and the dummies are zero, else all stored heads (Megatron's
    /// layout: 32 heads, 4 a rank at TP=8).
    pub fn new(
        config: &VisionConfig,
        rank: usize,
        size: usize,
        dummies_zero: impl FnOnce() -> Result<bool>,
    ) -> Result<ViTSharding> {
        let (real, stored) = (config.num_heads, config.num_heads + config.num_dummy_heads);
        let padded = if size == 1 {
            !dummies_zero()?
        } else if real.is_multiple_of(size) && dummies_zero()? {
            false
        } else if stored.is_multiple_of(size) {
            true
        } else {
            return Err(VitError::Config(format!(
                "tensor parallelism {size} divides neither the {stored} stored attention heads nor (with zero dummy \
                 heads) the {real} real ones"
            )));
        };
        if size == 0 || !config.intermediate_size.is_multiple_of(size) {
            return Err(VitError::Config(format!(
                "tensor parallelism {size} does not divide the {} MLP rows",
                config.intermediate_size
            )));
        }
        let heads = if padded { stored } else { real } / size;
        let heads_start = rank * heads;
        let ffn = config.intermediate_size / size;
        Ok(ViTSharding {
            padded,
            heads_start,
            heads,
            real_heads: real.saturating_sub(heads_start).min(heads),
            ffn_start: rank * ffn,
            ffn,
        })
    }
}
