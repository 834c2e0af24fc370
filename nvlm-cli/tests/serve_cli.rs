//! `nvlm serve` as a client sees it, on 127.0.0.1: health and models, the API key, a chat answer equal to
//! `nvlm generate`'s for the same prompt, streaming equal to non-streaming, an image request, stop strings, batching,
//! cancellation, and bad requests answered with the right 4xx and an OpenAI-style body while the server keeps
//! serving. Most tests serve the random-weight fixture model (`../shared/fixtures/model/tiny-nvlm-d`), which never
//! ends its answers early, so long generations stay long; one asks the embedded demo model a question it knows.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use base64::Engine as _;
use nvlm_testkit::tiny_model_args;
use serde_json::{json, Value};

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const KEY: &str = "test-key";

fn start() -> Server {
    start_with(&[])
}

/// A server for the fixture model with `extra` arguments.
fn start_with(extra: &[&str]) -> Server {
    let mut args = tiny_model_args();
    args.extend(extra.iter().map(|s| s.to_string()));
    launch(&args)
}

fn launch(extra: &[String]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nvlm"))
        .args(["serve", "--port", "0", "--api-key", KEY, "--max-new-tokens", "8"])
        .args(extra)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("starting nvlm serve");
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let base = loop {
        let line = lines.next().expect("nvlm serve exited before listening").unwrap();
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Server { child, base }
}

/// (status, body) of a request; `key` adds the bearer token.
fn call(server: &Server, method: &str, path: &str, body: Option<&str>, key: bool) -> (u16, String) {
    let mut request = ureq::request(method, &format!("{}{path}", server.base));
    if key {
        request = request.set("Authorization", &format!("Bearer {KEY}"));
    }
    let result = match body {
        Some(body) => request.set("Content-Type", "application/json").send_string(body),
        None => request.call(),
    };
    match result {
        Ok(response) => (response.status(), response.into_string().unwrap()),
        Err(ureq::Error::Status(code, response)) => (code, response.into_string().unwrap()),
        Err(e) => panic!("{method} {path}: {e}"),
    }
}

fn chat(server: &Server, request: Value) -> (u16, Value) {
    let (status, body) = call(
        server,
        "POST",
        "/v1/chat/completions",
        Some(&request.to_string()),
        true,
    );
    (
        status,
        serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body}")),
    )
}

/// Text and final chunk of a streamed answer; checks the `[DONE]` terminator.
fn streamed(server: &Server, mut request: Value) -> (String, Value) {
    request["stream"] = json!(true);
    let (status, body) = call(
        server,
        "POST",
        "/v1/chat/completions",
        Some(&request.to_string()),
        true,
    );
    assert_eq!(status, 200, "{body}");
    let events: Vec<&str> = body.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
    assert_eq!(events.last(), Some(&"[DONE]"), "{body}");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let text = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect::<String>();
    (text, chunks.last().unwrap().clone())
}

/// A chat request asking about `assets/coffee.jpg`, sent as a data: URL.
fn coffee_question(max_tokens: usize) -> Value {
    let image = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/coffee.jpg")).unwrap();
    let url = format!(
        "data:image/jpeg;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(image)
    );
    json!({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is in the image?"},
        {"type": "image_url", "image_url": {"url": url}},
    ]}], "max_tokens": max_tokens})
}

fn generate_text(prompt: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_nvlm"))
        .args(["generate", "--prompt", prompt, "--max-new-tokens", "8", "--json"])
        .args(tiny_model_args())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    json["text"].as_str().unwrap().to_string()
}

#[test]
fn serves_chat_completions_like_the_cli_streaming_or_not() {
    let server = start();
    assert_eq!(call(&server, "GET", "/health", None, false).0, 200);
    let (status, body) = call(&server, "GET", "/v1/models", None, false);
    assert_eq!(status, 401, "no key: {body}");
    let (status, body) = call(&server, "GET", "/v1/models", None, true);
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["data"][0]["id"],
        "nvlm-d"
    );

    // Greedy text-only answer: the same as `nvlm generate` for the same prompt.
    let request =
        json!({"model": "nvlm-d", "messages": [{"role": "user", "content": "Describe a cup of coffee."}]});
    let (status, answer) = chat(&server, request.clone());
    assert_eq!(status, 200, "{answer}");
    let text = answer["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(text, generate_text("Describe a cup of coffee."));
    assert_eq!(answer["usage"]["completion_tokens"], 8);
    assert_eq!(answer["choices"][0]["finish_reason"], "length");

    // Streaming gives the same text, then a final chunk with the finish reason and usage.
    let (streamed_text, last) = streamed(&server, request.clone());
    assert_eq!(streamed_text, text);
    assert_eq!(last["choices"][0]["finish_reason"], "length");
    assert_eq!(last["usage"], answer["usage"]);

    // A stop string cuts the answer before it, streamed or not.
    let cut = text.chars().skip(2).take(2).collect::<String>();
    if !cut.trim().is_empty() {
        let mut stopping = request.clone();
        stopping["stop"] = json!([cut.clone()]);
        let (_, stopped) = chat(&server, stopping.clone());
        let stopped_text = stopped["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(stopped_text, text[..text.find(&cut).unwrap()]);
        assert_eq!(stopped["choices"][0]["finish_reason"], "stop");
        assert_eq!(streamed(&server, stopping).0, stopped_text);
    }

    // An image as a data: URL: 7 tiles of 256 image tokens in the prompt.
    let image_request = coffee_question(2);
    let (status, answer) = chat(&server, image_request.clone());
    assert_eq!(status, 200, "{answer}");
    // The same image again: its embeddings come from the cache, the answer is the same.
    let (_, again) = chat(&server, image_request);
    assert_eq!(again["choices"], answer["choices"]);
    assert!(
        answer["usage"]["prompt_tokens"].as_u64().unwrap() > 7 * 256,
        "{answer}"
    );
    // Plain completions: the raw prompt, streamed or not, the same text.
    let plain = json!({"prompt": "The capital of France is", "max_tokens": 5});
    let (status, body) = call(&server, "POST", "/v1/completions", Some(&plain.to_string()), true);
    assert_eq!(status, 200, "{body}");
    let whole: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(whole["object"], "text_completion");
    assert_eq!(whole["usage"]["completion_tokens"], 5);
    let mut plain_stream = plain.clone();
    plain_stream["stream"] = json!(true);
    let (_, body) = call(
        &server,
        "POST",
        "/v1/completions",
        Some(&plain_stream.to_string()),
        true,
    );
    let streamed_plain: String = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|e| *e != "[DONE]")
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|c| c["choices"][0]["text"].as_str().map(String::from))
        .collect();
    assert_eq!(streamed_plain, whole["choices"][0]["text"].as_str().unwrap());

    // Metrics count what happened; the worker updates its gauges before a client hears its answer is done.
    let (status, metrics) = call(&server, "GET", "/metrics", None, false);
    assert_eq!(status, 200);
    for needle in [
        "nvlm_requests_total{endpoint=\"/v1/chat/completions\",status=\"200\"}",
        "nvlm_requests_total{endpoint=\"/v1/completions\",status=\"200\"} 2",
        "nvlm_time_to_first_token_seconds_count",
        "nvlm_queue_depth 0",
        "nvlm_running_requests 0",
        "nvlm_image_cache_hits_total 1",
        "nvlm_image_cache_misses_total 1",
    ] {
        assert!(metrics.contains(needle), "{needle} missing from\n{metrics}");
    }
    let completion_tokens: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("nvlm_completion_tokens_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(completion_tokens >= 8 + 8 + 2 + 2 + 10, "{completion_tokens}");
}

#[test]
fn a_full_queue_answers_429_with_retry_after() {
    // One request at a time (no batching), so a queue of 1 fills.
    let server = start_with(&["--max-queue", "1", "--max-batch", "1"]);
    let base = server.base.clone();
    // One request runs, one waits in the queue of 1; of the others, at least one finds it full.
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let url = format!("{base}/v1/chat/completions");
            std::thread::spawn(move || {
                let body = json!({"messages": [{"role": "user", "content": "Tell me a long story."}], "max_tokens": 48});
                match ureq::post(&url)
                    .set("Authorization", &format!("Bearer {KEY}"))
                    .send_string(&body.to_string())
                {
                    Ok(response) => (response.status(), None),
                    Err(ureq::Error::Status(code, response)) => (code, response.header("Retry-After").map(String::from)),
                    Err(e) => panic!("{e}"),
                }
            })
        })
        .collect();
    let results: Vec<(u16, Option<String>)> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    assert!(results.iter().any(|(status, _)| *status == 200), "{results:?}");
    assert!(
        results
            .iter()
            .any(|(status, retry)| *status == 429 && retry.as_deref() == Some("1")),
        "{results:?}"
    );
    assert!(
        results.iter().all(|(status, _)| *status == 200 || *status == 429),
        "{results:?}"
    );
}

/// A PNG whose header declares `side` x `side` pixels (and holds no pixel data): a decompression bomb's header.
fn png_header(side: u32) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    for (kind, data) in [
        (
            &b"IHDR"[..],
            [&side.to_be_bytes()[..], &side.to_be_bytes(), &[8, 2, 0, 0, 0]].concat(),
        ),
        (&b"IEND"[..], Vec::new()),
    ] {
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let body = [kind, &data].concat();
        png.extend_from_slice(&body);
        png.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
    }
    png
}

#[test]
fn bad_requests_get_openai_errors_and_the_server_keeps_serving() {
    let server = start();
    let bomb = format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(png_header(50_000))
    );
    let not_image = format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(b"hello")
    );
    let cases: Vec<(&str, String, u16)> = vec![
        ("bad JSON", "{not json".into(), 400),
        ("no messages", json!({"messages": []}).to_string(), 400),
        ("unknown model", json!({"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}).to_string(), 404),
        (
            "not an image",
            json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": not_image}}]}]})
                .to_string(),
            400,
        ),
        (
            "an image over the pixel limit",
            json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": bomb}}]}]})
                .to_string(),
            400,
        ),
        (
            "network image",
            json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]})
                .to_string(),
            400,
        ),
        (
            "local image without --allow-local-images",
            json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "/etc/passwd"}}]}]})
                .to_string(),
            400,
        ),
        (
            "over the context",
            json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1_000_000}).to_string(),
            400,
        ),
    ];
    for (what, body, want) in cases {
        let (status, reply) = call(&server, "POST", "/v1/chat/completions", Some(&body), true);
        assert_eq!(status, want, "{what}: {reply}");
        let reply: Value =
            serde_json::from_str(&reply).unwrap_or_else(|_| panic!("{what}: not JSON: {reply}"));
        assert!(
            reply["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {reply}"
        );
    }
    let (status, _) = chat(
        &server,
        json!({"messages": [{"role": "user", "content": "still there?"}], "max_tokens": 1}),
    );
    assert_eq!(status, 200);
}

fn gauge(server: &Server, name: &str) -> i64 {
    let (_, metrics) = call(server, "GET", "/metrics", None, false);
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} missing"))
        .parse()
        .unwrap()
}

/// Waits (up to 20 s) for a gauge to reach `value` (for work that ends without an answer, like a cancellation).
fn settle(server: &Server, name: &str, value: i64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let now = gauge(server, name);
        if now == value {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name} stayed at {now}, expected {value}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn a_client_that_disconnects_cancels_its_request() {
    use std::io::Read;
    let server = start();
    let body = json!({"messages": [{"role": "user", "content": "Count to a million."}], "max_tokens": 4000, "stream": true});
    let response = ureq::post(&format!("{}/v1/chat/completions", server.base))
        .set("Authorization", &format!("Bearer {KEY}"))
        .send_string(&body.to_string())
        .unwrap();
    let mut reader = response.into_reader();
    let mut first = [0u8; 64];
    reader.read_exact(&mut first).unwrap();
    assert_eq!(
        gauge(&server, "nvlm_running_requests"),
        1,
        "the request is running"
    );
    drop(reader);
    // 4000 tokens would take minutes; the cancelled request must stop within seconds.
    settle(&server, "nvlm_running_requests", 0);
    let (status, _) = chat(
        &server,
        json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}),
    );
    assert_eq!(status, 200, "the server serves the next request");
}

fn rss_kib(server: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id())).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn load_of_64_requests_from_16_clients_loses_none_and_returns_memory() {
    let server = start();
    // Warm up (first allocations), then measure the idle level.
    let warm = json!({"messages": [{"role": "user", "content": "warm up"}], "max_tokens": 4});
    assert_eq!(chat(&server, warm).0, 200);
    let idle = rss_kib(&server);
    let base = server.base.clone();
    let clients: Vec<_> =
        (0..16)
            .map(|client| {
                let base = base.clone();
                std::thread::spawn(move || {
                    (0..4)
                    .map(|i| {
                        let wanted = 1 + (client + i) % 4;
                        let body = json!({
                            "messages": [{"role": "user", "content": format!("client {client} request {i}")}],
                            "max_tokens": wanted,
                            "stream": i % 2 == 0,
                        });
                        let reply = ureq::post(&format!("{base}/v1/chat/completions"))
                            .set("Authorization", &format!("Bearer {KEY}"))
                            .timeout(std::time::Duration::from_secs(120))
                            .send_string(&body.to_string())
                            .unwrap_or_else(|e| panic!("client {client} request {i}: {e}"));
                        assert_eq!(reply.status(), 200);
                        let text = reply.into_string().unwrap();
                        let id = if i % 2 == 0 {
                            let first = text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
                            assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
                            serde_json::from_str::<Value>(first).unwrap()["id"].as_str().unwrap().to_string()
                        } else {
                            let whole: Value = serde_json::from_str(&text).unwrap();
                            assert!(whole["usage"]["completion_tokens"].as_u64().unwrap() <= wanted as u64);
                            whole["id"].as_str().unwrap().to_string()
                        };
                        id
                    })
                    .collect::<Vec<String>>()
                })
            })
            .collect();
    let mut ids: Vec<String> = clients.into_iter().flat_map(|c| c.join().unwrap()).collect();
    assert_eq!(ids.len(), 64, "every request answered");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 64, "no answer given twice");
    let (_, metrics) = call(&server, "GET", "/metrics", None, false);
    assert!(
        metrics.contains("nvlm_requests_total{endpoint=\"/v1/chat/completions\",status=\"200\"} 65"),
        "{metrics}"
    );
    assert_eq!(gauge(&server, "nvlm_queue_depth"), 0);
    let after = rss_kib(&server);
    assert!(
        idle == 0 || after <= idle * 3 / 2 + 64 * 1024,
        "memory did not return near its idle level: {idle} KiB idle, {after} KiB after the load"
    );
    println!("RSS: {idle} KiB idle, {after} KiB after 64 requests");
}

fn counter(server: &Server, name: &str) -> u64 {
    gauge(server, name) as u64
}

#[test]
fn requests_decoded_together_answer_as_they_do_alone() {
    decoded_together_matches_alone(&[]);
}

/// The same on a CUDA device (the CUDA emulator in CI: `cargo xtask cuda-emu`): continuous batching over the
/// device's paged KV cache and batched decode kernels. Skipped without CUDA.
#[test]
fn on_cuda_requests_decoded_together_answer_as_they_do_alone() {
    if !nvlm_tensor::cuda_available() {
        assert!(
            std::env::var("NVLM_REQUIRE_GPU").as_deref() != Ok("1"),
            "NVLM_REQUIRE_GPU=1 but no CUDA device is usable"
        );
        println!("skipped: no CUDA device");
        return;
    }
    decoded_together_matches_alone(&["--device", "cuda"]);
}

/// Six requests sent at once (sharing decode steps) get the greedy answers they get one by one, on a server started
/// with `extra` arguments; every KV block comes back.
fn decoded_together_matches_alone(extra: &[&str]) {
    let server = start_with(extra);
    let requests: Vec<Value> = (0..6)
        .map(|i| {
            json!({
                "messages": [{"role": "user", "content": format!("Question number {i}: {}", "why? ".repeat(i * 3))}],
                "max_tokens": 6 + 3 * i,
            })
        })
        .collect();
    // All at once: they share decode steps.
    let base = server.base.clone();
    let together: Vec<Value> = requests
        .iter()
        .cloned()
        .map(|request| {
            let url = format!("{base}/v1/chat/completions");
            std::thread::spawn(move || {
                let reply = ureq::post(&url)
                    .set("Authorization", &format!("Bearer {KEY}"))
                    .send_string(&request.to_string())
                    .unwrap();
                serde_json::from_str::<Value>(&reply.into_string().unwrap()).unwrap()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let (steps, rows) = (
        counter(&server, "nvlm_batch_steps_total"),
        counter(&server, "nvlm_batch_rows_total"),
    );
    assert!(
        rows > steps,
        "requests were decoded together: {rows} rows in {steps} steps"
    );
    // Then one by one: the same greedy answers.
    for (i, request) in requests.into_iter().enumerate() {
        let (status, alone) = chat(&server, request);
        assert_eq!(status, 200);
        assert_eq!(
            together[i]["choices"][0]["message"], alone["choices"][0]["message"],
            "request {i}"
        );
        assert_eq!(together[i]["usage"], alone["usage"], "request {i}");
    }
    assert_eq!(
        gauge(&server, "nvlm_kv_blocks_used"),
        0,
        "every KV block returned"
    );
    assert!(gauge(&server, "nvlm_kv_blocks_total") > 0);
}

#[test]
fn requests_wait_for_kv_blocks_instead_of_failing() {
    // 16 blocks of 16 positions: two requests of ~8 blocks fit at a time; the others wait their turn.
    let server = start_with(&["--kv-cache-tokens", "256"]);
    let base = server.base.clone();
    let clients: Vec<_> = (0..4)
        .map(|i| {
            let url = format!("{base}/v1/chat/completions");
            std::thread::spawn(move || {
                let body = json!({"messages": [{"role": "user", "content": format!("story {i}")}], "max_tokens": 100});
                ureq::post(&url)
                    .set("Authorization", &format!("Bearer {KEY}"))
                    .send_string(&body.to_string())
                    .map(|r| r.status())
                    .unwrap_or_else(|e| panic!("request {i}: {e}"))
            })
        })
        .collect();
    for client in clients {
        assert_eq!(client.join().unwrap(), 200);
    }
    assert_eq!(gauge(&server, "nvlm_kv_blocks_used"), 0);
    let (status, reply) = chat(
        &server,
        json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1000}),
    );
    assert_eq!(status, 400, "a request that can never fit is refused: {reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--kv-cache-tokens"),
        "{reply}"
    );
}

#[test]
fn prompts_prefilled_in_small_chunks_give_the_same_answers() {
    let chunked = start_with(&["--prefill-chunk", "7"]);
    let request = json!({"messages": [{"role": "user", "content": "Describe a cup of coffee."}]});
    let (status, answer) = chat(&chunked, request);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["choices"][0]["message"]["content"].as_str().unwrap(),
        generate_text("Describe a cup of coffee.")
    );
    // An image prompt (about 1850 positions) in chunks of 7 beside another request decoding.
    let image_request = coffee_question(4);
    let base = chunked.base.clone();
    let background = std::thread::spawn(move || {
        let body = json!({"messages": [{"role": "user", "content": "Tell me a story."}], "max_tokens": 64});
        ureq::post(&format!("{base}/v1/chat/completions"))
            .set("Authorization", &format!("Bearer {KEY}"))
            .send_string(&body.to_string())
            .map(|r| r.status())
            .unwrap()
    });
    let (_, chunked_answer) = chat(&chunked, image_request.clone());
    assert_eq!(background.join().unwrap(), 200);
    let whole = start();
    let (_, whole_answer) = chat(&whole, image_request);
    assert_eq!(chunked_answer["choices"], whole_answer["choices"]);
    assert_eq!(chunked_answer["usage"], whole_answer["usage"]);
}

#[test]
fn the_embedded_demo_model_answers_about_an_image() {
    let server = launch(&[]);
    let image = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/shapes.png")).unwrap();
    let url = format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(image)
    );
    let ask = |question: &str| {
        let request = json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": url}},
            {"type": "text", "text": question},
        ]}]});
        let (status, answer) = chat(&server, request);
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["choices"][0]["finish_reason"], "stop", "{answer}");
        answer["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(ask("What colour is the square?"), "Yellow.");
    assert_eq!(ask("How many shapes are there?"), "3.");
}
