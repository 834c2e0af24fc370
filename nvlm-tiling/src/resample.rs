//! Pillow's BICUBIC resize, exactly: an antialiased separable convolution (cubic kernel a = -0.5, support widened
//! when downscaling), f64 weights normalised per output pixel, converted to 22-bit fixed point, accumulated in i32
//! with a rounding bias, clipped to u8 after each pass. Written by hand because `fast_image_resize` uses other
//! fixed-point precisions and rounding, so its pixels differ from Pillow's (see the crate README).

use multiversion::multiversion;
use rayon::prelude::*;

use crate::RgbImage;

/// Which axis is resampled first when both change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PassOrder {
    /// Horizontal then vertical: every Pillow release up to 12.x, and what NVLM-D was trained with.
    #[default]
    Classic,
    /// Pillow 13's rule: vertical first when the height shrinks by more than twice as much as the width.
    Pillow13,
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Fixed-point filter taps for one axis: output `i` reads inputs `first[i]..first[i] + len[i]` with the weights
/// `coefficients[i * width..][..len[i]]`.
struct Taps {
    first: Vec<usize>,
    len: Vec<usize>,
    width: usize,
    coefficients: Vec<i32>,
}

impl Taps {
    /// Pillow's `precompute_coeffs` followed by `normalize_coeffs_8bpc`.
    fn new(in_size: usize, out_size: usize) -> Taps {
        let scale = in_size as f64 / out_size as f64;
        let filter_scale = scale.max(1.0);
        let support = 2.0 * filter_scale;
        let ss = 1.0 / filter_scale;
        let width = support.ceil() as usize * 2 + 1;
        let mut taps = Taps {
            first: Vec::new(),
            len: Vec::new(),
            width,
            coefficients: vec![0; out_size * width],
        };
        for i in 0..out_size {
            let center = (i as f64 + 0.5) * scale;
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let weights: Vec<f64> = (xmin..xmax)
                .map(|x| bicubic((x as f64 - center + 0.5) * ss))
                .collect();
            let total: f64 = weights.iter().sum();
            for (k, &w) in weights.iter().enumerate() {
                let w = if total != 0.0 { w / total } else { w };
                let scaled = w * (1u32 << PRECISION_BITS) as f64;
                taps.coefficients[i * width + k] = (if w < 0.0 { scaled - 0.5 } else { scaled + 0.5 }) as i32;
            }
            taps.first.push(xmin);
            taps.len.push(xmax - xmin);
        }
        taps
    }

    /// The input range and weights of output `i`.
    fn of(&self, i: usize) -> (usize, &[i32]) {
        (self.first[i], &self.coefficients[i * self.width..][..self.len[i]])
    }
}

fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// Output rows to write: each row given as the pieces (left to right) it is split into, so that a resize can write
/// straight into tiles. `pieces` of one row add up to `out_w * 3` bytes.
pub type RowTargets<'a> = [Vec<&'a mut [u8]>];

/// Copies `row` into the pieces of one target row.
fn scatter(row: &[u8], pieces: &mut [&mut [u8]]) {
    let mut at = 0;
    for piece in pieces.iter_mut() {
        let n = piece.len();
        piece.copy_from_slice(&row[at..at + n]);
        at += n;
    }
}

/// The horizontal pass, computed as the vertical pass of the transposed image (whose rows vectorise well), then
/// transposed back into the targets. Same integer arithmetic per output value, so the same bytes as Pillow.
fn horizontal_into(image: &RgbImage, out_w: usize, targets: &mut RowTargets<'_>) {
    let (w, h) = (image.width, image.height);
    let transposed = transpose(image);
    let taps = Taps::new(w, out_w);
    let stride = h * 3;
    // Row x of `columns` holds output column x for every input row: [out_w][h][3].
    let mut columns = vec![0u8; out_w * stride];
    columns.par_chunks_mut(stride.max(1)).enumerate().for_each_init(
        || vec![0i32; stride],
        |acc, (x, out)| {
            let (first, weights) = taps.of(x);
            vertical_row(&transposed.pixels[first * stride..], stride, weights, acc, out);
        },
    );
    targets.par_iter_mut().enumerate().for_each_init(
        || vec![0u8; out_w * 3],
        |row, (y, pieces)| {
            for (x, px) in row.chunks_exact_mut(3).enumerate() {
                px.copy_from_slice(&columns[x * stride + y * 3..][..3]);
            }
            scatter(row, pieces);
        },
    );
}

/// `[h][w][3]` to `[w][h][3]`, in cache-sized blocks.
fn transpose(image: &RgbImage) -> RgbImage {
    const BLOCK: usize = 32;
    let (w, h) = (image.width, image.height);
    let mut out = vec![0u8; w * h * 3];
    out.par_chunks_mut(BLOCK * h * 3)
        .enumerate()
        .for_each(|(bx, band)| {
            let x0 = bx * BLOCK;
            let bw = band.len() / (h * 3);
            for y0 in (0..h).step_by(BLOCK) {
                for y in y0..(y0 + BLOCK).min(h) {
                    let src = &image.pixels[(y * w + x0) * 3..][..bw * 3];
                    for (dx, px) in src.chunks_exact(3).enumerate() {
                        band[(dx * h + y) * 3..][..3].copy_from_slice(px);
                    }
                }
            }
        });
    RgbImage {
        width: h,
        height: w,
        pixels: out,
    }
}

fn vertical_into(image: &RgbImage, out_h: usize, targets: &mut RowTargets<'_>) {
    let taps = Taps::new(image.height, out_h);
    let stride = image.width * 3;
    targets.par_iter_mut().enumerate().for_each_init(
        || (vec![0i32; stride], vec![0u8; stride]),
        |(acc, row), (y, pieces)| {
            let (first, weights) = taps.of(y);
            vertical_row(&image.pixels[first * stride..], stride, weights, acc, row);
            scatter(row, pieces);
        },
    );
}

/// Runs `pass` into a new image of `w x h`.
fn into_image(w: usize, h: usize, pass: impl FnOnce(&mut RowTargets<'_>)) -> RgbImage {
    let mut pixels = vec![0u8; w * h * 3];
    let mut targets: Vec<Vec<&mut [u8]>> = pixels.chunks_mut((w * 3).max(1)).map(|r| vec![r]).collect();
    pass(&mut targets);
    RgbImage {
        width: w,
        height: h,
        pixels,
    }
}

/// One output row of the vertical pass: `rows` starts at the first input row of the window (stride `stride`).
#[multiversion(targets("x86_64+avx512f+avx512bw", "x86_64+avx2+fma", "aarch64+neon"))]
fn vertical_row(rows: &[u8], stride: usize, weights: &[i32], acc: &mut [i32], out: &mut [u8]) {
    acc.fill(HALF);
    for (k, &c) in weights.iter().enumerate() {
        let src = &rows[k * stride..][..stride];
        acc.iter_mut().zip(src).for_each(|(a, &s)| *a += s as i32 * c);
    }
    out.iter_mut().zip(acc.iter()).for_each(|(o, &a)| *o = clip8(a));
}

/// `Image.resize((out_w, out_h))` with Pillow's default BICUBIC on an RGB image. Same size: a copy. One axis
/// changed: only that pass runs. Both: two passes through a u8 intermediate, in the order `order` says.
pub fn resize_bicubic(image: &RgbImage, out_w: usize, out_h: usize, order: PassOrder) -> RgbImage {
    into_image(out_w, out_h, |targets| {
        resize_into(image, out_w, out_h, order, targets)
    })
}

/// [`resize_bicubic`] writing its rows into `targets` (one entry per output row) instead of a new image.
pub fn resize_into(
    image: &RgbImage,
    out_w: usize,
    out_h: usize,
    order: PassOrder,
    targets: &mut RowTargets<'_>,
) {
    debug_assert_eq!(targets.len(), out_h);
    let need_h = out_w != image.width;
    let need_v = out_h != image.height;
    match (need_h, need_v) {
        (false, false) => targets
            .par_iter_mut()
            .zip(image.pixels.par_chunks(image.width * 3))
            .for_each(|(pieces, row)| scatter(row, pieces)),
        (true, false) => horizontal_into(image, out_w, targets),
        (false, true) => vertical_into(image, out_h, targets),
        (true, true) => {
            let vertical_first = order == PassOrder::Pillow13
                && out_h < image.height
                && (image.height - out_h) as i64 > 2 * (image.width as i64 - out_w as i64);
            if vertical_first {
                let tmp = into_image(image.width, out_h, |t| vertical_into(image, out_h, t));
                horizontal_into(&tmp, out_w, targets);
            } else {
                let tmp = into_image(out_w, image.height, |t| horizontal_into(image, out_w, t));
                vertical_into(&tmp, out_h, targets);
            }
        }
    }
}
