//! `nvlm generate`: one answer, streamed, or as JSON.

use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use nvlm_qwen2::SystemPrompt;
use nvlm_tensor::Device;
use nvlm_tiling::prompt::with_image_placeholder;

use crate::engine::{ms, Engine};
use crate::launched::Inputs;
use crate::output::write_atomically;
use crate::sampling_args::{ModelArgs, DEMO_NOTICE};

/// Arguments of `nvlm generate`.
#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// An image to ask about (PNG or JPEG; repeat for several, in prompt order).
    #[arg(long)]
    image: Vec<PathBuf>,
    /// The question.
    #[arg(long, required_unless_present = "input_ids")]
    prompt: Option<String>,
    /// A custom system message (default: "Answer the questions.").
    #[arg(long, conflicts_with = "no_system")]
    system: Option<String>,
    /// No system turn.
    #[arg(long)]
    no_system: bool,
    /// Stop when the answer contains this text (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// Print one JSON object instead of streaming text.
    #[arg(long)]
    json: bool,
    /// For checking: a JSON array of token ids used as the whole prompt instead of building one.
    #[arg(long)]
    input_ids: Option<PathBuf>,
    /// For checking: tiles (tensor `tiles`, U8 [N,448,448,3], as `preprocess --out` writes) instead of --image.
    #[arg(long)]
    tiles: Option<PathBuf>,
    /// Write the final-normed hidden states and logits of every prompt position and generated step (safetensors).
    #[arg(long)]
    dump: Option<PathBuf>,
}

fn read_tiles(path: &PathBuf) -> anyhow::Result<(Vec<u8>, usize)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let file = safetensors::SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{} is not a safetensors file", path.display()))?;
    let tiles = file
        .tensor("tiles")
        .with_context(|| format!("{} has no `tiles` tensor", path.display()))?;
    if tiles.dtype() != safetensors::Dtype::U8
        || tiles.shape().len() != 4
        || tiles.shape()[1..] != [448, 448, 3]
    {
        bail!(
            "`tiles` in {} must be U8 [N,448,448,3], found {:?} {:?}",
            path.display(),
            tiles.dtype(),
            tiles.shape()
        );
    }
    Ok((tiles.data().to_vec(), tiles.shape()[0]))
}

fn read_ids(path: &PathBuf) -> anyhow::Result<Vec<u32>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let ids: Vec<u64> = serde_json::from_str(&text)
        .with_context(|| format!("{} must be a JSON array of token ids", path.display()))?;
    ids.into_iter()
        .map(|id| u32::try_from(id).context("token id out of range"))
        .collect()
}

/// Rank 0's work before the model: tiles of `--tiles` and every `--image`, and the prompt ids.
fn prepare(args: &GenerateArgs, engine: &Engine) -> anyhow::Result<Inputs> {
    let mut tiles = Vec::new();
    let mut tile_counts = Vec::new();
    if let Some(path) = &args.tiles {
        let (pixels, n) = read_tiles(path)?;
        tiles = pixels;
        tile_counts.push(n);
    }
    for image in &args.image {
        let (pixels, n) = engine.tile(image)?;
        tiles.extend_from_slice(&pixels);
        tile_counts.push(n);
    }
    let ids = match (&args.input_ids, &args.prompt) {
        (Some(path), _) => read_ids(path)?,
        (None, Some(prompt)) => {
            let system = match (&args.system, args.no_system) {
                (_, true) => SystemPrompt::None,
                (Some(s), false) => SystemPrompt::Custom(s.clone()),
                (None, false) => SystemPrompt::Default,
            };
            let question = with_image_placeholder(prompt, tile_counts.len(), false);
            engine
                .tokenizer
                .encode(&engine.chat_prompt(&system, &[], &question, &tile_counts))?
        }
        (None, None) => bail!("give --prompt or --input-ids"),
    };
    Ok(Inputs {
        ids,
        tiles,
        tile_counts,
    })
}

/// Runs the command.
pub fn run(args: &GenerateArgs) -> anyhow::Result<()> {
    let device = Device::parse(&args.model.device).context("choosing the device")?;
    let engine = Engine::load(&args.model.source(), device)?;
    if engine.demo {
        eprintln!("{DEMO_NOTICE}");
    }
    let start = Instant::now();
    // In a multi-process launch only rank 0 reads the inputs; the others receive them.
    let prepared = if engine.is_lead() {
        prepare(args, &engine)
    } else {
        Ok(Inputs::default())
    };
    let Inputs {
        ids,
        tiles,
        tile_counts,
    } = engine.share_inputs(prepared)?;
    let preprocess_ms = ms(start);
    let start = Instant::now();
    let rows = engine.image_rows(&tiles)?;
    let vision_ms = ms(start);

    let mut printed = String::new();
    let mut generated = Vec::new();
    let mut stdout = std::io::stdout();
    let lead = engine.is_lead();
    let stream = !args.json && lead;
    let generation = engine.generate(
        &ids,
        rows.as_ref(),
        args.model.sampler(),
        args.model.max_new_tokens,
        args.dump.is_some(),
        |token| {
            generated.push(token);
            let text = engine.answer(&generated).unwrap_or_default();
            if stream && text.len() > printed.len() && text.starts_with(&printed) {
                let _ = write!(stdout, "{}", &text[printed.len()..]);
                let _ = stdout.flush();
                printed = text.clone();
            }
            if args.stop.iter().any(|s| text.contains(s.as_str())) {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        },
    )?;
    let mut text = engine.answer(&generation.tokens)?;
    if let Some(cut) = args.stop.iter().filter_map(|s| text.find(s.as_str())).min() {
        text.truncate(cut);
    }
    if !lead {
        // The other ranks of a multi-process launch computed the same tokens; rank 0 reports them.
        return Ok(());
    }
    if let Some(path) = &args.dump {
        let (hidden, logits) = generation.recorded.as_ref().expect("recorded when dumping");
        let to_bytes = |t: &nvlm_tensor::Tensor| -> anyhow::Result<Vec<u8>> {
            Ok(t.to_f32_vec()?.iter().flat_map(|v| v.to_le_bytes()).collect())
        };
        let (hb, lb) = (to_bytes(hidden)?, to_bytes(logits)?);
        write_atomically(path, |tmp| {
            let tensors = [
                (
                    "hidden_states",
                    safetensors::tensor::TensorView::new(
                        safetensors::Dtype::F32,
                        hidden.shape().to_vec(),
                        &hb,
                    )?,
                ),
                (
                    "logits",
                    safetensors::tensor::TensorView::new(
                        safetensors::Dtype::F32,
                        logits.shape().to_vec(),
                        &lb,
                    )?,
                ),
            ];
            safetensors::tensor::serialize_to_file(tensors, None, tmp)
                .with_context(|| format!("writing {}", tmp.display()))
        })?;
    }
    let decode_ms = generation.decode.as_secs_f64() * 1e3;
    let new_tokens = generation.tokens.len();
    let tokens_per_s = if new_tokens > 1 && decode_ms > 0.0 {
        (new_tokens - 1) as f64 / (decode_ms / 1e3)
    } else {
        0.0
    };
    if args.json {
        let line = serde_json::json!({
            "text": text,
            "token_ids": generation.tokens,
            "prompt_tokens": generation.prompt_tokens,
            "tiles": tile_counts,
            "timings": {
                "preprocess_ms": preprocess_ms,
                "vision_ms": vision_ms,
                "prefill_ms": generation.prefill.as_secs_f64() * 1e3,
                "decode_ms": decode_ms,
                "tokens_per_s": tokens_per_s,
            }
        });
        println!("{line}");
    } else {
        if printed.len() < text.len() && text.starts_with(&printed) {
            print!("{}", &text[printed.len()..]);
        }
        println!();
        eprintln!(
            "[{} tiles, {} prompt tokens, {new_tokens} new tokens, {tokens_per_s:.1} tokens/s]",
            tile_counts.iter().sum::<usize>(),
            generation.prompt_tokens
        );
    }
    Ok(())
}
