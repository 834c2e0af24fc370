//! Every prompt of `shared/fixtures/tokenizer/prompts` (made by calling HF NVLM-D's `chat()` unchanged): exact text
//! and exact ids, through our template, the tile-tag expansion of `nvlm-tiling` and the tokenizer.

use nvlm_qwen2::{build_prompt, SystemPrompt, Tokenizer, IMAGE_CONTEXT_TOKEN_ID, IM_END_TOKEN_ID};
use nvlm_testkit::fixtures;
use nvlm_tiling::prompt::{expand_images, with_image_placeholder, IMAGE_TOKENS_PER_TILE};
use serde_json::Value;

fn prompt_case(name: &str) -> Value {
    let path = fixtures().join("tokenizer/prompts").join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn tokenizer() -> Tokenizer {
    Tokenizer::from_file(&fixtures().join("tokenizer/tokenizer.json")).unwrap()
}

fn ids(case: &Value) -> Vec<u32> {
    case["input_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect()
}

fn history(case: &Value) -> Vec<(String, String)> {
    case["history"]
        .as_array()
        .map(|turns| {
            turns
                .iter()
                .map(|t| {
                    (
                        t[0].as_str().unwrap().to_string(),
                        t[1].as_str().unwrap().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// What `chat()` builds, with our pieces.
fn our_query(system: &SystemPrompt, case: &Value) -> String {
    let tiles: Vec<usize> = case["num_patches_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap() as usize)
        .collect();
    let history = history(case);
    let question = with_image_placeholder(
        case["question"].as_str().unwrap(),
        tiles.len(),
        !history.is_empty(),
    );
    expand_images(
        &build_prompt(system, &history, &question),
        &tiles,
        IMAGE_TOKENS_PER_TILE,
    )
}

#[test]
fn prompts_with_the_default_system_reproduce_text_and_ids() {
    let tok = tokenizer();
    for name in [
        "chat_single_image.json",
        "chat_two_turn_history.json",
        "chat_text_only.json",
    ] {
        let case = prompt_case(name);
        let query = our_query(&SystemPrompt::Default, &case);
        assert_eq!(query, case["query"].as_str().unwrap(), "{name}: prompt text");
        let got = tok.encode(&query).unwrap();
        assert_eq!(got, ids(&case), "{name}: token ids");
        assert_eq!(got.len() as u64, case["num_input_ids"].as_u64().unwrap());
        let image_ids = got.iter().filter(|&&t| t == IMAGE_CONTEXT_TOKEN_ID).count();
        assert_eq!(
            image_ids as u64,
            case["num_img_context_ids"].as_u64().unwrap(),
            "{name}: image tokens"
        );
    }
}

#[test]
fn no_system_turn_is_the_intended_prompt_not_upstreams_slicing_bug() {
    // Upstream's chat_without_sys_prompt cuts the wrong number of characters and leaves
    // "ssistant.<|im_end|><|im_end|>" in front of the user turn. We build the intended prompt: no system turn.
    let case = prompt_case("chat_without_sys_prompt.json");
    let ours = our_query(&SystemPrompt::None, &case);
    assert!(ours.starts_with("<|im_start|>user\n<Image><tile_global_thumbnail><|vision_pad|>"));
    let bug_prefix = "ssistant.<|im_end|><|im_end|>";
    assert_eq!(
        format!("{bug_prefix}{ours}"),
        case["query"].as_str().unwrap(),
        "only the buggy fragment differs"
    );
    let tok = tokenizer();
    let got = tok.encode(&ours).unwrap();
    let upstream = ids(&case);
    assert_eq!(
        &upstream[..5],
        &[778, 11202, 13, IM_END_TOKEN_ID, IM_END_TOKEN_ID]
    );
    assert_eq!(
        got,
        upstream[5..].to_vec(),
        "our ids are upstream's without the fragment"
    );
}

#[test]
fn custom_system_and_special_tokens() {
    let prompt = build_prompt(&SystemPrompt::Custom("Be brief.".into()), &[], "Hi");
    assert_eq!(
        prompt,
        "<|im_start|>system\nBe brief.<|im_end|><|im_start|>user\nHi<|im_end|><|im_start|>assistant\n"
    );
    let tok = tokenizer();
    assert_eq!(tok.token_id("<|im_end|>"), Some(IM_END_TOKEN_ID));
    assert_eq!(tok.token_id("<|vision_pad|>"), Some(IMAGE_CONTEXT_TOKEN_ID));
    assert_eq!(tok.vocab_size(), 151665);
    let ids = tok.encode("Hello, who are you?").unwrap();
    assert_eq!(tok.decode(&ids, true).unwrap(), "Hello, who are you?");
    assert!(Tokenizer::from_file(std::path::Path::new("/nonexistent/tokenizer.json")).is_err());
}
