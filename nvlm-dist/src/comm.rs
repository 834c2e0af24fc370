//! The communicator trait.

use nvlm_tensor::Tensor;

/// What a collective can fail with.
#[derive(Debug, thiserror::Error)]
pub enum DistError {
    /// Ranks passed tensors that do not fit together.
    #[error("{op}: rank {rank} passed {detail}")]
    Mismatch {
        /// The collective.
        op: &'static str,
        /// The offending rank.
        rank: usize,
        /// What differs.
        detail: String,
    },
    /// A tensor-layer error.
    #[error(transparent)]
    Tensor(#[from] nvlm_tensor::TensorError),
    /// A multi-process launch is misconfigured or its rendezvous failed.
    #[error("{0}")]
    Launch(String),
    /// Another rank failed or left the group.
    #[error("{0}")]
    Group(String),
}

/// `Result` with [`DistError`].
pub type Result<T, E = DistError> = std::result::Result<T, E>;

/// A process group for tensor parallelism. Every rank calls each collective in the same order.
pub trait Comm: Send + Sync {
    /// This rank, `0..size`.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn size(&self) -> usize;
    /// The element-wise sum of every rank's `tensor` (same shape and dtype everywhere), on every rank.
    fn all_reduce_sum(&self, tensor: &Tensor) -> Result<Tensor>;
    /// Every rank's `tensor` concatenated along the leading dimension in rank order, on every rank.
    fn all_gather(&self, tensor: &Tensor) -> Result<Tensor>;
    /// `root`'s `tensor` on every rank (the others' arguments give only shape and dtype).
    fn broadcast(&self, tensor: &Tensor, root: usize) -> Result<Tensor>;
    /// Returns when every rank has called it.
    fn barrier(&self) -> Result<()>;
}
