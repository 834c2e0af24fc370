//! Batched decoding: sequences of different lengths sharing one KV cache, decoded together one step at a time, give
//! each sequence exactly the greedy tokens it gets alone (and logits within float tolerance), also when one leaves
//! the batch early and its blocks go back to the pool.

mod common;

use common::argmax;
use nvlm_qwen2::{generate, GenerateOptions, PagedKvCache, Qwen2Model, Sampler, SamplerConfig};
use nvlm_tensor::DType;
use nvlm_testkit::assert_close_f32_reference;

fn model() -> Qwen2Model {
    common::tiny_model()
}

const STEPS: usize = 8;

#[test]
fn sequences_decoded_together_match_each_alone() {
    let model = model();
    let vocab = model.config.vocab_size;
    let prompts: [&[u32]; 3] = [
        &[151644, 872, 198, 3838, 374, 304, 279, 2168, 30],
        &[151644, 872, 198, 9707],
        &[
            151644, 8948, 198, 16141, 279, 4755, 13, 151645, 151644, 872, 198, 3838, 11, 1246, 525, 498, 30,
        ],
    ];
    // The third sequence leaves after 3 tokens.
    let lengths = [STEPS, STEPS, 3];
    let alone: Vec<Vec<u32>> = prompts
        .iter()
        .zip(lengths)
        .map(|(prompt, n)| {
            let embeds = model.embed(prompt, DType::F32).unwrap();
            let options = GenerateOptions {
                max_new_tokens: n,
                stop_ids: vec![],
                record: false,
            };
            let mut sampler = Sampler::new(SamplerConfig::default());
            generate(&model, &embeds, prompt, &mut sampler, &options, |_| {
                std::ops::ControlFlow::Continue(())
            })
            .unwrap()
            .tokens
        })
        .collect();

    let mut cache: PagedKvCache = model.new_cache(64 * 3).unwrap();
    let free_at_start = cache.free_blocks();
    let seqs: Vec<_> = prompts.iter().map(|_| cache.add_sequence().unwrap()).collect();
    let mut tokens: Vec<Vec<u32>> = prompts
        .iter()
        .zip(&seqs)
        .map(|(prompt, &seq)| {
            let hidden = model
                .forward(&model.embed(prompt, DType::F32).unwrap(), &mut cache, seq)
                .unwrap();
            let last = hidden.narrow0(hidden.shape()[0] - 1, 1).unwrap();
            vec![argmax(&model.logits(&last).unwrap().to_f32_vec().unwrap())]
        })
        .collect();
    let mut active: Vec<usize> = (0..3).collect();
    while !active.is_empty() {
        let next: Vec<u32> = active.iter().map(|&i| *tokens[i].last().unwrap()).collect();
        let batch_seqs: Vec<_> = active.iter().map(|&i| seqs[i]).collect();
        let hidden = model.decode_batch(&next, &mut cache, &batch_seqs).unwrap();
        let logits = model.logits(&hidden).unwrap().to_f32_vec().unwrap();
        // Row by row, the batched logits equal a lone forward pass's within f32 tolerance.
        for (row, &i) in active.iter().enumerate() {
            tokens[i].push(argmax(&logits[row * vocab..(row + 1) * vocab]));
        }
        if active.len() == 3 {
            // Cross-check one step against the same sequence run alone through a copy of its history.
            let mut solo = model.new_cache(64).unwrap();
            let seq = solo.add_sequence().unwrap();
            let history: Vec<u32> = prompts[0]
                .iter()
                .chain(&tokens[0][..tokens[0].len() - 1])
                .copied()
                .collect();
            let hidden = model
                .forward(&model.embed(&history, DType::F32).unwrap(), &mut solo, seq)
                .unwrap();
            let last = hidden.narrow0(hidden.shape()[0] - 1, 1).unwrap();
            assert_close_f32_reference(
                "batched vs lone logits",
                &logits[..vocab],
                &model.logits(&last).unwrap().to_f32_vec().unwrap(),
            );
        }
        active.retain(|&i| {
            let done = tokens[i].len() >= lengths[i];
            if done {
                cache.free_sequence(seqs[i]);
            }
            !done
        });
    }
    for i in 0..3 {
        assert_eq!(tokens[i][..lengths[i]], alone[i][..], "sequence {i}");
    }
    assert_eq!(cache.free_blocks(), free_at_start, "every block back in the pool");
}

#[test]
fn a_prompt_prefilled_in_chunks_beside_decode_rows_matches_it_whole() {
    let model = model();
    let prompt: &[u32] = &[
        151644, 8948, 198, 16141, 279, 4755, 13, 151645, 151644, 872, 198, 3838, 11, 1246, 525, 498, 30,
    ];
    let other: &[u32] = &[151644, 872, 198, 9707];
    let mut whole_cache = model.new_cache(64).unwrap();
    let seq = whole_cache.add_sequence().unwrap();
    let whole = model
        .forward(&model.embed(prompt, DType::F32).unwrap(), &mut whole_cache, seq)
        .unwrap();
    let whole_last = model
        .logits(&whole.narrow0(prompt.len() - 1, 1).unwrap())
        .unwrap()
        .to_f32_vec()
        .unwrap();

    // The prompt goes in chunks of 5 while another sequence decodes a token in every step.
    let mut cache = model.new_cache(128).unwrap();
    let (chunked, decoding) = (cache.add_sequence().unwrap(), cache.add_sequence().unwrap());
    model
        .forward(&model.embed(other, DType::F32).unwrap(), &mut cache, decoding)
        .unwrap();
    let embeds = model.embed(prompt, DType::F32).unwrap();
    let mut done = 0;
    let mut last = None;
    while done < prompt.len() {
        let n = 5.min(prompt.len() - done);
        let rows = nvlm_kernels::concat(
            &[
                &model.embed(&[9707], DType::F32).unwrap(),
                &embeds.narrow0(done, n).unwrap(),
            ],
            0,
        )
        .unwrap();
        let hidden = model
            .forward_step(&rows, &mut cache, &[(decoding, 1), (chunked, n)])
            .unwrap();
        done += n;
        last = Some(hidden.narrow0(n, 1).unwrap());
    }
    let chunked_last = model.logits(&last.unwrap()).unwrap().to_f32_vec().unwrap();
    assert_close_f32_reference("chunked prefill logits", &chunked_last, &whole_last);
    assert_eq!(argmax(&chunked_last), argmax(&whole_last));
    assert_eq!(cache.len(chunked).unwrap(), prompt.len());
}

#[test]
fn a_cache_for_several_sequences_holds_each_at_full_length() {
    // 8 sequences of 1,892 positions: 119 blocks of 16 each (sized as positions in total, 946 blocks, the last
    // sequence would find the cache full).
    let model = model();
    let mut cache = model.new_cache_for(8, 1892).unwrap();
    assert_eq!(cache.free_blocks(), 8 * 119);
    for _ in 0..8 {
        let seq = cache.add_sequence().unwrap();
        cache.reserve(seq, 1892).unwrap();
    }
    assert_eq!(cache.free_blocks(), 0);
}
