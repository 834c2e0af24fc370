//! `cargo xtask convert-checkpoint`: list a checkpoint's tensors, or convert a Megatron NVLM-D checkpoint to the HF
//! safetensors layout.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use nvlm_checkpoint::convert::{convert, dims_for, verify, ConvertOptions, DEFAULT_MAX_SHARD_BYTES};
use nvlm_checkpoint::{MegatronCheckpoint, SafetensorsCheckpoint, SAFETENSORS_INDEX};

/// Usage of this subcommand.
pub const USAGE: &str = "usage:
  cargo xtask convert-checkpoint --input DIR --list
  cargo xtask convert-checkpoint --input MEGATRON_DIR --output HF_DIR [--config FILE] [--tokenizer DIR]
                                 [--force] [--verify] [--max-shard-bytes N]

  --input    a Megatron checkpoint root (follows latest_checkpointed_iteration.txt), an iter_* folder
             (torch_dist, zarr or plain DCP), or for --list also an HF safetensors folder
  --list     print one line per tensor: name, dtype, global shape, chunks
  --output   the HF folder to create (written beside it under a temporary name, renamed at the end)
  --config   the HF config.json to use (default: built from the checkpoint's args)
  --tokenizer  a folder whose tokenizer files are copied into the output
  --force    replace an existing output folder
  --verify   re-read the output and compare every tensor with its source";

struct Args {
    input: PathBuf,
    output: Option<PathBuf>,
    config: Option<PathBuf>,
    tokenizer: Option<PathBuf>,
    list: bool,
    force: bool,
    verify: bool,
    max_shard_bytes: u64,
}

fn parse(args: &[String]) -> Result<Args> {
    let mut parsed = Args {
        input: PathBuf::new(),
        output: None,
        config: None,
        tokenizer: None,
        list: false,
        force: false,
        verify: false,
        max_shard_bytes: DEFAULT_MAX_SHARD_BYTES,
    };
    let mut input = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .with_context(|| format!("{flag} needs a value\n\n{USAGE}"))
        };
        match flag.as_str() {
            "--input" => input = Some(PathBuf::from(value()?)),
            "--output" => parsed.output = Some(PathBuf::from(value()?)),
            "--config" => parsed.config = Some(PathBuf::from(value()?)),
            "--tokenizer" => parsed.tokenizer = Some(PathBuf::from(value()?)),
            "--max-shard-bytes" => {
                parsed.max_shard_bytes = value()?.parse().context("--max-shard-bytes takes a number")?
            }
            "--list" => parsed.list = true,
            "--force" => parsed.force = true,
            "--verify" => parsed.verify = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument `{other}`\n\n{USAGE}"),
        }
    }
    parsed.input = input.with_context(|| format!("--input is required\n\n{USAGE}"))?;
    if !parsed.list && parsed.output.is_none() {
        bail!("give --list or --output\n\n{USAGE}");
    }
    Ok(parsed)
}

/// Runs the subcommand.
pub fn run(args: &[String]) -> Result<()> {
    let args = parse(args)?;
    if args.list {
        return list(&args);
    }
    let output = args.output.clone().expect("checked");
    let checkpoint =
        MegatronCheckpoint::open(&args.input).with_context(|| format!("opening {}", args.input.display()))?;
    let config_value = match &args.config {
        Some(path) => Some(
            serde_json::from_str(
                &std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
            )
            .with_context(|| format!("{} is not JSON", path.display()))?,
        ),
        None => None,
    };
    let dims = dims_for(&checkpoint, config_value.as_ref())?;
    let plan = dims.plan(&checkpoint.tensors())?;
    let total: u64 = plan
        .outputs
        .iter()
        .map(|o| o.shape.iter().product::<u64>() * o.dtype.size() as u64)
        .sum();
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} converting [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
        )
        .expect("template")
        .progress_chars("=> "),
    );
    let options = ConvertOptions {
        output: output.clone(),
        config: args.config.clone(),
        tokenizer: args.tokenizer.clone(),
        force: args.force,
        max_shard_bytes: args.max_shard_bytes,
    };
    let start = std::time::Instant::now();
    let plan = convert(&checkpoint, &options, |n| bar.inc(n))
        .with_context(|| format!("converting into {}", output.display()))?;
    bar.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "wrote {} tensors ({:.2} GB) to {} in {seconds:.1} s ({:.2} GB/s); skipped {} non-weight entries",
        plan.outputs.len(),
        total as f64 / 1e9,
        output.display(),
        total as f64 / 1e9 / seconds.max(1e-9),
        plan.skipped.len()
    );
    if args.verify {
        let checked = verify(&checkpoint, dims, &plan, &output).context("verifying the output")?;
        println!("verified: {checked} tensors equal their source");
    }
    Ok(())
}

fn list(args: &Args) -> Result<()> {
    let input = &args.input;
    let is_safetensors = input.join(SAFETENSORS_INDEX).is_file()
        || input.join("model.safetensors").is_file()
        || input.extension().is_some_and(|e| e == "safetensors");
    if is_safetensors {
        let ckpt = SafetensorsCheckpoint::open(input)?;
        for (name, entry) in ckpt.tensors() {
            println!("{name}\t{}\t{:?}\tchunks=1", entry.dtype, entry.shape);
        }
        return Ok(());
    }
    let ckpt = MegatronCheckpoint::open(input).with_context(|| format!("opening {}", input.display()))?;
    for (name, entry) in ckpt.tensors() {
        println!(
            "{name}\t{}\t{:?}\tchunks={}",
            entry.dtype,
            entry.shape(),
            entry.chunks.len()
        );
    }
    Ok(())
}
