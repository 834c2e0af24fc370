//! Server metrics in the Prometheus text format: requests by endpoint and status, tokens, time to first token and
//! inter-token latency histograms, queue depth and running requests.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Latency bucket bounds in seconds.
const BOUNDS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A cumulative histogram of durations.
#[derive(Default)]
struct Histogram {
    /// Per-bucket counts (the last is +Inf), total seconds, observations.
    state: Mutex<([u64; BOUNDS.len() + 1], f64, u64)>,
}

impl Histogram {
    fn observe(&self, value: Duration) {
        let seconds = value.as_secs_f64();
        let bucket = BOUNDS.iter().position(|&b| seconds <= b).unwrap_or(BOUNDS.len());
        if let Ok(mut state) = self.state.lock() {
            state.0[bucket] += 1;
            state.1 += seconds;
            state.2 += 1;
        }
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let Ok(state) = self.state.lock() else { return };
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, count) in state.0.iter().enumerate() {
            cumulative += count;
            let le = BOUNDS.get(i).map_or("+Inf".to_string(), |b| b.to_string());
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_sum {}\n{name}_count {}", state.1, state.2);
    }
}

/// Everything `/metrics` reports.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    prompt_tokens: AtomicU64,
    image_cache_hits: AtomicU64,
    image_cache_misses: AtomicU64,
    completion_tokens: AtomicU64,
    /// Requests waiting for the worker.
    pub queue_depth: AtomicI64,
    /// Requests being generated.
    pub running: AtomicI64,
    batch_steps: AtomicU64,
    batch_rows: AtomicU64,
    /// KV cache blocks of the batch scheduler.
    pub kv_blocks_total: AtomicI64,
    /// KV cache blocks held by running requests.
    pub kv_blocks_used: AtomicI64,
    time_to_first_token: Histogram,
    inter_token_latency: Histogram,
}

impl Metrics {
    /// Counts one answered request.
    pub fn request(&self, endpoint: &'static str, status: u16) {
        if let Ok(mut requests) = self.requests.lock() {
            *requests.entry((endpoint, status)).or_default() += 1;
        }
    }

    /// Counts a finished generation's tokens.
    pub fn tokens(&self, prompt: usize, completion: usize) {
        self.prompt_tokens.fetch_add(prompt as u64, Ordering::Relaxed);
        self.completion_tokens
            .fetch_add(completion as u64, Ordering::Relaxed);
    }

    /// Counts an image served from the embedding cache (`hit`) or through the vision tower.
    pub fn image_cache(&self, hit: bool) {
        let counter = if hit {
            &self.image_cache_hits
        } else {
            &self.image_cache_misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one batched decode step over `rows` requests.
    pub fn batch_step(&self, rows: usize) {
        self.batch_steps.fetch_add(1, Ordering::Relaxed);
        self.batch_rows.fetch_add(rows as u64, Ordering::Relaxed);
    }

    /// Records the time from queueing to a request's first token.
    pub fn first_token(&self, after: Duration) {
        self.time_to_first_token.observe(after);
    }

    /// Records the time between two tokens of one request.
    pub fn next_token(&self, after: Duration) {
        self.inter_token_latency.observe(after);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP nvlm_requests_total Answered requests by endpoint and HTTP status.\n");
        out.push_str("# TYPE nvlm_requests_total counter\n");
        if let Ok(requests) = self.requests.lock() {
            for ((endpoint, status), count) in requests.iter() {
                let _ = writeln!(
                    out,
                    "nvlm_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}} {count}"
                );
            }
        }
        for (name, help, value) in [
            (
                "nvlm_prompt_tokens_total",
                "Prompt tokens of finished requests.",
                self.prompt_tokens.load(Ordering::Relaxed) as i64,
            ),
            (
                "nvlm_completion_tokens_total",
                "Generated tokens of finished requests.",
                self.completion_tokens.load(Ordering::Relaxed) as i64,
            ),
            (
                "nvlm_image_cache_hits_total",
                "Images whose embeddings came from the cache.",
                self.image_cache_hits.load(Ordering::Relaxed) as i64,
            ),
            (
                "nvlm_image_cache_misses_total",
                "Images run through the vision tower.",
                self.image_cache_misses.load(Ordering::Relaxed) as i64,
            ),
            (
                "nvlm_batch_steps_total",
                "Batched decode steps.",
                self.batch_steps.load(Ordering::Relaxed) as i64,
            ),
            (
                "nvlm_batch_rows_total",
                "Requests decoded, summed over batched steps (divided by the steps: the mean batch size).",
                self.batch_rows.load(Ordering::Relaxed) as i64,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
        }
        for (name, help, value) in [
            (
                "nvlm_queue_depth",
                "Requests waiting for the model.",
                self.queue_depth.load(Ordering::Relaxed),
            ),
            (
                "nvlm_running_requests",
                "Requests being generated.",
                self.running.load(Ordering::Relaxed),
            ),
            (
                "nvlm_kv_blocks_used",
                "KV cache blocks held by running requests.",
                self.kv_blocks_used.load(Ordering::Relaxed),
            ),
            (
                "nvlm_kv_blocks_total",
                "KV cache blocks of the batch scheduler (0 when requests run one at a time).",
                self.kv_blocks_total.load(Ordering::Relaxed),
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
        }
        self.time_to_first_token.render(
            &mut out,
            "nvlm_time_to_first_token_seconds",
            "Queueing to first token.",
        );
        self.inter_token_latency.render(
            &mut out,
            "nvlm_inter_token_latency_seconds",
            "Time between tokens.",
        );
        out
    }
}
