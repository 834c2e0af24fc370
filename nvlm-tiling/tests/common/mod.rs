//! Test support: the shared fixtures folder and SHA-256.
#![allow(dead_code)]

use std::path::PathBuf;

use sha2::{Digest, Sha256};

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

/// A JSON file under the fixtures folder.
pub fn json(relative: &str) -> serde_json::Value {
    let path = fixtures().join(relative);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// Lower-case hex SHA-256.
pub fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}
