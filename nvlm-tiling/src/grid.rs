//! Grid selection: the reference's `find_closest_aspect_ratio`, including its scan order and tie rule.

use crate::ratio_order::{MAX_RECORDED, RATIO_ORDER};
use crate::{Result, TilingError};

/// The chosen tiling of one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GridPlan {
    /// Tiles across (the width).
    pub cols: usize,
    /// Tiles down (the height).
    pub rows: usize,
    /// Whether a thumbnail of the whole image follows the grid tiles.
    pub thumbnail: bool,
}

impl GridPlan {
    /// Grid tiles, `cols * rows`.
    pub fn blocks(&self) -> usize {
        self.cols * self.rows
    }

    /// Tiles in total, the thumbnail included.
    pub fn num_tiles(&self) -> usize {
        self.blocks() + usize::from(self.thumbnail)
    }
}

/// The candidate grids `(cols, rows)` with `min_tiles <= cols * rows <= max_tiles`, in the reference's scan order.
pub fn candidate_grids(min_tiles: usize, max_tiles: usize) -> Result<Vec<(usize, usize)>> {
    if min_tiles == 0 || min_tiles > max_tiles || max_tiles > MAX_RECORDED {
        return Err(TilingError::InvalidConfig(format!(
            "tile counts must satisfy 1 <= min ({min_tiles}) <= max ({max_tiles}) <= {MAX_RECORDED}"
        )));
    }
    // The recorded orders are those of min_num = 1, the reference's default. For a larger minimum the (1, max) order
    // is filtered; the reference's own set could iterate differently there, which matters only for exact ties.
    Ok(RATIO_ORDER[max_tiles - 1]
        .iter()
        .map(|&(c, r)| (c as usize, r as usize))
        .filter(|&(c, r)| c * r >= min_tiles)
        .collect())
}

/// `find_closest_aspect_ratio`: the grid whose `cols/rows` is closest to `width/height`; an exact tie replaces the
/// best so far only when the image area exceeds half the candidate grid's area (`0.5 * tile² * cols * rows`).
pub fn closest_grid(
    width: usize,
    height: usize,
    tile: usize,
    candidates: &[(usize, usize)],
) -> (usize, usize) {
    let aspect = width as f64 / height as f64;
    let area = (width * height) as f64;
    let mut best_diff = f64::INFINITY;
    let mut best = (1, 1);
    for &(cols, rows) in candidates {
        let diff = (aspect - cols as f64 / rows as f64).abs();
        if diff < best_diff {
            best_diff = diff;
            best = (cols, rows);
        } else if diff == best_diff && area > 0.5 * (tile * tile * cols * rows) as f64 {
            best = (cols, rows);
        }
    }
    best
}
