//! PyTorch distributed checkpoints (plain DCP and Megatron `torch_dist`): the `.metadata` pickle, chunk lookup in
//! `.distcp` files, global tensor assembly, and Megatron's flattened (distributed-optimizer) tensors.

use std::collections::BTreeMap;
use std::path::Path;

use crate::dtype::StoredDType;
use crate::files::CheckpointFiles;
use crate::pickle::{self, Arena, Id};
use crate::torch_save::{c_strides, HostTensor, TorchArchive};
use crate::{CheckpointError, Result};

/// Where an item's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// File relative to the checkpoint folder.
    pub file: String,
    /// Byte offset.
    pub offset: u64,
    /// Byte length.
    pub length: u64,
}

/// One stored piece of a tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Position in the global tensor.
    pub offsets: Vec<u64>,
    /// Extent.
    pub sizes: Vec<u64>,
    /// Its bytes.
    pub location: Location,
}

/// A tensor of the checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorEntry {
    /// Element type.
    pub dtype: StoredDType,
    /// Global shape as stored.
    pub size: Vec<u64>,
    /// Its pieces.
    pub chunks: Vec<Chunk>,
    /// Megatron's original shape of an N-D-reformulated flattened tensor.
    pub original_shape: Option<Vec<u64>>,
}

impl TensorEntry {
    /// The shape a reader sees (the original shape of a flattened tensor).
    pub fn shape(&self) -> &[u64] {
        self.original_shape.as_deref().unwrap_or(&self.size)
    }
}

/// A parsed DCP checkpoint folder.
#[derive(Debug)]
pub struct DcpCheckpoint {
    files: CheckpointFiles,
    tensors: BTreeMap<String, TensorEntry>,
    objects: BTreeMap<String, Location>,
}

fn meta_error(dir: &Path, detail: impl Into<String>) -> CheckpointError {
    CheckpointError::format(dir.join(".metadata").display().to_string(), detail)
}

impl DcpCheckpoint {
    /// Parses `dir/.metadata` (nothing else is read until a tensor is asked for).
    pub fn open(dir: &Path) -> Result<DcpCheckpoint> {
        let path = dir.join(".metadata");
        let bytes = std::fs::read(&path).map_err(CheckpointError::io(&path))?;
        let (arena, root) = pickle::load(&bytes).map_err(|detail| CheckpointError::Pickle {
            file: path.display().to_string(),
            detail,
        })?;
        let class = arena.short_class(root).unwrap_or_default();
        if class != "Metadata" && class != "MCoreMetadata" {
            return Err(meta_error(
                dir,
                format!("top-level object is `{class}`, not a DCP Metadata"),
            ));
        }
        let locations = storage_locations(&arena, root).map_err(|e| meta_error(dir, e))?;
        let flattened = mcore_original_shapes(&arena, root);
        let listing = arena
            .attr(root, "state_dict_metadata")
            .and_then(|d| arena.dict_entries(d))
            .ok_or_else(|| meta_error(dir, "no state_dict_metadata"))?;
        let mut tensors = BTreeMap::new();
        let mut objects = BTreeMap::new();
        for &(key, value) in listing {
            let fqn = arena
                .str(key)
                .ok_or_else(|| meta_error(dir, "a state_dict_metadata key is not a string"))?;
            match arena.short_class(value).as_deref() {
                Some("BytesStorageMetadata") => {
                    let location = locations
                        .iter()
                        .find(|(f, o, _)| f == fqn && o.is_none())
                        .map(|(_, _, l)| l.clone())
                        .ok_or_else(|| meta_error(dir, format!("no storage entry for object `{fqn}`")))?;
                    objects.insert(fqn.to_string(), location);
                }
                Some("TensorStorageMetadata") => {
                    let entry = tensor_entry(&arena, value, fqn, &locations, flattened.get(fqn).cloned())
                        .map_err(|e| meta_error(dir, format!("tensor `{fqn}`: {e}")))?;
                    tensors.insert(fqn.to_string(), entry);
                }
                other => {
                    return Err(meta_error(
                        dir,
                        format!("`{fqn}` has unknown storage metadata {other:?}"),
                    ));
                }
            }
        }
        Ok(DcpCheckpoint {
            files: CheckpointFiles::new(dir),
            tensors,
            objects,
        })
    }

    /// The tensors, by name.
    pub fn tensors(&self) -> &BTreeMap<String, TensorEntry> {
        &self.tensors
    }

    /// The non-tensor items (Python objects), by name.
    pub fn objects(&self) -> &BTreeMap<String, Location> {
        &self.objects
    }

    /// Reads and assembles the tensor `name` from its chunks.
    pub fn read(&self, name: &str) -> Result<HostTensor> {
        let entry = self
            .tensors
            .get(name)
            .ok_or_else(|| CheckpointError::Missing(name.to_string()))?;
        let tensor = assemble(name, entry, None, |chunk, sink| {
            self.fetch(name, entry, chunk, sink)
        })?;
        match &entry.original_shape {
            Some(original) => unflatten(name, tensor, original),
            None => Ok(tensor),
        }
    }

    /// Reads entry `index` of the leading axis of `name` (one layer of a stacked tensor), touching only the chunks
    /// that hold it.
    pub fn read_leading(&self, name: &str, index: u64) -> Result<HostTensor> {
        let entry = self
            .tensors
            .get(name)
            .ok_or_else(|| CheckpointError::Missing(name.to_string()))?;
        if entry.original_shape.is_some() {
            return slice_leading(name, self.read(name)?, index);
        }
        assemble(name, entry, Some(index), |chunk, sink| {
            self.fetch(name, entry, chunk, sink)
        })
    }

    /// Reads one chunk and hands its contiguous bytes to `sink`, after checking them against the metadata.
    fn fetch(
        &self,
        name: &str,
        entry: &TensorEntry,
        chunk: &Chunk,
        sink: &mut dyn FnMut(&[u8]),
    ) -> Result<()> {
        let loc = &chunk.location;
        let file = self.files.root().join(&loc.file).display().to_string();
        let bytes = self.files.read_range(&loc.file, loc.offset, loc.length)?;
        let archive = TorchArchive::open(&bytes, format!("{file} @ {}", loc.offset))?;
        let (dtype, shape, data) = archive
            .tensor_bytes(archive.root)
            .map_err(|e| CheckpointError::tensor(name, &file, e.to_string()))?;
        if dtype != entry.dtype {
            return Err(CheckpointError::tensor(
                name,
                &file,
                format!(
                    "chunk at {:?} is {dtype}, the metadata says {}",
                    chunk.offsets, entry.dtype
                ),
            ));
        }
        if shape.iter().product::<u64>() != chunk.sizes.iter().product::<u64>() {
            return Err(CheckpointError::tensor(
                name,
                &file,
                format!(
                    "chunk at {:?} has shape {shape:?}, the metadata says {:?}",
                    chunk.offsets, chunk.sizes
                ),
            ));
        }
        sink(&data);
        Ok(())
    }

    /// The raw `torch.save` bytes of the object `name`.
    pub fn object_bytes(&self, name: &str) -> Result<Vec<u8>> {
        let loc = self
            .objects
            .get(name)
            .ok_or_else(|| CheckpointError::Missing(name.to_string()))?;
        self.files.read_range(&loc.file, loc.offset, loc.length)
    }
}

/// `(fqn, offsets or None for objects, location)` of one `storage_data` entry.
type StorageEntry = (String, Option<Vec<u64>>, Location);

/// Every `storage_data` entry.
fn storage_locations(a: &Arena, root: Id) -> Result<Vec<StorageEntry>, String> {
    let storage = a
        .attr(root, "storage_data")
        .and_then(|d| a.dict_entries(d))
        .ok_or("no storage_data")?;
    storage
        .iter()
        .map(|&(index, info)| {
            let fqn = a
                .attr(index, "fqn")
                .and_then(|f| a.str(f))
                .ok_or("MetadataIndex without fqn")?;
            let offsets = a.attr(index, "offset").and_then(|o| a.shape(o));
            if a.attr(info, "transform_descriptors")
                .and_then(|t| a.items(t))
                .is_some_and(|t| !t.is_empty())
            {
                return Err(format!(
                    "`{fqn}` uses stream transforms (compression), which are not supported"
                ));
            }
            let file = a
                .attr(info, "relative_path")
                .and_then(|p| a.str(p))
                .ok_or("_StorageInfo without relative_path")?;
            let offset = a
                .attr(info, "offset")
                .and_then(|v| a.int(v))
                .ok_or("_StorageInfo without offset")?;
            let length = a
                .attr(info, "length")
                .and_then(|v| a.int(v))
                .ok_or("_StorageInfo without length")?;
            let (offset, length) = (
                u64::try_from(offset).map_err(|_| "negative offset")?,
                u64::try_from(length).map_err(|_| "negative length")?,
            );
            Ok((
                fqn.to_string(),
                offsets,
                Location {
                    file: file.to_string(),
                    offset,
                    length,
                },
            ))
        })
        .collect()
}

/// Megatron's `mcore_data[key]["nd_reformulated_orig_global_shape"]`, where present.
fn mcore_original_shapes(a: &Arena, root: Id) -> BTreeMap<String, Vec<u64>> {
    let mut shapes = BTreeMap::new();
    if let Some(entries) = a.attr(root, "mcore_data").and_then(|d| a.dict_entries(d)) {
        for &(key, value) in entries {
            let shape = a
                .dict_get(value, "nd_reformulated_orig_global_shape")
                .and_then(|s| a.shape(s));
            if let (Some(key), Some(shape)) = (a.str(key), shape) {
                shapes.insert(key.to_string(), shape);
            }
        }
    }
    shapes
}

fn tensor_entry(
    a: &Arena,
    value: Id,
    fqn: &str,
    locations: &[StorageEntry],
    original_shape: Option<Vec<u64>>,
) -> Result<TensorEntry, String> {
    let properties = a.attr(value, "properties").ok_or("no properties")?;
    let state = a
        .object_state(properties)
        .and_then(|s| a.items(s))
        .ok_or("TensorProperties without state")?;
    let dtype_name = state.first().and_then(|&d| a.short_class(d)).ok_or("no dtype")?;
    let dtype = StoredDType::from_torch_name(&dtype_name)
        .ok_or_else(|| format!("unsupported dtype torch.{dtype_name}"))?;
    let size = a.attr(value, "size").and_then(|s| a.shape(s)).ok_or("no size")?;
    let chunk_ids = a
        .attr(value, "chunks")
        .and_then(|c| a.items(c))
        .ok_or("no chunks")?;
    let mut chunks = Vec::with_capacity(chunk_ids.len());
    for &c in chunk_ids {
        let offsets = a
            .attr(c, "offsets")
            .and_then(|o| a.shape(o))
            .ok_or("chunk without offsets")?;
        let mut sizes = a
            .attr(c, "sizes")
            .and_then(|o| a.shape(o))
            .ok_or("chunk without sizes")?;
        while sizes.len() < offsets.len() {
            sizes.insert(0, 1);
        }
        let location = locations
            .iter()
            .find(|(f, o, _)| f == fqn && o.as_ref() == Some(&offsets))
            .map(|(_, _, l)| l.clone())
            .ok_or_else(|| format!("missing chunk: no stored bytes for the chunk at {offsets:?}"))?;
        chunks.push(Chunk {
            offsets,
            sizes,
            location,
        });
    }
    Ok(TensorEntry {
        dtype,
        size,
        chunks,
        original_shape,
    })
}

/// Assembles `entry` (or, with `leading = Some(i)`, its slice `i` along axis 0) from chunks that `fetch` returns
/// as contiguous tensors of their `sizes`. Checks that the chunks lie inside, do not overlap and cover everything.
pub(crate) fn assemble(
    name: &str,
    entry: &TensorEntry,
    leading: Option<u64>,
    fetch: impl Fn(&Chunk, &mut dyn FnMut(&[u8])) -> Result<()>,
) -> Result<HostTensor> {
    check_chunks(name, entry)?;
    let elem = entry.dtype.size();
    let shape: Vec<u64> = match leading {
        Some(i) => {
            if entry.size.first().is_none_or(|&n| i >= n) {
                return Err(CheckpointError::tensor(
                    name,
                    "",
                    format!("no entry {i} along axis 0 of {:?}", entry.size),
                ));
            }
            entry.size[1..].to_vec()
        }
        None => entry.size.clone(),
    };
    let mut data = vec![0u8; shape.iter().product::<u64>() as usize * elem];
    for chunk in &entry.chunks {
        match leading {
            None => fetch(chunk, &mut |piece| {
                place(&mut data, &shape, piece, &chunk.offsets, &chunk.sizes, elem)
            })?,
            Some(i) if chunk.offsets[0] <= i && i < chunk.offsets[0] + chunk.sizes[0] => {
                let slab = (chunk.sizes[1..].iter().product::<u64>() * elem as u64) as usize;
                let at = (i - chunk.offsets[0]) as usize * slab;
                fetch(chunk, &mut |piece| {
                    place(
                        &mut data,
                        &shape,
                        &piece[at..at + slab],
                        &chunk.offsets[1..],
                        &chunk.sizes[1..],
                        elem,
                    )
                })?
            }
            Some(_) => {}
        }
    }
    Ok(HostTensor {
        dtype: entry.dtype,
        shape,
        data,
    })
}

/// Entry `index` along axis 0 of a full tensor.
fn slice_leading(name: &str, full: HostTensor, index: u64) -> Result<HostTensor> {
    let Some((&n, rest)) = full.shape.split_first() else {
        return Err(CheckpointError::tensor(name, "", "a scalar has no axis 0"));
    };
    if index >= n {
        return Err(CheckpointError::tensor(
            name,
            "",
            format!("no entry {index} along axis 0 of {:?}", full.shape),
        ));
    }
    let slab = rest.iter().product::<u64>() as usize * full.dtype.size();
    let at = index as usize * slab;
    Ok(HostTensor {
        dtype: full.dtype,
        shape: rest.to_vec(),
        data: full.data[at..at + slab].to_vec(),
    })
}

/// Every chunk inside the tensor, no two overlapping, together covering it exactly.
fn check_chunks(name: &str, entry: &TensorEntry) -> Result<()> {
    let file = entry
        .chunks
        .first()
        .map(|c| c.location.file.clone())
        .unwrap_or_default();
    let numel: u64 = entry.size.iter().product();
    let mut volume = 0u64;
    for (i, c) in entry.chunks.iter().enumerate() {
        if c.offsets.len() != entry.size.len() || c.sizes.len() != entry.size.len() {
            return Err(CheckpointError::tensor(
                name,
                &file,
                format!("chunk {i} has the wrong rank"),
            ));
        }
        if c.offsets
            .iter()
            .zip(&c.sizes)
            .zip(&entry.size)
            .any(|((o, s), n)| o + s > *n)
        {
            return Err(CheckpointError::tensor(
                name,
                &file,
                format!("chunk at {:?} lies outside {:?}", c.offsets, entry.size),
            ));
        }
        for other in &entry.chunks[..i] {
            let overlap = (0..entry.size.len()).all(|d| {
                c.offsets[d] < other.offsets[d] + other.sizes[d]
                    && other.offsets[d] < c.offsets[d] + c.sizes[d]
            });
            if overlap {
                return Err(CheckpointError::tensor(
                    name,
                    &file,
                    format!("overlapping chunks at {:?} and {:?}", other.offsets, c.offsets),
                ));
            }
        }
        volume += c.sizes.iter().product::<u64>();
    }
    if volume != numel {
        return Err(CheckpointError::tensor(
            name,
            &file,
            format!("missing chunk: the chunks cover {volume} of {numel} elements"),
        ));
    }
    Ok(())
}

/// Copies a chunk (`sizes` at `offsets`, contiguous bytes) into the global tensor `global` of shape `shape`.
fn place(global: &mut [u8], shape: &[u64], chunk: &[u8], offsets: &[u64], sizes: &[u64], elem: usize) {
    let rank = shape.len();
    if rank == 0 {
        global.copy_from_slice(chunk);
        return;
    }
    let strides = c_strides(shape);
    let row = sizes[rank - 1] as usize * elem;
    let rows: u64 = sizes[..rank - 1].iter().product();
    let mut index = vec![0u64; rank - 1];
    for r in 0..rows as usize {
        let start: u64 = (0..rank)
            .map(|d| (offsets[d] + if d < rank - 1 { index[d] } else { 0 }) * strides[d])
            .sum();
        let start = start as usize * elem;
        global[start..start + row].copy_from_slice(&chunk[r * row..(r + 1) * row]);
        for d in (0..rank - 1).rev() {
            index[d] += 1;
            if index[d] < sizes[d] {
                break;
            }
            index[d] = 0;
        }
    }
}

/// Undoes Megatron's N-D reformulation: stored shape `f + (prod(b),)` with one flat run per grid cell of the
/// original `shape`, where `b = shape / f`.
fn unflatten(name: &str, stored: HostTensor, original: &[u64]) -> Result<HostTensor> {
    let f = &stored.shape[..stored.shape.len().saturating_sub(1)];
    if f.len() != original.len() || f.iter().zip(original).any(|(fi, g)| *fi == 0 || g % fi != 0) {
        return Err(CheckpointError::tensor(
            name,
            "",
            format!(
                "flattened layout {:?} does not match the original shape {original:?}",
                stored.shape
            ),
        ));
    }
    let block: Vec<u64> = original.iter().zip(f).map(|(g, fi)| g / fi).collect();
    let cell_len: u64 = block.iter().product();
    if stored.shape.last() != Some(&cell_len) {
        return Err(CheckpointError::tensor(
            name,
            "",
            "flattened cell length does not match the original shape",
        ));
    }
    let elem = stored.dtype.size();
    let mut data = vec![0u8; stored.data.len()];
    let cells: u64 = f.iter().product();
    let f_strides = c_strides(f);
    for cell in 0..cells {
        let coords: Vec<u64> = f_strides.iter().zip(f).map(|(s, n)| (cell / s) % n).collect();
        let offsets: Vec<u64> = coords.iter().zip(&block).map(|(c, b)| c * b).collect();
        let bytes = &stored.data[(cell * cell_len) as usize * elem..((cell + 1) * cell_len) as usize * elem];
        place(&mut data, original, bytes, &offsets, &block, elem);
    }
    Ok(HostTensor {
        dtype: stored.dtype,
        shape: original.to_vec(),
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(chunks: &[(&[u64], &[u64])]) -> TensorEntry {
        TensorEntry {
            dtype: StoredDType::U8,
            size: vec![4, 2],
            chunks: chunks
                .iter()
                .map(|(o, s)| Chunk {
                    offsets: o.to_vec(),
                    sizes: s.to_vec(),
                    location: Location {
                        file: "__0_0.distcp".into(),
                        offset: 0,
                        length: 0,
                    },
                })
                .collect(),
            original_shape: None,
        }
    }

    fn fetch(chunk: &Chunk, sink: &mut dyn FnMut(&[u8])) -> Result<()> {
        let n: u64 = chunk.sizes.iter().product();
        let first = (chunk.offsets[0] * 2) as u8;
        sink(&(first..first + n as u8).collect::<Vec<u8>>());
        Ok(())
    }

    #[test]
    fn chunks_assemble_and_slice() {
        let e = entry(&[(&[0, 0], &[2, 2]), (&[2, 0], &[2, 2])]);
        assert_eq!(
            assemble("t", &e, None, fetch).unwrap().data,
            (0..8).collect::<Vec<u8>>()
        );
        assert_eq!(assemble("t", &e, Some(3), fetch).unwrap().data, vec![6, 7]);
        assert!(assemble("t", &e, Some(4), fetch).is_err());
    }

    #[test]
    fn missing_and_overlapping_chunks_are_errors_naming_the_tensor() {
        let missing = assemble("emb", &entry(&[(&[0, 0], &[2, 2])]), None, fetch)
            .unwrap_err()
            .to_string();
        assert!(
            missing.contains("`emb`") && missing.contains("missing chunk"),
            "{missing}"
        );
        let overlap = entry(&[(&[0, 0], &[3, 2]), (&[2, 0], &[2, 2])]);
        let err = assemble("emb", &overlap, None, fetch).unwrap_err().to_string();
        assert!(err.contains("overlapping"), "{err}");
        let outside = entry(&[(&[0, 0], &[2, 2]), (&[3, 0], &[2, 2])]);
        assert!(assemble("emb", &outside, None, fetch)
            .unwrap_err()
            .to_string()
            .contains("outside"));
    }
}
