//! Writing output files safely: to a temporary name beside the target, then renamed, so that an interrupted or
//! failed run never leaves a partial file that looks valid.

use std::path::Path;

use anyhow::Context;

/// Runs `write(tmp_path)`, then renames the temporary file to `path`; removes it on failure.
pub fn write_atomically(path: &Path, write: impl FnOnce(&Path) -> anyhow::Result<()>) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .with_context(|| format!("`{}` is not a file path", path.display()))?;
    let tmp = path.with_file_name(format!(".{}.tmp{}", name.to_string_lossy(), std::process::id()));
    let result = write(&tmp).and_then(|()| {
        std::fs::rename(&tmp, path)
            .with_context(|| format!("moving the output into place at {}", path.display()))
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
