//! Dynamic high-resolution tiling for NVLM-D (stub; see the README).

/// Side of one square tile in pixels.
pub const TILE_SIZE: usize = 448;
/// Default maximum number of tiles (the thumbnail excluded).
pub const DEFAULT_MAX_TILES: usize = 6;
