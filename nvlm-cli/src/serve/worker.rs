//! The generation worker: one thread owns the model's compute and serves queued requests one at a time, streaming
//! text deltas back; a request whose client went away is cancelled at the next token.

use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::time::Instant;

use nvlm_qwen2::{SamplerConfig, StopReason};
use tokio::sync::mpsc::UnboundedSender;

use super::metrics::Metrics;
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
    /// Tiles of the request's images (`[N, 448, 448, 3]` u8).
    pub tiles: Vec<u8>,
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

/// Starts the worker with a queue of `capacity` waiting requests.
pub fn spawn(
    engine: Arc<Engine>,
    capacity: usize,
    metrics: Arc<Metrics>,
) -> std::io::Result<SyncSender<Job>> {
    let (queue, jobs) = sync_channel(capacity);
    std::thread::Builder::new()
        .name("nvlm-generate".into())
        .spawn(move || serve(&engine, jobs, &metrics))?;
    Ok(queue)
}

fn serve(engine: &Engine, jobs: Receiver<Job>, metrics: &Metrics) {
    for job in jobs {
        metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
        if job.events.is_closed() {
            continue;
        }
        metrics.running.fetch_add(1, Ordering::Relaxed);
        if let Err(error) = run(engine, &job, metrics) {
            let _ = job.events.send(Event::Failed(format!("{error:#}")));
        }
        metrics.running.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How many trailing bytes of `text` could begin a stop string (held back so no stop string is half streamed).
fn held_back(text: &str, stop: &[String]) -> usize {
    stop.iter()
        .flat_map(|s| (1..s.len()).filter(|&k| s.is_char_boundary(k) && text.ends_with(&s[..k])))
        .max()
        .unwrap_or(0)
}

/// `text` cut before the first stop string, and whether one occurred.
fn cut_at_stop(mut text: String, stop: &[String]) -> (String, bool) {
    match stop.iter().filter_map(|s| text.find(s.as_str())).min() {
        Some(at) => {
            text.truncate(at);
            (text, true)
        }
        None => (text, false),
    }
}

fn run(engine: &Engine, job: &Job, metrics: &Metrics) -> anyhow::Result<()> {
    let rows = engine.image_rows(&job.tiles)?;
    let mut last_token = None::<Instant>;
    let mut generated = Vec::new();
    let mut sent = String::new();
    let mut stopped = false;
    let emit = |text: &str, sent: &mut String| {
        if text.len() > sent.len() && text.starts_with(sent.as_str()) {
            let _ = job.events.send(Event::Delta(text[sent.len()..].to_string()));
            *sent = text.to_string();
        }
    };
    let generation = engine.generate(
        &job.ids,
        rows.as_ref(),
        job.sampler.clone(),
        job.max_tokens,
        false,
        |token| {
            if job.events.is_closed() {
                return ControlFlow::Break(());
            }
            let now = Instant::now();
            match last_token {
                None => metrics.first_token(now - job.queued),
                Some(last) => metrics.next_token(now - last),
            }
            last_token = Some(now);
            generated.push(token);
            let (text, hit) = cut_at_stop(engine.answer(&generated).unwrap_or_default(), &job.stop);
            if hit {
                stopped = true;
                return ControlFlow::Break(());
            }
            let safe = text.len() - held_back(&text, &job.stop);
            emit(&text[..safe], &mut sent);
            ControlFlow::Continue(())
        },
    )?;
    let (text, hit) = cut_at_stop(engine.answer(&generated)?, &job.stop);
    emit(&text, &mut sent);
    let finish = match generation.stop {
        StopReason::Length if !(hit || stopped) => "length",
        _ => "stop",
    };
    metrics.tokens(job.ids.len(), generation.tokens.len());
    let _ = job.events.send(Event::Done {
        finish,
        usage: [job.ids.len(), generation.tokens.len()],
    });
    Ok(())
}
