//! `nvlm`: run NVLM-D from the terminal.

mod chat;
#[cfg(test)]
mod demo_accuracy_tests;
mod demo_model;
mod devices;
mod engine;
mod eval;
mod generate;
mod launched;
mod load_progress;
mod output;
mod preprocess;
mod prompt;
mod sampling_args;
mod selftest;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// NVLM-D inference engine for Hopper GPUs.
#[derive(Parser)]
#[command(name = "nvlm", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List compute devices: CPU threads, the CUDA driver, GPUs and their architecture.
    Devices,
    /// Run every op on a device against the CPU reference, then the tensor-parallel code path as a group of one.
    Selftest {
        /// `cpu`, `cuda` or `cuda:N`.
        #[arg(long, default_value = "cuda")]
        device: String,
        /// A picture for the vision tower's tensor-parallel check (default: a synthetic tile).
        #[arg(long)]
        image: Option<std::path::PathBuf>,
    },
    /// Tile one image as NVLM-D sees it; print the grid as JSON, optionally write the tensors.
    Preprocess(preprocess::PreprocessArgs),
    /// Build the exact prompt text and token ids for a question (with images, history, system message).
    Prompt(prompt::PromptArgs),
    /// Benchmarks: score predictions exactly as the upstream scorers, run a benchmark, report.
    #[command(subcommand)]
    Eval(eval::EvalCommand),
    /// Chat with NVLM-D about images: an interactive multi-turn conversation (reads piped lines too).
    Chat(chat::ChatArgs),
    /// Answer one prompt, optionally about images; streams the answer, or prints JSON with --json.
    Generate(generate::GenerateArgs),
    /// Serve an OpenAI-compatible HTTP API (chat completions with images, streaming or not).
    Serve(serve::ServeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Devices => devices::run(),
        Command::Selftest { device, image } => selftest::run(&device, image.as_deref()),
        Command::Preprocess(args) => preprocess::run(&args),
        Command::Prompt(args) => prompt::run(&args),
        Command::Eval(command) => eval::run(&command),
        Command::Chat(args) => chat::run(&args),
        Command::Generate(args) => generate::run(&args),
        Command::Serve(args) => serve::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
