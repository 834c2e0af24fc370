//! Image embeddings (projector outputs) cached by image content, so a conversation that sends the same image again
//! does not run the vision tower again. Bounded in bytes; the oldest entries leave first.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;

use nvlm_tensor::Tensor;

/// A byte-bounded cache of image embedding rows keyed by a keyed hash of the image's tiles.
pub struct ImageCache {
    hasher: std::collections::hash_map::RandomState,
    entries: HashMap<(u64, usize), Tensor>,
    order: VecDeque<(u64, usize)>,
    bytes: usize,
    limit: usize,
}

impl ImageCache {
    /// An empty cache holding at most `limit` bytes of embeddings (0 disables it).
    pub fn new(limit: usize) -> ImageCache {
        ImageCache {
            hasher: Default::default(),
            entries: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            limit,
        }
    }

    /// The key of one image's tiles: a per-process keyed 64-bit hash (unpredictable to clients) and the length.
    pub fn key(&self, tiles: &[u8]) -> (u64, usize) {
        (self.hasher.hash_one(tiles), tiles.len())
    }

    /// The cached rows of `key`.
    pub fn get(&self, key: (u64, usize)) -> Option<Tensor> {
        self.entries.get(&key).cloned()
    }

    /// Caches `rows` under `key`, evicting the oldest entries past the byte limit.
    pub fn insert(&mut self, key: (u64, usize), rows: Tensor) {
        let size = rows.size_in_bytes();
        if size > self.limit || self.entries.contains_key(&key) {
            return;
        }
        while self.bytes + size > self.limit {
            let Some(old) = self.order.pop_front() else { break };
            if let Some(evicted) = self.entries.remove(&old) {
                self.bytes -= evicted.size_in_bytes();
            }
        }
        self.bytes += size;
        self.order.push_back(key);
        self.entries.insert(key, rows);
    }
}
