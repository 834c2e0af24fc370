//! The CPU-side CUDA compile check: every embedded kernel compiles for `sm_90a` with the pinned NVRTC, and no kernel
//! spills registers. `cargo xtask test` installs the pinned NVRTC from PyPI and sets `NVLM_NVRTC_LIB` and
//! `NVLM_CUDA_INCLUDE`; without them (a plain `cargo test`) this check is skipped with a printed reason, unless
//! `NVLM_REQUIRE_NVRTC=1`, which makes a missing compiler a failure.

use nvlm_kernels::cuda::nvrtc::{compile, ensure_nvrtc, nvrtc_version, parse_resource_usage, NVRTC_LIB_ENV};
use nvlm_kernels::cuda::sources::KERNEL_SOURCES;

const ARCH: &str = "sm_90a";

#[test]
fn every_kernel_compiles_for_sm90a_without_spills() {
    let required = std::env::var("NVLM_REQUIRE_NVRTC").as_deref() == Ok("1");
    if std::env::var(NVRTC_LIB_ENV).is_err() && !required {
        println!(
            "skipped: {NVRTC_LIB_ENV} is not set (run `cargo xtask test`, which installs the pinned NVRTC)"
        );
        return;
    }
    if let Err(e) = ensure_nvrtc() {
        panic!("NVRTC unavailable: {e}");
    }
    let (major, minor) = nvrtc_version().unwrap();
    println!("NVRTC {major}.{minor}, target {ARCH}");
    println!(
        "{:<12} {:<32} {:>9} {:>12} {:>11}",
        "source", "function", "registers", "spill-stores", "spill-loads"
    );
    let mut failures = Vec::new();
    for kernel in KERNEL_SOURCES {
        let compiled = match compile(kernel.name, &kernel.program(), ARCH, true) {
            Ok(c) => c,
            Err(e) => {
                failures.push(format!("{}: {e}", kernel.name));
                continue;
            }
        };
        assert!(
            compiled.cubin.starts_with(b"\x7fELF"),
            "{}: NVRTC did not return an ELF cubin",
            kernel.name
        );
        let usage = parse_resource_usage(&compiled.log);
        for function in kernel.functions {
            match usage.iter().find(|u| u.function == *function) {
                None => failures.push(format!(
                    "{}: entry `{function}` missing from the ptxas report",
                    kernel.name
                )),
                Some(u) => {
                    println!(
                        "{:<12} {:<32} {:>9} {:>12} {:>11}",
                        kernel.name, u.function, u.registers, u.spill_stores, u.spill_loads
                    );
                    if u.spill_stores > 0 || u.spill_loads > 0 {
                        failures.push(format!("{}: `{function}` spills registers", kernel.name));
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "compile check failed:\n{}",
        failures.join("\n")
    );
}
