//! A progress bar over weight loading: the models ask for their tensors one by one (and upload each to the device
//! as they get it), so counting the requests shows how far loading (and the upload) has come.

use std::sync::atomic::{AtomicU64, Ordering};

use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use nvlm_tensor::{TensorView, Weights};

/// `inner`, counting each tensor handed out on a progress bar (drawn on stderr only when it is a terminal).
pub struct ProgressWeights<'a> {
    inner: &'a dyn Weights,
    bar: ProgressBar,
    bytes: AtomicU64,
}

impl<'a> ProgressWeights<'a> {
    /// A bar for `reads` tensor reads of `inner` (its tensor count times the ranks that each read their share).
    pub fn new(inner: &'a dyn Weights, reads: usize) -> ProgressWeights<'a> {
        let bar = ProgressBar::new(reads as u64);
        bar.set_style(
            ProgressStyle::with_template("loading weights {bar:40} {pos}/{len} tensors, {msg} [{elapsed}]")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        ProgressWeights {
            inner,
            bar,
            bytes: AtomicU64::new(0),
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Weights for ProgressWeights<'_> {
    fn get(&self, name: &str) -> nvlm_tensor::Result<TensorView<'_>> {
        let view = self.inner.get(name)?;
        // A tensor read twice (tied embeddings) must not push the bar past its end.
        if self.bar.position() < self.bar.length().unwrap_or(0) {
            self.bar.inc(1);
        }
        let read = self.bytes.fetch_add(view.data.len() as u64, Ordering::Relaxed) + view.data.len() as u64;
        self.bar.set_message(format!("{} read", HumanBytes(read)));
        Ok(view)
    }

    fn names(&self) -> Vec<String> {
        self.inner.names()
    }

    fn contains(&self, name: &str) -> bool {
        self.inner.contains(name)
    }
}
