//! `nvlm chat`: a multi-turn conversation in the terminal (or from piped lines), streaming the answers.

use std::io::{BufRead, IsTerminal, Write};
use std::ops::ControlFlow;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use nvlm_qwen2::SystemPrompt;
use nvlm_tensor::Device;
use nvlm_tiling::prompt::IMAGE_PLACEHOLDER;

use crate::engine::Engine;
use crate::sampling_args::{ModelArgs, DEMO_NOTICE};

/// Arguments of `nvlm chat`.
#[derive(Args, Debug)]
pub struct ChatArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// An image attached to the first question.
    #[arg(long)]
    image: Option<PathBuf>,
    /// A custom system message.
    #[arg(long)]
    system: Option<String>,
}

const HELP: &str = "commands: /image PATH (attach to the next question), /system TEXT, /reset, /quit";

/// Runs the REPL until `/quit` or end of input.
pub fn run(args: &ChatArgs) -> anyhow::Result<()> {
    let device = Device::parse(&args.model.device).context("choosing the device")?;
    crate::launched::refuse("chat")?;
    let engine = Engine::load(&args.model.source(), device)?;
    let interactive = std::io::stdin().is_terminal();
    if engine.demo {
        eprintln!("{DEMO_NOTICE}");
    }
    if interactive {
        eprintln!("NVLM-D chat. {HELP}");
    }
    let mut system = args.system.clone().map(SystemPrompt::Custom).unwrap_or_default();
    let mut history: Vec<(String, String)> = Vec::new();
    let mut tiles: Vec<u8> = Vec::new();
    let mut tile_counts: Vec<usize> = Vec::new();
    let mut pending_image = args.image.clone();
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        if interactive {
            eprint!("> ");
            let _ = std::io::stderr().flush();
        }
        let Some(line) = lines.next() else { break };
        let line = line.context("reading input")?;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(command) = line.strip_prefix('/') {
            let (name, rest) = command
                .split_once(' ')
                .map_or((command, ""), |(a, b)| (a, b.trim()));
            match name {
                "quit" | "exit" => break,
                "reset" => {
                    history.clear();
                    tiles.clear();
                    tile_counts.clear();
                    pending_image = None;
                    eprintln!("[conversation reset]");
                }
                "system" => {
                    system = if rest.is_empty() {
                        SystemPrompt::Default
                    } else {
                        SystemPrompt::Custom(rest.to_string())
                    };
                    eprintln!("[system message set]");
                }
                "image" if !rest.is_empty() => {
                    pending_image = Some(PathBuf::from(rest));
                    eprintln!("[image attached to the next question]");
                }
                _ => eprintln!("unknown command `/{name}`. {HELP}"),
            }
            continue;
        }
        let mut question = line.to_string();
        if let Some(image) = pending_image.take() {
            match engine.tile(&image) {
                Ok((pixels, n)) => {
                    tiles.extend_from_slice(&pixels);
                    tile_counts.push(n);
                    if !question.contains(IMAGE_PLACEHOLDER) {
                        question = format!("{IMAGE_PLACEHOLDER}\n{question}");
                    }
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    continue;
                }
            }
        }
        let prompt = engine.chat_prompt(&system, &history, &question, &tile_counts);
        let ids = engine.tokenizer.encode(&prompt)?;
        let rows = engine.image_rows(&tiles)?;
        let mut generated = Vec::new();
        let mut printed = String::new();
        let mut stdout = std::io::stdout();
        let generation = engine.generate(
            &ids,
            rows.as_ref(),
            args.model.sampler(),
            args.model.max_new_tokens,
            false,
            |token| {
                generated.push(token);
                let text = engine.answer(&generated).unwrap_or_default();
                if text.len() > printed.len() && text.starts_with(&printed) {
                    let _ = write!(stdout, "{}", &text[printed.len()..]);
                    let _ = stdout.flush();
                    printed = text;
                }
                ControlFlow::Continue(())
            },
        )?;
        let answer = engine.answer(&generation.tokens)?;
        if answer.len() > printed.len() && answer.starts_with(&printed) {
            print!("{}", &answer[printed.len()..]);
        }
        println!();
        let decode_s = generation.decode.as_secs_f64();
        let rate = if generation.tokens.len() > 1 && decode_s > 0.0 {
            (generation.tokens.len() - 1) as f64 / decode_s
        } else {
            0.0
        };
        let tiles = tile_counts.iter().sum::<usize>();
        eprintln!(
            "[{tiles} tile{}, {} prompt tokens, {} new tokens, {rate:.1} tokens/s]",
            if tiles == 1 { "" } else { "s" },
            ids.len(),
            generation.tokens.len()
        );
        history.push((question, answer));
    }
    Ok(())
}
