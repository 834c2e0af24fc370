//! Memory-mapped files, opened once and shared.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use memmap2::Mmap;

use crate::{CheckpointError, Result};

/// Lazily opened, memory-mapped files of one checkpoint folder.
#[derive(Debug, Default)]
pub struct MappedFiles {
    root: PathBuf,
    open: Mutex<HashMap<String, Arc<Mmap>>>,
}

impl MappedFiles {
    /// Files under `root`.
    pub fn new(root: &Path) -> MappedFiles {
        MappedFiles {
            root: root.to_path_buf(),
            open: Mutex::new(HashMap::new()),
        }
    }

    /// The mapping of `relative` (opened on first use).
    pub fn get(&self, relative: &str) -> Result<Arc<Mmap>> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(map) = open.get(relative) {
            return Ok(map.clone());
        }
        if relative.contains("..") || relative.starts_with('/') {
            return Err(CheckpointError::Unsupported(format!(
                "refusing a file path outside the checkpoint: {relative}"
            )));
        }
        let path = self.root.join(relative);
        let file = std::fs::File::open(&path).map_err(CheckpointError::io(&path))?;
        // SAFETY: the mapping is read-only; a checkpoint modified while being read gives wrong bytes, not UB in safe
        // code that copies out of it.
        let map = Arc::new(unsafe { Mmap::map(&file) }.map_err(CheckpointError::io(&path))?);
        open.insert(relative.to_string(), map.clone());
        Ok(map)
    }

    /// `relative[offset..offset + length]`, or an error naming the file when it is shorter (truncated).
    pub fn range(
        &self,
        relative: &str,
        offset: u64,
        length: u64,
    ) -> Result<(Arc<Mmap>, std::ops::Range<usize>)> {
        let map = self.get(relative)?;
        let end = offset
            .checked_add(length)
            .filter(|&e| e <= map.len() as u64)
            .ok_or_else(|| {
                CheckpointError::format(
                    self.root.join(relative).display().to_string(),
                    format!(
                        "needs bytes {offset}..{} but the file has {} (truncated?)",
                        offset + length,
                        map.len()
                    ),
                )
            })?;
        Ok((map, offset as usize..end as usize))
    }

    /// The folder.
    pub fn root(&self) -> &Path {
        &self.root
    }
}
