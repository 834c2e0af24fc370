//! `nvlm selftest`: every device op against the CPU reference on fresh random inputs, then the tensor-parallel
//! plumbing: the embedded demo model run whole and as a group of one rank (NCCL on a GPU, the thread group on the
//! CPU), which sends every collective of the sharded code path (vocabulary-parallel embedding and LM head, the
//! row-parallel all-reduces, the ViT's QK-norm statistics, the stop agreement, sharded sampling) through the
//! communicator a multi-GPU run uses. On a GPU it also decodes with and without CUDA graphs.

use std::sync::Arc;

use anyhow::{bail, Context};
use nvlm_dist::{Comm, NcclComm, ThreadGroup};
use nvlm_kernels::validate::{run_all, CheckReport};
use nvlm_kernels::SamplingParams;
use nvlm_qwen2::{generate, GenerateOptions, Qwen2Config, Qwen2Model, Sampler, SamplerConfig};
use nvlm_tensor::{CudaDevice, Device};
use nvlm_tiling::{load_tiles, TilingConfig, TILE_SIZE};
use nvlm_vit::{VisionConfig, VisionTower};

use crate::demo_model;
use crate::engine::pixel_tensor;

/// Runs the checks on `device` (`cpu`, `cuda`, `cuda:N`) and prints one row per check; fails if any is off.
pub fn run(device: &str, image: Option<&std::path::Path>) -> anyhow::Result<()> {
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
    tensor_parallel_plumbing(device, image)
        .with_context(|| format!("the tensor-parallel check on {device}"))?;
    Ok(())
}

/// A group of one rank on `device`: NCCL on a GPU, the in-process thread group on the CPU.
fn group_of_one(device: Device) -> anyhow::Result<(Arc<dyn Comm>, &'static str)> {
    Ok(match device {
        Device::Cpu => (Arc::new(ThreadGroup::new(1).pop().expect("one rank")), "thread"),
        Device::Cuda(ordinal) => (
            Arc::new(
                NcclComm::single(CudaDevice::get(ordinal)?)
                    .context("an NCCL group of one (is libnccl.so.2 on LD_LIBRARY_PATH?)")?,
            ),
            "NCCL",
        ),
    })
}

fn tensor_parallel_plumbing(device: Device, image: Option<&std::path::Path>) -> anyhow::Result<()> {
    let (comm, kind) = group_of_one(device)?;
    let config = demo_model::config();
    let weights = demo_model::weights()?;
    let dtype = device.compute_dtype();
    let llm_config = Qwen2Config::from_json(&config, true)?;
    const PREFIX: &str = "language_model.";
    let whole = Qwen2Model::load(&weights, PREFIX, &llm_config, device)?;
    let shard = Qwen2Model::load_shard(&weights, PREFIX, &llm_config, device, comm.clone())?;
    // "<|im_start|>user\nWhat is in the image?" in the real tokenizer's ids.
    let prompt: [u32; 9] = [151644, 872, 198, 3838, 374, 304, 279, 2168, 30];
    let options = GenerateOptions {
        max_new_tokens: 12,
        stop_ids: vec![],
        record: false,
    };
    let samplers = [
        ("greedy", SamplingParams::default()),
        (
            "top-k",
            SamplingParams {
                temperature: 0.9,
                top_k: 20,
                top_p: 1.0,
                seed: 1,
            },
        ),
        (
            "top-p",
            SamplingParams {
                temperature: 0.5,
                top_k: 0,
                top_p: 0.8,
                seed: 2,
            },
        ),
        (
            "temperature",
            SamplingParams {
                temperature: 1.0,
                top_k: 0,
                top_p: 1.0,
                seed: 3,
            },
        ),
    ];
    for (name, params) in samplers {
        let tokens = |model: &Qwen2Model| -> anyhow::Result<Vec<u32>> {
            let embeds = model.embed(&prompt, dtype)?;
            let mut sampler = Sampler::new(SamplerConfig {
                params,
                repetition_penalty: 1.0,
            });
            Ok(generate(model, &embeds, &prompt, &mut sampler, &options, |_| {
                std::ops::ControlFlow::Continue(())
            })?
            .tokens)
        };
        let (want, got) = (tokens(&whole)?, tokens(&shard)?);
        if want != got {
            bail!("{name} decoding as a {kind} group of one gave {got:?}, the whole model {want:?}");
        }
        println!(
            "tensor-parallel LLM, {kind} group of one, {name}: the same {} tokens",
            got.len()
        );
        if matches!(device, Device::Cuda(_)) {
            // The decode steps above were replayed from CUDA graphs: op by op they must give the same tokens.
            whole.set_decode_graphs(false);
            let op_by_op = tokens(&whole);
            whole.set_decode_graphs(true);
            let op_by_op = op_by_op?;
            if op_by_op != want {
                bail!("{name} decoding op by op gave {op_by_op:?}, replayed from CUDA graphs {want:?}");
            }
            println!("decode steps with and without CUDA graphs, {name}: the same tokens");
        }
    }
    let vision = VisionConfig::from_json(&config)?;
    let widths = (llm_config.intermediate_size, llm_config.hidden_size);
    let tower = VisionTower::load(&weights, &vision, widths.0, widths.1, device, dtype)?;
    let tower_shard = VisionTower::load_shard(&weights, &vision, widths.0, widths.1, device, dtype, comm)?;
    let tiles = match image {
        Some(path) => load_tiles(path, &TilingConfig::default())?.pixels,
        None => (0..TILE_SIZE * TILE_SIZE * 3)
            .map(|i| (i * 37 % 251) as u8)
            .collect(),
    };
    let n = tiles.len() / (TILE_SIZE * TILE_SIZE * 3);
    let pixels = pixel_tensor(&tiles, dtype, device)?;
    let (a, b) = (
        tower.forward(&pixels)?.embeddings.to_f32_vec()?,
        tower_shard.forward(&pixels)?.embeddings.to_f32_vec()?,
    );
    let rms = (a.iter().map(|v| v * v).sum::<f32>() / a.len().max(1) as f32)
        .sqrt()
        .max(f32::MIN_POSITIVE);
    let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max) / rms;
    // The group computes QK-norm statistics through the all-reduce (other kernels, other rounding in bf16).
    let tolerance = if dtype == nvlm_tensor::DType::BF16 {
        1.0 / 16.0
    } else {
        1e-5
    };
    if worst.is_nan() || worst > tolerance {
        bail!("vision tower as a {kind} group of one differs by {worst:.3e} of the RMS (tolerance {tolerance:.0e})");
    }
    println!("tensor-parallel vision tower, {kind} group of one: {n} tiles within {worst:.2e} of the RMS");
    Ok(())
}
