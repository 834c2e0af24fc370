//! A writer for `torch_dist` checkpoints in the exact on-disk form PyTorch and megatron-core produce (a protocol-2
//! `.metadata` pickle of DCP classes, one `torch.save` zip per chunk in `.distcp` files, `metadata.json`, and a
//! `common.pt` with an `args` namespace). Used to make large synthetic checkpoints for benchmarks and damaged ones
//! for tests; it is not needed to read checkpoints.

use std::io::Write;
use std::path::Path;

use crate::dtype::StoredDType;
use crate::{CheckpointError, Result};

/// A protocol-2 pickle under construction.
#[derive(Default)]
pub struct PickleWriter {
    out: Vec<u8>,
}

impl PickleWriter {
    /// Starts a protocol-2 pickle.
    pub fn new() -> Self {
        PickleWriter { out: vec![0x80, 2] }
    }
    /// `GLOBAL module name`.
    pub fn global(&mut self, module: &str, name: &str) -> &mut Self {
        self.out.push(b'c');
        self.out
            .extend_from_slice(format!("{module}\n{name}\n").as_bytes());
        self
    }
    /// A str.
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.out.push(b'X');
        self.out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.out.extend_from_slice(s.as_bytes());
        self
    }
    /// An int (LONG1 for values beyond i32).
    pub fn int(&mut self, v: i64) -> &mut Self {
        if let Ok(small) = i32::try_from(v) {
            self.out.push(b'J');
            self.out.extend_from_slice(&small.to_le_bytes());
        } else {
            self.out.extend_from_slice(&[0x8a, 8]);
            self.out.extend_from_slice(&v.to_le_bytes());
        }
        self
    }
    /// A bool.
    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.out.push(if v { 0x88 } else { 0x89 });
        self
    }
    /// None.
    pub fn none(&mut self) -> &mut Self {
        self.out.push(b'N');
        self
    }
    /// MARK.
    pub fn mark(&mut self) -> &mut Self {
        self.out.push(b'(');
        self
    }
    /// TUPLE (items since the mark).
    pub fn tuple(&mut self) -> &mut Self {
        self.out.push(b't');
        self
    }
    /// An empty dict.
    pub fn empty_dict(&mut self) -> &mut Self {
        self.out.push(b'}');
        self
    }
    /// An empty list.
    pub fn empty_list(&mut self) -> &mut Self {
        self.out.push(b']');
        self
    }
    /// SETITEMS (pairs since the mark).
    pub fn set_items(&mut self) -> &mut Self {
        self.out.push(b'u');
        self
    }
    /// APPENDS (items since the mark).
    pub fn appends(&mut self) -> &mut Self {
        self.out.push(b'e');
        self
    }
    /// REDUCE.
    pub fn reduce(&mut self) -> &mut Self {
        self.out.push(b'R');
        self
    }
    /// NEWOBJ.
    pub fn newobj(&mut self) -> &mut Self {
        self.out.push(0x81);
        self
    }
    /// BUILD.
    pub fn build(&mut self) -> &mut Self {
        self.out.push(b'b');
        self
    }
    /// BINPERSID.
    pub fn persistent_id(&mut self) -> &mut Self {
        self.out.push(b'Q');
        self
    }
    /// A tuple of ints.
    pub fn ints(&mut self, values: &[u64]) -> &mut Self {
        self.mark();
        for &v in values {
            self.int(v as i64);
        }
        self.tuple()
    }
    /// `torch.Size(values)`.
    pub fn size(&mut self, values: &[u64]) -> &mut Self {
        self.global("torch", "Size").mark().ints(values).tuple().reduce()
    }
    /// `cls.__new__(cls)` then `BUILD` with the dict that `fields` pushes (as key/value pairs).
    pub fn object(&mut self, module: &str, name: &str, fields: impl FnOnce(&mut Self)) -> &mut Self {
        self.global(module, name)
            .mark()
            .tuple()
            .newobj()
            .empty_dict()
            .mark();
        fields(self);
        self.set_items().build()
    }
    /// STOP; the finished bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.out.push(b'.');
        self.out
    }
}

fn torch_dtype_name(dtype: StoredDType) -> &'static str {
    match dtype {
        StoredDType::BF16 => "bfloat16",
        StoredDType::F32 => "float32",
        StoredDType::F16 => "float16",
        StoredDType::I64 => "int64",
        StoredDType::I32 => "int32",
        _ => "uint8",
    }
}

fn storage_class(dtype: StoredDType) -> &'static str {
    match dtype {
        StoredDType::BF16 => "BFloat16Storage",
        StoredDType::F32 => "FloatStorage",
        StoredDType::F16 => "HalfStorage",
        StoredDType::I64 => "LongStorage",
        StoredDType::I32 => "IntStorage",
        _ => "ByteStorage",
    }
}

/// A STORED zip archive as `torch.save` writes it (records under `archive/`, data 64-byte aligned).
pub fn zip_archive(records: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in records {
        let name = format!("archive/{name}");
        let offset = out.len() as u32;
        // Pad the local extra field so the data starts 64-byte aligned.
        let unpadded = out.len() + 30 + name.len() + 4;
        let pad = (64 - unpadded % 64) % 64;
        let crc = crc32fast::hash(data);
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        out.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(&((4 + pad) as u16).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&[0x42, 0x46]); // "FB" padding field, as torch writes
        out.extend_from_slice(&(pad as u16).to_le_bytes());
        out.extend(std::iter::repeat_n(b'Z', pad));
        out.extend_from_slice(data);
        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&[20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        central.extend_from_slice(&crc.to_le_bytes());
        central.extend_from_slice(&(data.len() as u32).to_le_bytes());
        central.extend_from_slice(&(data.len() as u32).to_le_bytes());
        central.extend_from_slice(&(name.len() as u16).to_le_bytes());
        central.extend_from_slice(&[0; 12]);
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let cd_offset = out.len() as u32;
    let count = records.len() as u16;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out
}

/// `torch.save(tensor)` of a contiguous tensor.
pub fn torch_save_tensor(dtype: StoredDType, shape: &[u64], data: &[u8]) -> Vec<u8> {
    let numel: u64 = shape.iter().product();
    let strides = crate::torch_save::c_strides(shape);
    let mut p = PickleWriter::new();
    p.global("torch._utils", "_rebuild_tensor_v2").mark();
    p.mark()
        .str("storage")
        .global("torch", storage_class(dtype))
        .str("0")
        .str("cpu")
        .int(numel as i64)
        .tuple()
        .persistent_id();
    p.int(0)
        .ints(shape)
        .ints(&strides)
        .bool(false)
        .global("collections", "OrderedDict")
        .mark()
        .tuple()
        .reduce();
    p.tuple().reduce();
    let pickle = p.finish();
    zip_archive(&[
        ("data.pkl", &pickle),
        ("byteorder", b"little"),
        ("data/0", data),
        ("version", b"3\n"),
    ])
}

/// One tensor chunk to write.
pub struct ChunkData<'a> {
    /// Offsets in the global tensor.
    pub offsets: Vec<u64>,
    /// Extent.
    pub sizes: Vec<u64>,
    /// Contiguous bytes.
    pub data: &'a [u8],
}

/// `(offsets, sizes, byte offset, byte length)` of one written chunk.
type WrittenChunk = (Vec<u64>, Vec<u64>, u64, u64);
/// `(name, dtype, global shape, chunks)` of one written tensor.
type WrittenTensor = (String, StoredDType, Vec<u64>, Vec<WrittenChunk>);

/// Streams a `torch_dist` iteration folder: tensors are appended chunk by chunk to `__0_0.distcp`, the metadata is
/// written by [`DcpWriter::finish`].
pub struct DcpWriter {
    dir: std::path::PathBuf,
    file: std::io::BufWriter<std::fs::File>,
    offset: u64,
    tensors: Vec<WrittenTensor>,
}

impl DcpWriter {
    /// Creates `dir` (an `iter_*` folder).
    pub fn create(dir: &Path) -> Result<DcpWriter> {
        std::fs::create_dir_all(dir).map_err(CheckpointError::io(dir))?;
        let path = dir.join("__0_0.distcp");
        let file = std::fs::File::create(&path).map_err(CheckpointError::io(&path))?;
        Ok(DcpWriter {
            dir: dir.to_path_buf(),
            file: std::io::BufWriter::with_capacity(8 << 20, file),
            offset: 0,
            tensors: Vec::new(),
        })
    }

    /// Appends tensor `name` of global `shape` from its chunks.
    pub fn tensor(
        &mut self,
        name: &str,
        dtype: StoredDType,
        shape: &[u64],
        chunks: &[ChunkData<'_>],
    ) -> Result<()> {
        let path = self.dir.join("__0_0.distcp");
        let mut records = Vec::new();
        for chunk in chunks {
            let archive = torch_save_tensor(dtype, &chunk.sizes, chunk.data);
            self.file
                .write_all(&archive)
                .map_err(CheckpointError::io(&path))?;
            records.push((
                chunk.offsets.clone(),
                chunk.sizes.clone(),
                self.offset,
                archive.len() as u64,
            ));
            self.offset += archive.len() as u64;
        }
        self.tensors
            .push((name.to_string(), dtype, shape.to_vec(), records));
        Ok(())
    }

    /// Writes `.metadata`, `common.pt` (with `args`) and `metadata.json`.
    pub fn finish(mut self, args: &[(&str, i64)]) -> Result<()> {
        let path = self.dir.join("__0_0.distcp");
        self.file.flush().map_err(CheckpointError::io(&path))?;
        let m = "torch.distributed.checkpoint.metadata";
        let mut p = PickleWriter::new();
        p.object(m, "Metadata", |p| {
            p.str("state_dict_metadata").empty_dict().mark();
            for (name, dtype, shape, chunks) in &self.tensors {
                p.str(name).object(m, "TensorStorageMetadata", |p| {
                    p.str("properties")
                        .global(m, "TensorProperties")
                        .mark()
                        .tuple()
                        .newobj();
                    p.mark()
                        .global("torch", torch_dtype_name(*dtype))
                        .none()
                        .bool(false)
                        .none()
                        .bool(false)
                        .tuple()
                        .build();
                    p.str("size").size(shape);
                    p.str("chunks").empty_list().mark();
                    for (offsets, sizes, _, _) in chunks {
                        p.object(m, "ChunkStorageMetadata", |p| {
                            p.str("offsets").size(offsets).str("sizes").size(sizes);
                        });
                    }
                    p.appends();
                });
            }
            p.set_items();
            p.str("planner_data").none();
            p.str("storage_data").empty_dict().mark();
            for (name, _, _, chunks) in &self.tensors {
                for (offsets, _, offset, length) in chunks {
                    p.object(m, "MetadataIndex", |p| {
                        p.str("fqn")
                            .str(name)
                            .str("offset")
                            .size(offsets)
                            .str("index")
                            .none();
                    });
                    p.object("torch.distributed.checkpoint.filesystem", "_StorageInfo", |p| {
                        p.str("relative_path")
                            .str("__0_0.distcp")
                            .str("offset")
                            .int(*offset as i64)
                            .str("length")
                            .int(*length as i64);
                    });
                }
            }
            p.set_items();
        });
        let metadata = self.dir.join(".metadata");
        std::fs::write(&metadata, p.finish()).map_err(CheckpointError::io(&metadata))?;
        let mut c = PickleWriter::new();
        c.empty_dict()
            .mark()
            .str("args")
            .object("argparse", "Namespace", |c| {
                for (k, v) in args {
                    c.str(k).int(*v);
                }
            });
        c.str("iteration").int(1).set_items();
        let common = zip_archive(&[
            ("data.pkl", &c.finish()),
            ("byteorder", b"little"),
            ("version", b"3\n"),
        ]);
        let common_path = self.dir.join("common.pt");
        std::fs::write(&common_path, common).map_err(CheckpointError::io(&common_path))?;
        let json = self.dir.join("metadata.json");
        std::fs::write(&json, r#"{"sharded_backend": "torch_dist", "sharded_backend_version": 1, "common_backend": "torch", "common_backend_version": 1}"#)
            .map_err(CheckpointError::io(&json))?;
        Ok(())
    }
}
