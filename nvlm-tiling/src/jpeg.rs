//! JPEG to RGB through libjpeg-turbo's decoder (the `mozjpeg` crate builds it from source): the same accurate integer
//! IDCT and fancy upsampling as the reference's Pillow, hence bit-identical pixels. CMYK files are converted as
//! Pillow does, inverted when an Adobe APP14 marker is present. EXIF orientation is ignored, as the reference does.

use std::panic::{catch_unwind, AssertUnwindSafe};

use mozjpeg::{ColorSpace, Decompress};

use crate::decode::check_size;
use crate::{Result, RgbImage, TilingError};

fn corrupt(detail: impl Into<String>) -> TilingError {
    TilingError::Decode {
        format: "JPEG",
        detail: detail.into(),
    }
}

/// What the marker walk learned before the first scan.
struct Markers {
    adobe: bool,
    complete: bool,
}

/// Walks the marker segments up to the first SOS: notes an Adobe APP14 segment, and whether an EOI marker follows
/// the scan data (0xFF 0xD9 cannot occur inside entropy-coded data, which stuffs every 0xFF). A file cut short has
/// none: the reference (Pillow) refuses it as truncated, while libjpeg would pad it with gray.
fn walk_markers(bytes: &[u8]) -> Markers {
    let mut adobe = false;
    let mut i = 2;
    while i + 4 <= bytes.len() {
        if bytes[i] != 0xFF {
            break;
        }
        let marker = bytes[i + 1];
        if marker == 0xFF {
            i += 1;
            continue;
        }
        let length = u16::from_be_bytes([bytes[i + 2], bytes[i + 3]]) as usize;
        let body = &bytes[(i + 4).min(bytes.len())..(i + 2 + length).min(bytes.len())];
        if marker == 0xEE && body.starts_with(b"Adobe") {
            adobe = true;
        }
        if marker == 0xDA {
            let after_scan = &bytes[(i + 2 + length).min(bytes.len())..];
            let complete = after_scan.windows(2).any(|w| w == [0xFF, 0xD9]);
            return Markers { adobe, complete };
        }
        i += 2 + length;
    }
    Markers {
        adobe,
        complete: false,
    }
}

/// Pillow's `MULDIV255`: a rounded `a * b / 255`.
fn muldiv255(a: u32, b: u32) -> u8 {
    let t = a * b + 128;
    ((t + (t >> 8)) >> 8) as u8
}

/// Decodes JPEG bytes.
pub fn decode(bytes: &[u8], max_pixels: u64) -> Result<RgbImage> {
    let markers = walk_markers(bytes);
    if !markers.complete {
        return Err(corrupt(
            "the file is truncated (no end-of-image marker after the scan data)",
        ));
    }
    // libjpeg reports fatal errors by unwinding (the crate's error manager); turn that into an error value.
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        decode_unchecked(bytes, max_pixels, markers.adobe)
    }));
    match outcome {
        Ok(result) => result,
        Err(payload) => {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "libjpeg error".into());
            Err(corrupt(message))
        }
    }
}

fn decode_unchecked(bytes: &[u8], max_pixels: u64, adobe: bool) -> Result<RgbImage> {
    let decompress = Decompress::new_mem(bytes).map_err(|e| corrupt(e.to_string()))?;
    let (width, height) = decompress.size();
    check_size(width as u64, height as u64, max_pixels)?;
    let pixels: Vec<u8> = match decompress.color_space() {
        ColorSpace::JCS_GRAYSCALE => {
            let mut started = decompress.grayscale().map_err(|e| corrupt(e.to_string()))?;
            let gray = started
                .read_scanlines::<u8>()
                .map_err(|e| corrupt(e.to_string()))?;
            started.finish().map_err(|e| corrupt(e.to_string()))?;
            gray.iter().flat_map(|&g| [g, g, g]).collect()
        }
        ColorSpace::JCS_CMYK | ColorSpace::JCS_YCCK => {
            let mut started = decompress
                .to_colorspace(ColorSpace::JCS_CMYK)
                .map_err(|e| corrupt(e.to_string()))?;
            let cmyk = started
                .read_scanlines::<[u8; 4]>()
                .map_err(|e| corrupt(e.to_string()))?;
            started.finish().map_err(|e| corrupt(e.to_string()))?;
            // Pillow reads Adobe CMYK as inverted (`CMYK;I`), then R = MULDIV255(255 - C, 255 - K), and so on.
            let ink = |v: u8| if adobe { 255 - v as u32 } else { v as u32 };
            cmyk.iter()
                .flat_map(|&[c, m, y, k]| {
                    let white = 255 - ink(k);
                    [
                        muldiv255(255 - ink(c), white),
                        muldiv255(255 - ink(m), white),
                        muldiv255(255 - ink(y), white),
                    ]
                })
                .collect()
        }
        _ => {
            let mut started = decompress.rgb().map_err(|e| corrupt(e.to_string()))?;
            let rgb = started
                .read_scanlines::<[u8; 3]>()
                .map_err(|e| corrupt(e.to_string()))?;
            started.finish().map_err(|e| corrupt(e.to_string()))?;
            rgb.concat()
        }
    };
    RgbImage::new(width, height, pixels).ok_or_else(|| corrupt("decoded size mismatch"))
}
