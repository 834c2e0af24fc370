//! One answer's text as it streams: decoded after every token, cut at stop strings, and sent as deltas that never
//! show part of a stop string; token timings go to the metrics.

use std::time::Instant;

use super::metrics::Metrics;
use super::worker::{Event, Job};
use crate::engine::Engine;

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

/// The streaming state of one request.
pub struct TextStream {
    /// Generated tokens that are part of the answer (stop tokens excluded).
    pub tokens: Vec<u32>,
    sent: String,
    last_token: Option<Instant>,
    /// True once a stop string ended the answer.
    pub stopped: bool,
}

impl TextStream {
    /// Nothing generated yet.
    pub fn new() -> TextStream {
        TextStream {
            tokens: Vec::new(),
            sent: String::new(),
            last_token: None,
            stopped: false,
        }
    }

    fn emit(&mut self, job: &Job, text: &str) {
        if text.len() > self.sent.len() && text.starts_with(self.sent.as_str()) {
            let _ = job.events.send(Event::Delta(text[self.sent.len()..].to_string()));
            self.sent = text.to_string();
        }
    }

    /// Takes the next answer token; false when a stop string has ended the answer.
    pub fn push(&mut self, token: u32, job: &Job, engine: &Engine, metrics: &Metrics) -> bool {
        let now = Instant::now();
        match self.last_token {
            None => metrics.first_token(now - job.queued),
            Some(last) => metrics.next_token(now - last),
        }
        self.last_token = Some(now);
        self.tokens.push(token);
        let (text, hit) = cut_at_stop(engine.answer(&self.tokens).unwrap_or_default(), &job.stop);
        if hit {
            self.stopped = true;
            return false;
        }
        let safe = text.len() - held_back(&text, &job.stop);
        self.emit(job, &text[..safe]);
        true
    }

    /// Sends the rest of the answer and returns the request's `Done` with `finish` (`length` becomes `stop` when a
    /// stop string ended the answer) and the usage (`completion` tokens, stop tokens included). The caller sends it
    /// once the request's resources are released, so a client that has its answer sees them free.
    pub fn finish(
        &mut self,
        job: &Job,
        engine: &Engine,
        metrics: &Metrics,
        finish: &'static str,
        completion: usize,
    ) -> Event {
        let (text, hit) = cut_at_stop(engine.answer(&self.tokens).unwrap_or_default(), &job.stop);
        self.emit(job, &text);
        let finish = if hit || self.stopped { "stop" } else { finish };
        metrics.tokens(job.ids.len(), completion);
        Event::Done {
            finish,
            usage: [job.ids.len(), completion],
        }
    }
}
