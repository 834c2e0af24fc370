//! Continuous batching: requests join the running batch between decode steps and leave it when they finish, stop
//! or lose their client; every step decodes one token for every running request in one pass
//! (`Qwen2Model::decode_batch`), over one paged KV cache whose blocks a request holds only while it runs.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, TryRecvError};

use nvlm_qwen2::{PagedKvCache, Qwen2Model, Sampler, SequenceId};

use super::image_cache::ImageCache;
use super::metrics::Metrics;
use super::text_stream::TextStream;
use super::worker::{image_rows, Event, Job};
use crate::engine::Engine;

/// Positions per KV block (as `Qwen2Model::new_cache`).
const BLOCK: usize = 16;

/// A request in the running batch.
struct Running {
    job: Job,
    seq: SequenceId,
    sampler: Sampler,
    history: Vec<u32>,
    stream: TextStream,
    /// Tokens generated, stop tokens included.
    generated: usize,
    /// The token to feed at the next step.
    next: u32,
}

/// Batch limits.
pub struct BatchLimits {
    /// Most requests decoded together.
    pub max_batch: usize,
    /// KV cache capacity in positions, shared by all running requests.
    pub kv_positions: usize,
}

/// Serves `jobs` with continuous batching until the queue closes.
pub fn serve(
    engine: &Engine,
    llm: &Qwen2Model,
    jobs: Receiver<Job>,
    metrics: &Metrics,
    mut images: ImageCache,
    limits: BatchLimits,
) {
    let mut kv = llm.new_cache(limits.kv_positions);
    metrics
        .kv_blocks_total
        .store(kv.free_blocks() as i64, Ordering::Relaxed);
    let mut running: Vec<Running> = Vec::new();
    let mut waiting: Option<Job> = None;
    loop {
        // Admit: block when idle, otherwise take what is queued, as long as the batch and the KV cache allow.
        while running.len() < limits.max_batch {
            let job = match waiting.take() {
                Some(job) => job,
                None if running.is_empty() => match jobs.recv() {
                    Ok(job) => dequeued(job, metrics),
                    Err(_) => return,
                },
                None => match jobs.try_recv() {
                    Ok(job) => dequeued(job, metrics),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return,
                },
            };
            if job.events.is_closed() {
                continue;
            }
            let needed = (job.ids.len() + job.max_tokens).div_ceil(BLOCK);
            if needed > kv.free_blocks() {
                if running.is_empty() {
                    let _ = job.events.send(Event::Failed(format!(
                        "the request needs {needed} KV blocks of {BLOCK} positions; the cache has {} (raise --kv-cache-tokens)",
                        kv.free_blocks()
                    )));
                    continue;
                }
                waiting = Some(job);
                break;
            }
            if let Some(request) = admit(engine, llm, job, &mut kv, &mut images, metrics) {
                running.push(request);
            }
            publish(&kv, &running, metrics);
        }
        if running.is_empty() {
            continue;
        }
        if let Err(error) = step(engine, llm, &mut running, &mut kv, metrics) {
            for request in running.drain(..) {
                let _ = request.job.events.send(Event::Failed(format!("{error:#}")));
                kv.free_sequence(request.seq);
            }
        }
        publish(&kv, &running, metrics);
    }
}

fn dequeued(job: Job, metrics: &Metrics) -> Job {
    metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
    job
}

fn publish(kv: &PagedKvCache, running: &[Running], metrics: &Metrics) {
    let total = metrics.kv_blocks_total.load(Ordering::Relaxed);
    metrics
        .kv_blocks_used
        .store(total - kv.free_blocks() as i64, Ordering::Relaxed);
    metrics.running.store(running.len() as i64, Ordering::Relaxed);
}

/// Prefills a new request and takes its first token; `None` when it is already finished (or failed, which its
/// client hears).
fn admit(
    engine: &Engine,
    llm: &Qwen2Model,
    job: Job,
    kv: &mut PagedKvCache,
    images: &mut ImageCache,
    metrics: &Metrics,
) -> Option<Running> {
    let seq = kv.add_sequence();
    let first = (|| {
        // All the blocks the request can use, taken now: running requests never run the cache dry.
        kv.reserve(seq, job.ids.len() + job.max_tokens)?;
        let rows = image_rows(engine, &job, images, metrics)?;
        let embeds = engine.prompt_embeddings(&job.ids, rows.as_ref())?;
        let hidden = llm.forward(&embeds, kv, seq)?;
        let last = hidden.narrow0(hidden.shape()[0] - 1, 1)?;
        anyhow::Ok(llm.logits(&last)?)
    })();
    let logits = match first {
        Ok(logits) => logits,
        Err(error) => {
            kv.free_sequence(seq);
            let _ = job.events.send(Event::Failed(format!("{error:#}")));
            return None;
        }
    };
    let mut request = Running {
        sampler: Sampler::new(job.sampler.clone()),
        history: job.ids.clone(),
        job,
        seq,
        stream: TextStream::new(),
        generated: 0,
        next: 0,
    };
    match take(engine, &mut request, &logits, metrics) {
        Ok(true) => Some(request),
        Ok(false) => {
            kv.free_sequence(request.seq);
            None
        }
        Err(error) => {
            kv.free_sequence(request.seq);
            let _ = request.job.events.send(Event::Failed(format!("{error:#}")));
            None
        }
    }
}

/// Samples the request's next token from `logits` `[1, V]` and streams it; false when the request is finished
/// (its `Done` sent, or its client gone).
fn take(
    engine: &Engine,
    request: &mut Running,
    logits: &nvlm_tensor::Tensor,
    metrics: &Metrics,
) -> anyhow::Result<bool> {
    let token = request.sampler.next(logits, &request.history)?;
    request.history.push(token);
    request.generated += 1;
    request.next = token;
    let job = &request.job;
    if engine.stop_ids().contains(&token) {
        request
            .stream
            .finish(job, engine, metrics, "stop", request.generated);
        return Ok(false);
    }
    if job.events.is_closed() {
        return Ok(false);
    }
    if !request.stream.push(token, job, engine, metrics) {
        request
            .stream
            .finish(job, engine, metrics, "stop", request.generated);
        return Ok(false);
    }
    if request.generated >= job.max_tokens {
        request
            .stream
            .finish(job, engine, metrics, "length", request.generated);
        return Ok(false);
    }
    Ok(true)
}

/// One decode step for every running request; finished requests leave and free their KV blocks.
fn step(
    engine: &Engine,
    llm: &Qwen2Model,
    running: &mut Vec<Running>,
    kv: &mut PagedKvCache,
    metrics: &Metrics,
) -> anyhow::Result<()> {
    let tokens: Vec<u32> = running.iter().map(|r| r.next).collect();
    let seqs: Vec<SequenceId> = running.iter().map(|r| r.seq).collect();
    let hidden = llm.decode_batch(&tokens, kv, &seqs)?;
    metrics.batch_step(tokens.len());
    let logits = llm.logits(&hidden)?;
    let mut still = Vec::with_capacity(running.len());
    for (row, mut request) in running.drain(..).enumerate() {
        let row_logits = logits.narrow0(row, 1)?;
        match take(engine, &mut request, &row_logits, metrics) {
            Ok(true) => still.push(request),
            Ok(false) => kv.free_sequence(request.seq),
            Err(error) => {
                let _ = request.job.events.send(Event::Failed(format!("{error:#}")));
                kv.free_sequence(request.seq);
            }
        }
    }
    *running = still;
    Ok(())
}
