//! Test support: the shared fixtures folder and SHA-256.
#![allow(dead_code)]

use sha2::{Digest, Sha256};

pub use nvlm_testkit::fixtures;

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
