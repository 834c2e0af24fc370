//! Images to NVLM-D tiles, exactly as the reference preprocessing (HF NVLM-D's `load_image`) makes them.
//!
//! `load_rgb` decodes PNG/JPEG and converts to RGB like `Image.open(f).convert('RGB')`; `tile_image` chooses the
//! grid (`find_closest_aspect_ratio`), resizes with a Pillow-exact bicubic and crops row-major, adding a thumbnail;
//! `pixel_values` normalises with ImageNet statistics bit for bit. `prompt` holds the text side: tile tags and the
//! `<Image>...</Image>` expansion.

mod decode;
mod error;
mod grid;
mod image;
mod jpeg;
mod normalize;
mod png_rgb;
pub mod prompt;
mod ratio_order;
mod resample;
mod tiles;

pub use decode::{decode_rgb, load_rgb, DEFAULT_MAX_PIXELS};
pub use error::{Result, TilingError};
pub use grid::{candidate_grids, closest_grid, GridPlan};
pub use image::RgbImage;
pub use normalize::{lookup_table, pixel_values, pixel_values_bf16, IMAGENET_MEAN, IMAGENET_STD};
pub use resample::{resize_bicubic, resize_into, PassOrder, RowTargets};
pub use tiles::{plan, tile_image, Tiles, TilingConfig, DEFAULT_MAX_TILES, TILE_SIZE};

/// Decodes an image file and tiles it: the whole `load_image` path but normalisation.
pub fn load_tiles(path: &std::path::Path, config: &TilingConfig) -> Result<Tiles> {
    tile_image(&load_rgb(path, config.max_pixels)?, config)
}

/// Decodes image bytes and tiles them.
pub fn tiles_from_bytes(bytes: &[u8], config: &TilingConfig) -> Result<Tiles> {
    tile_image(&decode_rgb(bytes, config.max_pixels)?, config)
}
