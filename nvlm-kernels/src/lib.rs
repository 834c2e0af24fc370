//! Every op of NVLM-D, behind device-dispatching functions.
//!
//! Each op checks shapes, dtypes and devices, then runs the f32 CPU reference (multithreaded where it matters) for
//! host tensors or a CUDA kernel for device tensors. Ops without a CUDA kernel yet return
//! [`KernelError::Unsupported`] on a GPU tensor. See the README for the op table.

mod activation;
mod attention;
mod check;
pub mod cpu;
pub mod cuda;
mod elementwise;
mod embedding;
mod error;
mod matmul;
mod norm;
mod paged;
mod patch;
mod rope;
mod sampling;
mod shape;
mod softmax;
pub mod validate;

pub use activation::{gelu, silu_mul};
pub use attention::{attention, AttentionMask};
pub use elementwise::{add, add_scaled_channels, cast, mul, scale};
pub use embedding::{embedding, gather_rows, gather_table_rows_encoded, RowSource};
pub use error::{KernelError, Result};
pub use matmul::{batched_matmul, gemv, matmul};
pub use norm::{
    add_rms_norm, layer_norm, qkv_qk_norm, rms_norm, rms_norm_partial_stats, rms_norm_with_sum_squares,
    row_sum_squares,
};
pub use paged::{paged_attention, paged_attention_rows, paged_write, rope_qkv_paged, BlockTable, PagedRows};
pub use patch::{patch_embed, unfold_patches};
pub use rope::{rope_qkv, rotary_embedding, DynamicNtk, RopeConfig};
pub use sampling::{
    argmax, argmax_with_value, draw_index, filtered_distribution, fixed_weight, repetition_penalty, sample,
    top_p_count, uniform, SamplingParams, FIXED_ONE,
};
pub use shape::{concat, pixel_shuffle, split, transpose_last2};
pub use softmax::softmax;
