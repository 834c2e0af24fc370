//! The CUDA emulator (`nvlm-testkit/cuda-emu`): stand-ins for libcuda, NVRTC, cuBLASLt and NCCL, built into
//! `target/cuda-emu`, under which the GPU tests run on a machine without a GPU. Every kernel's own CUDA C++ source
//! runs on the CPU (each block's threads as fibers), cuBLASLt's and NCCL's calls are carried out as documented, so
//! CI exercises the engine's whole CUDA path: launches, descriptors, the model on `--device cuda`, `--tp 2` over
//! NCCL. It proves nothing about speed or about what only hardware does (memory ordering, `__expf`'s precision).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::run::{self, TestCounts};

/// The GPU tests run on the emulator, as `(test binary, name filter)`. Each is built with `--workspace`, so with the
/// features the workspace's test step built everything with: `-p PACKAGE` would resolve dependencies' features for
/// that package alone and rebuild most of the workspace.
const TESTS: &[(&str, &str)] = &[
    ("tensor_basics", ""),
    ("cuda_emulator", ""),
    ("gpu_ops", ""),
    ("nccl", ""),
    ("gpu_model", ""),
    ("decode_graphs", ""),
    ("serve_cli", "on_cuda"),
];

/// Builds the emulator into `target/cuda-emu` (a few seconds) and returns that folder.
fn build(root: &Path) -> Result<PathBuf> {
    let out = root.join("target").join("cuda-emu");
    let script = root.join("nvlm-testkit/cuda-emu/build.sh");
    let status = Command::new("sh")
        .arg(&script)
        .arg(&out)
        .status()
        .with_context(|| format!("starting {}", script.display()))?;
    if !status.success() {
        bail!(
            "building the CUDA emulator failed ({status}): it needs a C++17 compiler (`c++`, or set CXX to g++ or \
             clang++)"
        );
    }
    Ok(out)
}

/// The environment that puts the emulator in front of any real CUDA: its libraries first on the loader path, its
/// NVRTC by full path, a kernel cache of its own, two devices (for `--tp 2`), `NVLM_REQUIRE_GPU=1` so that no GPU
/// test can skip, and the op checks' opt-in Hopper attention kernels after the others (`NVLM_CHECK_OPT_IN=1`).
fn env(dir: &Path) -> Vec<(&'static str, String)> {
    let path = |p: &Path| p.display().to_string();
    vec![
        ("LD_LIBRARY_PATH", path(dir)),
        ("NVLM_NVRTC_LIB", path(&dir.join("libnvrtc.so"))),
        ("NVLM_CUDA_INCLUDE", path(&dir.join("include"))),
        ("NVLM_KERNEL_CACHE", path(&dir.join("kernel-cache"))),
        ("NVLM_CUDA_EMU_DEVICES", "2".into()),
        ("NVLM_REQUIRE_GPU", "1".into()),
        ("NVLM_CHECK_OPT_IN", "1".into()),
    ]
}

/// Builds the emulator and runs every GPU test binary on it.
pub fn test(root: &Path, counts: &mut TestCounts) -> Result<()> {
    let dir = build(root)?;
    let env = env(&dir);
    for (test, filter) in TESTS {
        run::cargo_test(
            root,
            &["--workspace", "--test", test, "--", "--nocapture", filter],
            &env,
            counts,
        )?;
    }
    // The op checks again with warps (and lanes) run last first: a kernel missing a barrier between a shared-memory
    // write and another warp's read answers differently in one of the two orders.
    let mut reversed = env.clone();
    reversed.push(("NVLM_CUDA_EMU_ORDER", "reverse".into()));
    run::cargo_test(
        root,
        &["--workspace", "--test", "gpu_ops", "--", "every_cuda_op"],
        &reversed,
        counts,
    )?;
    // The layer benchmark's code at 1/64 of NVLM-D's sizes (its figures mean nothing here): every case must run, so
    // that an H200's few minutes are not lost to a bug in the benchmark itself.
    run::cargo_test(
        root,
        &["--workspace", "--bench", "layers", "--", "--scale", "64"],
        &env,
        counts,
    )?;
    run::cargo_test(
        root,
        &[
            "--workspace",
            "--bench",
            "layers",
            "--",
            "--scale",
            "64",
            "--opt-in-kernels",
        ],
        &env,
        counts,
    )
}
