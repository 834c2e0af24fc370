//! The `nvlm` binary as a user runs it: `preprocess` and `prompt` against the shared fixtures, and bad input that
//! must end in a clear error and a non-zero exit, never a panic or a partial output file.

use std::path::Path;
use std::process::{Command, Output};

use nvlm_testkit::{fixtures, scratch};
use sha2::{Digest, Sha256};

fn nvlm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nvlm"))
        .args(args)
        .output()
        .expect("running nvlm")
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn json_file(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn preprocess_prints_the_grid_and_writes_exact_tensors() {
    let case = fixtures().join("tiling/coffee_jpeg");
    let out = scratch("cli", "coffee.safetensors");
    let run = nvlm(&[
        "preprocess",
        "--image",
        case.join("input.jpg").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(
        String::from_utf8_lossy(&run.stdout).trim(),
        r#"{"grid":[3,2],"tiles":7,"width":600,"height":400}"#
    );
    let manifest = json_file(&case.join("manifest.json"));
    let bytes = std::fs::read(&out).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let tiles = file.tensor("tiles").unwrap();
    assert_eq!(
        (tiles.dtype(), tiles.shape()),
        (safetensors::Dtype::U8, &[7, 448, 448, 3][..])
    );
    for (i, tile) in tiles.data().chunks(448 * 448 * 3).enumerate() {
        assert_eq!(
            sha256(tile),
            manifest["tiles"][i]["sha256_rgb_bytes"].as_str().unwrap(),
            "tile {i}"
        );
    }
    let values = file.tensor("pixel_values").unwrap();
    assert_eq!(
        (values.dtype(), values.shape()),
        (safetensors::Dtype::F32, &[7, 3, 448, 448][..])
    );
    assert_eq!(
        sha256(values.data()),
        manifest["pixel_values_sha256_f32le"].as_str().unwrap()
    );
}

#[test]
fn preprocess_options_change_the_plan() {
    let image = fixtures().join("tiling/panorama_2000x120/input.png");
    let run = nvlm(&[
        "preprocess",
        "--image",
        image.to_str().unwrap(),
        "--max-tiles",
        "3",
        "--no-thumbnail",
    ]);
    assert!(run.status.success());
    assert_eq!(
        String::from_utf8_lossy(&run.stdout).trim(),
        r#"{"grid":[3,1],"tiles":3,"width":2000,"height":120}"#
    );
}

#[test]
fn prompt_reproduces_the_two_turn_fixture() {
    let case = json_file(&fixtures().join("tokenizer/prompts/chat_two_turn_history.json"));
    let history = scratch("cli", "history.json");
    std::fs::write(&history, case["history"].to_string()).unwrap();
    let tokenizer = fixtures().join("tokenizer/tokenizer.json");
    let run = nvlm(&[
        "prompt",
        "--tokenizer",
        tokenizer.to_str().unwrap(),
        "--image-tiles",
        "3",
        "--history",
        history.to_str().unwrap(),
        "--question",
        case["question"].as_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let printed: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(printed["text"], case["query"]);
    assert_eq!(printed["input_ids"], case["input_ids"]);

    // A smaller model's geometry (the demo's 64 image tokens a tile): the same prompt with 3 x 64 pads.
    let run = nvlm(&[
        "prompt",
        "--tokenizer",
        tokenizer.to_str().unwrap(),
        "--image-tiles",
        "3",
        "--image-tokens-per-tile",
        "64",
        "--question",
        "hi",
    ]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let printed: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let pads = printed["input_ids"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|&id| id == 151_654)
        .count();
    assert_eq!(pads, 3 * 64);
}

/// Runs a failing command: non-zero exit, an `error:` line, no panic.
fn expect_clean_failure(args: &[&str], needle: &str) {
    let run = nvlm(args);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "{args:?} succeeded");
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    assert!(
        stderr.contains(needle),
        "{args:?}: expected `{needle}` in: {stderr}"
    );
}

#[test]
fn bad_inputs_fail_cleanly_without_partial_outputs() {
    let good = std::fs::read(fixtures().join("tiling/coffee_jpeg/input.jpg")).unwrap();
    let png = std::fs::read(fixtures().join("tiling/rocket/input.png")).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty.png", Vec::new(), "empty"),
        ("truncated.jpg", good[..good.len() / 2].to_vec(), "truncated"),
        ("truncated.png", png[..png.len() / 2].to_vec(), "PNG"),
        (
            "text.png",
            b"not an image at all".to_vec(),
            "unsupported image format",
        ),
        ("anim.gif", b"GIF89a\x01\x00\x01\x00".to_vec(), "GIF"),
    ];
    for (name, bytes, needle) in cases {
        let path = scratch("cli", name);
        std::fs::write(&path, bytes).unwrap();
        let out = scratch("cli", &format!("{name}.safetensors"));
        expect_clean_failure(
            &[
                "preprocess",
                "--image",
                path.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
            needle,
        );
        assert!(!out.exists(), "{name}: an output file was left behind");
    }
    let missing = scratch("cli", "does-not-exist.png");
    expect_clean_failure(
        &["preprocess", "--image", missing.to_str().unwrap()],
        "cannot read image",
    );
    let image = fixtures().join("tiling/coffee_jpeg/input.jpg");
    expect_clean_failure(
        &[
            "preprocess",
            "--image",
            image.to_str().unwrap(),
            "--max-pixels",
            "1000",
        ],
        "decompression bomb",
    );
    expect_clean_failure(
        &[
            "preprocess",
            "--image",
            image.to_str().unwrap(),
            "--max-tiles",
            "0",
        ],
        "tile counts",
    );
    let unwritable = "/nonexistent-folder/out.safetensors";
    expect_clean_failure(
        &[
            "preprocess",
            "--image",
            image.to_str().unwrap(),
            "--out",
            unwritable,
        ],
        "error:",
    );
    expect_clean_failure(
        &[
            "prompt",
            "--tokenizer",
            "/nonexistent/tokenizer.json",
            "--question",
            "hi",
        ],
        "file not found",
    );
    let bad_history = scratch("cli", "bad-history.json");
    std::fs::write(&bad_history, r#"{"not": "a list"}"#).unwrap();
    let tokenizer = fixtures().join("tokenizer/tokenizer.json");
    let tok = tokenizer.to_str().unwrap();
    expect_clean_failure(
        &[
            "prompt",
            "--tokenizer",
            tok,
            "--history",
            bad_history.to_str().unwrap(),
            "--question",
            "q",
        ],
        "history",
    );
    expect_clean_failure(
        &[
            "prompt",
            "--tokenizer",
            tok,
            "--image-tiles",
            "0",
            "--question",
            "q",
        ],
        "at least one tile",
    );
}
