//! Pillow's BICUBIC resize, exactly: an antialiased separable convolution (cubic kernel a = -0.5, support widened
//! when downscaling), f64 weights normalised per output pixel, converted to 22-bit fixed point, accumulated in i32
//! with a rounding bias, clipped to u8 after each pass. Written by hand because `fast_image_resize` uses other
//! fixed-point precisions and rounding, so its pixels differ from Pillow's (see the crate README).

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

/// Fixed-point filter taps for one axis: output `i` reads inputs `first[i]..first[i] + taps[i].len()`.
struct Taps {
    first: Vec<usize>,
    coefficients: Vec<Vec<i32>>,
}

/// Pillow's `precompute_coeffs` followed by `normalize_coeffs_8bpc`.
fn taps(in_size: usize, out_size: usize) -> Taps {
    let scale = in_size as f64 / out_size as f64;
    let filter_scale = scale.max(1.0);
    let support = 2.0 * filter_scale;
    let ss = 1.0 / filter_scale;
    let mut first = Vec::with_capacity(out_size);
    let mut coefficients = Vec::with_capacity(out_size);
    for i in 0..out_size {
        let center = (i as f64 + 0.5) * scale;
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let weights: Vec<f64> = (xmin..xmax)
            .map(|x| bicubic((x as f64 - center + 0.5) * ss))
            .collect();
        let total: f64 = weights.iter().sum();
        let fixed = weights
            .iter()
            .map(|&w| {
                let w = if total != 0.0 { w / total } else { w };
                let scaled = w * (1u32 << PRECISION_BITS) as f64;
                (if w < 0.0 { scaled - 0.5 } else { scaled + 0.5 }) as i32
            })
            .collect();
        first.push(xmin);
        coefficients.push(fixed);
    }
    Taps { first, coefficients }
}

fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

fn horizontal(image: &RgbImage, out_w: usize) -> RgbImage {
    let t = taps(image.width, out_w);
    let mut out = vec![0u8; image.height * out_w * 3];
    out.par_chunks_mut(out_w * 3).enumerate().for_each(|(y, row)| {
        let src = &image.pixels[y * image.width * 3..(y + 1) * image.width * 3];
        for (x, px) in row.chunks_exact_mut(3).enumerate() {
            let mut acc = [1i32 << (PRECISION_BITS - 1); 3];
            for (k, &c) in t.coefficients[x].iter().enumerate() {
                let s = &src[(t.first[x] + k) * 3..];
                acc[0] += s[0] as i32 * c;
                acc[1] += s[1] as i32 * c;
                acc[2] += s[2] as i32 * c;
            }
            px.copy_from_slice(&[clip8(acc[0]), clip8(acc[1]), clip8(acc[2])]);
        }
    });
    RgbImage {
        width: out_w,
        height: image.height,
        pixels: out,
    }
}

fn vertical(image: &RgbImage, out_h: usize) -> RgbImage {
    let t = taps(image.height, out_h);
    let stride = image.width * 3;
    let mut out = vec![0u8; out_h * stride];
    out.par_chunks_mut(stride.max(1))
        .enumerate()
        .for_each(|(y, row)| {
            let mut acc = vec![1i32 << (PRECISION_BITS - 1); stride];
            for (k, &c) in t.coefficients[y].iter().enumerate() {
                let src = &image.pixels[(t.first[y] + k) * stride..][..stride];
                acc.iter_mut().zip(src).for_each(|(a, &s)| *a += s as i32 * c);
            }
            row.iter_mut().zip(&acc).for_each(|(o, &a)| *o = clip8(a));
        });
    RgbImage {
        width: image.width,
        height: out_h,
        pixels: out,
    }
}

/// `Image.resize((out_w, out_h))` with Pillow's default BICUBIC on an RGB image. Same size: a copy. One axis
/// changed: only that pass runs. Both: two passes through a u8 intermediate, in the order `order` says.
pub fn resize_bicubic(image: &RgbImage, out_w: usize, out_h: usize, order: PassOrder) -> RgbImage {
    let need_h = out_w != image.width;
    let need_v = out_h != image.height;
    match (need_h, need_v) {
        (false, false) => image.clone(),
        (true, false) => horizontal(image, out_w),
        (false, true) => vertical(image, out_h),
        (true, true) => {
            let vertical_first = order == PassOrder::Pillow13
                && out_h < image.height
                && (image.height - out_h) as i64 > 2 * (image.width as i64 - out_w as i64);
            if vertical_first {
                horizontal(&vertical(image, out_h), out_w)
            } else {
                vertical(&horizontal(image, out_w), out_h)
            }
        }
    }
}
