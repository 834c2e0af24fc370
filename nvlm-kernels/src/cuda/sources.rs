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
}

/// Device helpers shared by every kernel (`cuda/common.cuh`).
pub const COMMON_HEADER: &str = include_str!("../../cuda/common.cuh");

/// Every kernel of the crate. The compile check builds each for `sm_90a`.
pub const KERNEL_SOURCES: &[KernelSource] = &[
    KernelSource {
        name: "rms_norm",
        source: include_str!("../../cuda/rms_norm.cu"),
        functions: &["rms_norm_bf16", "rms_norm_f32"],
    },
    KernelSource {
        name: "silu_mul",
        source: include_str!("../../cuda/silu_mul.cu"),
        functions: &["silu_mul_bf16", "silu_mul_f32"],
    },
    KernelSource {
        name: "cast",
        source: include_str!("../../cuda/cast.cu"),
        functions: &["cast_f32_to_bf16", "cast_bf16_to_f32"],
    },
];

impl KernelSource {
    /// The full program text NVRTC compiles: the shared header, then the file.
    pub fn program(&self) -> String {
        format!("{COMMON_HEADER}\n#line 1 \"{}.cu\"\n{}", self.name, self.source)
    }

    /// The source called `name`.
    pub fn find(name: &str) -> Option<&'static KernelSource> {
        KERNEL_SOURCES.iter().find(|k| k.name == name)
    }
}
