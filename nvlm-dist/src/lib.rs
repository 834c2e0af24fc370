//! Tensor parallelism for the NVLM-D engine (stub).
//!
//! This crate will own the `Comm` trait with its NCCL and in-process implementations; see the README for the plan.
//! Today it only states the single-rank case that every model runs with.

/// The rank and world size of a tensor-parallel group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rank {
    /// This process's (or thread's) rank, `0..size`.
    pub rank: usize,
    /// Number of ranks.
    pub size: usize,
}

impl Rank {
    /// The trivial group: rank 0 of 1.
    pub const SINGLE: Rank = Rank { rank: 0, size: 1 };
}
