//! PNG to RGB with Pillow's mode conversions: palette lookup, 1-bit to 0/255, 2- and 4-bit gray scaled, 16-bit gray
//! **clipped** at 255 (`I;16` to `RGB`), 16-bit colour reduced to its high byte (`RGB;16B`), alpha dropped.

use png::{BitDepth, ColorType, Decoder, Transformations};

use crate::decode::check_size;
use crate::{Result, RgbImage, TilingError};

fn corrupt(e: impl std::fmt::Display) -> TilingError {
    TilingError::Decode {
        format: "PNG",
        detail: e.to_string(),
    }
}

/// Decodes PNG bytes.
pub fn decode(bytes: &[u8], max_pixels: u64) -> Result<RgbImage> {
    // Check the size in IHDR before the decoder reads anything else.
    if bytes.len() >= 24 && &bytes[12..16] == b"IHDR" {
        let dimension =
            |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        check_size(dimension(16) as u64, dimension(20) as u64, max_pixels)?;
    }
    let mut decoder =
        Decoder::new_with_limits(std::io::Cursor::new(bytes), png::Limits { bytes: usize::MAX });
    decoder.set_transformations(Transformations::IDENTITY);
    let mut reader = decoder.read_info().map_err(corrupt)?;
    let (width, height, color, depth, palette) = {
        let info = reader.info();
        (
            info.width as usize,
            info.height as usize,
            info.color_type,
            info.bit_depth,
            info.palette.clone(),
        )
    };
    check_size(width as u64, height as u64, max_pixels)?;
    let mut raw = vec![
        0u8;
        reader
            .output_buffer_size()
            .ok_or_else(|| corrupt("image too large for memory"))?
    ];
    let frame = reader.next_frame(&mut raw).map_err(corrupt)?;
    let stride = frame.line_size;
    let bits = depth as usize;
    if color == ColorType::Rgb && bits == 8 && stride == width * 3 {
        // Already packed RGB: the decoder's buffer is the image.
        raw.truncate(width * height * 3);
        return RgbImage::new(width, height, raw).ok_or_else(|| corrupt("decoded size mismatch"));
    }
    let mut rgb = Vec::with_capacity(width * height * 3);
    for y in 0..height {
        let row = &raw[y * stride..(y + 1) * stride];
        match color {
            ColorType::Rgb if bits == 8 => rgb.extend_from_slice(&row[..width * 3]),
            ColorType::Rgba if bits == 8 => {
                rgb.extend(row[..width * 4].chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]));
            }
            ColorType::Grayscale if bits == 8 => rgb.extend(row[..width].iter().flat_map(|&g| [g, g, g])),
            ColorType::Grayscale | ColorType::GrayscaleAlpha => {
                let channels = if color == ColorType::Grayscale { 1 } else { 2 };
                for x in 0..width {
                    let g = gray_value(row, x * channels, depth, channels == 1);
                    rgb.extend_from_slice(&[g, g, g]);
                }
            }
            ColorType::Rgb | ColorType::Rgba => {
                let channels = if color == ColorType::Rgb { 3 } else { 4 };
                let sample = bits / 8; // 8-bit: the byte; 16-bit big-endian: the high byte
                for x in 0..width {
                    for c in 0..3 {
                        rgb.push(row[(x * channels + c) * sample]);
                    }
                }
            }
            ColorType::Indexed => {
                let palette = palette
                    .as_deref()
                    .ok_or_else(|| corrupt("indexed image without a PLTE chunk"))?;
                for x in 0..width {
                    let index = packed(row, x, bits) as usize;
                    match palette.get(index * 3..index * 3 + 3) {
                        Some(entry) => rgb.extend_from_slice(entry),
                        None => rgb.extend_from_slice(&[0, 0, 0]),
                    }
                }
            }
        }
    }
    RgbImage::new(width, height, rgb).ok_or_else(|| corrupt("decoded size mismatch"))
}

/// Sample `index` of a row of `bits`-bit packed samples (MSB first), for depths below 8.
fn packed(row: &[u8], index: usize, bits: usize) -> u8 {
    if bits == 8 {
        return row[index];
    }
    let per_byte = 8 / bits;
    let byte = row[index / per_byte];
    let shift = 8 - bits * (index % per_byte + 1);
    (byte >> shift) & ((1u8 << bits) - 1)
}

/// The 8-bit gray Pillow shows for sample `index` of a gray row.
fn gray_value(row: &[u8], index: usize, depth: BitDepth, single_channel: bool) -> u8 {
    match depth {
        BitDepth::One => packed(row, index, 1) * 255,
        BitDepth::Two => packed(row, index, 2) * 0x55,
        BitDepth::Four => packed(row, index, 4) * 0x11,
        BitDepth::Eight => row[index],
        BitDepth::Sixteen => {
            let high = row[index * 2];
            if single_channel {
                // Mode I;16: converting to RGB clips the 16-bit value at 255.
                let value = u16::from_be_bytes([high, row[index * 2 + 1]]);
                value.min(255) as u8
            } else {
                // LA;16B keeps the high byte.
                high
            }
        }
    }
}
