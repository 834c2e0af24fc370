//! The embedded demo model end to end on its held-out test set (`assets/demo-task/test`): images tiled by our
//! preprocessing, prompts built by our template and tokenizer, the vision tower, projector, splice, Qwen2, greedy
//! decoding and detokenisation, all on the CPU. It must give the same greedy answer as the PyTorch model the training
//! script evaluated (recorded in `test.jsonl`) on every item, and so reach the same accuracy, which must be at least
//! [`MIN_ACCURACY`].

use std::ops::ControlFlow;
use std::path::PathBuf;

use nvlm_qwen2::{SamplerConfig, SystemPrompt};
use nvlm_tensor::Device;
use nvlm_tiling::prompt::with_image_placeholder;
use sha2::{Digest, Sha256};

use crate::engine::{Engine, ModelSource};

const EOS: u32 = 151_645;

/// The accuracy the committed demo model must keep: the demo task's goal, 95%. The committed model answers 199/200
/// (99.5%): every question of every kind but one "how many shapes are there?" (47/48), including all 43 "what colour
/// is the <shape>?" and all 42 "which shape is on the left/right?" (see `scripts/demo_model/README.md`).
const MIN_ACCURACY: f64 = 0.95;

fn test_set() -> (PathBuf, Vec<serde_json::Value>) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../assets/demo-task/test");
    let text = std::fs::read_to_string(dir.join("test.jsonl"))
        .unwrap_or_else(|e| panic!("reading {}/test.jsonl: {e}", dir.display()));
    let items = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("test.jsonl lines are JSON"))
        .collect();
    (dir, items)
}

fn digest(ids: &[u32]) -> String {
    let bytes: Vec<u8> = ids.iter().flat_map(|id| id.to_le_bytes()).collect();
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn the_demo_model_answers_its_held_out_test_set_as_pytorch_does() {
    let source = ModelSource {
        model: None,
        tokenizer: None,
        config: None,
        tensor_parallel: 1,
    };
    let engine = Engine::load(&source, Device::Cpu).unwrap();
    let (dir, items) = test_set();
    let (mut correct, mut differ) = (0, Vec::new());
    let mut by_kind = std::collections::BTreeMap::<String, (usize, usize)>::new();
    let mut tile_counts_seen = std::collections::BTreeSet::new();
    for item in &items {
        let question = item["question"].as_str().unwrap();
        let (tiles, counts) = match item["image"].as_str() {
            Some(name) => {
                let (tiles, n) = engine.tile(&dir.join(name)).unwrap();
                (tiles, vec![n])
            }
            None => (Vec::new(), Vec::new()),
        };
        assert_eq!(
            counts.first().copied().unwrap_or(0) as u64,
            item["tiles"],
            "{item}"
        );
        tile_counts_seen.extend(counts.iter().copied());
        let question = with_image_placeholder(question, counts.len(), false);
        let prompt = engine.chat_prompt(&SystemPrompt::Default, &[], &question, &counts);
        let ids = engine.tokenizer.encode(&prompt).unwrap();
        assert_eq!(ids.len() as u64, item["prompt_len"], "prompt length of {item}");
        assert_eq!(digest(&ids), item["prompt_sha256"], "prompt ids of {item}");
        let rows = engine.image_rows(&tiles).unwrap();
        let generation = engine
            .generate(&ids, rows.as_ref(), SamplerConfig::default(), 16, false, |_| {
                ControlFlow::Continue(())
            })
            .unwrap();
        let answer = engine.answer(&generation.tokens).unwrap();
        let ours: Vec<u64> = generation
            .tokens
            .iter()
            .map(|&t| t as u64)
            .filter(|&t| t != EOS as u64)
            .collect();
        let pytorch: Vec<u64> = item["pytorch_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_u64().unwrap())
            .filter(|&t| t != EOS as u64)
            .collect();
        if ours != pytorch || answer != item["pytorch_answer"] {
            differ.push(format!(
                "item {}: ours {answer:?} {ours:?}, PyTorch {}",
                item["id"], item["pytorch_answer"]
            ));
        }
        correct += usize::from(answer == item["answer"]);
        let kind = by_kind
            .entry(item["kind"].as_str().unwrap_or("?").to_string())
            .or_default();
        *kind = (kind.0 + usize::from(answer == item["answer"]), kind.1 + 1);
    }
    assert!(items.len() >= 100, "the test set has {} items", items.len());
    assert!(
        differ.is_empty(),
        "greedy answers differ from PyTorch's:\n{}",
        differ.join("\n")
    );
    let accuracy = correct as f64 / items.len() as f64;
    println!(
        "demo model: {correct}/{} exact ({:.1}%), by kind {by_kind:?}, tile counts {tile_counts_seen:?}",
        items.len(),
        100.0 * accuracy
    );
    assert!(
        accuracy >= MIN_ACCURACY,
        "accuracy {:.1}% is under {:.1}% (by kind: {by_kind:?})",
        100.0 * accuracy,
        100.0 * MIN_ACCURACY
    );
    for n in [1, 3, 4, 5, 6, 7] {
        assert!(
            tile_counts_seen.contains(&n),
            "no test image has {n} tiles: {tile_counts_seen:?}"
        );
    }
}
