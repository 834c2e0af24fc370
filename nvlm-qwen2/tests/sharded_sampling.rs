//! Sampling over a vocabulary split across ranks: the candidate exchange draws the token the whole-vocabulary
//! sampler draws (top-k always; top-p whenever the candidates reach it), and says when it cannot decide.

use nvlm_dist::{Comm, ThreadGroup};
use nvlm_kernels::{validate::random_values, SamplingParams};
use nvlm_qwen2::{Sampler, SamplerConfig};
use nvlm_tensor::Tensor;

const VOCAB: usize = 6000;

/// Per draw: the whole-vocabulary token, and each rank's sharded answer (`None`: gather the logits).
fn draws(params: SamplingParams, ranks: usize, spread: f32) -> Vec<(u32, Vec<Option<u32>>)> {
    (0..20u64)
        .map(|draw| {
            let logits: Vec<f32> = random_values(100 + draw, VOCAB)
                .iter()
                .map(|v| v * spread)
                .collect();
            let config = SamplerConfig {
                params,
                repetition_penalty: 1.0,
            };
            // Step `draw` of the sequence: advance a fresh sampler to it with whole-vocabulary draws.
            let at_step = || {
                let mut sampler = Sampler::new(config.clone());
                let warm = Tensor::from_vec(logits.clone(), &[VOCAB]).unwrap();
                for _ in 0..draw {
                    sampler.next(&warm, &[]).unwrap();
                }
                sampler
            };
            let whole = at_step()
                .next(&Tensor::from_vec(logits.clone(), &[VOCAB]).unwrap(), &[])
                .unwrap();
            let shard = VOCAB / ranks;
            let sharded = std::thread::scope(|scope| {
                let handles: Vec<_> = ThreadGroup::new(ranks)
                    .into_iter()
                    .map(|comm| {
                        let (logits, mut sampler) = (&logits, at_step());
                        scope.spawn(move || {
                            let first = comm.rank() * shard;
                            let local =
                                Tensor::from_vec(logits[first..first + shard].to_vec(), &[1, shard]).unwrap();
                            sampler.next_sampled_sharded(&local, &[], first, &comm).unwrap()
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            (whole, sharded)
        })
        .collect()
}

#[test]
fn top_k_candidates_draw_the_whole_vocabulary_token() {
    let params = SamplingParams {
        temperature: 0.9,
        top_k: 40,
        top_p: 0.95,
        seed: 3,
    };
    for ranks in [2, 4] {
        for (i, (whole, sharded)) in draws(params, ranks, 4.0).into_iter().enumerate() {
            assert!(
                sharded.iter().all(|s| *s == Some(whole)),
                "TP={ranks} draw {i}: {whole} vs {sharded:?}"
            );
        }
    }
}

#[test]
fn top_p_candidates_decide_when_they_reach_top_p() {
    // Peaked logits: the top-p set is a handful of tokens, well inside 1024 candidates a rank.
    let params = SamplingParams {
        temperature: 0.7,
        top_k: 0,
        top_p: 0.9,
        seed: 5,
    };
    for (i, (whole, sharded)) in draws(params, 2, 30.0).into_iter().enumerate() {
        assert!(
            sharded.iter().all(|s| *s == Some(whole)),
            "draw {i}: {whole} vs {sharded:?}"
        );
    }
    // Flat logits: the top-p set is wider than the candidates; every rank says so.
    for (i, (_, sharded)) in draws(params, 2, 0.01).into_iter().enumerate() {
        assert!(sharded.iter().all(Option::is_none), "draw {i}: {sharded:?}");
    }
}

#[test]
fn temperature_alone_gathers_the_logits() {
    let params = SamplingParams {
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        seed: 1,
    };
    for (_, sharded) in draws(params, 2, 4.0) {
        assert!(sharded.iter().all(Option::is_none));
    }
}
