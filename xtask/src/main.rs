//! `cargo xtask`: the project's automation.
//!
//! - `cargo xtask test`: format check, clippy (`-D warnings`), the CUDA compile check set-up, `cargo test --workspace`,
//!   then the GPU tests on the CUDA emulator.
//! - `cargo xtask cuda-emu`: the GPU tests on the CUDA emulator alone.
//! - `cargo xtask bench`: the benchmarks (plain harness).
//! - `cargo xtask gpu-bundle [--out DIR]`: release GPU test and bench binaries plus `run.sh`, for a GPU machine.

mod bundle;
mod convert;
mod cuda_emu;
mod nvrtc;
mod run;

use anyhow::{bail, Result};

const USAGE: &str = "usage: cargo xtask <command>

commands:
  test                 fmt check, clippy -D warnings, cargo test --workspace, CUDA kernels compiled for sm_90a,
                       then the GPU tests on the CUDA emulator (the kernels' own source run on the CPU)
  cuda-emu             only the GPU tests on the CUDA emulator (nvlm-testkit/cuda-emu)
  bench                run the benchmarks (CPU matmul; GPU rows when a GPU is present)
  convert-checkpoint --input DIR (--list | --output DIR ...)
                       list a checkpoint's tensors, or convert Megatron NVLM-D to HF safetensors (see --help)
  gpu-bundle [--out DIR]
                       build release GPU test/bench binaries and run.sh into DIR (default: gpu-bundle/)";

fn main() -> std::process::ExitCode {
    match dispatch(std::env::args().skip(1).collect()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn dispatch(args: Vec<String>) -> Result<()> {
    let root = run::workspace_root()?;
    match args.first().map(String::as_str) {
        Some("test") => test(&root),
        Some("cuda-emu") => {
            let mut counts = run::TestCounts::default();
            let outcome = cuda_emu::test(&root, &mut counts);
            println!(
                "\ntests: {} passed, {} failed, {} skipped",
                counts.passed, counts.failed, counts.ignored
            );
            outcome
        }
        Some("bench") => run::cargo(
            &root,
            &[
                "bench",
                "-p",
                "nvlm-kernels",
                "-p",
                "nvlm-tiling",
                "-p",
                "nvlm-checkpoint",
                "-p",
                "nvlm-cli",
            ],
            &[],
        ),
        Some("convert-checkpoint") => convert::run(&args[1..]),
        Some("gpu-bundle") => {
            let out = match args.get(1).map(String::as_str) {
                Some("--out") => args
                    .get(2)
                    .map(Into::into)
                    .ok_or_else(|| anyhow::anyhow!("--out needs a folder"))?,
                Some(other) => bail!("unknown argument `{other}`\n\n{USAGE}"),
                None => root.join("gpu-bundle"),
            };
            bundle::build(&root, &out)
        }
        Some("-h" | "--help" | "help") | None => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => bail!("unknown command `{other}`\n\n{USAGE}"),
    }
}

fn test(root: &std::path::Path) -> Result<()> {
    run::step("cargo fmt --check");
    run::cargo(root, &["fmt", "--all", "--", "--check"], &[])?;
    run::step("cargo clippy -D warnings");
    run::cargo(
        root,
        &["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"],
        &[],
    )?;
    run::step("pinned NVRTC for the CUDA compile check");
    let env = match nvrtc::install(root)? {
        Some(toolkit) => toolkit.env(),
        None => Vec::new(),
    };
    let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (*k, v.clone())).collect();
    let mut counts = run::TestCounts::default();
    run::step("cargo test --workspace");
    let outcome = run::cargo_test(
        root,
        &["--workspace", "--", "--skip", COMPILE_CHECK],
        &env,
        &mut counts,
    )
    .and_then(|()| {
        run::step("CUDA compile check: every kernel for sm_90a, registers and spills");
        run::cargo_test(
            root,
            // The same packages as above, so nothing is rebuilt; filtered to the one test.
            &[
                "--workspace",
                "--tests",
                "--",
                COMPILE_CHECK,
                "--exact",
                "--nocapture",
            ],
            &env,
            &mut counts,
        )
    })
    .and_then(|()| {
        run::step("GPU tests on the CUDA emulator: every kernel's source, cuBLASLt and NCCL calls, the model on cuda");
        cuda_emu::test(root, &mut counts)
    });
    // A plain closing line that CI reads: totals over every test binary.
    println!(
        "\ntests: {} passed, {} failed, {} skipped",
        counts.passed, counts.failed, counts.ignored
    );
    outcome
}

/// The compile-check test, run on its own with its output shown.
const COMPILE_CHECK: &str = "every_kernel_compiles_for_sm90a_without_spills";
