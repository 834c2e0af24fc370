//! The reference's `dynamic_preprocess`: plan a grid, resize to it, crop row-major, then append a thumbnail of the
//! whole image.

use crate::grid::{candidate_grids, closest_grid, GridPlan};
use crate::resample::{resize_into, PassOrder};
use crate::{Result, RgbImage, TilingError, DEFAULT_MAX_PIXELS};

/// Side of one tile in pixels (`force_image_size`).
pub const TILE_SIZE: usize = 448;
/// Default maximum number of grid tiles (`max_dynamic_patch`).
pub const DEFAULT_MAX_TILES: usize = 6;

/// How images are tiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TilingConfig {
    /// Fewest grid tiles (the reference's `min_num`, 1).
    pub min_tiles: usize,
    /// Most grid tiles (the reference's `max_num`, 6).
    pub max_tiles: usize,
    /// Append a thumbnail when the grid has more than one tile.
    pub thumbnail: bool,
    /// Resize pass order (classic = what NVLM-D was trained with).
    pub pass_order: PassOrder,
    /// Images with more pixels are refused before decoding.
    pub max_pixels: u64,
}

impl Default for TilingConfig {
    fn default() -> Self {
        TilingConfig {
            min_tiles: 1,
            max_tiles: DEFAULT_MAX_TILES,
            thumbnail: true,
            pass_order: PassOrder::Classic,
            max_pixels: DEFAULT_MAX_PIXELS,
        }
    }
}

/// An image cut into tiles.
#[derive(Debug, Clone)]
pub struct Tiles {
    /// The grid that was chosen.
    pub plan: GridPlan,
    /// Width of the decoded image.
    pub width: usize,
    /// Height of the decoded image.
    pub height: usize,
    /// `[num_tiles, 448, 448, 3]` u8, grid tiles row-major, then the thumbnail.
    pub pixels: Vec<u8>,
}

impl Tiles {
    /// Number of tiles.
    pub fn len(&self) -> usize {
        self.plan.num_tiles()
    }

    /// True when there are no tiles (never, for a decoded image).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tile `i` as HWC bytes.
    pub fn tile(&self, i: usize) -> &[u8] {
        let n = TILE_SIZE * TILE_SIZE * 3;
        &self.pixels[i * n..(i + 1) * n]
    }
}

/// Chooses the grid for a `width x height` image.
pub fn plan(width: usize, height: usize, config: &TilingConfig) -> Result<GridPlan> {
    if width == 0 || height == 0 {
        return Err(TilingError::ZeroSized {
            width: width as u64,
            height: height as u64,
        });
    }
    let candidates = candidate_grids(config.min_tiles, config.max_tiles)?;
    let (cols, rows) = closest_grid(width, height, TILE_SIZE, &candidates);
    Ok(GridPlan {
        cols,
        rows,
        thumbnail: config.thumbnail && cols * rows != 1,
    })
}

/// Tiles a decoded image: the grid resize and the thumbnail resize (both from the decoded image) run in parallel and
/// write straight into the tile buffer (no resized image, no crops).
pub fn tile_image(image: &RgbImage, config: &TilingConfig) -> Result<Tiles> {
    const TILE_BYTES: usize = TILE_SIZE * TILE_SIZE * 3;
    let plan = plan(image.width, image.height, config)?;
    let mut pixels = vec![0u8; plan.num_tiles() * TILE_BYTES];
    let (grid, thumbnail) = pixels.split_at_mut(plan.blocks() * TILE_BYTES);
    // Row y of the resized image is row y % 448 of the tiles in tile row y / 448, left to right.
    let mut grid_rows: Vec<Vec<&mut [u8]>> = (0..plan.rows * TILE_SIZE)
        .map(|_| Vec::with_capacity(plan.cols))
        .collect();
    for (t, tile) in grid.chunks_mut(TILE_BYTES).enumerate() {
        for (y, row) in tile.chunks_mut(TILE_SIZE * 3).enumerate() {
            grid_rows[(t / plan.cols) * TILE_SIZE + y].push(row);
        }
    }
    let mut thumbnail_rows: Vec<Vec<&mut [u8]>> =
        thumbnail.chunks_mut(TILE_SIZE * 3).map(|r| vec![r]).collect();
    let (target_w, target_h) = (TILE_SIZE * plan.cols, TILE_SIZE * plan.rows);
    rayon::join(
        || resize_into(image, target_w, target_h, config.pass_order, &mut grid_rows),
        || {
            if plan.thumbnail {
                resize_into(
                    image,
                    TILE_SIZE,
                    TILE_SIZE,
                    config.pass_order,
                    &mut thumbnail_rows,
                )
            }
        },
    );
    Ok(Tiles {
        plan,
        width: image.width,
        height: image.height,
        pixels,
    })
}
