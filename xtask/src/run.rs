//! Running subprocesses with clear step headers.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The workspace root (the folder above `xtask/`).
pub fn workspace_root() -> Result<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(Path::to_path_buf)
        .context("xtask has no parent folder")
}

/// Prints a step header.
pub fn step(name: &str) {
    println!("\n==> {name}");
}

/// Runs `cargo ARGS` in `root` with extra environment variables; fails on a non-zero exit.
pub fn cargo(root: &Path, args: &[&str], env: &[(&str, String)]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args(args)
        .current_dir(root)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .status()
        .with_context(|| format!("starting `{cargo} {}`", args.join(" ")))?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Totals of libtest's `test result:` lines.
#[derive(Debug, Default, Clone, Copy)]
pub struct TestCounts {
    /// Passed tests.
    pub passed: u64,
    /// Failed tests.
    pub failed: u64,
    /// Ignored tests.
    pub ignored: u64,
}

/// Runs `cargo test ARGS`, echoing its output, and adds its `test result:` lines to `counts`; fails on a non-zero exit.
pub fn cargo_test(root: &Path, args: &[&str], env: &[(&str, String)], counts: &mut TestCounts) -> Result<()> {
    use std::io::{BufRead, BufReader};
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut child = Command::new(&cargo)
        .arg("test")
        .args(args)
        .current_dir(root)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("starting `{cargo} test {}`", args.join(" ")))?;
    let stdout = child.stdout.take().context("no stdout pipe")?;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            let number = |word: &str| -> u64 {
                rest.split(';')
                    .find_map(|part| {
                        part.trim()
                            .trim_start_matches("ok. ")
                            .trim_start_matches("FAILED. ")
                            .strip_suffix(word)
                    })
                    .and_then(|n| n.trim().parse().ok())
                    .unwrap_or(0)
            };
            counts.passed += number("passed");
            counts.failed += number("failed");
            counts.ignored += number("ignored");
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("`cargo test {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Runs `cargo ARGS --message-format=json` and returns the executables of the artifacts whose target name is
/// `target_name`.
pub fn cargo_executables(root: &Path, args: &[&str], target_name: &str) -> Result<Vec<PathBuf>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(&cargo)
        .args(args)
        .arg("--message-format=json-render-diagnostics")
        .current_dir(root)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("starting `{cargo} {}`", args.join(" ")))?;
    if !output.status.success() {
        bail!("`cargo {}` failed ({})", args.join(" "), output.status);
    }
    let mut found = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if message["reason"] == "compiler-artifact" && message["target"]["name"] == target_name {
            if let Some(exe) = message["executable"].as_str() {
                found.push(PathBuf::from(exe));
            }
        }
    }
    Ok(found)
}
