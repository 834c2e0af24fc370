//! NVRTC: locating the library without panicking, compiling a source to a cubin for one architecture, and reading
//! register and spill figures from ptxas' verbose log.

use std::ffi::{CStr, CString};
use std::sync::OnceLock;

use cudarc::nvrtc::{result, sys};

use crate::{KernelError, Result};

/// Environment variable naming the NVRTC library by full path (e.g. the pinned PyPI wheel's `libnvrtc.so.13`).
pub const NVRTC_LIB_ENV: &str = "NVLM_NVRTC_LIB";
/// Environment variable naming a folder with the CUDA headers (`cuda_bf16.h`).
pub const CUDA_INCLUDE_ENV: &str = "NVLM_CUDA_INCLUDE";

/// Makes NVRTC loadable: opens `$NVLM_NVRTC_LIB` by full path first (so cudarc's later by-name load finds it), then
/// probes. An error, never a panic, when no NVRTC can be found.
pub fn ensure_nvrtc() -> Result<()> {
    static STATE: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    STATE
        .get_or_init(|| {
            if let Ok(path) = std::env::var(NVRTC_LIB_ENV) {
                // SAFETY: loading NVRTC runs its initialisers only; the handle is kept for the process lifetime.
                match unsafe { libloading::Library::new(&path) } {
                    Ok(lib) => std::mem::forget(lib),
                    Err(e) => return Err(format!("{NVRTC_LIB_ENV}={path} could not be loaded: {e}")),
                }
            }
            // SAFETY: only tries to dlopen candidate names.
            if unsafe { sys::is_culib_present() } {
                Ok(())
            } else {
                Err(format!(
                    "NVRTC (libnvrtc.so.13) was not found: install the CUDA 13 toolkit, add its lib64 folder to \
                     LD_LIBRARY_PATH, or set {NVRTC_LIB_ENV} to the library's full path"
                ))
            }
        })
        .clone()
        .map_err(|detail| KernelError::Compile { kernel: "(nvrtc)".into(), detail })
}

/// NVRTC's version as `(major, minor)`.
pub fn nvrtc_version() -> Result<(i32, i32)> {
    ensure_nvrtc()?;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: two out-pointers to live integers.
    unsafe { sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .map_err(|e| KernelError::Compile {
            kernel: "(nvrtc)".into(),
            detail: format!("{e:?}"),
        })?;
    Ok((major, minor))
}

/// Where to find `cuda_bf16.h`: `$NVLM_CUDA_INCLUDE`, `$CUDA_HOME/include`, `$CUDA_PATH/include`, or
/// `/usr/local/cuda/include`, whichever exists first.
pub fn cuda_include_dirs() -> Vec<String> {
    let mut candidates: Vec<String> = Vec::new();
    if let Ok(dir) = std::env::var(CUDA_INCLUDE_ENV) {
        candidates.push(dir);
    }
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Ok(root) = std::env::var(var) {
            candidates.push(format!("{root}/include"));
        }
    }
    candidates.push("/usr/local/cuda/include".into());
    candidates
        .into_iter()
        .filter(|d| std::path::Path::new(d).join("cuda_bf16.h").exists())
        .take(1)
        .collect()
}

/// The result of compiling one program.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The cubin for the requested architecture.
    pub cubin: Vec<u8>,
    /// The compiler log (ptxas' resource usage when `verbose`).
    pub log: String,
}

/// Compiles `program` (a full source text) for `arch` (e.g. `sm_90a`) to a cubin.
pub fn compile(name: &str, program: &str, arch: &str, verbose: bool) -> Result<Compiled> {
    ensure_nvrtc()?;
    let fail = |detail: String| KernelError::Compile {
        kernel: name.to_string(),
        detail,
    };
    let src = CString::new(program).map_err(|_| fail("source contains a NUL byte".into()))?;
    let file = CString::new(format!("{name}.cu")).map_err(|_| fail("bad name".into()))?;
    let prog = result::create_program(&src, Some(&file)).map_err(|e| fail(format!("create: {e:?}")))?;
    let mut options = vec![
        format!("--gpu-architecture={arch}"),
        "--std=c++17".to_string(),
        "--fmad=true".to_string(),
        "--device-as-default-execution-space".to_string(),
    ];
    if verbose {
        options.push("--ptxas-options=-v".to_string());
    }
    let includes = cuda_include_dirs();
    let hint = if includes.is_empty() {
        format!("\nno folder with cuda_bf16.h was found: set {CUDA_INCLUDE_ENV} (or CUDA_HOME) to the CUDA 13 headers")
    } else {
        String::new()
    };
    options.extend(includes.into_iter().map(|d| format!("--include-path={d}")));
    // SAFETY: `prog` is a live program; the log and cubin buffers are sized from NVRTC's own answers.
    let outcome = unsafe {
        let compiled = result::compile_program(prog, &options);
        let log = result::get_program_log(prog)
            .map(|raw| CStr::from_ptr(raw.as_ptr()).to_string_lossy().into_owned())
            .unwrap_or_default();
        match compiled {
            Err(e) => Err(fail(format!("{e:?} with options {options:?}\n{log}{hint}"))),
            Ok(()) => {
                let mut size = 0usize;
                let status = sys::nvrtcGetCUBINSize(prog, &mut size);
                if status != sys::nvrtcResult::NVRTC_SUCCESS || size == 0 {
                    Err(fail(format!(
                        "no cubin (status {status:?}); is `{arch}` a real architecture?"
                    )))
                } else {
                    let mut cubin = vec![0u8; size];
                    let status = sys::nvrtcGetCUBIN(prog, cubin.as_mut_ptr().cast());
                    if status != sys::nvrtcResult::NVRTC_SUCCESS {
                        Err(fail(format!("reading the cubin: {status:?}")))
                    } else {
                        Ok(Compiled { cubin, log })
                    }
                }
            }
        }
    };
    // SAFETY: destroyed once, after its last use.
    let _ = unsafe { result::destroy_program(prog) };
    outcome
}

/// Registers and spills of one kernel, read from ptxas' verbose log.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResourceUsage {
    /// The mangled or `extern "C"` function name.
    pub function: String,
    /// Registers per thread.
    pub registers: u32,
    /// Bytes of spill stores.
    pub spill_stores: u32,
    /// Bytes of spill loads.
    pub spill_loads: u32,
}

/// Parses `ptxas info : Compiling entry function 'f'`, `... N bytes spill stores, M bytes spill loads` and
/// `ptxas info : Used R registers` lines into one record per function.
pub fn parse_resource_usage(log: &str) -> Vec<ResourceUsage> {
    let mut out: Vec<ResourceUsage> = Vec::new();
    let number_before = |line: &str, word: &str| -> Option<u32> {
        let idx = line.find(word)?;
        line[..idx].split_whitespace().last()?.parse().ok()
    };
    for line in log.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let function = rest.split('\'').next().unwrap_or_default().to_string();
            out.push(ResourceUsage {
                function,
                ..Default::default()
            });
        } else if let Some(current) = out.last_mut() {
            if let Some(n) = number_before(line, "bytes spill stores") {
                current.spill_stores = n;
            }
            if let Some(n) = number_before(line, "bytes spill loads") {
                current.spill_loads = n;
            }
            if let Some(n) = number_before(line, "registers") {
                current.registers = n;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ptxas_verbose_output() {
        let log = "ptxas info    : 0 bytes gmem\n\
                   ptxas info    : Compiling entry function 'rms_norm_bf16' for 'sm_90a'\n\
                   ptxas info    : Function properties for rms_norm_bf16\n\
                   \x20   8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads\n\
                   ptxas info    : Used 18 registers, used 1 barriers, 128 bytes smem, 380 bytes cmem[0]\n\
                   ptxas info    : Compiling entry function 'silu' for 'sm_90a'\n\
                   ptxas info    : Used 10 registers\n";
        let usage = parse_resource_usage(log);
        assert_eq!(usage.len(), 2);
        assert_eq!(
            usage[0],
            ResourceUsage {
                function: "rms_norm_bf16".into(),
                registers: 18,
                spill_stores: 4,
                spill_loads: 12
            }
        );
        assert_eq!((usage[1].registers, usage[1].spill_stores), (10, 0));
    }
}
