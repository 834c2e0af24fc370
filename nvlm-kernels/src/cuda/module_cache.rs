//! Compiled kernels: an on-disk cubin cache keyed by source hash, architecture and NVRTC version, and the modules
//! loaded into each device's context.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{CudaFunction, CudaModule};
use cudarc::nvrtc::Ptx;
use nvlm_tensor::CudaDevice;

use super::nvrtc::{compile, nvrtc_version};
use super::sources::KernelSource;
use crate::{KernelError, Result};

/// Environment variable overriding the kernel cache folder.
pub const CACHE_DIR_ENV: &str = "NVLM_KERNEL_CACHE";

/// The cache folder: `$NVLM_KERNEL_CACHE`, else `$XDG_CACHE_HOME/nvlm/kernels`, else `~/.cache/nvlm/kernels`.
pub fn cache_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var(CACHE_DIR_ENV) {
        return Some(PathBuf::from(dir));
    }
    let base = std::env::var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|_| std::env::var("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .ok()?;
    Some(base.join("nvlm").join("kernels"))
}

/// The cubin of `kernel` for `arch`, from the disk cache or freshly compiled (then cached; a cache that cannot be
/// written is not an error).
pub fn cubin_for(kernel: &KernelSource, arch: &str) -> Result<Vec<u8>> {
    let program = kernel.program();
    let (major, minor) = nvrtc_version()?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (&program, arch, major, minor).hash(&mut hasher);
    let file = format!(
        "{}-{arch}-nvrtc{major}.{minor}-{:016x}.cubin",
        kernel.name,
        hasher.finish()
    );
    let path = cache_dir().map(|d| d.join(file));
    if let Some(cubin) = path.as_ref().and_then(|p| std::fs::read(p).ok()) {
        return Ok(cubin);
    }
    let compiled = compile(kernel.name, &program, arch, false)?;
    if let Some(path) = path {
        // Write to a temporary name, then rename: a concurrent reader never sees half a cubin.
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let written = path.parent().map(std::fs::create_dir_all).transpose().is_ok()
            && std::fs::write(&tmp, &compiled.cubin).is_ok()
            && std::fs::rename(&tmp, &path).is_ok();
        if !written {
            let _ = std::fs::remove_file(&tmp);
        }
    }
    Ok(compiled.cubin)
}

type ModuleKey = (usize, &'static str);

fn loaded() -> &'static Mutex<HashMap<ModuleKey, Arc<CudaModule>>> {
    static MODULES: OnceLock<Mutex<HashMap<ModuleKey, Arc<CudaModule>>>> = OnceLock::new();
    MODULES.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The entry point `function` of kernel source `kernel` on `device`, compiling and loading on first use.
pub fn function(device: &CudaDevice, kernel: &'static str, function: &str) -> Result<CudaFunction> {
    let source = KernelSource::find(kernel).ok_or_else(|| KernelError::Compile {
        kernel: kernel.into(),
        detail: "no such kernel source".into(),
    })?;
    let key = (device.ordinal(), source.name);
    let module = {
        let mut modules = loaded().lock().unwrap_or_else(|p| p.into_inner());
        match modules.get(&key) {
            Some(m) => m.clone(),
            None => {
                let cubin = cubin_for(source, &device.arch()?)?;
                let module = device
                    .context()
                    .load_module(Ptx::from_binary(cubin))
                    .map_err(KernelError::cuda("loading a kernel module"))?;
                modules.insert(key, module.clone());
                module
            }
        }
    };
    module
        .load_function(function)
        .map_err(KernelError::cuda("finding a kernel function"))
}
