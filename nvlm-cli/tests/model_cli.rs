//! `nvlm generate` and `nvlm chat` as users run them: the reference greedy ids through the CLI on the tiny NVLM-D
//! fixture (prompt ids and tiles from the HF reference run), `--dump`, the embedded demo model answering the README's
//! question, piped chat.

use nvlm_testkit::{fixtures, scratch, ReferenceActivations as Reference};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn nvlm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nvlm"))
        .args(args)
        .output()
        .expect("running nvlm")
}

fn model_args() -> Vec<String> {
    nvlm_testkit::tiny_model_args()
}

#[test]
fn generate_reproduces_the_reference_greedy_ids_from_ids_and_tiles() {
    let reference = Reference::open();
    let ids = reference.ids_file("f32.image.input_ids", "model-cli", "image-ids.json");
    // Tiles as `preprocess --out` writes them.
    let tiles = reference.tiles_file("model-cli", "tiles.safetensors");
    // Whole, and split over 2 and 4 tensor-parallel ranks (threads on the CPU): the same reference ids.
    for tp in ["1", "2", "4"] {
        let mut args = vec!["generate".to_string()];
        args.extend(model_args());
        args.extend(
            [
                "--input-ids",
                ids.to_str().unwrap(),
                "--tiles",
                tiles.to_str().unwrap(),
                "--max-new-tokens",
                "12",
                "--tp",
                tp,
                "--json",
            ]
            .map(String::from),
        );
        let out = nvlm(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(
            out.status.success(),
            "--tp {tp}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let got: Vec<u64> = json["token_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(got, reference.ids("f32.image.generated_ids"), "--tp {tp}");
        assert_eq!(json["prompt_tokens"], 809);
        assert_eq!(json["tiles"], serde_json::json!([3]));
        for key in [
            "preprocess_ms",
            "vision_ms",
            "prefill_ms",
            "decode_ms",
            "tokens_per_s",
        ] {
            assert!(json["timings"][key].is_number(), "timings.{key}");
        }
    }
}

#[test]
fn dump_holds_hidden_states_and_logits_of_every_position() {
    let reference = Reference::open();
    let ids = reference.ids_file("f32.text.input_ids", "model-cli", "text-ids.json");
    let prompt = reference.ids("f32.text.input_ids");
    let dump = scratch("model-cli", "dump.safetensors");
    let mut args = vec!["generate".to_string()];
    args.extend(model_args());
    args.extend(
        [
            "--input-ids",
            ids.to_str().unwrap(),
            "--max-new-tokens",
            "4",
            "--json",
            "--dump",
            dump.to_str().unwrap(),
        ]
        .map(String::from),
    );
    let out = nvlm(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bytes = std::fs::read(&dump).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (hidden, logits) = (
        file.tensor("hidden_states").unwrap(),
        file.tensor("logits").unwrap(),
    );
    let rows = prompt.len() + 3; // the prompt, then one row per fed-back token
    assert_eq!(hidden.shape(), &[rows, 32]);
    assert_eq!(logits.shape(), &[rows, 152064]);
    // The prompt's last 4 logit rows equal the reference's within the f32 tolerance.
    let ours: Vec<f32> = logits
        .data()
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let want = reference.f32s("f32.text.logits_last");
    let got = &ours[(prompt.len() - 4) * 152064..prompt.len() * 152064];
    let max_abs = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(max_abs <= 2e-3, "logits differ by {max_abs}");
}

/// `path` widened to three times its width with its own background colour, the picture in the middle, as PNG.
fn write_wide_copy(path: &std::path::Path, out: &std::path::Path) {
    let image = nvlm_tiling::load_rgb(path, 1 << 26).unwrap();
    let (w, h) = (image.width, image.height);
    let background = [image.pixels[0], image.pixels[1], image.pixels[2]];
    let mut pixels: Vec<u8> = background.iter().copied().cycle().take(3 * w * h * 3).collect();
    for y in 0..h {
        let (src, dst) = (y * w * 3, (y * 3 * w + w) * 3);
        pixels[dst..dst + w * 3].copy_from_slice(&image.pixels[src..src + w * 3]);
    }
    let mut encoder = png::Encoder::new(std::fs::File::create(out).unwrap(), (3 * w) as u32, h as u32);
    encoder.set_color(png::ColorType::Rgb);
    encoder.write_header().unwrap().write_image_data(&pixels).unwrap();
}

#[test]
fn the_embedded_model_answers_the_readme_question_and_chats_from_a_pipe() {
    let shapes = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../assets/shapes.png");
    let out = nvlm(&[
        "generate",
        "--image",
        shapes.to_str().unwrap(),
        "--prompt",
        "What colour is the square?",
        "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("embedded demonstration model"));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["text"], "Yellow.", "{json}");
    assert_eq!(
        json["tiles"],
        serde_json::json!([1]),
        "565x588 is one tile (1:1 grid, under 2x2's area threshold)"
    );
    assert_eq!(
        json["prompt_tokens"],
        64 + 5 + 4 + 21,
        "64 image tokens and a 5-id tag, <Image>/</Image>, and the 21 ids of the template and question"
    );
    // A wide copy of the picture is tiled 3x1 + thumbnail and still answered (the demo saw 1 to 7 tiles).
    let wide = nvlm_testkit::scratch("model-cli", "shapes-wide.png");
    write_wide_copy(&shapes, &wide);
    let out = nvlm(&[
        "generate",
        "--image",
        wide.to_str().unwrap(),
        "--prompt",
        "How many shapes are there?",
        "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (json["text"].as_str(), json["tiles"].clone()),
        (Some("3."), serde_json::json!([4])),
        "{json}"
    );

    // The README's main command: the question piped into `chat`, then more turns.
    let mut child = Command::new(env!("CARGO_BIN_EXE_nvlm"))
        .args(["chat", "--image", shapes.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let script = "What colour is the square?\nHow many shapes are there?\n/reset\nHow many sides does a square have?\n/quit\n";
    child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The follow-up is asked with the picture in the history, as the demo was trained to answer it.
    let answers: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(answers, ["Yellow.", "3.", "4."], "{stderr}");
    assert!(
        stderr.contains("[1 tile, 94 prompt tokens"),
        "the image counts in the first turn: {stderr}"
    );
    assert!(stderr.contains("[conversation reset]"));
    assert!(stderr.contains("[0 tiles,"), "after /reset: {stderr}");
}

#[test]
fn model_errors_are_clear() {
    let missing = nvlm(&["generate", "--model", "/nonexistent/model", "--prompt", "hi"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("does not exist"));
    let no_tokenizer = nvlm(&[
        "generate",
        "--model",
        fixtures().join("model/tiny-nvlm-d").to_str().unwrap(),
        "--prompt",
        "hi",
    ]);
    assert!(String::from_utf8_lossy(&no_tokenizer.stderr).contains("--tokenizer"));
    let mut uneven = vec!["generate".to_string()];
    uneven.extend(model_args());
    uneven.extend(["--prompt", "hi", "--tp", "3"].map(String::from));
    let uneven = nvlm(&uneven.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!uneven.status.success());
    let stderr = String::from_utf8_lossy(&uneven.stderr);
    assert!(
        stderr.contains("--tp 3") && stderr.contains("tensor parallelism 3"),
        "{stderr}"
    );
    let cuda = nvlm(&["generate", "--device", "cuda", "--prompt", "hi"]);
    assert!(!cuda.status.success());
    let stderr = String::from_utf8_lossy(&cuda.stderr);
    assert!(
        !stderr.contains("panicked") && stderr.contains("error:"),
        "{stderr}"
    );
}

#[test]
fn generate_runs_straight_from_a_megatron_checkpoint() {
    let reference = Reference::open();
    let ids = reference.ids_file("f32.text.input_ids", "model-cli", "megatron-ids.json");
    let out = nvlm(&[
        "generate",
        "--model",
        fixtures().join("megatron/torch_dist").to_str().unwrap(),
        "--config",
        fixtures().join("model/tiny-nvlm-d/config.json").to_str().unwrap(),
        "--tokenizer",
        fixtures().join("tokenizer/tokenizer.json").to_str().unwrap(),
        "--input-ids",
        ids.to_str().unwrap(),
        "--max-new-tokens",
        "12",
        "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let got: Vec<u64> = json["token_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(got, reference.ids("f32.text.generated_ids"));
}

#[test]
fn multi_process_launches_that_cannot_run_say_why() {
    // Under torchrun/Slurm variables: `generate` on the CPU (processes drive GPUs), `chat` (one process only).
    for (args, expect) in [
        (
            vec!["generate", "--prompt", "hi", "--max-new-tokens", "1"],
            "--device cuda",
        ),
        (vec!["chat"], "--tp N"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_nvlm"))
            .args(&args)
            .env("WORLD_SIZE", "2")
            .env("RANK", "1")
            .output()
            .expect("running nvlm");
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("rank 1 of 2") && stderr.contains(expect),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn selftest_on_the_cpu_checks_the_ops_and_the_tensor_parallel_path() {
    let out = Command::new(env!("CARGO_BIN_EXE_nvlm"))
        .args(["selftest", "--device", "cpu"])
        .output()
        .expect("running nvlm");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("checks on cpu passed"), "{stdout}");
    for name in ["greedy", "top-k", "top-p", "temperature"] {
        assert!(
            stdout.contains(&format!("thread group of one, {name}: the same 12 tokens")),
            "{name}: {stdout}"
        );
    }
    assert!(stdout.contains("tensor-parallel vision tower"), "{stdout}");
}
