//! Decode steps replayed from CUDA graphs give the steps run op by op: three sequences of different lengths decoded
//! together for 40 steps (crossing KV blocks, their inputs rewritten before every replay), one leaving after 12 (a
//! second batch shape, captured anew), and the context of one crossing the 256-key bucket (a third shape). Greedy
//! tokens must be identical and hidden states within bf16 rounding (the two paths split attention over the context
//! differently). Runs on a CUDA device: the CUDA emulator in CI, a GPU in the bundle; skipped without one.

mod common;

use nvlm_qwen2::{PagedKvCache, Qwen2Model, SequenceId};
use nvlm_tensor::{cuda_available, DType, Device, Tensor};

fn cuda_model() -> Option<Qwen2Model> {
    if !cuda_available() {
        if std::env::var("NVLM_REQUIRE_GPU").as_deref() == Ok("1") {
            panic!("NVLM_REQUIRE_GPU=1 but no CUDA device is usable");
        }
        println!("skipped: no CUDA device");
        return None;
    }
    let (weights, config) = common::tiny_weights_and_config();
    Some(Qwen2Model::load(&weights, "language_model.", &config, Device::cuda(0).unwrap()).unwrap())
}

/// Greedy next tokens of final-normed hidden states `[B, H]`.
fn greedy(model: &Qwen2Model, hidden: &Tensor) -> Vec<u32> {
    let logits = model.logits(hidden).unwrap().to_f32_vec().unwrap();
    logits
        .chunks(model.config.vocab_size)
        .map(common::argmax)
        .collect()
}

/// Prefills `prompts` into a fresh cache; returns it, the sequences and each one's first token.
fn prefill(model: &Qwen2Model, prompts: &[Vec<u32>]) -> (PagedKvCache, Vec<SequenceId>, Vec<u32>) {
    let mut cache = model.new_cache_for(prompts.len(), 400).unwrap();
    let mut seqs = Vec::new();
    let mut first = Vec::new();
    for prompt in prompts {
        let seq = cache.add_sequence().unwrap();
        let hidden = model
            .forward(&model.embed(prompt, DType::BF16).unwrap(), &mut cache, seq)
            .unwrap();
        first.push(greedy(model, &hidden.narrow0(prompt.len() - 1, 1).unwrap())[0]);
        seqs.push(seq);
    }
    (cache, seqs, first)
}

/// Greedy tokens of `steps` decode steps of the three-token prompt, alone.
fn decode_alone(model: &Qwen2Model, steps: usize) -> Vec<u32> {
    let (mut cache, seqs, first) = prefill(model, &[vec![151644, 872, 198, 9707]]);
    let mut tokens = vec![first[0]];
    for _ in 0..steps {
        let hidden = model
            .decode_batch(&tokens[tokens.len() - 1..], &mut cache, &seqs)
            .unwrap();
        tokens.push(greedy(model, &hidden)[0]);
    }
    tokens
}

/// Where the driver cannot capture (here the emulator told to fail every capture), decoding goes on op by op.
#[test]
fn a_failed_capture_falls_back_to_op_by_op_steps() {
    if std::env::var("DECODE_GRAPHS_CHILD").is_ok() {
        let model = cuda_model().unwrap();
        let with = decode_alone(&model, 6);
        println!("CAPTURED {}", model.decode_graphs_captured());
        model.set_decode_graphs(false);
        assert_eq!(with, decode_alone(&model, 6), "the fallback changed the tokens");
        println!("FALLBACK-OK");
        return;
    }
    if cuda_model().is_none() {
        return;
    }
    let name = nvlm_tensor::CudaDevice::get(0).unwrap().context().name().unwrap();
    if !name.contains("emulator") {
        println!("skipped: only the CUDA emulator can be told to fail captures");
        return;
    }
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "a_failed_capture_falls_back_to_op_by_op_steps",
            "--exact",
            "--nocapture",
        ])
        .env("DECODE_GRAPHS_CHILD", "1")
        .env("NVLM_CUDA_EMU_FAIL_CAPTURE", "1")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&child.stdout),
        String::from_utf8_lossy(&child.stderr),
    );
    assert!(child.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("CAPTURED 0") && stdout.contains("FALLBACK-OK"),
        "{stdout}"
    );
    assert!(stderr.contains("decoding op by op"), "no warning: {stderr}");
}

#[test]
fn graph_replays_decode_as_the_op_by_op_steps() {
    let Some(model) = cuda_model() else { return };
    let prompts: Vec<Vec<u32>> = vec![
        vec![151644, 872, 198, 3838, 374, 304, 279, 2168, 30],
        vec![151644, 872, 198, 9707],
        // Long enough that decoding crosses 256 positions: a new context bucket mid-run.
        (0..230).map(|i| 100 + (i * 37) % 5000).collect(),
    ];
    const STEPS: usize = 40;
    const LEAVES_AFTER: usize = 12; // the second sequence
    let run = |graphs: bool| -> (Vec<Vec<u32>>, Vec<Vec<f32>>) {
        model.set_decode_graphs(graphs);
        let (mut cache, seqs, first) = prefill(&model, &prompts);
        let mut next = first;
        let mut tokens = vec![Vec::new(); prompts.len()];
        let mut hiddens = Vec::new();
        let mut live: Vec<usize> = (0..prompts.len()).collect();
        for step in 0..STEPS {
            if step == LEAVES_AFTER {
                live.retain(|&i| i != 1);
            }
            let ids: Vec<u32> = live.iter().map(|&i| next[i]).collect();
            let batch: Vec<SequenceId> = live.iter().map(|&i| seqs[i]).collect();
            let hidden = model.decode_batch(&ids, &mut cache, &batch).unwrap();
            for (row, token) in greedy(&model, &hidden).into_iter().enumerate() {
                tokens[live[row]].push(ids[row]);
                next[live[row]] = token;
            }
            hiddens.push(hidden.to_f32_vec().unwrap());
        }
        (tokens, hiddens)
    };
    let (eager_tokens, eager_hidden) = run(false);
    assert_eq!(
        model.decode_graphs_captured(),
        0,
        "graphs captured while turned off"
    );
    let (graph_tokens, graph_hidden) = run(true);
    // Shapes: 3 rows below 256 keys, 2 rows below 256, 2 rows below 512 (each captured at its second step).
    assert_eq!(model.decode_graphs_captured(), 3, "graph shapes captured");
    assert_eq!(
        graph_tokens, eager_tokens,
        "greedy tokens differ between graph replays and op-by-op steps"
    );
    for (step, (g, e)) in graph_hidden.iter().zip(&eager_hidden).enumerate() {
        let rms = (e.iter().map(|v| v * v).sum::<f32>() / e.len() as f32).sqrt();
        let worst = g.iter().zip(e).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(
            worst <= rms / 32.0,
            "step {step}: hidden states differ by {worst} (rms {rms})"
        );
    }
}
