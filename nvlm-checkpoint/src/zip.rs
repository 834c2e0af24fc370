//! A minimal reader for the zip archives `torch.save` writes: STORED entries only, zip64, sizes from the central
//! directory (the local headers carry data descriptors), data offsets from the local headers. Works on a byte range
//! (a `.distcp` item), so offsets are relative to the archive's first byte.

use std::collections::HashMap;
use std::ops::Range;

/// The records of one archive: name to byte range within the archive.
#[derive(Debug, Clone)]
pub struct ZipIndex {
    records: HashMap<String, Range<usize>>,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

impl ZipIndex {
    /// Parses the central directory of `archive`.
    pub fn parse(archive: &[u8]) -> Result<ZipIndex, String> {
        let eocd = (0..archive.len().saturating_sub(21))
            .rev()
            .take(65_536 + 22)
            .find(|&i| u32_at(archive, i) == Some(0x0605_4b50))
            .ok_or(
                "not a zip archive (no end-of-central-directory record): truncated or not a torch.save file",
            )?;
        let mut entries = u16_at(archive, eocd + 10).ok_or("short EOCD")? as u64;
        let mut cd_offset = u32_at(archive, eocd + 16).ok_or("short EOCD")? as u64;
        // A zip64 locator sits just before the EOCD.
        if eocd >= 20 && u32_at(archive, eocd - 20) == Some(0x0706_4b50) {
            let z64 = u64_at(archive, eocd - 12).ok_or("short zip64 locator")? as usize;
            if u32_at(archive, z64) != Some(0x0606_4b50) {
                return Err("zip64 end record not found where the locator points".into());
            }
            entries = u64_at(archive, z64 + 32).ok_or("short zip64 end record")?;
            cd_offset = u64_at(archive, z64 + 48).ok_or("short zip64 end record")?;
        }
        let mut records = HashMap::new();
        let mut at = cd_offset as usize;
        for _ in 0..entries {
            if u32_at(archive, at) != Some(0x0201_4b50) {
                return Err("corrupt central directory".into());
            }
            let method = u16_at(archive, at + 10).ok_or("short entry")?;
            let mut size = u32_at(archive, at + 24).ok_or("short entry")? as u64;
            let name_len = u16_at(archive, at + 28).ok_or("short entry")? as usize;
            let extra_len = u16_at(archive, at + 30).ok_or("short entry")? as usize;
            let comment_len = u16_at(archive, at + 32).ok_or("short entry")? as usize;
            let mut local = u32_at(archive, at + 42).ok_or("short entry")? as u64;
            let name = archive
                .get(at + 46..at + 46 + name_len)
                .ok_or("short entry name")?;
            let name = String::from_utf8_lossy(name).into_owned();
            // zip64 extra field: uncompressed size, compressed size, local offset, in that order, when saturated.
            let extra = archive
                .get(at + 46 + name_len..at + 46 + name_len + extra_len)
                .ok_or("short extra")?;
            let mut e = 0;
            while e + 4 <= extra.len() {
                let (id, len) = (
                    u16_at(extra, e).unwrap_or(0),
                    u16_at(extra, e + 2).unwrap_or(0) as usize,
                );
                if id == 0x0001 {
                    let mut field = e + 4;
                    let uncompressed = u32_at(archive, at + 24).unwrap_or(0);
                    if uncompressed == u32::MAX {
                        size = u64_at(extra, field).ok_or("short zip64 field")?;
                        field += 8;
                    }
                    if u32_at(archive, at + 20) == Some(u32::MAX) {
                        field += 8;
                    }
                    if local == u32::MAX as u64 {
                        local = u64_at(extra, field).ok_or("short zip64 field")?;
                    }
                }
                e += 4 + len;
            }
            if method != 0 {
                return Err(format!(
                    "record `{name}` is compressed (method {method}); torch.save stores records"
                ));
            }
            let local = local as usize;
            if u32_at(archive, local) != Some(0x0403_4b50) {
                return Err(format!("record `{name}`: local header missing"));
            }
            let local_name = u16_at(archive, local + 26).ok_or("short local header")? as usize;
            let local_extra = u16_at(archive, local + 28).ok_or("short local header")? as usize;
            let start = local + 30 + local_name + local_extra;
            let end = start
                .checked_add(size as usize)
                .filter(|&e| e <= archive.len())
                .ok_or_else(|| {
                    format!("record `{name}` extends past the end of the archive (truncated file)")
                })?;
            records.insert(name, start..end);
            at += 46 + name_len + extra_len + comment_len;
        }
        Ok(ZipIndex { records })
    }

    /// The record whose name ends with `/suffix` (torch names records `<archive>/<record>`).
    pub fn find(&self, suffix: &str) -> Option<Range<usize>> {
        self.records
            .iter()
            .find(|(name, _)| name.as_str() == suffix || name.ends_with(&format!("/{suffix}")))
            .map(|(_, r)| r.clone())
    }
}
