//! Conversion throughput (plain harness): writes a synthetic NVLM-D-shaped `torch_dist` checkpoint (smaller widths,
//! the real names, layouts and chunking: stacked layers, two tensor-parallel chunks per layer), converts it to HF
//! safetensors, and compares with `cp` of the same bytes on the same disk; reports peak RSS of the conversion.
//! Size: `NVLM_BENCH_CKPT_LAYERS` LLM layers (default 24, about 2.3 GB). Folder: `$NVLM_BENCH_DIR` or target/.

use std::path::{Path, PathBuf};
use std::time::Instant;

use nvlm_checkpoint::convert::{convert, ConvertOptions, DEFAULT_MAX_SHARD_BYTES};
use nvlm_checkpoint::write_dcp::{ChunkData, DcpWriter};
use nvlm_checkpoint::{MegatronCheckpoint, StoredDType};

const TP: u64 = 2;

fn fill(bytes: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..bytes / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect()
}

/// Writes `name` with global `shape`, split along `axis` into TP chunks (per layer when `stacked`).
fn write(w: &mut DcpWriter, name: &str, shape: &[u64], stacked: bool, axis: Option<usize>, seed: &mut u64) {
    let layers = if stacked { shape[0] } else { 1 };
    let inner: Vec<u64> = if stacked {
        shape[1..].to_vec()
    } else {
        shape.to_vec()
    };
    let parts = if axis.is_some() { TP } else { 1 };
    let mut piece = inner.clone();
    if let Some(a) = axis {
        piece[a] /= TP;
    }
    let bytes = piece.iter().product::<u64>() as usize * 2;
    let data: Vec<Vec<u8>> = (0..layers * parts)
        .map(|_| {
            *seed += 1;
            fill(bytes, *seed)
        })
        .collect();
    let mut chunks = Vec::new();
    for l in 0..layers {
        for p in 0..parts {
            let mut offsets = vec![0u64; inner.len()];
            if let Some(a) = axis {
                offsets[a] = p * piece[a];
            }
            let (offsets, sizes) = if stacked {
                ([&[l][..], &offsets].concat(), [&[1][..], &piece].concat())
            } else {
                (offsets, piece.clone())
            };
            chunks.push(ChunkData {
                offsets,
                sizes,
                data: &data[(l * parts + p) as usize],
            });
        }
    }
    w.tensor(name, StoredDType::BF16, shape, &chunks)
        .expect("writing the synthetic checkpoint");
}

fn synthetic(dir: &Path, layers: u64) {
    let (h, heads, groups, ffn, vocab) = (2048u64, 16u64, 4u64, 5632u64, 152064u64);
    let dh = h / heads;
    let qkv = groups * (heads / groups + 2) * dh;
    let (vh, vheads, vffn, vlayers) = (512u64, 8u64, 2048u64, 4u64);
    let mut w = DcpWriter::create(dir).expect("creating the benchmark folder");
    let mut seed = 0;
    let l = "language_model.decoder.layers.";
    write(
        &mut w,
        "language_model.embedding.word_embeddings.weight",
        &[vocab, h],
        false,
        Some(0),
        &mut seed,
    );
    write(
        &mut w,
        "language_model.output_layer.weight",
        &[vocab, h],
        false,
        Some(0),
        &mut seed,
    );
    write(
        &mut w,
        "language_model.decoder.final_layernorm.weight",
        &[h],
        false,
        None,
        &mut seed,
    );
    write(
        &mut w,
        &format!("{l}self_attention.linear_qkv.layer_norm_weight"),
        &[layers, h],
        true,
        None,
        &mut seed,
    );
    write(
        &mut w,
        &format!("{l}self_attention.linear_qkv.weight"),
        &[layers, qkv, h],
        true,
        Some(0),
        &mut seed,
    );
    write(
        &mut w,
        &format!("{l}self_attention.linear_qkv.bias"),
        &[layers, qkv],
        true,
        Some(0),
        &mut seed,
    );
    write(
        &mut w,
        &format!("{l}self_attention.linear_proj.weight"),
        &[layers, h, h],
        true,
        Some(1),
        &mut seed,
    );
    write(
        &mut w,
        &format!("{l}mlp.linear_fc1.layer_norm_weight"),
        &[layers, h],
        true,
        None,
        &mut seed,
    );
    write(
        &mut w,
        &format!("{l}mlp.linear_fc1.weight"),
        &[layers, 2 * ffn, h],
        true,
        Some(0),
        &mut seed,
    );
    write(
        &mut w,
        &format!("{l}mlp.linear_fc2.weight"),
        &[layers, h, ffn],
        true,
        Some(1),
        &mut seed,
    );
    let v = "vision_model.decoder.layers.";
    write(
        &mut w,
        "vision_model.class_token",
        &[1, 1, vh],
        false,
        None,
        &mut seed,
    );
    write(
        &mut w,
        "vision_model.conv1.weight",
        &[vh, 3, 14, 14],
        false,
        None,
        &mut seed,
    );
    write(&mut w, "vision_model.conv1.bias", &[vh], false, None, &mut seed);
    write(
        &mut w,
        "vision_model.position_embeddings.weight",
        &[1025, vh],
        false,
        None,
        &mut seed,
    );
    for (name, shape, axis) in [
        ("input_layernorm.weight", vec![vlayers, vh], None),
        ("pre_mlp_layernorm.weight", vec![vlayers, vh], None),
        ("ls1", vec![vlayers, vh], None),
        ("ls2", vec![vlayers, vh], None),
        (
            "self_attention.linear_qkv.weight",
            vec![vlayers, 3 * vh, vh],
            Some(0),
        ),
        ("self_attention.q_layernorm.weight", vec![vlayers, vh], Some(0)),
        ("self_attention.k_layernorm.weight", vec![vlayers, vh], Some(0)),
        (
            "self_attention.linear_proj.weight",
            vec![vlayers, vh, vh],
            Some(1),
        ),
        ("self_attention.linear_proj.bias", vec![vlayers, vh], None),
        ("mlp.linear_fc1.weight", vec![vlayers, vffn, vh], Some(0)),
        ("mlp.linear_fc1.bias", vec![vlayers, vffn], Some(0)),
        ("mlp.linear_fc2.weight", vec![vlayers, vh, vffn], Some(1)),
        ("mlp.linear_fc2.bias", vec![vlayers, vh], None),
    ] {
        write(&mut w, &format!("{v}{name}"), &shape, true, axis, &mut seed);
    }
    let p = "vision_projection.encoder.linear_fc1.";
    write(
        &mut w,
        &format!("{p}layer_norm_weight"),
        &[4 * vh],
        false,
        None,
        &mut seed,
    );
    write(
        &mut w,
        &format!("{p}layer_norm_bias"),
        &[4 * vh],
        false,
        None,
        &mut seed,
    );
    write(
        &mut w,
        &format!("{p}weight"),
        &[ffn, 4 * vh],
        false,
        Some(0),
        &mut seed,
    );
    write(
        &mut w,
        "vision_projection.encoder.linear_fc2.weight",
        &[h, ffn],
        false,
        Some(1),
        &mut seed,
    );
    w.finish(&[
        ("vit_real_attention_heads", vheads as i64),
        ("vit_hidden_size", vh as i64),
        ("num_attention_heads", heads as i64),
        ("num_query_groups", groups as i64),
        ("hidden_size", h as i64),
        ("ffn_hidden_size", ffn as i64),
        ("padded_vocab_size", vocab as i64),
    ])
    .expect("finishing the synthetic checkpoint");
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn main() {
    let layers: u64 = std::env::var("NVLM_BENCH_CKPT_LAYERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    let base = std::env::var_os("NVLM_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-checkpoint"));
    let _ = std::fs::remove_dir_all(&base);
    let (src, out, copy) = (
        base.join("iter_0000001"),
        base.join("hf"),
        base.join("copy.distcp"),
    );
    synthetic(&src, layers);
    let bytes = std::fs::metadata(src.join("__0_0.distcp"))
        .expect("written")
        .len();
    let largest = 152064u64 * 2048 * 2;

    let start = Instant::now();
    let status = std::process::Command::new("cp")
        .arg(src.join("__0_0.distcp"))
        .arg(&copy)
        .status();
    let _ = std::process::Command::new("sync").status();
    let cp_seconds = start.elapsed().as_secs_f64();
    let cp_ok = status.map(|s| s.success()).unwrap_or(false);
    let _ = std::fs::remove_file(&copy);

    // Reset the peak-RSS counter (the writer above used memory too), then convert.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let checkpoint = MegatronCheckpoint::open(&src).expect("synthetic checkpoint opens");
    let options = ConvertOptions {
        output: out.clone(),
        config: None,
        tokenizer: None,
        force: true,
        max_shard_bytes: DEFAULT_MAX_SHARD_BYTES,
    };
    let start = Instant::now();
    let plan = convert(&checkpoint, &options, |_| {}).expect("conversion");
    let convert_seconds = start.elapsed().as_secs_f64();
    let rss = peak_rss_kib();
    let gb = bytes as f64 / 1e9;
    println!(
        "checkpoint: {layers} LLM layers, {gb:.2} GB in .distcp, {} HF tensors, largest tensor {:.0} MB",
        plan.outputs.len(),
        largest as f64 / 1e6
    );
    println!("{:<12} {:>10} {:>10}", "", "seconds", "GB/s");
    if cp_ok {
        println!(
            "{:<12} {:>10.2} {:>10.2}",
            "cp + sync",
            cp_seconds,
            gb / cp_seconds
        );
    }
    println!(
        "{:<12} {:>10.2} {:>10.2}",
        "convert",
        convert_seconds,
        gb / convert_seconds
    );
    if cp_ok {
        println!("convert / cp: {:.0}%", 100.0 * cp_seconds / convert_seconds);
    }
    if let Some(kib) = rss {
        println!(
            "peak RSS during conversion: {:.0} MB (budget: 2 x largest tensor + 256 MB = {:.0} MB)",
            kib as f64 / 1024.0,
            (2 * largest) as f64 / 1e6 + 256.0
        );
    }
    let _ = std::fs::remove_dir_all(&base);
}
