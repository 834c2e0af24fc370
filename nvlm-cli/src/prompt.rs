//! `nvlm prompt`: the exact text and token ids NVLM-D receives for a question.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use nvlm_qwen2::{build_prompt, SystemPrompt, Tokenizer};
use nvlm_tiling::prompt::{expand_images, with_image_placeholder, IMAGE_TOKENS_PER_TILE};

/// Arguments of `nvlm prompt`.
#[derive(Args, Debug)]
pub struct PromptArgs {
    /// The model's tokenizer.json.
    #[arg(long)]
    tokenizer: PathBuf,
    /// A custom system message (default: "Answer the questions.").
    #[arg(long, conflicts_with = "no_system")]
    system: Option<String>,
    /// No system turn at all.
    #[arg(long)]
    no_system: bool,
    /// Tile count of an image in the conversation (repeat once per image, in order).
    #[arg(long = "image-tiles", value_name = "N")]
    image_tiles: Vec<usize>,
    /// `<|vision_pad|>` ids per tile: 256 for NVLM-D-72B (`(image_size / patch_size)^2 / 4` of the vision config).
    #[arg(long, value_name = "N", default_value_t = IMAGE_TOKENS_PER_TILE)]
    image_tokens_per_tile: usize,
    /// Earlier turns: a JSON file holding [["question", "answer"], ...].
    #[arg(long)]
    history: Option<PathBuf>,
    /// The question. With images and no history, "<image>\n" is put in front unless it has an <image>.
    #[arg(long)]
    question: String,
}

fn read_history(path: &std::path::Path) -> anyhow::Result<Vec<(String, String)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading history {}", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("history {} is not JSON", path.display()))?;
    let Some(turns) = value.as_array() else {
        bail!(
            "history {} must be a JSON array of [question, answer]",
            path.display()
        )
    };
    turns
        .iter()
        .enumerate()
        .map(|(i, turn)| {
            match (
                turn.get(0).and_then(|q| q.as_str()),
                turn.get(1).and_then(|a| a.as_str()),
            ) {
                (Some(q), Some(a)) if turn.as_array().map(Vec::len) == Some(2) => {
                    Ok((q.to_string(), a.to_string()))
                }
                _ => bail!(
                    "history {} turn {i} must be a [question, answer] pair of strings",
                    path.display()
                ),
            }
        })
        .collect()
}

/// Builds the prompt and prints `{"text": ..., "input_ids": [...]}`.
pub fn run(args: &PromptArgs) -> anyhow::Result<()> {
    if let Some(&zero) = args.image_tiles.iter().find(|&&n| n == 0) {
        bail!("--image-tiles {zero}: an image has at least one tile");
    }
    let history = match &args.history {
        Some(path) => read_history(path)?,
        None => Vec::new(),
    };
    let system = match (&args.system, args.no_system) {
        (_, true) => SystemPrompt::None,
        (Some(message), false) => SystemPrompt::Custom(message.clone()),
        (None, false) => SystemPrompt::Default,
    };
    let question = with_image_placeholder(&args.question, args.image_tiles.len(), !history.is_empty());
    let text = expand_images(
        &build_prompt(&system, &history, &question),
        &args.image_tiles,
        args.image_tokens_per_tile,
    );
    let tokenizer = Tokenizer::from_file(&args.tokenizer)?;
    let input_ids = tokenizer.encode(&text)?;
    println!("{}", serde_json::json!({ "text": text, "input_ids": input_ids }));
    Ok(())
}
