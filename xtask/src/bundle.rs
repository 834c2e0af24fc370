//! `cargo xtask gpu-bundle`: release GPU test and bench binaries, stripped, plus `run.sh`, in one folder that runs on
//! a GPU machine with no Rust.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::run::{cargo, cargo_executables, step};

const RUN_SH: &str = include_str!("../assets/run.sh");
/// Python helpers the bundle carries: PyTorch timings on the benchmarks' shapes, and the report that joins them.
const SCRIPTS: [(&str, &str); 3] = [
    ("torch_matmul.py", include_str!("../assets/torch_matmul.py")),
    ("torch_layers.py", include_str!("../assets/torch_layers.py")),
    ("bench_report.py", include_str!("../assets/bench_report.py")),
];
/// The bundle must travel to the GPU machine in one 64 MiB transfer.
const SIZE_LIMIT: u64 = 64 << 20;

/// Builds the bundle into `out` (replacing it whole at the end, so a failed build leaves no half bundle).
pub fn build(root: &Path, out: &Path) -> Result<()> {
    let staging = out.with_extension("partial");
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(staging.join("bin/tests")).context("creating the bundle folder")?;

    step("building GPU tests (release)");
    let tests: [(&str, &str); 3] = [
        ("nvlm-kernels", "gpu_ops"),
        ("nvlm-tensor", "tensor_basics"),
        ("nvlm-dist", "nccl"),
    ];
    for (package, test) in tests {
        let exes = cargo_executables(
            root,
            &["test", "--release", "-p", package, "--test", test, "--no-run"],
            test,
        )?;
        let exe = exes
            .first()
            .with_context(|| format!("cargo did not report the `{test}` test binary"))?;
        install(exe, &staging.join("bin/tests").join(test))?;
    }
    for (package, bench) in [("nvlm-kernels", "matmul"), ("nvlm-cli", "layers")] {
        step(&format!("building the {bench} benchmark (release)"));
        let exes = cargo_executables(
            root,
            &["bench", "-p", package, "--bench", bench, "--no-run"],
            bench,
        )?;
        install(
            exes.first()
                .with_context(|| format!("cargo did not report the {bench} bench binary"))?,
            &staging.join(format!("bin/{bench}-bench")),
        )?;
    }
    step("building the nvlm CLI (release)");
    cargo(
        root,
        &["build", "--release", "-p", "nvlm-cli", "--bin", "nvlm"],
        &[],
    )?;
    install(&root.join("target/release/nvlm"), &staging.join("bin/nvlm"))?;

    write_executable(&staging.join("run.sh"), RUN_SH)?;
    for (name, text) in SCRIPTS {
        std::fs::write(staging.join(name), text)?;
    }
    // The picture the demo-model check asks about (the README's example).
    std::fs::copy(root.join("assets/shapes.png"), staging.join("shapes.png"))
        .context("copying assets/shapes.png")?;
    let size = folder_size(&staging)?;
    if size > SIZE_LIMIT {
        bail!("the bundle is {} MiB, over the 64 MiB limit", size >> 20);
    }
    let _ = std::fs::remove_dir_all(out);
    std::fs::rename(&staging, out).with_context(|| format!("moving the bundle to {}", out.display()))?;
    println!(
        "\nGPU bundle: {} ({:.1} MiB). On the GPU machine: ./run.sh OUT_DIR [all|tests|bench]",
        out.display(),
        size as f64 / 1048576.0
    );
    Ok(())
}

fn install(from: &Path, to: &PathBuf) -> Result<()> {
    std::fs::copy(from, to).with_context(|| format!("copying {}", from.display()))?;
    // Release profiles strip already; `strip` also removes what test harness builds keep. Optional.
    let _ = Command::new("strip").arg(to).status();
    Ok(())
}

fn write_executable(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

fn folder_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            folder_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}
