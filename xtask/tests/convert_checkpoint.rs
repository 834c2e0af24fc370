//! `cargo xtask convert-checkpoint` as users run it: listing, converting, and a full disk (a file-size limit) that
//! must end in a clear error with nothing left under the output name.

use nvlm_testkit::{fixtures, scratch};
use std::process::Command;

#[test]
fn list_prints_one_line_per_tensor() {
    let input = fixtures().join("megatron/torch_dist");
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["convert-checkpoint", "--input", input.to_str().unwrap(), "--list"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 31);
    assert!(
        text.contains("language_model.decoder.layers.mlp.linear_fc1.weight\tBF16\t[2, 160, 32]\tchunks=8"),
        "{text}"
    );
}

#[test]
fn convert_refuses_to_overwrite_and_survives_a_full_disk() {
    let input = fixtures().join("megatron/torch_dist");
    let output = scratch("xtask", "out");
    let xtask = env!("CARGO_BIN_EXE_xtask");
    let run = |extra: &str| {
        // `ulimit -f` caps file sizes (the writes then fail with EFBIG, as on a full disk); SIGXFSZ is ignored so
        // the program sees the error instead of being killed.
        let script = format!(
            "trap '' XFSZ; {extra} exec '{xtask}' convert-checkpoint --input '{}' --output '{}'",
            input.display(),
            output.display()
        );
        Command::new("bash").args(["-c", &script]).output().unwrap()
    };
    let full = run("ulimit -f 64;");
    let stderr = String::from_utf8_lossy(&full.stderr);
    assert!(
        !full.status.success(),
        "conversion under a 64 KiB file limit succeeded"
    );
    assert!(
        stderr.contains("File too large") && stderr.contains(".safetensors"),
        "{stderr}"
    );
    assert!(!output.exists(), "a failed conversion left the output folder");
    let parent = output.parent().unwrap();
    let partial = std::fs::read_dir(parent).unwrap().flatten().any(|e| {
        e.file_name().to_string_lossy().contains("nvlm-xtask")
            && e.file_name().to_string_lossy().contains("partial")
    });
    assert!(!partial, "temporary folder left behind");

    let ok = run("");
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let again = run("");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    std::fs::remove_dir_all(&output).unwrap();
}
