//! ImageNet normalisation, bit-exact with torchvision's `ToTensor` + `Normalize` in f32.

use half::bf16;
use rayon::prelude::*;

/// ImageNet channel means.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations.
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// The 3 x 256 possible outputs, `((v as f32) / 255 - mean[c]) / std[c]`, each step in f32 as torchvision does
/// (a division, not a multiplication by a reciprocal, which would change the last bit for many values).
pub fn lookup_table() -> [[f32; 256]; 3] {
    let mut table = [[0f32; 256]; 3];
    for (c, row) in table.iter_mut().enumerate() {
        for (v, out) in row.iter_mut().enumerate() {
            *out = (v as f32 / 255.0f32 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
        }
    }
    table
}

/// HWC u8 tiles `[n, size, size, 3]` to normalised CHW f32 `[n, 3, size, size]`, tiles in parallel.
pub fn pixel_values(tiles: &[u8], size: usize) -> Vec<f32> {
    let table = lookup_table();
    let plane = size * size;
    let mut out = vec![0f32; tiles.len()];
    out.par_chunks_mut(3 * plane)
        .zip(tiles.par_chunks(3 * plane))
        .for_each(|(dst, src)| {
            for (p, px) in src.chunks_exact(3).enumerate() {
                dst[p] = table[0][px[0] as usize];
                dst[plane + p] = table[1][px[1] as usize];
                dst[2 * plane + p] = table[2][px[2] as usize];
            }
        });
    out
}

/// [`pixel_values`] rounded to bf16 (what the model consumes on the GPU).
pub fn pixel_values_bf16(tiles: &[u8], size: usize) -> Vec<bf16> {
    pixel_values(tiles, size)
        .into_par_iter()
        .map(bf16::from_f32)
        .collect()
}
