//! Damaged checkpoints give clear errors naming the file (and tensor), and a failed conversion leaves nothing under
//! the output name. Each case damages a copy of the tiny NVLM-D Megatron fixture.

mod common;

use std::path::{Path, PathBuf};

use common::fixtures;
use nvlm_checkpoint::convert::{convert, ConvertOptions, DEFAULT_MAX_SHARD_BYTES};
use nvlm_checkpoint::{MegatronCheckpoint, TorchArchive};

/// A private copy of `fixtures/megatron/<backend>/iter_0000001`.
fn copy_fixture(backend: &str, case: &str) -> PathBuf {
    let dst = std::env::temp_dir().join(format!("nvlm-bad-{}-{case}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dst);
    copy_dir(
        &fixtures().join("megatron").join(backend).join("iter_0000001"),
        &dst,
    );
    dst
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
            let mut perms = std::fs::metadata(&target).unwrap().permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            perms.set_readonly(false);
            std::fs::set_permissions(&target, perms).unwrap();
        }
    }
}

/// Opening and converting `dir` fails with a message containing every needle; no output is left behind.
fn expect_failure(dir: &Path, needles: &[&str]) {
    let output = dir.with_extension("hf");
    let result = MegatronCheckpoint::open(dir).and_then(|ckpt| {
        let options = ConvertOptions {
            output: output.clone(),
            config: None,
            tokenizer: None,
            force: false,
            max_shard_bytes: DEFAULT_MAX_SHARD_BYTES,
        };
        convert(&ckpt, &options, |_| {})
    });
    let message = result.expect_err("a damaged checkpoint converted").to_string();
    for needle in needles {
        assert!(message.contains(needle), "expected `{needle}` in: {message}");
    }
    assert!(!output.exists(), "a failed conversion left {}", output.display());
    let leftovers: Vec<_> = std::fs::read_dir(dir.parent().unwrap())
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name().to_string_lossy().contains(&format!(
                "{}.hf.partial",
                dir.file_name().unwrap().to_string_lossy()
            ))
        })
        .collect();
    assert!(leftovers.is_empty(), "temporary output left behind");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn truncated_distcp() {
    let dir = copy_fixture("torch_dist", "truncated");
    let file = dir.join("__1_0.distcp");
    let len = std::fs::metadata(&file).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    expect_failure(&dir, &["__1_0.distcp", "truncated"]);
}

#[test]
fn corrupt_metadata() {
    let dir = copy_fixture("torch_dist", "corrupt-metadata");
    let path = dir.join(".metadata");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.truncate(bytes.len() / 3);
    std::fs::write(&path, bytes).unwrap();
    expect_failure(&dir, &[".metadata", "pickle"]);
}

#[test]
fn unknown_pickle_global_in_metadata() {
    let dir = copy_fixture("torch_dist", "global");
    let path = dir.join(".metadata");
    let bytes = std::fs::read(&path).unwrap();
    let (from, to) = (
        &b"torch.distributed.checkpoint.metadata"[..],
        &b"subprocess.distributed.checkpoint.aaa"[..],
    );
    assert_eq!(from.len(), to.len());
    let at = bytes
        .windows(from.len())
        .position(|w| w == from)
        .expect("module string present");
    let mut patched = bytes.clone();
    patched[at..at + from.len()].copy_from_slice(to);
    std::fs::write(&path, patched).unwrap();
    expect_failure(
        &dir,
        &[
            ".metadata",
            "subprocess.distributed.checkpoint.aaa",
            "not allowed",
        ],
    );
}

#[test]
fn unknown_pickle_global_in_a_torch_save_archive() {
    let bytes = std::fs::read(fixtures().join("megatron/torch_dist/iter_0000001/common.pt")).unwrap();
    let (from, to) = (&b"argparse\nNamespace"[..], &b"posixxxx\nNamespace"[..]);
    let at = bytes
        .windows(from.len())
        .position(|w| w == from)
        .expect("argparse global present");
    let mut patched = bytes.clone();
    patched[at..at + from.len()].copy_from_slice(to);
    let err = TorchArchive::open(&patched, "common.pt")
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("common.pt") && err.contains("posixxxx.Namespace"),
        "{err}"
    );
}

#[test]
fn swapped_data_files_mismatch_the_metadata() {
    // Rank 0's file read where rank 1's chunks are expected: shapes or offsets disagree with the metadata.
    let dir = copy_fixture("torch_dist", "swapped");
    let (a, b) = (dir.join("__0_0.distcp"), dir.join("__1_0.distcp"));
    let (bytes_a, bytes_b) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    std::fs::write(&a, bytes_b).unwrap();
    std::fs::write(&b, bytes_a).unwrap();
    expect_failure(&dir, &["distcp"]);
}

#[test]
fn missing_zarr_chunk() {
    let dir = copy_fixture("zarr", "missing-chunk");
    let tensor = dir.join("language_model.decoder.layers.self_attention.linear_qkv.weight");
    let chunk = std::fs::read_dir(&tensor)
        .unwrap()
        .flatten()
        .find(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .unwrap();
    std::fs::remove_file(chunk.path()).unwrap();
    expect_failure(
        &dir,
        &[
            "language_model.decoder.layers.self_attention.linear_qkv.weight",
            "missing chunk",
        ],
    );
}

#[test]
fn zarr_dtype_that_does_not_match_the_data() {
    let dir = copy_fixture("zarr", "dtype");
    let zarray = dir.join("language_model.decoder.final_layernorm.weight/.zarray");
    let text = std::fs::read_to_string(&zarray)
        .unwrap()
        .replace("\"bfloat16\"", "\"<f4\"");
    std::fs::write(&zarray, text).unwrap();
    expect_failure(
        &dir,
        &["language_model.decoder.final_layernorm.weight", "expected"],
    );
}

#[test]
fn not_a_checkpoint() {
    let dir = std::env::temp_dir().join(format!("nvlm-bad-{}-empty", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    expect_failure(&dir, &["not a torch_dist"]);
    let missing = MegatronCheckpoint::open(Path::new("/nonexistent/checkpoint"))
        .unwrap_err()
        .to_string();
    assert!(missing.contains("/nonexistent/checkpoint"), "{missing}");
}
