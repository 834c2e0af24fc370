//! The data files of one checkpoint folder, opened once and read with `pread` (so that reading a 150 GB checkpoint
//! does not hold its pages in this process's memory, as a mapping would).

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::{CheckpointError, Result};

/// Lazily opened files under one folder.
#[derive(Debug, Default)]
pub struct CheckpointFiles {
    root: PathBuf,
    open: Mutex<HashMap<String, (Arc<std::fs::File>, u64)>>,
}

impl CheckpointFiles {
    /// Files under `root`.
    pub fn new(root: &Path) -> CheckpointFiles {
        CheckpointFiles {
            root: root.to_path_buf(),
            open: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, relative: &str) -> Result<(Arc<std::fs::File>, u64)> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = open.get(relative) {
            return Ok(entry.clone());
        }
        if relative.contains("..") || relative.starts_with('/') {
            return Err(CheckpointError::Unsupported(format!(
                "refusing a file path outside the checkpoint: {relative}"
            )));
        }
        let path = self.root.join(relative);
        let file = std::fs::File::open(&path).map_err(CheckpointError::io(&path))?;
        let len = file.metadata().map_err(CheckpointError::io(&path))?.len();
        let entry = (Arc::new(file), len);
        open.insert(relative.to_string(), entry.clone());
        Ok(entry)
    }

    /// A copy of `relative[offset..offset + length]`, or an error naming the file when it is shorter (truncated).
    pub fn read_range(&self, relative: &str, offset: u64, length: u64) -> Result<Vec<u8>> {
        let (file, len) = self.get(relative)?;
        let path = self.root.join(relative);
        if offset.checked_add(length).is_none_or(|e| e > len) {
            return Err(CheckpointError::format(
                path.display().to_string(),
                format!(
                    "needs bytes {offset}..{} but the file has {len} (truncated?)",
                    offset.saturating_add(length)
                ),
            ));
        }
        let mut buffer = vec![0u8; length as usize];
        file.read_exact_at(&mut buffer, offset)
            .map_err(CheckpointError::io(&path))?;
        Ok(buffer)
    }

    /// The folder.
    pub fn root(&self) -> &Path {
        &self.root
    }
}
