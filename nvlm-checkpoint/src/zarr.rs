//! Megatron's `zarr` backend (megatron-core <= 0.14): one zarr v2 array per tensor, uncompressed C-order chunks,
//! bf16 spelled `"bfloat16"`; `*.sync` lock folders and ShardedObject `.pt` files are skipped.
//!
//! Read directly rather than through `zarrs`: Megatron's arrays are always uncompressed with no filters, and the
//! `"bfloat16"` v2 dtype is Megatron's own spelling (tensorstore writes `"<V2"`), which zarr v2 readers do not map.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::dcp::{assemble, Chunk, Location, TensorEntry};
use crate::dtype::StoredDType;
use crate::torch_save::{c_strides, HostTensor};
use crate::{CheckpointError, Result};

/// A zarr-backend checkpoint folder.
#[derive(Debug)]
pub struct ZarrCheckpoint {
    dir: PathBuf,
    tensors: BTreeMap<String, ZarrArray>,
}

#[derive(Debug, Clone)]
struct ZarrArray {
    entry: TensorEntry,
    chunk_shape: Vec<u64>,
    separator: String,
}

impl ZarrCheckpoint {
    /// Lists the arrays under `dir` (every folder with a `.zarray`, `*.sync` folders excluded).
    pub fn open(dir: &Path) -> Result<ZarrCheckpoint> {
        let mut tensors = BTreeMap::new();
        for item in std::fs::read_dir(dir).map_err(CheckpointError::io(dir))? {
            let item = item.map_err(CheckpointError::io(dir))?;
            let name = item.file_name().to_string_lossy().into_owned();
            let zarray = item.path().join(".zarray");
            if name.ends_with(".sync") || !zarray.is_file() {
                continue;
            }
            tensors.insert(name.clone(), parse_zarray(&zarray)?);
        }
        Ok(ZarrCheckpoint {
            dir: dir.to_path_buf(),
            tensors,
        })
    }

    /// Tensor names and layouts (each chunk file is one [`Chunk`]).
    pub fn entries(&self) -> BTreeMap<String, TensorEntry> {
        self.tensors
            .iter()
            .map(|(k, v)| (k.clone(), v.entry.clone()))
            .collect()
    }

    /// Reads the array `name`.
    pub fn read(&self, name: &str) -> Result<HostTensor> {
        let array = self
            .tensors
            .get(name)
            .ok_or_else(|| CheckpointError::Missing(name.to_string()))?;
        assemble(name, &array.entry, None, |chunk, sink| {
            self.fetch(name, array, chunk, sink)
        })
    }

    /// Reads entry `index` of the leading axis of `name` (one layer of a stacked tensor).
    pub fn read_leading(&self, name: &str, index: u64) -> Result<HostTensor> {
        let array = self
            .tensors
            .get(name)
            .ok_or_else(|| CheckpointError::Missing(name.to_string()))?;
        assemble(name, &array.entry, Some(index), |chunk, sink| {
            self.fetch(name, array, chunk, sink)
        })
    }

    /// One chunk file, cropped to the part inside the array.
    fn fetch(&self, name: &str, array: &ZarrArray, chunk: &Chunk, sink: &mut dyn FnMut(&[u8])) -> Result<()> {
        let elem = array.entry.dtype.size();
        let path = self.dir.join(name).join(&chunk.location.file);
        let bytes = std::fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                CheckpointError::tensor(name, path.display().to_string(), "missing chunk file")
            }
            _ => CheckpointError::Io {
                path: path.display().to_string(),
                source: e,
            },
        })?;
        let full: u64 = array.chunk_shape.iter().product::<u64>() * elem as u64;
        if bytes.len() as u64 != full {
            return Err(CheckpointError::tensor(
                name,
                path.display().to_string(),
                format!(
                    "chunk file holds {} bytes, expected {full} (truncated?)",
                    bytes.len()
                ),
            ));
        }
        if chunk.sizes == array.chunk_shape {
            sink(&bytes);
            return Ok(());
        }
        // An edge chunk: keep the leading `sizes` part of each axis.
        let rank = chunk.sizes.len();
        let strides = c_strides(&array.chunk_shape);
        let row = chunk.sizes[rank - 1] as usize * elem;
        let rows: u64 = chunk.sizes[..rank - 1].iter().product();
        let mut data = Vec::with_capacity(rows as usize * row);
        for r in 0..rows {
            let (mut rem, mut src) = (r, 0u64);
            for d in (0..rank - 1).rev() {
                src += (rem % chunk.sizes[d]) * strides[d];
                rem /= chunk.sizes[d];
            }
            let src = src as usize * elem;
            data.extend_from_slice(&bytes[src..src + row]);
        }
        sink(&data);
        Ok(())
    }

    /// The separator used in chunk file names of `name` (for messages and tests).
    pub fn separator(&self, name: &str) -> Option<&str> {
        self.tensors.get(name).map(|a| a.separator.as_str())
    }
}

fn parse_zarray(path: &Path) -> Result<ZarrArray> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(CheckpointError::io(path))?;
    let meta: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| CheckpointError::format(&file, format!("not JSON: {e}")))?;
    let bad = |what: &str| CheckpointError::format(&file, what.to_string());
    if meta["zarr_format"] != 2 {
        return Err(bad("only zarr v2 arrays are supported"));
    }
    if !meta["compressor"].is_null()
        || !(meta["filters"].is_null() || meta["filters"].as_array().is_some_and(Vec::is_empty))
    {
        return Err(bad(
            "compressed or filtered zarr arrays are not supported (Megatron writes neither)",
        ));
    }
    if meta["order"] != "C" {
        return Err(bad("only C-order zarr arrays are supported"));
    }
    let dims = |key: &str| -> Result<Vec<u64>> {
        meta[key]
            .as_array()
            .ok_or_else(|| bad(&format!("`{key}` missing")))?
            .iter()
            .map(|v| {
                v.as_u64()
                    .ok_or_else(|| bad(&format!("`{key}` is not a list of sizes")))
            })
            .collect()
    };
    let (shape, chunk_shape) = (dims("shape")?, dims("chunks")?);
    if shape.len() != chunk_shape.len() || chunk_shape.contains(&0) {
        return Err(bad("`chunks` does not match `shape`"));
    }
    let dtype_name = meta["dtype"].as_str().ok_or_else(|| bad("`dtype` missing"))?;
    let dtype =
        StoredDType::from_zarr(dtype_name).ok_or_else(|| bad(&format!("unsupported dtype {dtype_name}")))?;
    let separator = meta["dimension_separator"].as_str().unwrap_or(".").to_string();
    let grid: Vec<u64> = shape
        .iter()
        .zip(&chunk_shape)
        .map(|(s, c)| s.div_ceil(*c))
        .collect();
    let count: u64 = grid.iter().product();
    let grid_strides = c_strides(&grid);
    let mut chunks = Vec::with_capacity(count as usize);
    for n in 0..count {
        let coords: Vec<u64> = grid_strides.iter().zip(&grid).map(|(s, g)| (n / s) % g).collect();
        let offsets: Vec<u64> = coords.iter().zip(&chunk_shape).map(|(c, k)| c * k).collect();
        let sizes: Vec<u64> = offsets
            .iter()
            .zip(&chunk_shape)
            .zip(&shape)
            .map(|((o, k), s)| (*k).min(s - o))
            .collect();
        let name = if coords.is_empty() {
            "0".to_string()
        } else {
            coords
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(&separator)
        };
        chunks.push(Chunk {
            offsets,
            sizes,
            location: Location {
                file: name,
                offset: 0,
                length: 0,
            },
        });
    }
    Ok(ZarrArray {
        entry: TensorEntry {
            dtype,
            size: shape,
            chunks,
            original_shape: None,
        },
        chunk_shape,
        separator,
    })
}
