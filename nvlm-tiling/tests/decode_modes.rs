//! Image modes the tiling fixtures do not cover (1-bit, LA, RGBA, 4-bit palette with transparency, grayscale,
//! subsampled and progressive JPEG, Adobe CMYK JPEG), written by the reference's Pillow 13.0.0 with the SHA-256 of
//! its `convert('RGB')` output (`tests/data/decode`, made by `scripts/gen_decode_cases.py`).

mod common;

use std::path::PathBuf;

use common::sha256;
use nvlm_tiling::{load_rgb, DEFAULT_MAX_PIXELS};

#[test]
fn every_mode_converts_to_rgb_like_pillow() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/decode");
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    let cases = index["cases"].as_object().unwrap();
    assert!(cases.len() >= 9);
    for (name, case) in cases {
        let image = load_rgb(&dir.join(name), DEFAULT_MAX_PIXELS).unwrap_or_else(|e| panic!("{name}: {e}"));
        let size = [image.width as u64, image.height as u64];
        assert_eq!(
            size[..],
            [
                case["size"][0].as_u64().unwrap(),
                case["size"][1].as_u64().unwrap()
            ],
            "{name}: size"
        );
        assert_eq!(
            sha256(&image.pixels),
            case["rgb_sha256"].as_str().unwrap(),
            "{name} ({}): RGB bytes",
            case["mode"]
        );
    }
}
