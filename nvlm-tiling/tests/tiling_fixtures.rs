//! Every case of `shared/fixtures/tiling` (made by the HF NVLM-D `load_image` with Pillow 13 and torchvision):
//! decoded RGB, grid, tile order and every tile bit for bit, and pixel_values by their SHA-256, in both pass orders.

mod common;

use common::{fixtures, json, sha256};
use nvlm_tiling::*;
use serde_json::Value;

fn cases() -> Vec<String> {
    json("tiling/index.json")["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["case"].as_str().unwrap().to_string())
        .collect()
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn tile_hashes(tiles: &Tiles) -> Vec<String> {
    (0..tiles.len()).map(|i| sha256(tiles.tile(i))).collect()
}

/// The expected tile hashes: the stored (Pillow 13) ones, or the classic horizontal-then-vertical variants.
fn expected_hashes(manifest: &Value, classic: bool) -> Vec<String> {
    manifest["tiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let variant = &t["classic_hv_variant"]["sha256_rgb_bytes"];
            if classic && variant.is_string() {
                variant
            } else {
                &t["sha256_rgb_bytes"]
            }
            .as_str()
            .unwrap()
            .to_string()
        })
        .collect()
}

#[test]
fn every_fixture_case_matches_bit_for_bit() {
    let cases = cases();
    assert_eq!(cases.len(), 15, "the fixture index lists 15 cases");
    for case in &cases {
        let manifest = json(&format!("tiling/{case}/manifest.json"));
        let input = fixtures()
            .join("tiling")
            .join(case)
            .join(manifest["input_file"].as_str().unwrap());
        let image = load_rgb(&input, DEFAULT_MAX_PIXELS).unwrap_or_else(|e| panic!("{case}: {e}"));
        if let Some(want) = manifest["decoded_rgb_sha256"].as_str() {
            assert_eq!(
                sha256(&image.pixels),
                want,
                "{case}: decoded RGB differs from Pillow's convert('RGB')"
            );
        }
        let grid = (
            manifest["grid"]["cols"].as_u64().unwrap() as usize,
            manifest["grid"]["rows"].as_u64().unwrap() as usize,
        );
        let order: Vec<(usize, usize)> = manifest["target_ratios_in_search_order"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].as_u64().unwrap() as usize, p[1].as_u64().unwrap() as usize))
            .collect();
        assert_eq!(
            candidate_grids(1, 6).unwrap(),
            order,
            "{case}: candidate scan order"
        );

        for (pass_order, classic) in [(PassOrder::Classic, true), (PassOrder::Pillow13, false)] {
            let config = TilingConfig {
                pass_order,
                ..TilingConfig::default()
            };
            let tiles = tile_image(&image, &config).unwrap();
            assert_eq!((tiles.plan.cols, tiles.plan.rows), grid, "{case}: grid");
            assert_eq!(
                tiles.len() as u64,
                manifest["num_tiles"].as_u64().unwrap(),
                "{case}: tile count"
            );
            assert_eq!(
                tiles.plan.thumbnail,
                manifest["has_thumbnail"].as_bool().unwrap(),
                "{case}: thumbnail"
            );
            let got = tile_hashes(&tiles);
            let want = expected_hashes(&manifest, classic);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g, w, "{case}: tile {i} differs ({pass_order:?} pass order)");
            }
            let values = pixel_values(&tiles.pixels, TILE_SIZE);
            let key = if classic && manifest["pixel_values_sha256_f32le_classic_hv"].is_string() {
                "pixel_values_sha256_f32le_classic_hv"
            } else {
                "pixel_values_sha256_f32le"
            };
            assert_eq!(
                sha256(&f32_bytes(&values)),
                manifest[key].as_str().unwrap(),
                "{case}: pixel_values ({pass_order:?})"
            );
        }
    }
}

#[test]
fn classic_order_differs_only_where_recorded() {
    // gray16_160x800's thumbnail is the one resize the pass order changes (309 values).
    let manifest = json("tiling/gray16_160x800/manifest.json");
    let image = load_rgb(
        &fixtures().join("tiling/gray16_160x800/input.png"),
        DEFAULT_MAX_PIXELS,
    )
    .unwrap();
    let classic = resize_bicubic(&image, 448, 448, PassOrder::Classic);
    let pillow13 = resize_bicubic(&image, 448, 448, PassOrder::Pillow13);
    let differing = classic
        .pixels
        .iter()
        .zip(&pillow13.pixels)
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(
        differing as u64,
        manifest["tiles"][5]["classic_hv_variant"]["values_differing"]
            .as_u64()
            .unwrap()
    );
}

#[test]
fn normalisation_matches_the_stored_tensors() {
    // astronaut, exact_448 and page_gray ship the tensor itself: compare values (not only hashes) for a clear failure.
    for case in ["astronaut", "exact_448", "page_gray"] {
        let path = fixtures().join(format!("tiling/{case}/pixel_values.safetensors"));
        let bytes = std::fs::read(&path).unwrap();
        let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header: Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
        let entry = &header["pixel_values"];
        assert_eq!(entry["dtype"], "F32");
        let [start, end] = [0, 1].map(|i| entry["data_offsets"][i].as_u64().unwrap() as usize);
        let data = &bytes[8 + header_len + start..8 + header_len + end];
        let manifest = json(&format!("tiling/{case}/manifest.json"));
        let image = load_rgb(
            &fixtures().join(format!("tiling/{case}/input.png")),
            DEFAULT_MAX_PIXELS,
        )
        .unwrap();
        let tiles = tile_image(&image, &TilingConfig::default()).unwrap();
        let ours = f32_bytes(&pixel_values(&tiles.pixels, TILE_SIZE));
        assert_eq!(ours.len(), data.len(), "{case}: tensor size");
        let first_diff = ours.chunks(4).zip(data.chunks(4)).position(|(a, b)| a != b);
        assert_eq!(
            first_diff, None,
            "{case}: first differing f32 (manifest shape {})",
            manifest["pixel_values_shape"]
        );
        let bf16 = pixel_values_bf16(&tiles.pixels, TILE_SIZE);
        assert_eq!(bf16.len() * 4, ours.len());
    }
}
