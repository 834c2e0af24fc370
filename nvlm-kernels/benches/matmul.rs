//! Matmul benchmark (plain harness): the CPU reference GEMM, and cuBLASLt bf16 at NVLM-D's projection shapes when a
//! GPU is present. Decode shapes (at most 8 rows) get a second row, `gemv`: the dedicated GEMV kernel on the same
//! operands, to show where it beats cuBLASLt (`NVLM_GEMV=1` makes `matmul` use it). Prints one table: shape, time,
//! TFLOP/s (or GFLOP/s), and the weight-streaming bandwidth that bounds decode. Run with `cargo xtask bench`; the GPU
//! bundle runs it too.

use std::time::Instant;

use nvlm_kernels::{gemv, matmul, validate::random_values};
use nvlm_tensor::{cuda_available, CudaDevice, DType, Device, Tensor};

struct Case {
    label: &'static str,
    m: usize,
    n: usize,
    k: usize,
}

/// NVLM-D projection shapes (batch-1 decode, batched decode, prefill of a 1,852-token image prompt, the ViT on 7 tiles).
const GPU_CASES: [Case; 11] = [
    Case {
        label: "llm qkv decode",
        m: 1,
        n: 10240,
        k: 8192,
    },
    Case {
        label: "llm o_proj decode",
        m: 1,
        n: 8192,
        k: 8192,
    },
    Case {
        label: "llm gate+up decode",
        m: 1,
        n: 59136,
        k: 8192,
    },
    Case {
        label: "llm down decode",
        m: 1,
        n: 8192,
        k: 29568,
    },
    Case {
        label: "llm gate+up decode b8",
        m: 8,
        n: 59136,
        k: 8192,
    },
    Case {
        label: "llm qkv decode b32",
        m: 32,
        n: 10240,
        k: 8192,
    },
    Case {
        label: "llm qkv prefill 1852",
        m: 1852,
        n: 10240,
        k: 8192,
    },
    Case {
        label: "llm gate+up prefill 1852",
        m: 1852,
        n: 59136,
        k: 8192,
    },
    Case {
        label: "vit qkv 7 tiles",
        m: 7175,
        n: 12288,
        k: 3200,
    },
    Case {
        label: "vit fc1 7 tiles",
        m: 7175,
        n: 12800,
        k: 3200,
    },
    Case {
        label: "projector fc1 7 tiles",
        m: 1792,
        n: 29568,
        k: 12800,
    },
];

fn time_it(iterations: usize, mut f: impl FnMut()) -> f64 {
    f(); // warm-up (and kernel/heuristic selection)
    let start = Instant::now();
    for _ in 0..iterations {
        f();
    }
    start.elapsed().as_secs_f64() / iterations as f64
}

fn row(device: &str, case: &Case, seconds: f64) {
    let flops = 2.0 * (case.m * case.n * case.k) as f64;
    let weight_bytes = (case.n * case.k * 2) as f64;
    println!(
        "{:<5} {:<26} {:>6} {:>6} {:>6} {:>11.3} {:>10.2} {:>10.1}",
        device,
        case.label,
        case.m,
        case.n,
        case.k,
        seconds * 1e3,
        flops / seconds / 1e12,
        weight_bytes / seconds / 1e9
    );
}

fn tensor(m: usize, k: usize, dtype: DType, device: Device) -> Tensor {
    let t = Tensor::from_vec(random_values((m * 31 + k) as u64, m * k), &[m, k]).unwrap();
    t.to_dtype(dtype).unwrap().to_device(device).unwrap()
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is accepted and ignored. `--list-gpu-shapes` prints the GPU
    // cases as `m n k label` lines, so that the GPU bundle times PyTorch on exactly the same shapes.
    if std::env::args().any(|a| a == "--list-gpu-shapes") {
        for case in &GPU_CASES {
            println!("{} {} {} {}", case.m, case.n, case.k, case.label);
        }
        return;
    }
    println!(
        "{:<5} {:<26} {:>6} {:>6} {:>6} {:>11} {:>10} {:>10}",
        "dev", "case", "m", "n", "k", "ms", "TFLOP/s", "w GB/s"
    );
    let cpu_cases = [
        Case {
            label: "decode row 1024^2",
            m: 1,
            n: 1024,
            k: 1024,
        },
        Case {
            label: "prefill 64x1024^2",
            m: 64,
            n: 1024,
            k: 1024,
        },
        Case {
            label: "vit-like 256x1280x3200",
            m: 256,
            n: 1280,
            k: 3200,
        },
    ];
    for case in &cpu_cases {
        let x = tensor(case.m, case.k, DType::F32, Device::Cpu);
        let w = tensor(case.n, case.k, DType::F32, Device::Cpu);
        let seconds = time_it(5, || {
            matmul(&x, &w, None).unwrap();
        });
        row("cpu", case, seconds);
    }
    if !cuda_available() {
        println!("(no CUDA device: GPU rows skipped)");
        return;
    }
    let device = Device::cuda(0).unwrap();
    let sync = CudaDevice::get(0).unwrap();
    for case in &GPU_CASES {
        let x = tensor(case.m, case.k, DType::BF16, device);
        let w = tensor(case.n, case.k, DType::BF16, device);
        let seconds = time_it(20, || {
            matmul(&x, &w, None).unwrap();
            sync.synchronize().unwrap();
        });
        row("gpu", case, seconds);
        if case.m <= 8 {
            let seconds = time_it(20, || {
                gemv(&x, &w, None).unwrap();
                sync.synchronize().unwrap();
            });
            row("gemv", case, seconds);
        }
    }
}
