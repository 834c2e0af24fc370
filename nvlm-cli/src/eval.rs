//! `nvlm eval`: score prediction files exactly as the upstream scorers do, run the benchmarks, report.

use std::collections::HashSet;
use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use nvlm_eval::{score, Score, Task};
use nvlm_qwen2::SystemPrompt;
use nvlm_tensor::Device;
use serde_json::{json, Value};

use crate::engine::Engine;
use crate::sampling_args::{ModelArgs, DEMO_NOTICE};

/// `nvlm eval` subcommands.
#[derive(Subcommand, Debug)]
pub enum EvalCommand {
    /// Score a predictions file (JSON lines, the format Megatron's generation writes).
    Score(ScoreArgs),
    /// Generate answers for a benchmark dataset, write predictions as it goes, then score them.
    Run(RunArgs),
    /// Print a Markdown table of scores (the JSON lines `eval score` prints) beside the published NVLM-D numbers.
    Report {
        /// Files holding `eval score` output lines.
        files: Vec<PathBuf>,
    },
}

/// Arguments of `nvlm eval score`.
#[derive(Args, Debug)]
pub struct ScoreArgs {
    /// vqav2, textvqa, chartqa, ai2d, ocrbench, mathvista, mmmu, docvqa, infovqa or realworldqa.
    #[arg(long)]
    task: String,
    /// The predictions (JSON lines).
    #[arg(long)]
    predictions: PathBuf,
    /// The ground truth file (MMMU's answer_dict.json; the other tasks carry `gt_answer` in each line).
    #[arg(long)]
    gt: Option<PathBuf>,
    /// Also print every sample's value.
    #[arg(long)]
    per_sample: bool,
}

/// Arguments of `nvlm eval run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// vqav2, textvqa, chartqa, ai2d, ocrbench, mathvista, mmmu, docvqa, infovqa or realworldqa (see the README for
    /// each dataset's layout).
    #[arg(long)]
    task: String,
    /// The dataset folder.
    #[arg(long)]
    data: PathBuf,
    /// Only the first N samples.
    #[arg(long)]
    limit: Option<usize>,
    /// Where predictions go (default: `<task>-predictions.jsonl`).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Keep the predictions already in --output and skip their samples.
    #[arg(long)]
    resume: bool,
}

/// Runs an `eval` subcommand.
pub fn run(command: &EvalCommand) -> anyhow::Result<()> {
    match command {
        EvalCommand::Score(args) => {
            let task = Task::from_name(&args.task)?;
            let predictions = std::fs::read_to_string(&args.predictions)
                .with_context(|| format!("reading {}", args.predictions.display()))?;
            let gt = match &args.gt {
                Some(path) => Some(read_json(path)?),
                None => None,
            };
            println!(
                "{}",
                score_line(&score(task, &predictions, gt.as_ref())?, args.per_sample)
            );
            Ok(())
        }
        EvalCommand::Run(args) => run_benchmark(args),
        EvalCommand::Report { files } => report(files),
    }
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
}

/// `{"task","score","n"}` (and `"per_sample"`).
fn score_line(s: &Score, per_sample: bool) -> Value {
    let mut line = json!({ "task": s.task.name(), "score": s.score.to_json(), "n": s.n });
    if per_sample {
        let map: serde_json::Map<String, Value> = s
            .per_sample
            .iter()
            .map(|(id, v)| (id.clone(), v.to_json()))
            .collect();
        line["per_sample"] = Value::Object(map);
    }
    line
}

/// NVLM-D 1.0 72B as published (HF code): MMMU val, MathVista, OCRBench, AI2D, ChartQA, DocVQA, TextVQA,
/// RealWorldQA, VQAv2.
const PUBLISHED: [(&str, &str); 9] = [
    ("mmmu", "58.7"),
    ("mathvista", "65.2"),
    ("ocrbench", "852"),
    ("ai2d", "94.2"),
    ("chartqa", "86.0"),
    ("docvqa", "92.6"),
    ("textvqa", "82.6"),
    ("realworldqa", "69.5"),
    ("vqav2", "85.4"),
];

fn report(files: &[PathBuf]) -> anyhow::Result<()> {
    if files.is_empty() {
        bail!("give one or more files with `nvlm eval score` output lines");
    }
    let mut rows: Vec<(String, String, String)> = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let value: Value = serde_json::from_str(line)
                .with_context(|| format!("{} line {}: not JSON", file.display(), i + 1))?;
            let task = value["task"]
                .as_str()
                .with_context(|| format!("{} line {}: no `task`", file.display(), i + 1))?;
            let score = match &value["score"] {
                Value::Number(n) if n.is_i64() => n.to_string(),
                Value::Number(n) => format!("{:.2}", n.as_f64().unwrap_or(f64::NAN)),
                _ => bail!("{} line {}: no `score`", file.display(), i + 1),
            };
            rows.push((task.to_string(), score, value["n"].to_string()));
        }
    }
    println!("| task | score | n | NVLM-D 1.0 72B (published) |");
    println!("|---|---|---|---|");
    for (task, score, n) in rows {
        let published = PUBLISHED.iter().find(|(t, _)| *t == task).map_or("-", |(_, p)| p);
        println!("| {task} | {score} | {n} | {published} |");
    }
    Ok(())
}

/// One benchmark sample: its id, question, image path, ground truth and extra scorer fields.
struct Sample {
    id: Value,
    /// The user turn, `<image>` placeholder and instruction included.
    prompt: String,
    image: PathBuf,
    gt: Value,
    extra: serde_json::Map<String, Value>,
}

const SHORT_ANSWER: &str = "Answer the question using a single word or phrase.";
const LETTER_ANSWER: &str = "Answer with the option's letter from the given choices directly.";

/// Letters `A, B, ...` for `n` options.
fn letters(n: usize) -> Vec<String> {
    (0..n).map(|i| char::from(b'A' + i as u8).to_string()).collect()
}

/// `(all_choices, index2ans)` scorer fields for a list of options.
fn choice_fields(options: &[String]) -> (Value, Value) {
    let letters = letters(options.len());
    let index2ans: serde_json::Map<String, Value> = letters
        .iter()
        .cloned()
        .zip(options.iter().map(|o| json!(o)))
        .collect();
    (json!(letters), Value::Object(index2ans))
}

fn string_list(v: &Value) -> Option<Vec<String>> {
    v.as_array().map(|items| {
        items
            .iter()
            .map(|o| o.as_str().map(str::to_string).unwrap_or_else(|| o.to_string()))
            .collect()
    })
}

fn load_samples(task: Task, dir: &Path) -> anyhow::Result<Vec<Sample>> {
    let (json_path, jsonl_path) = (dir.join("annotations.json"), dir.join("annotations.jsonl"));
    let records: Vec<Value> = if json_path.is_file() {
        match read_json(&json_path)? {
            Value::Array(items) => items,
            Value::Object(mut map) => match map.remove("data") {
                Some(Value::Array(items)) => items,
                _ => bail!(
                    "{}: expected a JSON list or {{\"data\": [...]}}",
                    json_path.display()
                ),
            },
            _ => bail!("{}: expected a JSON list", json_path.display()),
        }
    } else if jsonl_path.is_file() {
        let text = std::fs::read_to_string(&jsonl_path)?;
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
            .map(|(i, l)| {
                serde_json::from_str(l).with_context(|| format!("{} line {}", jsonl_path.display(), i + 1))
            })
            .collect::<anyhow::Result<_>>()?
    } else {
        bail!(
            "{} holds no annotations.json or annotations.jsonl (see the README for the {} layout)",
            dir.display(),
            task.name()
        );
    };
    let images = if dir.join("images").is_dir() {
        dir.join("images")
    } else {
        dir.to_path_buf()
    };
    let field = |r: &Value, i: usize, key: &str| -> anyhow::Result<Value> {
        r.get(key)
            .cloned()
            .with_context(|| format!("{} record {i}: no `{key}`", task.name()))
    };
    let text = |v: Value| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
    records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut extra = serde_json::Map::new();
            let short = |q: String| format!("<image>\n{q}\n{SHORT_ANSWER}");
            let plain = |q: String| format!("<image>\n{q}");
            let (id, prompt, image, gt) = match task {
                Task::Textvqa => {
                    let mut image = text(field(r, i, "image_id")?);
                    if !image.ends_with(".jpg") && !image.ends_with(".png") {
                        image.push_str(".jpg");
                    }
                    (
                        field(r, i, "question_id")?,
                        short(text(field(r, i, "question")?)),
                        image,
                        field(r, i, "answers")?,
                    )
                }
                Task::Vqav2 => (
                    field(r, i, "question_id")?,
                    short(text(field(r, i, "question")?)),
                    text(field(r, i, "image")?),
                    field(r, i, "answer")?,
                ),
                Task::Chartqa => (
                    json!(i),
                    short(text(field(r, i, "query")?)),
                    text(field(r, i, "imgname")?),
                    json!([text(field(r, i, "label")?)]),
                ),
                Task::Ai2d => (
                    field(r, i, "question_id")?,
                    plain(text(field(r, i, "question")?)),
                    text(field(r, i, "image")?),
                    json!([text(field(r, i, "answer")?)]),
                ),
                Task::Realworldqa => (
                    json!(i),
                    plain(text(field(r, i, "question")?)),
                    text(field(r, i, "image")?),
                    json!([text(field(r, i, "answer")?)]),
                ),
                Task::Docvqa | Task::Infovqa => (
                    field(r, i, "questionId")?,
                    short(text(field(r, i, "question")?)),
                    text(field(r, i, "image")?),
                    field(r, i, "answers")?,
                ),
                Task::Ocrbench => {
                    extra.insert("dataset_name".into(), field(r, i, "dataset_name")?);
                    extra.insert("data_type".into(), field(r, i, "type")?);
                    (
                        json!(i),
                        plain(text(field(r, i, "question")?)),
                        text(field(r, i, "image_path")?),
                        field(r, i, "answers")?,
                    )
                }
                Task::Mathvista => {
                    // MathVista's testmini.json records: multi_choice (choices, answer = the option text) or
                    // free_form (query).
                    let question_type = text(field(r, i, "question_type")?);
                    extra.insert("question_type".into(), json!(question_type));
                    let (prompt, gt) = if question_type == "multi_choice" {
                        let options = string_list(&field(r, i, "choices")?)
                            .with_context(|| format!("mathvista record {i}: `choices` is not a list"))?;
                        let answer = text(field(r, i, "answer")?);
                        let index = options.iter().position(|o| *o == answer).with_context(|| {
                            format!("mathvista record {i}: the answer is not one of the choices")
                        })?;
                        let listed: String = letters(options.len())
                            .iter()
                            .zip(&options)
                            .map(|(l, o)| format!("{l}. {o}\n"))
                            .collect();
                        let (all_choices, index2ans) = choice_fields(&options);
                        extra.insert("all_choices".into(), all_choices);
                        extra.insert("index2ans".into(), index2ans);
                        let question = text(field(r, i, "question")?);
                        (
                            plain(format!("{question}\n{listed}{LETTER_ANSWER}")),
                            letters(options.len())[index].clone(),
                        )
                    } else {
                        (
                            plain(text(field(r, i, "query")?).replace("Hint: ", "")),
                            text(field(r, i, "answer")?),
                        )
                    };
                    (
                        field(r, i, "pid")?,
                        prompt,
                        text(field(r, i, "image")?),
                        json!([gt]),
                    )
                }
                Task::Mmmu => {
                    // An MMMU validation export: id, question, options (list), answer, question_type, image.
                    let question_type = text(field(r, i, "question_type")?);
                    let question = text(field(r, i, "question")?);
                    let question = (1..8).fold(question, |q, k| q.replace(&format!("<image {k}>"), ""));
                    let prompt = if question_type == "multiple-choice" {
                        let options = string_list(&field(r, i, "options")?)
                            .with_context(|| format!("mmmu record {i}: `options` is not a list"))?;
                        let listed: String = letters(options.len())
                            .iter()
                            .zip(&options)
                            .map(|(l, o)| format!("({l}) {o}\n"))
                            .collect();
                        let (all_choices, index2ans) = choice_fields(&options);
                        extra.insert("all_choices".into(), all_choices);
                        extra.insert("index2ans".into(), index2ans);
                        plain(format!("{question}\n\n{listed}\n{LETTER_ANSWER}"))
                    } else {
                        plain(format!("{question}\n\n{SHORT_ANSWER}"))
                    };
                    let scored_type = if question_type == "multiple-choice" {
                        "multiple-choice"
                    } else {
                        "open"
                    };
                    extra.insert("question_type".into(), json!(scored_type));
                    extra.insert("gt_question_type".into(), json!(question_type));
                    (
                        field(r, i, "id")?,
                        prompt,
                        text(field(r, i, "image")?),
                        field(r, i, "answer")?,
                    )
                }
            };
            Ok(Sample {
                id,
                prompt,
                image: images.join(image),
                gt,
                extra,
            })
        })
        .collect()
}

/// The reference post-processing: the first paragraph, then its first line, trimmed.
fn first_line(answer: &str) -> String {
    let answer = answer.split("<|im_end|>").next().unwrap_or_default().trim();
    let answer = answer.split("\n\n").next().unwrap_or_default();
    answer.split('\n').next().unwrap_or_default().trim().to_string()
}

fn run_benchmark(args: &RunArgs) -> anyhow::Result<()> {
    let task = Task::from_name(&args.task)?;
    let mut samples = load_samples(task, &args.data)?;
    if let Some(limit) = args.limit {
        samples.truncate(limit);
    }
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}-predictions.jsonl", task.name())));
    let mut done: HashSet<String> = HashSet::new();
    if output.exists() {
        if !args.resume {
            bail!(
                "{} exists: pass --resume to continue it, or choose another --output",
                output.display()
            );
        }
        for line in std::fs::read_to_string(&output)?
            .lines()
            .filter(|l| !l.trim().is_empty())
        {
            let value: Value = serde_json::from_str(line)
                .with_context(|| format!("{}: a line is not JSON", output.display()))?;
            done.insert(value["sample_id"].to_string());
        }
    }
    let device = Device::parse(&args.model.device).context("choosing the device")?;
    crate::launched::refuse("eval")?;
    let engine = Engine::load(&args.model.source(), device)?;
    if engine.demo {
        eprintln!("{DEMO_NOTICE}");
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&output)
        .with_context(|| format!("opening {}", output.display()))?;
    let todo: Vec<&Sample> = samples
        .iter()
        .filter(|s| !done.contains(&s.id.to_string()))
        .collect();
    let bar = ProgressBar::new(todo.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {pos}/{len} samples [{bar:30}] ETA {eta}")
            .expect("template")
            .progress_chars("=> "),
    );
    // The reference's settings: greedy, 16 new tokens, system "Answer the questions.".
    let sampler = nvlm_qwen2::SamplerConfig::default();
    for sample in todo {
        let (tiles, n) = engine.tile(&sample.image)?;
        let user = &sample.prompt;
        let ids = engine
            .tokenizer
            .encode(&engine.chat_prompt(&SystemPrompt::Default, &[], user, &[n]))?;
        let rows = engine.image_rows(&tiles)?;
        let generation = engine.generate(&ids, rows.as_ref(), sampler.clone(), 16, false, |_| {
            ControlFlow::Continue(())
        })?;
        let answer = first_line(&engine.answer(&generation.tokens)?);
        let mut line = json!({ "sample_id": sample.id, "prompt": user, "gt_answer": sample.gt });
        line[task.answer_key()] = json!(answer);
        for (k, v) in sample.extra.iter().filter(|(k, _)| *k != "gt_question_type") {
            line[k] = v.clone();
        }
        writeln!(file, "{line}").with_context(|| format!("writing {}", output.display()))?;
        file.flush()?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let gt = if task == Task::Mmmu {
        // MMMU scores against an answer_dict.json; write one beside the predictions.
        let answers: serde_json::Map<String, Value> = samples
            .iter()
            .map(|s| {
                (
                    s.id.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| s.id.to_string()),
                    json!({ "question_type": s.extra["gt_question_type"], "ground_truth": s.gt }),
                )
            })
            .collect();
        let path = output.with_extension("answer_dict.json");
        std::fs::write(&path, serde_json::to_string_pretty(&Value::Object(answers))?)
            .with_context(|| format!("writing {}", path.display()))?;
        Some(read_json(&path)?)
    } else {
        None
    };
    let predictions = std::fs::read_to_string(&output)?;
    println!("{}", score_line(&score(task, &predictions, gt.as_ref())?, false));
    Ok(())
}
