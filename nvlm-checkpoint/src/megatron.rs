//! A Megatron-core distributed checkpoint, whatever its backend: the root (following
//! `latest_checkpointed_iteration.txt`) or an `iter_*` folder, `torch_dist`, plain DCP or `zarr`, and `common.pt`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::common_state::CommonState;
use crate::dcp::{DcpCheckpoint, TensorEntry};
use crate::torch_save::HostTensor;
use crate::zarr::ZarrCheckpoint;
use crate::{CheckpointError, Result};

/// The storage backend of an iteration folder.
#[derive(Debug)]
pub enum Backend {
    /// `torch_dist` or plain DCP (`.metadata` + `.distcp`).
    Dcp(DcpCheckpoint),
    /// zarr (one folder per tensor).
    Zarr(ZarrCheckpoint),
}

/// An opened Megatron (or plain DCP) checkpoint.
#[derive(Debug)]
pub struct MegatronCheckpoint {
    dir: PathBuf,
    backend: Backend,
    common: Option<CommonState>,
}

/// The iteration folder for `path`: `path` itself when it holds a checkpoint, else the one that
/// `latest_checkpointed_iteration.txt` names (`iter_{:07}` or `release`).
pub fn resolve_iteration(path: &Path) -> Result<PathBuf> {
    if !path.is_dir() {
        return Err(CheckpointError::Io {
            path: path.display().to_string(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such checkpoint folder"),
        });
    }
    let tracker = path.join("latest_checkpointed_iteration.txt");
    if tracker.is_file() {
        let text = std::fs::read_to_string(&tracker).map_err(CheckpointError::io(&tracker))?;
        let text = text.trim();
        let folder = if text == "release" {
            "release".to_string()
        } else {
            let n: u64 = text.parse().map_err(|_| {
                CheckpointError::format(
                    tracker.display().to_string(),
                    format!("`{text}` is not an iteration number"),
                )
            })?;
            format!("iter_{n:07}")
        };
        return Ok(path.join(folder));
    }
    Ok(path.to_path_buf())
}

impl MegatronCheckpoint {
    /// Opens a checkpoint root or iteration folder.
    pub fn open(path: &Path) -> Result<MegatronCheckpoint> {
        let dir = resolve_iteration(path)?;
        let metadata_json = dir.join("metadata.json");
        let backend_name = if metadata_json.is_file() {
            let text =
                std::fs::read_to_string(&metadata_json).map_err(CheckpointError::io(&metadata_json))?;
            let meta: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
                CheckpointError::format(metadata_json.display().to_string(), format!("not JSON: {e}"))
            })?;
            meta["sharded_backend"]
                .as_str()
                .unwrap_or("torch_dist")
                .to_string()
        } else if dir.join(".metadata").is_file() {
            "torch_dist".to_string()
        } else {
            return Err(CheckpointError::Unsupported(format!(
                "{}: no metadata.json or .metadata: not a torch_dist, DCP or zarr checkpoint (legacy per-rank \
                 `mp_rank_*` folders are not supported)",
                dir.display()
            )));
        };
        let backend = match backend_name.as_str() {
            "torch_dist" | "torch_dcp" => Backend::Dcp(DcpCheckpoint::open(&dir)?),
            "zarr" => Backend::Zarr(ZarrCheckpoint::open(&dir)?),
            other => {
                return Err(CheckpointError::Unsupported(format!(
                    "sharded backend `{other}` is not supported"
                )))
            }
        };
        let common = if dir.join("common.pt").is_file() {
            Some(CommonState::read(&dir)?)
        } else {
            None
        };
        Ok(MegatronCheckpoint { dir, backend, common })
    }

    /// The iteration folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The backend.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// `common.pt`, when present.
    pub fn common(&self) -> Option<&CommonState> {
        self.common.as_ref()
    }

    /// Every tensor with its layout.
    pub fn tensors(&self) -> BTreeMap<String, TensorEntry> {
        match &self.backend {
            Backend::Dcp(d) => d.tensors().clone(),
            Backend::Zarr(z) => z.entries(),
        }
    }

    /// The whole tensor `name`.
    pub fn read(&self, name: &str) -> Result<HostTensor> {
        match &self.backend {
            Backend::Dcp(d) => d.read(name),
            Backend::Zarr(z) => z.read(name),
        }
    }

    /// Entry `index` of the leading axis of `name` (one layer of a stacked tensor).
    pub fn read_leading(&self, name: &str, index: u64) -> Result<HostTensor> {
        match &self.backend {
            Backend::Dcp(d) => d.read_leading(name, index),
            Backend::Zarr(z) => z.read_leading(name, index),
        }
    }
}
