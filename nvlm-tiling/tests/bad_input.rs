//! Bad input never panics: truncations and byte flips of every fixture and test image, arbitrary bytes, headers
//! claiming huge or zero sizes. A property test (proptest) drives the mutations; failures it ever finds are kept in
//! `tests/data/regressions` and replayed here.

mod common;

use std::path::PathBuf;

use nvlm_tiling::{decode_rgb, tiles_from_bytes, TilingConfig, TilingError};
use proptest::prelude::*;

/// Every image the tests know: fixture inputs and the decode-mode images.
fn seed_images() -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = Vec::new();
    let tiling = common::fixtures().join("tiling");
    for entry in std::fs::read_dir(&tiling).unwrap().flatten() {
        for name in ["input.png", "input.jpg"] {
            let path = entry.path().join(name);
            if path.is_file() && std::fs::metadata(&path).unwrap().len() < 200_000 {
                files.push(path);
            }
        }
    }
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/decode");
    for entry in std::fs::read_dir(local).unwrap().flatten() {
        if entry.path().extension().is_some_and(|e| e == "png" || e == "jpg") {
            files.push(entry.path());
        }
    }
    files.sort();
    files.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// Decoding and tiling return (Ok or Err), and never panic. Tiny limits keep mutated headers cheap.
fn survives(bytes: &[u8]) {
    let config = TilingConfig {
        max_pixels: 4_000_000,
        ..TilingConfig::default()
    };
    let _ = tiles_from_bytes(bytes, &config);
}

/// Where the pixel data ends: after the last IDAT chunk of a PNG, at the last EOI marker of a JPEG. Like Pillow,
/// a PNG cut only in its trailing chunks (IEND) still loads; any earlier cut must fail.
fn end_of_pixel_data(image: &[u8]) -> usize {
    if image.starts_with(b"\x89PNG") {
        let (mut at, mut end) = (8, 8);
        while at + 8 <= image.len() {
            let length = u32::from_be_bytes(image[at..at + 4].try_into().unwrap()) as usize;
            if &image[at + 4..at + 8] == b"IDAT" {
                end = at + 12 + length;
            }
            at += 12 + length;
        }
        end
    } else {
        image.windows(2).rposition(|w| w == [0xFF, 0xD9]).unwrap() + 2
    }
}

#[test]
fn every_truncation_is_an_error() {
    for image in seed_images() {
        // Cutting anywhere before the end of the pixel data must fail cleanly (PNG: missing data or CRC; JPEG: no
        // EOI), never decode to a padded image.
        let end = end_of_pixel_data(&image);
        let step = (end / 40).max(1);
        for cut in (0..end - 1).step_by(step).chain([end - 1]) {
            let result = decode_rgb(&image[..cut], 4_000_000);
            assert!(
                result.is_err(),
                "a file cut to {cut} of {} bytes decoded",
                image.len()
            );
        }
    }
}

#[test]
fn size_limits_are_checked_before_decoding() {
    // A PNG header claiming 100000 x 100000 pixels and nothing else: refused as too large, not allocated.
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    png.extend_from_slice(&13u32.to_be_bytes());
    png.extend_from_slice(&ihdr);
    png.extend_from_slice(&crc32fast::hash(&ihdr).to_be_bytes());
    png.extend_from_slice(&[0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xAE, 0x42, 0x60, 0x82]);
    assert!(matches!(
        decode_rgb(&png, 89_478_485),
        Err(TilingError::TooLarge { width: 100_000, .. })
    ));
    assert!(matches!(decode_rgb(&[], 10), Err(TilingError::Empty)));
    assert!(matches!(
        decode_rgb(b"GIF89a....", 10),
        Err(TilingError::UnsupportedFormat(Some(_)))
    ));
}

#[test]
fn recorded_regressions_do_not_panic() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/regressions");
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        survives(&std::fs::read(entry.path()).unwrap());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_images_never_panic(seed in 0usize..1000, flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        let images = seed_images();
        let mut bytes = images[seed % images.len()].clone();
        for (at, value) in flips {
            let at = at % bytes.len();
            bytes[at] = value;
        }
        survives(&bytes);
    }

    #[test]
    fn arbitrary_bytes_never_panic(prefix in prop::sample::select(vec![&b"\x89PNG\r\n\x1a\n"[..], &[0xFF, 0xD8, 0xFF][..], &b""[..]]),
                                   body in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut bytes = prefix.to_vec();
        bytes.extend_from_slice(&body);
        survives(&bytes);
    }
}
