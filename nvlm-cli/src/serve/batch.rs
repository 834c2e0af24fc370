//! Continuous batching: requests join the running batch between steps and leave it when they finish, stop or lose
//! their client. Every step is one forward pass (`Qwen2Model::forward_step`) over one decode token of every running
//! request plus up to `prefill_chunk` prompt positions of the requests still being prefilled (oldest first), so a
//! long prompt never stalls the others. One paged KV cache; a request holds its blocks only while it runs.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, TryRecvError};

use nvlm_qwen2::{PagedKvCache, Qwen2Model, Sampler, SequenceId};
use nvlm_tensor::Tensor;
use tokio::sync::mpsc::UnboundedSender;

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
    /// While the prompt is being prefilled: its embeddings and how many rows have been run.
    prefill: Option<(Tensor, usize)>,
    /// The answer's `Done`, sent once the request has left the batch and freed its blocks.
    done: Option<Event>,
}

/// Batch limits.
pub struct BatchLimits {
    /// Most requests decoded together.
    pub max_batch: usize,
    /// KV cache capacity in positions, shared by all running requests.
    pub kv_positions: usize,
    /// Most prompt positions prefilled per step.
    pub prefill_chunk: usize,
}

/// Serves `jobs` with continuous batching over `kv` (sized `limits.kv_positions`) until the queue closes.
pub fn serve(
    engine: &Engine,
    llm: &Qwen2Model,
    mut kv: PagedKvCache,
    jobs: Receiver<Job>,
    metrics: &Metrics,
    mut images: ImageCache,
    limits: BatchLimits,
) {
    let stop_ids = engine.stop_ids();
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
            if let Some(request) = admit(engine, job, &mut kv, &mut images, metrics) {
                running.push(request);
            }
            publish(&kv, &running, metrics);
        }
        if running.is_empty() {
            continue;
        }
        let answers = match step(
            engine,
            &stop_ids,
            llm,
            &mut running,
            &mut kv,
            metrics,
            limits.prefill_chunk,
        ) {
            Ok(answers) => answers,
            Err(error) => running
                .drain(..)
                .map(|request| {
                    kv.free_sequence(request.seq);
                    (request.job.events, Event::Failed(format!("{error:#}")))
                })
                .collect(),
        };
        // Finished requests have freed their blocks; the metrics say so before their clients hear they are done.
        publish(&kv, &running, metrics);
        for (client, answer) in answers {
            let _ = client.send(answer);
        }
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

/// Takes a new request into the batch: reserves its KV blocks and prepares its prompt embeddings (images through the
/// cache or the vision tower); its prompt is prefilled over the next steps. `None` when it failed (its client hears).
fn admit(
    engine: &Engine,
    job: Job,
    kv: &mut PagedKvCache,
    images: &mut ImageCache,
    metrics: &Metrics,
) -> Option<Running> {
    let seq = match kv.add_sequence() {
        Ok(seq) => seq,
        Err(error) => {
            let _ = job.events.send(Event::Failed(format!("{error:#}")));
            return None;
        }
    };
    let embeds = (|| {
        // All the blocks the request can use, taken now: running requests never run the cache dry.
        kv.reserve(seq, job.ids.len() + job.max_tokens)?;
        let rows = image_rows(engine, &job, images, metrics)?;
        engine.prompt_embeddings(&job.ids, rows.as_ref())
    })();
    match embeds {
        Ok(embeds) => Some(Running {
            sampler: Sampler::new(job.sampler.clone()),
            history: job.ids.clone(),
            job,
            seq,
            stream: TextStream::new(),
            generated: 0,
            next: 0,
            prefill: Some((embeds, 0)),
            done: None,
        }),
        Err(error) => {
            kv.free_sequence(seq);
            let _ = job.events.send(Event::Failed(format!("{error:#}")));
            None
        }
    }
}

/// Samples the request's next token from `logits` `[1, V]` and streams it; false when the request is finished (its
/// `Done` left in `request.done`, or its client gone).
fn take(
    engine: &Engine,
    stop_ids: &[u32],
    request: &mut Running,
    logits: &Tensor,
    metrics: &Metrics,
) -> anyhow::Result<bool> {
    let token = request.sampler.next(logits, &request.history)?;
    request.history.push(token);
    request.generated += 1;
    request.next = token;
    let job = &request.job;
    if job.events.is_closed() {
        return Ok(false);
    }
    let finish = if stop_ids.contains(&token) || !request.stream.push(token, job, engine, metrics) {
        "stop"
    } else if request.generated >= job.max_tokens {
        "length"
    } else {
        return Ok(true);
    };
    request.done = Some(
        request
            .stream
            .finish(job, engine, metrics, finish, request.generated),
    );
    Ok(false)
}

/// One step: a decode token for every prefilled request and prompt chunks for the others, in one pass; requests
/// whose prompt completes take their first token, the others their next; finished requests leave and free their
/// KV blocks, and their final events (`Done` or `Failed`) are returned for sending.
#[allow(clippy::too_many_arguments)]
fn step(
    engine: &Engine,
    stop_ids: &[u32],
    llm: &Qwen2Model,
    running: &mut Vec<Running>,
    kv: &mut PagedKvCache,
    metrics: &Metrics,
    prefill_chunk: usize,
) -> anyhow::Result<Vec<(UnboundedSender<Event>, Event)>> {
    let decoding: Vec<usize> = (0..running.len())
        .filter(|&i| running[i].prefill.is_none())
        .collect();
    let tokens: Vec<u32> = decoding.iter().map(|&i| running[i].next).collect();
    let mut parts: Vec<(SequenceId, usize)> = decoding.iter().map(|&i| (running[i].seq, 1)).collect();
    let prefilling = running.iter().any(|r| r.prefill.is_some());
    let mut rows: Vec<Tensor> = Vec::new();
    if !tokens.is_empty() && prefilling {
        rows.push(engine.prompt_embeddings(&tokens, None)?);
    }
    // Prompt chunks, oldest request first, within the step's budget.
    let mut budget = prefill_chunk.max(1);
    let mut chunks: Vec<(usize, usize)> = Vec::new();
    for (i, request) in running.iter().enumerate() {
        let Some((embeds, done)) = &request.prefill else {
            continue;
        };
        if budget == 0 {
            break;
        }
        let n = budget.min(embeds.shape()[0] - done);
        rows.push(embeds.narrow0(*done, n)?);
        parts.push((request.seq, n));
        chunks.push((i, n));
        budget -= n;
    }
    let hidden = if prefilling {
        let embeds = match rows.len() {
            1 => rows.pop().expect("one part"),
            _ => nvlm_kernels::concat(&rows.iter().collect::<Vec<_>>(), 0)?,
        };
        llm.forward_step(&embeds, kv, &parts)?
    } else {
        // Decode rows only: one step of the batch (replayed from a CUDA graph on a GPU).
        let seqs: Vec<SequenceId> = parts.iter().map(|p| p.0).collect();
        llm.decode_batch(&tokens, kv, &seqs)?
    };
    metrics.batch_step(parts.len());
    // Which hidden row gives each request its next token: decode rows, and the last row of a completed prompt.
    let mut sampled: Vec<(usize, usize)> = decoding.iter().enumerate().map(|(row, &i)| (i, row)).collect();
    let mut row = decoding.len();
    for (i, n) in chunks {
        row += n;
        let (total, done) = running[i]
            .prefill
            .as_ref()
            .map(|(e, d)| (e.shape()[0], d + n))
            .expect("prefilling");
        if done == total {
            running[i].prefill = None;
            sampled.push((i, row - 1));
        } else if let Some(state) = running[i].prefill.as_mut() {
            state.1 = done;
        }
    }
    let mut finished = vec![false; running.len()];
    if !sampled.is_empty() {
        let picked: Vec<Tensor> = sampled
            .iter()
            .map(|&(_, r)| hidden.narrow0(r, 1))
            .collect::<Result<_, _>>()?;
        let logits = llm.logits(&nvlm_kernels::concat(&picked.iter().collect::<Vec<_>>(), 0)?)?;
        for (k, &(i, _)) in sampled.iter().enumerate() {
            let request = &mut running[i];
            match take(engine, stop_ids, request, &logits.narrow0(k, 1)?, metrics) {
                Ok(true) => {}
                Ok(false) => finished[i] = true,
                Err(error) => {
                    request.done = Some(Event::Failed(format!("{error:#}")));
                    finished[i] = true;
                }
            }
        }
    }
    let mut answers = Vec::new();
    let mut index = 0;
    running.retain_mut(|request| {
        let keep = !finished[index] && !request.job.events.is_closed();
        index += 1;
        if !keep {
            kv.free_sequence(request.seq);
            if let Some(answer) = request.done.take() {
                answers.push((request.job.events.clone(), answer));
            }
        }
        keep
    });
    Ok(answers)
}
