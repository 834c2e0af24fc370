//! The pinned NVRTC and CUDA headers from PyPI, installed once into `target/cuda-pypi`, for the CPU-side compile
//! check of every CUDA kernel.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The pinned wheels. NVRTC's major version must match cudarc's `cuda-13000` feature.
pub const PINNED: &[&str] = &["nvidia-cuda-nvrtc==13.0.88", "nvidia-cuda-runtime==13.0.96"];

/// Where the wheels put their files.
pub struct Toolkit {
    lib: PathBuf,
    include: PathBuf,
}

impl Toolkit {
    /// Environment for the test run: the library by full path, the headers, the loader path for nvrtc-builtins, and
    /// `NVLM_REQUIRE_NVRTC=1` so that the compile check cannot silently skip.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let mut ld = self.lib.display().to_string();
        if let Ok(old) = std::env::var("LD_LIBRARY_PATH") {
            ld = format!("{ld}:{old}");
        }
        vec![
            (
                "NVLM_NVRTC_LIB",
                self.lib.join("libnvrtc.so.13").display().to_string(),
            ),
            ("NVLM_CUDA_INCLUDE", self.include.display().to_string()),
            ("LD_LIBRARY_PATH", ld),
            ("NVLM_REQUIRE_NVRTC", "1".into()),
        ]
    }
}

/// Installs (once) and returns the pinned toolkit, or `None` with a printed reason when python3 or pip is missing.
pub fn install(root: &Path) -> Result<Option<Toolkit>> {
    let target = root.join("target").join("cuda-pypi");
    let toolkit = Toolkit {
        lib: target.join("nvidia/cu13/lib"),
        include: target.join("nvidia/cu13/include"),
    };
    let stamp = target.join(format!(".installed-{}", PINNED.join("_")));
    if stamp.exists() && toolkit.lib.join("libnvrtc.so.13").exists() {
        println!("pinned NVRTC already installed in {}", target.display());
        return Ok(Some(toolkit));
    }
    let python = ["python3", "python"].into_iter().find(|p| {
        Command::new(p)
            .args(["-m", "pip", "--version"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    });
    let Some(python) = python else {
        println!(
            "skipped: the CUDA compile check needs python3 with pip to install {}",
            PINNED.join(" ")
        );
        return Ok(None);
    };
    println!("installing {} into {}", PINNED.join(" "), target.display());
    let _ = std::fs::remove_dir_all(&target);
    let status = Command::new(python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--target",
        ])
        .arg(&target)
        .args(PINNED)
        .status()
        .context("running pip")?;
    if !status.success() {
        bail!("pip could not install {} ({status})", PINNED.join(" "));
    }
    if !toolkit.lib.join("libnvrtc.so.13").exists() || !toolkit.include.join("cuda_bf16.h").exists() {
        bail!(
            "the pinned wheels did not provide libnvrtc.so.13 and cuda_bf16.h under {}",
            target.display()
        );
    }
    std::fs::write(&stamp, b"").context("writing the install stamp")?;
    Ok(Some(toolkit))
}
