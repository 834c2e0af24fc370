//! The model on a CUDA device as users run it (`nvlm generate --device cuda`): the tiny NVLM-D fixture's greedy ids
//! and logits against the HF reference within the fixture README's bf16 tolerances, whole and split over two
//! tensor-parallel ranks through NCCL (when the machine has two devices), and the embedded demo model answering as
//! on the CPU. Skipped with a printed reason without CUDA, unless `NVLM_REQUIRE_GPU=1`. CI runs it on the CUDA
//! emulator (`cargo xtask cuda-emu`), the GPU bundle's `run.sh` does the same on a real GPU.

use std::path::PathBuf;
use std::process::{Command, Output};

use nvlm_testkit::{assert_close, scratch, tiny_model_args, ReferenceActivations};

const SUITE: &str = "gpu-model";

fn cuda_devices() -> Option<usize> {
    let count = nvlm_tensor::cuda_device_count().unwrap_or(0);
    if count > 0 {
        return Some(count);
    }
    assert!(
        std::env::var("NVLM_REQUIRE_GPU").as_deref() != Ok("1"),
        "NVLM_REQUIRE_GPU=1 but no CUDA device is usable"
    );
    println!("skipped: no CUDA device");
    None
}

fn nvlm(args: &[String]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_nvlm"))
        .args(args)
        .output()
        .expect("running nvlm");
    assert!(
        out.status.success(),
        "nvlm {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn token_ids(out: &Output) -> Vec<u64> {
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    json["token_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect()
}

#[test]
fn the_fixture_model_on_cuda_matches_the_bf16_reference() {
    let Some(devices) = cuda_devices() else { return };
    let reference = ReferenceActivations::open();
    let ids = reference.ids_file("bf16.image.input_ids", SUITE, "image-ids.json");
    let tiles = reference.tiles_file(SUITE, "tiles.safetensors");
    let tp_sizes: &[&str] = if devices >= 2 { &["1", "2"] } else { &["1"] };
    for tp in tp_sizes {
        let mut a = args(&[
            "generate",
            "--device",
            "cuda",
            "--tp",
            tp,
            "--json",
            "--max-new-tokens",
            "12",
        ]);
        a.extend(tiny_model_args());
        a.extend(args(&[
            "--input-ids",
            ids.to_str().unwrap(),
            "--tiles",
            tiles.to_str().unwrap(),
        ]));
        let got = token_ids(&nvlm(&a));
        // The reference's f32 and bf16 runs agree on these ids (no near-tie), so a bf16 device must too.
        assert_eq!(
            got,
            reference.ids("bf16.image.generated_ids"),
            "--tp {tp} on cuda"
        );
        println!("GPU-MODEL image prompt, --tp {tp}: the reference's 12 greedy ids");
    }

    // The text prompt's last logits, dumped from the device, against the bf16 reference.
    let text = reference.ids_file("bf16.text.input_ids", SUITE, "text-ids.json");
    let prompt = reference.ids("bf16.text.input_ids");
    let dump = scratch(SUITE, "dump.safetensors");
    let mut a = args(&[
        "generate",
        "--device",
        "cuda",
        "--json",
        "--max-new-tokens",
        "2",
        "--dump",
    ]);
    a.push(dump.to_str().unwrap().into());
    a.extend(tiny_model_args());
    a.extend(args(&["--input-ids", text.to_str().unwrap()]));
    nvlm(&a);
    let bytes = std::fs::read(&dump).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let logits: Vec<f32> = file
        .tensor("logits")
        .unwrap()
        .data()
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let vocab = 152_064;
    let got = &logits[(prompt.len() - 4) * vocab..prompt.len() * vocab];
    // The fixture README's "Rust bf16 vs bf16.*" tolerances.
    assert_close(
        "cuda logits vs bf16.text.logits_last",
        got,
        &reference.f32s("bf16.text.logits_last"),
        0.15,
        2e-2,
    );
}

#[test]
fn the_demo_model_answers_on_cuda_as_on_the_cpu() {
    if cuda_devices().is_none() {
        return;
    }
    let shapes = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../assets/shapes.png");
    let image = args(&["--image", shapes.to_str().unwrap()]);
    for (question, with_image) in [
        ("What colour is the square?", true),
        ("Which shape is on the left?", true),
        ("How many shapes are there?", true),
        ("How many sides does a triangle have?", false),
    ] {
        let run = |device: &str| {
            let mut a = args(&["generate", "--device", device, "--json", "--prompt", question]);
            if with_image {
                a.extend(image.clone());
            }
            token_ids(&nvlm(&a))
        };
        let (cpu, cuda) = (run("cpu"), run("cuda"));
        assert_eq!(cuda, cpu, "{question}");
        println!("GPU-MODEL demo \"{question}\": the CPU's {} ids", cpu.len());
    }
}
