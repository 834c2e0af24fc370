//! `nvlm preprocess`: one image to tiles and pixel values, as the model will see it.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};
use nvlm_tiling::{
    load_tiles, pixel_values, PassOrder, TilingConfig, DEFAULT_MAX_PIXELS, DEFAULT_MAX_TILES, TILE_SIZE,
};
use safetensors::tensor::{serialize_to_file, TensorView};
use safetensors::Dtype;

use crate::output::write_atomically;

/// Resize pass order.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum PassOrderArg {
    /// Horizontal then vertical (Pillow <= 12; what NVLM-D was trained with).
    Classic,
    /// Pillow 13's rule (vertical first for tall shrinks).
    Pillow13,
}

/// Arguments of `nvlm preprocess`.
#[derive(Args, Debug)]
pub struct PreprocessArgs {
    /// The image (PNG or JPEG).
    #[arg(long)]
    image: PathBuf,
    /// Most grid tiles (the thumbnail is extra).
    #[arg(long, default_value_t = DEFAULT_MAX_TILES)]
    max_tiles: usize,
    /// Do not append the whole-image thumbnail.
    #[arg(long)]
    no_thumbnail: bool,
    /// Resize pass order.
    #[arg(long, value_enum, default_value = "classic")]
    pass_order: PassOrderArg,
    /// Refuse images with more pixels than this (decompression-bomb guard).
    #[arg(long, default_value_t = DEFAULT_MAX_PIXELS)]
    max_pixels: u64,
    /// Write `tiles` (U8 [N,448,448,3]) and `pixel_values` (F32 [N,3,448,448]) to this safetensors file.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Tiles the image, prints `{"grid":[cols,rows],"tiles":N,"width":W,"height":H}`, writes the tensors if asked.
pub fn run(args: &PreprocessArgs) -> anyhow::Result<()> {
    let config = TilingConfig {
        max_tiles: args.max_tiles,
        thumbnail: !args.no_thumbnail,
        pass_order: match args.pass_order {
            PassOrderArg::Classic => PassOrder::Classic,
            PassOrderArg::Pillow13 => PassOrder::Pillow13,
        },
        max_pixels: args.max_pixels,
        ..TilingConfig::default()
    };
    let tiles = load_tiles(&args.image, &config)
        .with_context(|| format!("preprocessing {}", args.image.display()))?;
    let n = tiles.len();
    if let Some(out) = &args.out {
        let values = pixel_values(&tiles.pixels, TILE_SIZE);
        let value_bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        write_atomically(out, |tmp| {
            let tensors = [
                (
                    "tiles",
                    TensorView::new(Dtype::U8, vec![n, TILE_SIZE, TILE_SIZE, 3], &tiles.pixels)?,
                ),
                (
                    "pixel_values",
                    TensorView::new(Dtype::F32, vec![n, 3, TILE_SIZE, TILE_SIZE], &value_bytes)?,
                ),
            ];
            serialize_to_file(tensors, None, tmp).with_context(|| format!("writing {}", tmp.display()))
        })?;
    }
    let line = serde_json::json!({
        "grid": [tiles.plan.cols, tiles.plan.rows],
        "tiles": n,
        "width": tiles.width,
        "height": tiles.height,
    });
    println!("{line}");
    Ok(())
}
