//! Every tensor and object of every `shared/fixtures/dcp-formats` checkpoint reads back with its exact values
//! (written by torch.distributed.checkpoint 2.15 and megatron-core 0.14 / 0.15 / 0.16.1).

mod common;

use common::{fixtures, range, values};
use nvlm_checkpoint::dcp::DcpCheckpoint;
use nvlm_checkpoint::{StoredDType, TorchArchive};

#[test]
fn plain_dcp_reads_every_item() {
    let ckpt = DcpCheckpoint::open(&fixtures().join("dcp-formats/plain")).unwrap();
    let w = ckpt.read("w").unwrap();
    assert_eq!(
        (w.dtype, w.shape.clone(), values(&w)),
        (StoredDType::F32, vec![3, 4], range(0.0, 12))
    );
    let b = ckpt.read("b").unwrap();
    assert_eq!((b.dtype, values(&b)), (StoredDType::BF16, range(0.0, 4)));
    let view = ckpt.read("view").unwrap();
    assert_eq!((view.dtype, values(&view)), (StoredDType::F16, range(5.0, 4)));
    let x = ckpt.read("nested.x").unwrap();
    assert_eq!((x.dtype, values(&x)), (StoredDType::I64, vec![1.0, 1.0]));
    let step = ckpt.object_bytes("nested.step").unwrap();
    let archive = TorchArchive::open(&step, "nested.step").unwrap();
    assert_eq!(archive.arena.int(archive.root), Some(7));
    let name = ckpt.object_bytes("nested.name").unwrap();
    let archive = TorchArchive::open(&name, "nested.name").unwrap();
    assert_eq!(archive.arena.str(archive.root), Some("hello"));
    assert_eq!(ckpt.tensors().len(), 4);
}

#[test]
fn megatron_torch_dist_versions_read_every_item() {
    for version in ["mc14", "mc15", "mc16"] {
        let ckpt = DcpCheckpoint::open(&fixtures().join("dcp-formats").join(version)).unwrap();
        let qkv = ckpt
            .read("decoder.layers.self_attention.linear_qkv.weight")
            .unwrap();
        assert_eq!(
            (qkv.dtype, qkv.shape.clone()),
            (StoredDType::BF16, vec![2, 6, 4]),
            "{version}"
        );
        let want: Vec<f64> = (0..2).flat_map(|l| range(100.0 * l as f64, 24)).collect();
        assert_eq!(values(&qkv), want, "{version}: stacked layers");
        let emb = ckpt.read("embedding.word_embeddings.weight").unwrap();
        assert_eq!(
            (emb.dtype, emb.shape.clone(), values(&emb)),
            (StoredDType::F32, vec![8, 4], range(0.0, 32)),
            "{version}"
        );
        let norm = ckpt.read("decoder.final_layernorm.weight").unwrap();
        assert_eq!(values(&norm), vec![1.0; 4], "{version}");
        for (layer, shard) in ["shard_0_2", "shard_1_2"].iter().enumerate() {
            let key = format!("decoder.layers.self_attention.linear_qkv._extra_state/{shard}");
            let bytes = ckpt.object_bytes(&key).unwrap();
            let archive = TorchArchive::open(&bytes, &key).unwrap();
            let list = archive
                .arena
                .items(archive.root)
                .expect("a ShardedObject is a list");
            let payload = archive.bytes_value(list[0]).expect("an io.BytesIO");
            assert_eq!(
                payload,
                format!("te-extra-state-{layer}").into_bytes(),
                "{version}"
            );
        }
        let optimizer = "optimizer.state.exp_avg.decoder.layers.mlp.linear_fc2.weight";
        if version == "mc16" {
            assert!(!ckpt.tensors().contains_key(optimizer));
        } else {
            let entry = &ckpt.tensors()[optimizer];
            assert_eq!(entry.size, vec![1, 1, 24], "{version}: stored flat");
            assert_eq!(entry.shape(), &[6, 4]);
            let exp_avg = ckpt.read(optimizer).unwrap();
            assert_eq!(exp_avg.shape, vec![6, 4]);
            assert_eq!(
                values(&exp_avg),
                range(0.5, 24),
                "{version}: flattened ranges reassembled"
            );
        }
    }
}

#[test]
fn megatron_zarr_reads_every_array() {
    use nvlm_checkpoint::zarr::ZarrCheckpoint;
    let ckpt = ZarrCheckpoint::open(&fixtures().join("dcp-formats/zarr14")).unwrap();
    let names: Vec<String> = ckpt.entries().keys().cloned().collect();
    assert_eq!(
        names.len(),
        4,
        "arrays only: no .sync folder, no ShardedObject folder: {names:?}"
    );
    let qkv = ckpt
        .read("decoder.layers.self_attention.linear_qkv.weight")
        .unwrap();
    assert_eq!((qkv.dtype, qkv.shape.clone()), (StoredDType::BF16, vec![2, 6, 4]));
    let want: Vec<f64> = (0..2).flat_map(|l| range(100.0 * l as f64, 24)).collect();
    assert_eq!(values(&qkv), want);
    assert_eq!(
        values(&ckpt.read("embedding.word_embeddings.weight").unwrap()),
        range(0.0, 32)
    );
    assert_eq!(
        values(&ckpt.read("decoder.final_layernorm.weight").unwrap()),
        vec![1.0; 4]
    );
    let exp_avg = ckpt
        .read("optimizer.state.exp_avg.decoder.layers.mlp.linear_fc2.weight")
        .unwrap();
    assert_eq!(
        (exp_avg.shape.clone(), values(&exp_avg)),
        (vec![6, 4], range(0.5, 24))
    );
    // ShardedObjects are plain torch.save files (not lists) in the zarr layout.
    let dir = fixtures().join("dcp-formats/zarr14/decoder.layers.self_attention.linear_qkv._extra_state");
    let bytes = std::fs::read(dir.join("shard_1_2.pt")).unwrap();
    let archive = TorchArchive::open(&bytes, "shard_1_2.pt").unwrap();
    assert_eq!(archive.bytes_value(archive.root).unwrap(), b"te-extra-state-1");
}

#[test]
fn common_pt_gives_the_args() {
    for version in ["mc14", "mc15", "mc16", "zarr14"] {
        let common =
            nvlm_checkpoint::common_state::CommonState::read(&fixtures().join("dcp-formats").join(version))
                .unwrap();
        assert_eq!(common.int("num_layers"), Some(2), "{version}");
        assert_eq!(common.int("hidden_size"), Some(4), "{version}");
        assert_eq!(
            common.args["params_dtype"],
            nvlm_checkpoint::common_state::ArgValue::Other("torch.bfloat16".into())
        );
        assert_eq!(common.iteration, Some(10));
    }
}
