//! Decoding PNG and JPEG files to RGB exactly as the reference's `Image.open(f).convert('RGB')` does.

use std::path::Path;

use crate::{jpeg, png_rgb, Result, RgbImage, TilingError};

/// Pillow's default `Image.MAX_IMAGE_PIXELS`: larger images are refused before any pixel is decoded.
pub const DEFAULT_MAX_PIXELS: u64 = 89_478_485;

/// Reads and decodes an image file (PNG or JPEG, recognised by content, not by extension) to RGB.
pub fn load_rgb(path: &Path, max_pixels: u64) -> Result<RgbImage> {
    let bytes = std::fs::read(path).map_err(|source| TilingError::Io {
        path: path.display().to_string(),
        source,
    })?;
    decode_rgb(&bytes, max_pixels)
}

/// Decodes PNG or JPEG bytes to RGB, refusing images of more than `max_pixels` pixels before allocating them.
pub fn decode_rgb(bytes: &[u8], max_pixels: u64) -> Result<RgbImage> {
    if bytes.is_empty() {
        return Err(TilingError::Empty);
    }
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        png_rgb::decode(bytes, max_pixels)
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        jpeg::decode(bytes, max_pixels)
    } else {
        Err(TilingError::UnsupportedFormat(sniff(bytes).map(str::to_string)))
    }
}

/// Names a few formats users commonly try, for a clearer error.
fn sniff(bytes: &[u8]) -> Option<&'static str> {
    let known: [(&[u8], &str); 6] = [
        (b"GIF8", "GIF"),
        (b"BM", "BMP"),
        (b"RIFF", "WebP/RIFF"),
        (b"II*\0", "TIFF"),
        (b"MM\0*", "TIFF"),
        (b"%PDF", "PDF"),
    ];
    known
        .iter()
        .find(|(magic, _)| bytes.starts_with(magic))
        .map(|&(_, name)| name)
}

/// Fails unless `width x height` is a non-empty image within `max_pixels`.
pub(crate) fn check_size(width: u64, height: u64, max_pixels: u64) -> Result<()> {
    if width == 0 || height == 0 {
        return Err(TilingError::ZeroSized { width, height });
    }
    if width.saturating_mul(height) > max_pixels {
        return Err(TilingError::TooLarge {
            width,
            height,
            limit: max_pixels,
        });
    }
    Ok(())
}
