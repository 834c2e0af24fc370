//! Test support shared by the workspace's tests.

use std::path::PathBuf;

mod reference;
pub use reference::ReferenceActivations;

/// `../shared/fixtures` beside the workspace root, or `$NVLM_FIXTURES`; panics with a clear message when missing.
pub fn fixtures() -> PathBuf {
    let dir = std::env::var_os("NVLM_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"));
    assert!(
        dir.is_dir(),
        "fixtures folder {} is missing: check out `shared/` beside the repository or set NVLM_FIXTURES",
        dir.display()
    );
    dir
}

/// `nvlm` arguments that load the random-weight fixture model: `--model .../tiny-nvlm-d --tokenizer .../tokenizer.json`.
pub fn tiny_model_args() -> Vec<String> {
    vec![
        "--model".into(),
        fixtures().join("model/tiny-nvlm-d").display().to_string(),
        "--tokenizer".into(),
        fixtures().join("tokenizer/tokenizer.json").display().to_string(),
    ]
}

/// A path `name` inside a scratch folder private to this test process (`suite` keeps suites apart), under the
/// workspace's `target/test-scratch/` so test runs do not litter the system temp folder (`cargo clean` removes them).
pub fn scratch(suite: &str, name: &str) -> PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/test-scratch")
        .join(format!("{suite}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("creating a scratch folder");
    dir.join(name)
}

/// Asserts `max |got - want| <= max_abs` and `||got - want|| / ||want|| <= rel_l2`, printing both figures.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], max_abs: f32, rel_l2: f64) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: {} values, expected {}",
        got.len(),
        want.len()
    );
    let worst = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let diff: f64 = got
        .iter()
        .zip(want)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum::<f64>()
        .sqrt();
    let norm: f64 = want
        .iter()
        .map(|b| (*b as f64).powi(2))
        .sum::<f64>()
        .sqrt()
        .max(f64::MIN_POSITIVE);
    println!("{what}: max_abs {worst:.3e}, rel_l2 {:.3e}", diff / norm);
    assert!(
        worst <= max_abs && diff / norm <= rel_l2,
        "{what}: max_abs {worst} (limit {max_abs}), rel_l2 {} (limit {rel_l2})",
        diff / norm
    );
}

/// The fixture README's f32 tolerances: max-abs 2e-3, relative L2 1e-4.
pub fn assert_close_f32_reference(what: &str, got: &[f32], want: &[f32]) {
    assert_close(what, got, want, 2e-3, 1e-4);
}
