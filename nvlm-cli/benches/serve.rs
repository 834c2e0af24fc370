//! `nvlm serve` throughput and latency on 127.0.0.1 with the random-weight fixture model (the embedded demo's
//! geometry before it was trained; it never ends an answer early, so every request decodes its 32 tokens): output
//! tokens per second and p50/p99 time to first token under 1 (sequential), 4 and 16 concurrent streaming clients. Plain harness:
//! `cargo bench -p nvlm-cli --bench serve` (part of `cargo xtask bench`).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const NEW_TOKENS: usize = 32;

fn start() -> (std::process::Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nvlm"))
        .args(["serve", "--port", "0", "--max-queue", "256"])
        .args(nvlm_testkit::tiny_model_args())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("starting nvlm serve");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let base = loop {
        let line = lines.next().expect("nvlm serve exited").unwrap();
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, base)
}

/// One streamed request: (time to first token, completion tokens).
fn request(base: &str, n: usize) -> (Duration, usize) {
    let body = serde_json::json!({
        "messages": [{"role": "user", "content": format!("Request {n}: describe a cup of coffee in detail.")}],
        "max_tokens": NEW_TOKENS,
        "stream": true,
    });
    let start = Instant::now();
    let reply = ureq::post(&format!("{base}/v1/chat/completions"))
        .send_string(&body.to_string())
        .expect("request");
    let mut first = None;
    let mut tokens = 0;
    for line in BufReader::new(reply.into_reader()).lines() {
        let line = line.unwrap();
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            break;
        }
        let chunk: serde_json::Value = serde_json::from_str(data).unwrap();
        if chunk["choices"][0]["delta"]["content"].is_string() && first.is_none() {
            first = Some(start.elapsed());
        }
        if let Some(n) = chunk["usage"]["completion_tokens"].as_u64() {
            tokens = n as usize;
        }
    }
    (first.unwrap_or_else(|| start.elapsed()), tokens)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

fn main() {
    let (mut child, base) = start();
    request(&base, 0); // warm-up
    println!(
        "nvlm serve, embedded model, {NEW_TOKENS} new tokens per request, streaming clients on 127.0.0.1"
    );
    println!("| clients | requests | output tok/s | TTFT p50 ms | TTFT p99 ms |");
    println!("|---|---|---|---|---|");
    for clients in [1usize, 4, 16] {
        let per_client = if clients == 1 { 8 } else { 4 };
        let start = Instant::now();
        let threads: Vec<_> = (0..clients)
            .map(|c| {
                let base = base.clone();
                std::thread::spawn(move || {
                    (0..per_client)
                        .map(|i| request(&base, c * 100 + i))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let results: Vec<(Duration, usize)> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
        let wall = start.elapsed().as_secs_f64();
        let tokens: usize = results.iter().map(|r| r.1).sum();
        let mut ttft: Vec<Duration> = results.iter().map(|r| r.0).collect();
        ttft.sort();
        println!(
            "| {clients} | {} | {:.1} | {:.0} | {:.0} |",
            results.len(),
            tokens as f64 / wall,
            percentile(&ttft, 0.5),
            percentile(&ttft, 0.99)
        );
    }
    let _ = child.kill();
    let _ = child.wait();
}
