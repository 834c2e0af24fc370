//! The generation worker: one thread owns the model's compute and serves queued requests one at a time, streaming
//! text deltas back; a request whose client went away is cancelled at the next token.

use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::time::Instant;

use nvlm_qwen2::{SamplerConfig, StopReason};
use tokio::sync::mpsc::UnboundedSender;

use anyhow::Context;
use nvlm_tensor::Tensor;

use super::batch::{self, BatchLimits};
use super::image_cache::ImageCache;
use super::metrics::Metrics;
use super::text_stream::TextStream;
use crate::engine::Engine;

/// What a request hears from the worker.
#[derive(Debug)]
pub enum Event {
    /// More answer text.
    Delta(String),
    /// The answer is complete.
    Done {
        /// `stop` (a stop token or string) or `length`.
        finish: &'static str,
        /// Prompt and completion token counts.
        usage: [usize; 2],
    },
    /// Generation failed.
    Failed(String),
}

/// One queued request.
pub struct Job {
    /// Prompt token ids.
    pub ids: Vec<u32>,
    /// Tiles of each of the request's images (`[n, 448, 448, 3]` u8 each), in prompt order.
    pub images: Vec<Vec<u8>>,
    /// Sampling settings.
    pub sampler: SamplerConfig,
    /// Most new tokens.
    pub max_tokens: usize,
    /// Stop strings.
    pub stop: Vec<String>,
    /// Where events go; closed when the client disconnected.
    pub events: UnboundedSender<Event>,
    /// When the request was queued.
    pub queued: Instant,
}

/// Starts the worker with a queue of `capacity` waiting requests and `image_cache_bytes` of image embeddings: a
/// continuous-batching scheduler (`limits`) when the model runs whole here and `max_batch` > 1, else one request at
/// a time (tensor-parallel ranks run each request together).
pub fn spawn(
    engine: Arc<Engine>,
    capacity: usize,
    metrics: Arc<Metrics>,
    image_cache_bytes: usize,
    limits: BatchLimits,
) -> anyhow::Result<SyncSender<Job>> {
    let (queue, jobs) = sync_channel(capacity);
    // The batch's KV cache is taken before the server starts, so a device without room for it fails at start-up.
    let kv = match engine.language_model() {
        Some(llm) if limits.max_batch > 1 => Some(
            llm.new_cache(limits.kv_positions)
                .context("allocating the KV cache (--kv-cache-tokens)")?,
        ),
        _ => None,
    };
    std::thread::Builder::new()
        .name("nvlm-generate".into())
        .spawn(move || {
            let images = ImageCache::new(image_cache_bytes);
            match (engine.language_model(), kv) {
                (Some(llm), Some(kv)) => batch::serve(&engine, llm, kv, jobs, &metrics, images, limits),
                _ => serve(&engine, jobs, &metrics, images),
            }
        })?;
    Ok(queue)
}

/// Embedding rows of all the job's images, each from the cache or the vision tower.
pub(super) fn image_rows(
    engine: &Engine,
    job: &Job,
    cache: &mut ImageCache,
    metrics: &Metrics,
) -> anyhow::Result<Option<Tensor>> {
    let mut rows = Vec::with_capacity(job.images.len());
    for tiles in &job.images {
        let key = cache.key(tiles);
        let image = match cache.get(key) {
            Some(hit) => {
                metrics.image_cache(true);
                hit
            }
            None => {
                metrics.image_cache(false);
                let fresh = engine.image_rows(tiles)?.context("an image without tiles")?;
                cache.insert(key, fresh.clone());
                fresh
            }
        };
        rows.push(image);
    }
    Ok(match rows.len() {
        0 => None,
        1 => rows.pop(),
        _ => Some(nvlm_kernels::concat(&rows.iter().collect::<Vec<_>>(), 0)?),
    })
}

fn serve(engine: &Engine, jobs: Receiver<Job>, metrics: &Metrics, mut cache: ImageCache) {
    for job in jobs {
        metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
        if job.events.is_closed() {
            continue;
        }
        metrics.running.fetch_add(1, Ordering::Relaxed);
        let outcome = run(engine, &job, metrics, &mut cache);
        metrics.running.fetch_sub(1, Ordering::Relaxed);
        let _ = job
            .events
            .send(outcome.unwrap_or_else(|error| Event::Failed(format!("{error:#}"))));
    }
}

/// Generates one request, streaming its text; returns its `Done`.
fn run(engine: &Engine, job: &Job, metrics: &Metrics, cache: &mut ImageCache) -> anyhow::Result<Event> {
    let rows = image_rows(engine, job, cache, metrics)?;
    let mut stream = TextStream::new();
    let generation = engine.generate(
        &job.ids,
        rows.as_ref(),
        job.sampler.clone(),
        job.max_tokens,
        false,
        |token| {
            if job.events.is_closed() || !stream.push(token, job, engine, metrics) {
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        },
    )?;
    let finish = match generation.stop {
        StopReason::Length => "length",
        _ => "stop",
    };
    Ok(stream.finish(job, engine, metrics, finish, generation.tokens.len()))
}
