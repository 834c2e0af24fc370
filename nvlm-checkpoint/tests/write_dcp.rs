//! Our torch_dist writer produces files our reader (which reads the real upstream fixtures) reads back exactly; a
//! checkpoint whose chunks do not cover a tensor is refused with the tensor named.

use nvlm_checkpoint::dcp::DcpCheckpoint;
use nvlm_checkpoint::write_dcp::{ChunkData, DcpWriter};
use nvlm_checkpoint::{MegatronCheckpoint, StoredDType};

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("nvlm-write-dcp-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn written_checkpoints_read_back() {
    let dir = scratch("roundtrip");
    let data: Vec<u8> = (0..48u8).collect();
    let mut writer = DcpWriter::create(&dir).unwrap();
    let chunks = [
        ChunkData {
            offsets: vec![0, 0],
            sizes: vec![2, 6],
            data: &data[..24],
        },
        ChunkData {
            offsets: vec![2, 0],
            sizes: vec![2, 6],
            data: &data[24..],
        },
    ];
    writer.tensor("w", StoredDType::BF16, &[4, 6], &chunks).unwrap();
    writer.finish(&[("hidden_size", 6), ("num_layers", 3)]).unwrap();
    let ckpt = MegatronCheckpoint::open(&dir).unwrap();
    let t = ckpt.read("w").unwrap();
    assert_eq!(
        (t.dtype, t.shape.clone(), t.data),
        (StoredDType::BF16, vec![4, 6], data)
    );
    assert_eq!(ckpt.common().unwrap().int("num_layers"), Some(3));
    assert_eq!(
        ckpt.read_leading("w", 3).unwrap().data,
        (36..48u8).collect::<Vec<_>>()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_missing_chunk_is_refused() {
    let dir = scratch("missing");
    let data = vec![1u8; 24];
    let mut writer = DcpWriter::create(&dir).unwrap();
    writer
        .tensor(
            "layers.w",
            StoredDType::BF16,
            &[4, 6],
            &[ChunkData {
                offsets: vec![0, 0],
                sizes: vec![2, 6],
                data: &data,
            }],
        )
        .unwrap();
    writer.finish(&[]).unwrap();
    let err = DcpCheckpoint::open(&dir)
        .unwrap()
        .read("layers.w")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`layers.w`") && err.contains("missing chunk") && err.contains("__0_0.distcp"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_chunk_whose_dtype_and_shape_disagree_with_the_metadata_is_refused() {
    // Two checkpoints whose single chunks have the same byte length: f16 [4,6] and i64 [2,3]. The metadata of the
    // first over the data of the second describes a chunk that is not what the file holds.
    let (a, b) = (scratch("meta-f16"), scratch("data-i64"));
    let data = vec![0u8; 48];
    let mut writer = DcpWriter::create(&a).unwrap();
    writer
        .tensor(
            "t",
            StoredDType::F16,
            &[4, 6],
            &[ChunkData {
                offsets: vec![0, 0],
                sizes: vec![4, 6],
                data: &data,
            }],
        )
        .unwrap();
    writer.finish(&[]).unwrap();
    let mut writer = DcpWriter::create(&b).unwrap();
    writer
        .tensor(
            "t",
            StoredDType::I64,
            &[2, 3],
            &[ChunkData {
                offsets: vec![0, 0],
                sizes: vec![2, 3],
                data: &data,
            }],
        )
        .unwrap();
    writer.finish(&[]).unwrap();
    std::fs::copy(b.join("__0_0.distcp"), a.join("__0_0.distcp")).unwrap();
    let err = DcpCheckpoint::open(&a)
        .unwrap()
        .read("t")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`t`") && err.contains("__0_0.distcp") && err.contains("I64") && err.contains("F16"),
        "{err}"
    );
    std::fs::remove_dir_all(&a).unwrap();
    std::fs::remove_dir_all(&b).unwrap();
}
