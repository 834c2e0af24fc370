//! Tensor parallelism for the NVLM-D engine.
//!
//! [`Comm`] is what sharded layers need from a process group: rank, size, all-reduce (sum), all-gather, broadcast,
//! barrier. [`ThreadGroup`] implements it for ranks that are threads of one process (CPU tests of sharded models:
//! TP=2/4 must give TP=1's results); the NCCL implementation for GPUs plugs in behind the same trait.

mod comm;
mod launch;
mod nccl;
mod rendezvous;
mod thread_group;

pub use comm::{Comm, DistError, Result};
pub use launch::{LaunchEnv, DEFAULT_MASTER_PORT};
pub use nccl::{nccl_available, NcclComm, NcclUniqueId};
pub use rendezvous::rendezvous;
pub use thread_group::ThreadGroup;

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
