//! Qwen2 against the HF NVLM-D reference activations (`shared/fixtures/model`): image-row splice, hidden states,
//! logits and greedy ids for the image and text cases; and prefill + decode through the KV cache equals recompute.

mod common;

use common::argmax;
use nvlm_checkpoint::SafetensorsCheckpoint;
use nvlm_kernels::SamplingParams;
use nvlm_qwen2::{
    generate, GenerateOptions, Qwen2Config, Qwen2Model, Sampler, SamplerConfig, IM_END_TOKEN_ID,
};
use nvlm_tensor::{DType, Device, Tensor};
use nvlm_testkit::{assert_close_f32_reference, fixtures};

struct Reference(SafetensorsCheckpoint);

impl Reference {
    fn open() -> Reference {
        Reference(
            SafetensorsCheckpoint::open(&fixtures().join("model/reference/activations.safetensors")).unwrap(),
        )
    }
    fn f32s(&self, name: &str) -> Vec<f32> {
        self.0
            .bytes(name)
            .unwrap()
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }
    fn ids(&self, name: &str) -> Vec<u32> {
        self.0
            .bytes(name)
            .unwrap()
            .chunks(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32)
            .collect()
    }
    fn shape(&self, name: &str) -> Vec<usize> {
        self.0.tensors()[name].shape.iter().map(|&d| d as usize).collect()
    }
}

fn model() -> Qwen2Model {
    common::tiny_model()
}

fn check_case(case: &str) {
    let (model, reference) = (model(), Reference::open());
    let ids = reference.ids(&format!("f32.{case}.input_ids"));
    let image_rows = (case == "image").then(|| {
        let shape = reference.shape("f32.image.mlp1_out");
        Tensor::from_vec(
            reference.f32s("f32.image.mlp1_out"),
            &[shape[0] * shape[1], shape[2]],
        )
        .unwrap()
    });
    let embeds = model
        .embed_multimodal(&ids, image_rows.as_ref(), DType::F32)
        .unwrap();
    assert_close_f32_reference(
        &format!("{case}: inputs_embeds"),
        &embeds.to_f32_vec().unwrap(),
        &reference.f32s(&format!("f32.{case}.inputs_embeds")),
    );

    // One forward pass over the prompt: final-normed hidden states, logits of the last positions, argmax per position.
    let mut cache = model.new_cache(ids.len()).unwrap();
    let seq = cache.add_sequence().unwrap();
    let s = ids.len();
    let all_hidden = reference.f32s(&format!("f32.{case}.llm_hidden_states"));
    // llm_hidden_states: [embeddings, after layer 0, final-normed output]; layer 1's raw output is not recorded.
    let hidden = model
        .forward_traced(&embeds, &mut cache, seq, |layer, h| {
            if layer == 0 {
                assert_close_f32_reference(
                    &format!("{case}: after layer 0"),
                    &h.to_f32_vec().unwrap(),
                    &all_hidden[s * 32..2 * s * 32],
                );
            }
        })
        .unwrap();
    assert_close_f32_reference(
        &format!("{case}: final hidden states"),
        &hidden.to_f32_vec().unwrap(),
        &all_hidden[2 * s * 32..],
    );
    let logits = model.logits(&hidden).unwrap().to_f32_vec().unwrap();
    let vocab = model.config.vocab_size;
    let last = reference.shape(&format!("f32.{case}.logits_last"))[0];
    assert_close_f32_reference(
        &format!("{case}: logits_last"),
        &logits[(s - last) * vocab..],
        &reference.f32s(&format!("f32.{case}.logits_last")),
    );
    let argmaxes: Vec<u32> = logits.chunks(vocab).map(argmax).collect();
    assert_eq!(
        argmaxes,
        reference.ids(&format!("f32.{case}.logits_argmax")),
        "{case}: argmax at every position"
    );

    // Greedy generation through the KV cache gives the reference ids.
    let mut sampler = Sampler::new(SamplerConfig::default());
    let options = GenerateOptions {
        max_new_tokens: 12,
        stop_ids: vec![IM_END_TOKEN_ID],
        record: false,
    };
    let generation = generate(&model, &embeds, &ids, &mut sampler, &options, |_| {
        std::ops::ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(
        generation.tokens,
        reference.ids(&format!("f32.{case}.generated_ids")),
        "{case}: greedy ids"
    );
}

#[test]
fn image_case_matches_the_reference() {
    check_case("image");
}

#[test]
fn text_case_matches_the_reference() {
    check_case("text");
}

#[test]
fn kv_cache_decode_equals_full_recompute() {
    let (model, reference) = (model(), Reference::open());
    let ids = reference.ids("f32.text.input_ids");
    let embeds = model.embed(&ids, DType::F32).unwrap();
    let options = GenerateOptions {
        max_new_tokens: 8,
        stop_ids: vec![],
        record: true,
    };
    // Sampling (not greedy) makes the check sensitive to every logit, not only the top one.
    let params = SamplingParams {
        temperature: 0.8,
        top_k: 50,
        top_p: 0.95,
        seed: 11,
    };
    let mut sampler = Sampler::new(SamplerConfig {
        params,
        repetition_penalty: 1.1,
    });
    let cached = generate(&model, &embeds, &ids, &mut sampler, &options, |_| {
        std::ops::ControlFlow::Continue(())
    })
    .unwrap();
    let (_, cached_logits) = cached.recorded.unwrap();
    let cached_logits = cached_logits.to_f32_vec().unwrap();
    let vocab = model.config.vocab_size;
    // Recompute: for each step, run the whole sequence so far through a fresh cache.
    let mut sequence = ids.clone();
    for (step, &token) in cached.tokens.iter().enumerate().take(options.max_new_tokens - 1) {
        sequence.push(token);
        let mut cache = model.new_cache(sequence.len()).unwrap();
        let seq = cache.add_sequence().unwrap();
        let hidden = model
            .forward(&model.embed(&sequence, DType::F32).unwrap(), &mut cache, seq)
            .unwrap();
        let full = model
            .logits(&hidden.narrow0(sequence.len() - 1, 1).unwrap())
            .unwrap()
            .to_f32_vec()
            .unwrap();
        let row = ids.len() + step;
        assert_close_f32_reference(
            &format!("step {step}"),
            &cached_logits[row * vocab..(row + 1) * vocab],
            &full,
        );
    }
    // The same seed gives the same tokens.
    let mut again = Sampler::new(SamplerConfig {
        params,
        repetition_penalty: 1.1,
    });
    let options = GenerateOptions {
        record: false,
        ..options
    };
    let repeat = generate(&model, &embeds, &ids, &mut again, &options, |_| {
        std::ops::ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(repeat.tokens, cached.tokens);
}

#[test]
fn loading_errors_name_the_problem() {
    let dir = fixtures().join("model/tiny-nvlm-d");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let weights = SafetensorsCheckpoint::open(&dir).unwrap();
    config["llm_config"]["intermediate_size"] = 96.into();
    let err = Qwen2Model::load(
        &weights,
        "language_model.",
        &Qwen2Config::from_json(&config, true).unwrap(),
        Device::Cpu,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("language_model.model.layers.0.mlp.gate_proj.weight") && err.contains("[80, 32]"),
        "{err}"
    );
    let err = Qwen2Model::load(
        &weights,
        "no_such_prefix.",
        &Qwen2Config::from_json(&config, true).unwrap(),
        Device::Cpu,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("no_such_prefix.model.embed_tokens.weight"), "{err}");
    config["llm_config"]["architectures"] = serde_json::json!(["MistralForCausalLM"]);
    let err = Qwen2Config::from_json(&config, true).unwrap_err().to_string();
    assert!(err.contains("MistralForCausalLM"), "{err}");
}
