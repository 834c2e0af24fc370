//! `nvlm selftest`: every device op against the CPU reference on fresh random inputs.

use anyhow::{bail, Context};
use nvlm_kernels::validate::{run_all, CheckReport};
use nvlm_tensor::Device;

/// Runs the checks on `device` (`cpu`, `cuda`, `cuda:N`) and prints one row per check; fails if any is off.
pub fn run(device: &str) -> anyhow::Result<()> {
    let device = Device::parse(device).context("choosing the device")?;
    let reports = run_all(device).with_context(|| format!("running the checks on {device}"))?;
    println!("{}", CheckReport::header());
    for report in &reports {
        println!("{}", report.row());
    }
    let failed = reports.iter().filter(|r| !r.passed()).count();
    if failed > 0 {
        bail!(
            "{failed} of {} checks on {device} are outside tolerance",
            reports.len()
        );
    }
    println!("all {} checks on {device} passed", reports.len());
    Ok(())
}
