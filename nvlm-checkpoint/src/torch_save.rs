//! `torch.save` archives: the zip container, the `data.pkl` pickle and tensors rebuilt from storage records, without
//! executing anything. Only the allow-listed rebuild functions produce tensors.

use crate::dtype::StoredDType;
use crate::pickle::{self, Arena, Id, Value};
use crate::zip::ZipIndex;
use crate::{CheckpointError, Result};

/// A dense host tensor, contiguous C order.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Element type.
    pub dtype: StoredDType,
    /// Shape.
    pub shape: Vec<u64>,
    /// `numel * dtype.size()` little-endian bytes.
    pub data: Vec<u8>,
}

impl HostTensor {
    /// Number of elements.
    pub fn numel(&self) -> u64 {
        self.shape.iter().product()
    }
}

/// One opened archive with its unpickled `data.pkl`.
pub struct TorchArchive<'a> {
    bytes: &'a [u8],
    index: ZipIndex,
    /// Where it came from, for messages.
    pub name: String,
    /// The unpickled values.
    pub arena: Arena,
    /// The top-level value.
    pub root: Id,
}

/// A tensor as a rebuild call describes it, before its bytes are read.
struct TensorRef {
    dtype: StoredDType,
    storage_key: String,
    storage_len: u64,
    storage_len_is_bytes: bool,
    offset: u64,
    size: Vec<u64>,
    stride: Vec<u64>,
}

impl<'a> TorchArchive<'a> {
    /// Parses the archive in `bytes` (a file or a `.distcp` byte range); `name` is used in messages.
    pub fn open(bytes: &'a [u8], name: impl Into<String>) -> Result<TorchArchive<'a>> {
        let name = name.into();
        if bytes.starts_with(&[0x80, 0x02, 0x8a, 0x0a]) {
            return Err(CheckpointError::format(
                &name,
                "legacy (pre-1.6) torch.save format is not supported",
            ));
        }
        let index = ZipIndex::parse(bytes).map_err(|e| CheckpointError::format(&name, e))?;
        if let Some(order) = index.find("byteorder") {
            if &bytes[order] != b"little" {
                return Err(CheckpointError::format(
                    &name,
                    "big-endian torch.save archives are not supported",
                ));
            }
        }
        let pkl = index
            .find("data.pkl")
            .ok_or_else(|| CheckpointError::format(&name, "no data.pkl record"))?;
        let (arena, root) = pickle::load(&bytes[pkl]).map_err(|detail| CheckpointError::Pickle {
            file: format!("{name} (data.pkl)"),
            detail,
        })?;
        Ok(TorchArchive {
            bytes,
            index,
            name,
            arena,
            root,
        })
    }

    fn error(&self, detail: impl Into<String>) -> CheckpointError {
        CheckpointError::format(&self.name, detail)
    }

    /// True when `id` is a tensor rebuild call (possibly wrapped as a Parameter).
    pub fn is_tensor(&self, id: Id) -> bool {
        matches!(self.arena.short_class(id).as_deref(), Some(n) if n.starts_with("_rebuild_tensor") || n.starts_with("_rebuild_parameter") || n == "_rebuild_from_type_v2")
    }

    fn tensor_ref(&self, id: Id) -> Result<TensorRef> {
        let a = &self.arena;
        let class = a
            .class_name(id)
            .ok_or_else(|| self.error("expected a tensor, found a plain value"))?;
        let short = class.rsplit('.').next().unwrap_or_default();
        let args = a
            .object_args(id)
            .ok_or_else(|| self.error(format!("`{class}` is not a call")))?;
        match short {
            "_rebuild_parameter" | "_rebuild_parameter_with_state" => self.tensor_ref(
                *args
                    .first()
                    .ok_or_else(|| self.error("empty _rebuild_parameter"))?,
            ),
            "_rebuild_from_type_v2" => {
                // (func, new_type, args, state): the tensor is func(*args).
                let (func, inner) = (args.first(), args.get(2));
                let (Some(&func), Some(&inner)) = (func, inner) else {
                    return Err(self.error("short _rebuild_from_type_v2"));
                };
                let func_name = a.class_name(func).unwrap_or_default();
                let inner = a
                    .items(inner)
                    .ok_or_else(|| self.error("_rebuild_from_type_v2 args are not a tuple"))?;
                self.rebuild(&func_name, inner)
            }
            "_rebuild_tensor_v2" | "_rebuild_tensor_v3" => self.rebuild(&class, args),
            _ => Err(self.error(format!("`{class}` does not produce a tensor this reader accepts"))),
        }
    }

    fn rebuild(&self, func: &str, args: &[Id]) -> Result<TensorRef> {
        let a = &self.arena;
        let v3 = func.ends_with("_rebuild_tensor_v3");
        if !(v3 || func.ends_with("_rebuild_tensor_v2")) {
            return Err(self.error(format!("`{func}` does not produce a tensor this reader accepts")));
        }
        let bad = |what: &str| self.error(format!("{func}: {what}"));
        if args.len() < if v3 { 7 } else { 4 } {
            return Err(bad("too few arguments"));
        }
        let Value::PersistentId(pid) = a.get(args[0]) else {
            return Err(bad("first argument is not a storage"));
        };
        let pid = a.items(*pid).ok_or_else(|| bad("storage id is not a tuple"))?;
        if pid.len() < 5 || a.str(pid[0]) != Some("storage") {
            return Err(bad("storage id is not ('storage', type, key, location, size)"));
        }
        let storage_class = a.short_class(pid[1]).unwrap_or_default();
        let dtype = if v3 {
            let name = a.short_class(args[6]).unwrap_or_default();
            StoredDType::from_torch_name(&name)
                .ok_or_else(|| bad(&format!("unsupported dtype torch.{name}")))?
        } else {
            StoredDType::from_storage_class(&storage_class)
                .ok_or_else(|| bad(&format!("unsupported storage class {storage_class}")))?
        };
        let storage_key = a
            .str(pid[2])
            .ok_or_else(|| bad("storage key is not a string"))?
            .to_string();
        let storage_len = a
            .int(pid[4])
            .and_then(|v| u64::try_from(v).ok())
            .ok_or_else(|| bad("storage size"))?;
        let offset = a
            .int(args[1])
            .and_then(|v| u64::try_from(v).ok())
            .ok_or_else(|| bad("storage offset"))?;
        let size = a
            .shape(args[2])
            .ok_or_else(|| bad("size is not a tuple of ints"))?;
        let stride = a
            .shape(args[3])
            .ok_or_else(|| bad("stride is not a tuple of ints"))?;
        if size.len() != stride.len() {
            return Err(bad("size and stride ranks differ"));
        }
        Ok(TensorRef {
            dtype,
            storage_key,
            storage_len,
            storage_len_is_bytes: v3,
            offset,
            size,
            stride,
        })
    }

    /// Materialises the tensor at `id` as a contiguous host tensor, honouring storage offset and strides.
    pub fn tensor(&self, id: Id) -> Result<HostTensor> {
        let (dtype, shape, bytes) = self.tensor_bytes(id)?;
        Ok(HostTensor {
            dtype,
            shape,
            data: bytes.into_owned(),
        })
    }

    /// The tensor at `id` as contiguous C-order bytes: borrowed from the archive when it is stored contiguously
    /// (always, for DCP chunks), materialised otherwise.
    pub fn tensor_bytes(&self, id: Id) -> Result<(StoredDType, Vec<u64>, std::borrow::Cow<'a, [u8]>)> {
        let t = self.tensor_ref(id)?;
        let record = self
            .index
            .find(&format!("data/{}", t.storage_key))
            .ok_or_else(|| self.error(format!("storage record data/{} is missing", t.storage_key)))?;
        let storage: &'a [u8] = &self.bytes[record];
        let elem = t.dtype.size();
        let expected = if t.storage_len_is_bytes {
            t.storage_len
        } else {
            t.storage_len * elem as u64
        };
        if storage.len() as u64 != expected {
            return Err(self.error(format!(
                "storage data/{} holds {} bytes, its header says {expected}",
                t.storage_key,
                storage.len()
            )));
        }
        let numel: u64 = t.size.iter().product();
        let len = numel as usize * elem;
        if numel == 0 {
            return Ok((t.dtype, t.size, std::borrow::Cow::Owned(Vec::new())));
        }
        // The largest element index must fall inside the storage.
        let last = t.offset
            + t.size
                .iter()
                .zip(&t.stride)
                .map(|(s, st)| (s - 1) * st)
                .sum::<u64>();
        if (last + 1) * elem as u64 > storage.len() as u64 {
            return Err(self.error("tensor view reaches past the end of its storage"));
        }
        if c_strides(&t.size) == t.stride {
            let start = t.offset as usize * elem;
            return Ok((
                t.dtype,
                t.size,
                std::borrow::Cow::Borrowed(&storage[start..start + len]),
            ));
        }
        let mut data = vec![0u8; len];
        let mut index = vec![0u64; t.size.len()];
        for out in data.chunks_exact_mut(elem) {
            let at =
                (t.offset + index.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<u64>()) as usize * elem;
            out.copy_from_slice(&storage[at..at + elem]);
            for d in (0..index.len()).rev() {
                index[d] += 1;
                if index[d] < t.size[d] {
                    break;
                }
                index[d] = 0;
            }
        }
        Ok((t.dtype, t.size, std::borrow::Cow::Owned(data)))
    }

    /// The bytes of a `bytes`, `bytearray`, `_codecs.encode(str, 'latin1')` or `io.BytesIO` value.
    pub fn bytes_value(&self, id: Id) -> Option<Vec<u8>> {
        let a = &self.arena;
        match a.get(id) {
            Value::Bytes(b) => Some(b.clone()),
            Value::Object { .. } => match a.short_class(id)?.as_str() {
                "encode" => {
                    let s = a.str(*a.object_args(id)?.first()?)?;
                    Some(s.chars().map(|c| c as u32 as u8).collect())
                }
                "BytesIO" => {
                    let state = a.object_state(id)?;
                    self.bytes_value(*a.items(state)?.first()?)
                }
                "bytearray" => self.bytes_value(*a.object_args(id)?.first()?),
                _ => None,
            },
            _ => None,
        }
    }
}

/// C-order strides of `size`.
pub fn c_strides(size: &[u64]) -> Vec<u64> {
    let mut strides = vec![1u64; size.len()];
    for d in (0..size.len().saturating_sub(1)).rev() {
        strides[d] = strides[d + 1] * size[d + 1];
    }
    strides
}
