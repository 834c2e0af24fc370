//! Layer benchmark (plain harness): NVLM-D's layers at their real dimensions, random bf16 weights, on the GPU, each
//! case beside its roofline (the bytes it must move over the measured copy bandwidth, or its FLOPs over the bf16
//! matrix peak):
//! - one Qwen2-72B decoder layer: prefill of a 1,852-token image prompt; decode steps at batch 1, 8 and 32 over a
//!   1,852-token cache (the weight-bytes roofline); prefill and batch-1 decode of one rank's share at TP 2, 4 and 8
//!   (its heads and FFN rows, loaded with `load_shard` under a stand-in communicator: the all-reduces are not timed);
//! - one InternViT-6B layer on 7 tiles (and the 45-layer tower with the projector, extrapolated);
//! - attention alone: the ViT's bidirectional 1,025 tokens x 25 heads on 7 tiles, the LLM's causal GQA 64/8 at
//!   2k, 8k and 32k tokens.
//!
//! A model is timed with one and with two layers; the difference is the cost of a layer and the full model is
//! extrapolated from it (80 LLM layers, 45 ViT layers, TP 1). `--list-cases` prints every case as a JSON line (the GPU
//! bundle's `torch_layers.py` times PyTorch on exactly those); `--json PATH` also writes the results as JSON lines.
//! `--opt-in-kernels` times only the attention cases, with the opt-in Hopper kernels (`<case>-wgmma`, `<case>-tma`),
//! in a process of their own.
//! Without a GPU it says so and exits 0 (the CPU reference at these sizes would take hours). Run with
//! `cargo xtask bench`; the GPU bundle runs it too. `--scale N` divides every size by N: a rehearsal of this code on
//! a small device or the CUDA emulator (`--scale 64` runs in about a minute there), whose figures mean nothing.

mod attention;
mod cases;
mod llm;
mod report;
mod solo;
mod vit;
mod weights;

use nvlm_tensor::{cuda_available, CudaDevice, Device};

use cases::{cases, Kind};
use report::Report;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--scale") {
        let scale = args
            .get(i + 1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("--scale needs a whole number, such as 64"))?;
        cases::set_scale(scale);
    }
    if args.iter().any(|a| a == "--list-cases") {
        for case in cases() {
            println!("{}", case.to_json());
        }
        return Ok(());
    }
    let json = args
        .iter()
        .position(|a| a == "--json")
        .and_then(|i| args.get(i + 1))
        .map(std::path::PathBuf::from);
    if !cuda_available() {
        println!("layers bench: no CUDA device here, skipped (it runs in the GPU bundle)");
        return Ok(());
    }
    let kernels = if args.iter().any(|a| a == "--opt-in-kernels") {
        attention::Kernels::OptIn
    } else {
        attention::Kernels::Default
    };
    let device = Device::cuda(0)?;
    let mut report = Report::new(json);
    let mut llm_bench: Option<llm::LlmBench> = None;
    let mut vit_bench: Option<vit::VitBench> = None;
    let mut failed = Vec::new();
    for case in cases() {
        if kernels == attention::Kernels::OptIn && !matches!(case.kind, Kind::Attention { .. }) {
            continue;
        }
        // A case that fails is reported and the others still run: one GPU run gives every figure it can.
        let outcome = (|| -> anyhow::Result<()> {
            match case.kind {
                Kind::Copy { bytes } => report.set_bandwidth(attention::copy_bandwidth(device, bytes)?),
                Kind::LlmPrefill { tokens, tp } => {
                    if llm_bench.is_none() {
                        llm_bench = Some(llm::LlmBench::new(device)?);
                    }
                    let bench = llm_bench.as_mut().expect("made above");
                    bench.prefill(&case, tokens, tp, &mut report)?;
                }
                Kind::LlmDecode { batch, context, tp } => {
                    if llm_bench.is_none() {
                        llm_bench = Some(llm::LlmBench::new(device)?);
                    }
                    let bench = llm_bench.as_mut().expect("made above");
                    bench.decode(&case, batch, context, tp, &mut report)?;
                }
                Kind::VitTiles { tiles } => {
                    llm_bench = None; // frees the LLM layers' memory
                    if vit_bench.is_none() {
                        vit_bench = Some(vit::VitBench::new(device, tiles)?);
                    }
                    vit_bench.as_ref().expect("made above").run(&case, &mut report)?;
                }
                Kind::Attention { .. } => attention::run(device, &case, kernels, &mut report)?,
                Kind::DecodeAttention { .. } => attention::run_decode(device, &case, &mut report)?,
            }
            Ok(())
        })();
        if let Err(e) = outcome {
            println!("CASE-FAILED {}: {e:#}", case.name);
            failed.push(case.name.clone());
        }
    }
    report.finish()?;
    if !failed.is_empty() {
        anyhow::bail!("{} case(s) failed: {}", failed.len(), failed.join(", "));
    }
    Ok(())
}

/// Waits for the GPU's work so far (timings bracket complete work).
pub fn sync(device: Device) -> anyhow::Result<()> {
    if let Device::Cuda(ordinal) = device {
        CudaDevice::get(ordinal)?.synchronize()?;
    }
    Ok(())
}
