//! The embedded `.cu` sources, each compiled as one NVRTC program with the shared header prepended.

/// One kernel source file.
#[derive(Debug, Clone, Copy)]
pub struct KernelSource {
    /// File stem, e.g. `rms_norm`.
    pub name: &'static str,
    /// The `.cu` text (without the shared header).
    pub source: &'static str,
    /// The `extern "C"` entry points it defines.
    pub functions: &'static [&'static str],
    /// Headers of this crate placed between the shared header and the file, in order.
    pub headers: &'static [&'static str],
}

/// Device helpers shared by every kernel (`cuda/common.cuh`).
pub const COMMON_HEADER: &str = include_str!("../../cuda/common.cuh");

/// Where attention kernels find a key's row (`cuda/attention_keys.cuh`).
const ATTENTION_KEYS: &str = include_str!("../../cuda/attention_keys.cuh");
/// The tensor-core attention kernels' instructions and online softmax (`cuda/flash_common.cuh`).
const FLASH_COMMON: &str = include_str!("../../cuda/flash_common.cuh");
/// Hopper's warpgroup MMA (`cuda/wgmma.cuh`).
const WGMMA: &str = include_str!("../../cuda/wgmma.cuh");
/// Hopper's mbarriers, TMA loads and dynamic shared memory (`cuda/tma.cuh`).
const TMA: &str = include_str!("../../cuda/tma.cuh");

/// Every kernel of the crate. The compile check builds each for `sm_90a`.
pub const KERNEL_SOURCES: &[KernelSource] = &[
    KernelSource {
        name: "rms_norm",
        source: include_str!("../../cuda/rms_norm.cu"),
        functions: &[
            "rms_norm_bf16",
            "rms_norm_f32",
            "rms_norm_with_sum_squares_bf16",
            "rms_norm_with_sum_squares_f32",
            "row_sum_squares_bf16",
            "row_sum_squares_f32",
            "qkv_qk_norm_bf16",
            "qkv_qk_norm_f32",
        ],
        headers: &[],
    },
    KernelSource {
        name: "silu_mul",
        source: include_str!("../../cuda/silu_mul.cu"),
        functions: &["silu_mul_bf16", "silu_mul_f32"],
        headers: &[],
    },
    KernelSource {
        name: "elementwise",
        source: include_str!("../../cuda/elementwise.cu"),
        functions: &[
            "add_f32",
            "add_bf16",
            "mul_f32",
            "mul_bf16",
            "scale_f32",
            "scale_bf16",
            "add_scaled_channels_f32",
            "add_scaled_channels_bf16",
            "gelu_f32",
            "gelu_bf16",
        ],
        headers: &[],
    },
    KernelSource {
        name: "layer_norm",
        source: include_str!("../../cuda/layer_norm.cu"),
        functions: &[
            "layer_norm_f32",
            "layer_norm_bf16",
            "add_rms_norm_f32",
            "add_rms_norm_bf16",
        ],
        headers: &[],
    },
    KernelSource {
        name: "softmax",
        source: include_str!("../../cuda/softmax.cu"),
        functions: &["softmax_f32", "softmax_bf16"],
        headers: &[],
    },
    KernelSource {
        name: "rope",
        source: include_str!("../../cuda/rope.cu"),
        functions: &[
            "rope_f32",
            "rope_bf16",
            "rope_qkv_f32",
            "rope_qkv_bf16",
            "rope_qkv_paged_f32",
            "rope_qkv_paged_bf16",
        ],
        headers: &[],
    },
    KernelSource {
        name: "sample",
        source: include_str!("../../cuda/sample.cu"),
        functions: &[
            "sample_f32",
            "sample_bf16",
            "repetition_penalty_f32",
            "repetition_penalty_bf16",
        ],
        headers: &[],
    },
    KernelSource {
        name: "attention",
        source: include_str!("../../cuda/attention.cu"),
        functions: &[
            "attention_f32",
            "attention_bf16",
            "paged_attention_f32",
            "paged_attention_bf16",
            "attention_tiled_f32",
            "attention_tiled_bf16",
            "paged_attention_tiled_f32",
            "paged_attention_tiled_bf16",
            "paged_attention_rows_f32",
            "paged_attention_rows_bf16",
            "paged_decode_partial_f32",
            "paged_decode_partial_bf16",
            "paged_decode_combine_f32",
            "paged_decode_combine_bf16",
        ],
        headers: &[ATTENTION_KEYS],
    },
    KernelSource {
        name: "flash_attention",
        source: include_str!("../../cuda/flash_attention.cu"),
        functions: &[
            "attention_flash_d64",
            "attention_flash_d128",
            "paged_attention_flash_d64",
            "paged_attention_flash_d128",
        ],
        headers: &[ATTENTION_KEYS, FLASH_COMMON],
    },
    KernelSource {
        name: "flash_attention_wgmma",
        source: include_str!("../../cuda/flash_attention_wgmma.cu"),
        functions: &[
            "attention_wgmma_d64",
            "attention_wgmma_d128",
            "paged_attention_wgmma_d64",
            "paged_attention_wgmma_d128",
        ],
        headers: &[ATTENTION_KEYS, FLASH_COMMON, WGMMA],
    },
    KernelSource {
        name: "flash_attention_tma",
        source: include_str!("../../cuda/flash_attention_tma.cu"),
        functions: &[
            "attention_tma_d64",
            "attention_tma_d128",
            "paged_attention_tma_d64",
            "paged_attention_tma_d128",
        ],
        headers: &[ATTENTION_KEYS, FLASH_COMMON, WGMMA, TMA],
    },
    KernelSource {
        name: "embedding",
        source: include_str!("../../cuda/embedding.cu"),
        functions: &[
            "gather_rows_f32_f32",
            "gather_rows_f32_bf16",
            "gather_rows_bf16_f32",
            "gather_rows_bf16_bf16",
        ],
        headers: &[],
    },
    KernelSource {
        name: "argmax",
        source: include_str!("../../cuda/argmax.cu"),
        functions: &["argmax_f32", "argmax_bf16", "argmax_pair_f32", "argmax_pair_bf16"],
        headers: &[],
    },
    KernelSource {
        name: "layout",
        source: include_str!("../../cuda/layout.cu"),
        functions: &[
            "copy_rows_b16",
            "copy_rows_b32",
            "transpose_last2_b16",
            "transpose_last2_b32",
            "pixel_shuffle_b16",
            "pixel_shuffle_b32",
            "paged_write_b16",
            "paged_write_b32",
            "unfold_patches_b16",
            "unfold_patches_b32",
        ],
        headers: &[],
    },
    KernelSource {
        name: "gemv",
        source: include_str!("../../cuda/gemv.cu"),
        functions: &[
            "gemv_bf16_m1",
            "gemv_bf16_m2",
            "gemv_bf16_m3",
            "gemv_bf16_m4",
            "gemv_bf16_m5",
            "gemv_bf16_m6",
            "gemv_bf16_m7",
            "gemv_bf16_m8",
        ],
        headers: &[],
    },
    KernelSource {
        name: "cast",
        source: include_str!("../../cuda/cast.cu"),
        functions: &["cast_f32_to_bf16", "cast_bf16_to_f32"],
        headers: &[],
    },
];

impl KernelSource {
    /// The full program text NVRTC compiles: the shared header, this file's headers, then the file.
    pub fn program(&self) -> String {
        let mut text = String::from(COMMON_HEADER);
        for header in self.headers {
            text.push('\n');
            text.push_str(header);
        }
        text + &format!("\n#line 1 \"{}.cu\"\n{}", self.name, self.source)
    }

    /// The source called `name`.
    pub fn find(name: &str) -> Option<&'static KernelSource> {
        KERNEL_SOURCES.iter().find(|k| k.name == name)
    }
}
