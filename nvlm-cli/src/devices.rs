//! `nvlm devices`: what this machine offers.

use nvlm_kernels::cuda::nvrtc::nvrtc_version;
use nvlm_tensor::{cuda_device_count, CudaDevice};

/// Prints the CPU, the CUDA driver and each GPU; never fails for lack of CUDA.
pub fn run() -> anyhow::Result<()> {
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!("cpu: {threads} threads (f32 reference backend)");
    match cuda_device_count() {
        Err(e) => println!("cuda: unavailable ({e})"),
        Ok(0) => println!("cuda: driver present, no devices"),
        Ok(count) => {
            println!("cuda: {count} device(s)");
            for ordinal in 0..count {
                match CudaDevice::get(ordinal) {
                    Ok(device) => {
                        let ctx = device.context();
                        let name = ctx.name().unwrap_or_else(|_| "?".into());
                        let memory = ctx
                            .total_mem()
                            .map(|b| b as f64 / (1u64 << 30) as f64)
                            .unwrap_or(0.0);
                        let arch = device.arch().unwrap_or_else(|_| "?".into());
                        println!("  cuda:{ordinal}  {name}  {arch}  {memory:.1} GiB");
                    }
                    Err(e) => println!("  cuda:{ordinal}  error: {e}"),
                }
            }
            match nvrtc_version() {
                Ok((major, minor)) => println!("nvrtc: {major}.{minor}"),
                Err(e) => println!("nvrtc: unavailable ({e})"),
            }
        }
    }
    Ok(())
}
