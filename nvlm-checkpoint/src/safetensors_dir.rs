//! Hugging Face safetensors checkpoints: one file, or shards listed by `model.safetensors.index.json`; memory-mapped,
//! tensors served as borrowed views.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use nvlm_tensor::{TensorError, TensorView, Weights};

use crate::dtype::StoredDType;
use crate::{CheckpointError, Result, SAFETENSORS_INDEX};

/// Where one tensor lives.
#[derive(Debug, Clone)]
pub struct SafetensorsEntry {
    /// Element type.
    pub dtype: StoredDType,
    /// Shape.
    pub shape: Vec<u64>,
    /// Which shard (index into the files).
    file: usize,
    /// Absolute byte range in that file.
    start: usize,
    end: usize,
}

/// A safetensors checkpoint folder or file.
#[derive(Debug)]
pub struct SafetensorsCheckpoint {
    files: Vec<(PathBuf, Mmap)>,
    tensors: BTreeMap<String, SafetensorsEntry>,
}

impl SafetensorsCheckpoint {
    /// Opens a folder (with an index, or a single `model.safetensors`) or one `.safetensors` file.
    pub fn open(path: &Path) -> Result<SafetensorsCheckpoint> {
        let shard_paths: Vec<PathBuf> = if path.is_file() {
            vec![path.to_path_buf()]
        } else if path.join(SAFETENSORS_INDEX).is_file() {
            let index_path = path.join(SAFETENSORS_INDEX);
            let text = std::fs::read_to_string(&index_path).map_err(CheckpointError::io(&index_path))?;
            let index: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
                CheckpointError::format(index_path.display().to_string(), format!("not JSON: {e}"))
            })?;
            let map = index["weight_map"].as_object().ok_or_else(|| {
                CheckpointError::format(index_path.display().to_string(), "no `weight_map` object")
            })?;
            let mut files: Vec<String> = map
                .values()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            files.sort();
            files.dedup();
            files.iter().map(|f| path.join(f)).collect()
        } else if path.join("model.safetensors").is_file() {
            vec![path.join("model.safetensors")]
        } else {
            return Err(CheckpointError::Unsupported(format!(
                "{}: no {SAFETENSORS_INDEX} or model.safetensors",
                path.display()
            )));
        };
        let mut files = Vec::new();
        let mut tensors = BTreeMap::new();
        for (i, shard) in shard_paths.iter().enumerate() {
            let file = std::fs::File::open(shard).map_err(CheckpointError::io(shard))?;
            // SAFETY: read-only mapping; tensors are copied or viewed as bytes only.
            let map = unsafe { Mmap::map(&file) }.map_err(CheckpointError::io(shard))?;
            let name = shard.display().to_string();
            let (n, header) = safetensors::SafeTensors::read_metadata(&map)
                .map_err(|e| CheckpointError::format(&name, format!("not a valid safetensors file: {e}")))?;
            let base = 8 + n;
            for (tensor, info) in header.tensors() {
                let dtype =
                    StoredDType::from_safetensors_name(&format!("{:?}", info.dtype)).ok_or_else(|| {
                        CheckpointError::format(
                            &name,
                            format!("`{tensor}` has unsupported dtype {:?}", info.dtype),
                        )
                    })?;
                let (start, end) = info.data_offsets;
                tensors.insert(
                    tensor.clone(),
                    SafetensorsEntry {
                        dtype,
                        shape: info.shape.iter().map(|&d| d as u64).collect(),
                        file: i,
                        start: base + start,
                        end: base + end,
                    },
                );
            }
            files.push((shard.clone(), map));
        }
        Ok(SafetensorsCheckpoint { files, tensors })
    }

    /// Every tensor.
    pub fn tensors(&self) -> &BTreeMap<String, SafetensorsEntry> {
        &self.tensors
    }

    /// The bytes of `name`, borrowed from the mapping.
    pub fn bytes(&self, name: &str) -> Result<&[u8]> {
        let entry = self
            .tensors
            .get(name)
            .ok_or_else(|| CheckpointError::Missing(name.to_string()))?;
        Ok(&self.files[entry.file].1[entry.start..entry.end])
    }
}

impl Weights for SafetensorsCheckpoint {
    fn get(&self, name: &str) -> nvlm_tensor::Result<TensorView<'_>> {
        let entry = self
            .tensors
            .get(name)
            .ok_or_else(|| TensorError::MissingWeight(name.to_string()))?;
        let dtype = entry.dtype.engine().ok_or_else(|| {
            TensorError::Unsupported(format!(
                "`{name}` is {}, which the engine does not load",
                entry.dtype
            ))
        })?;
        let data = &self.files[entry.file].1[entry.start..entry.end];
        Ok(TensorView {
            dtype,
            shape: entry.shape.iter().map(|&d| d as usize).collect(),
            data,
        })
    }

    fn names(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }
}
