//! The decoded image: 8-bit RGB, row-major, channels interleaved (HWC).

/// An 8-bit RGB image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `height * width * 3` bytes, row-major, R G B.
    pub pixels: Vec<u8>,
}

impl RgbImage {
    /// An image from raw HWC bytes; `None` when the length does not match.
    pub fn new(width: usize, height: usize, pixels: Vec<u8>) -> Option<RgbImage> {
        (pixels.len() == width * height * 3).then_some(RgbImage {
            width,
            height,
            pixels,
        })
    }

    /// The `w x h` region whose top-left corner is `(left, top)`; the caller keeps it inside the image.
    pub fn crop(&self, left: usize, top: usize, w: usize, h: usize) -> RgbImage {
        let mut pixels = Vec::with_capacity(w * h * 3);
        for y in top..top + h {
            let start = (y * self.width + left) * 3;
            pixels.extend_from_slice(&self.pixels[start..start + w * 3]);
        }
        RgbImage {
            width: w,
            height: h,
            pixels,
        }
    }
}
