//! `nvlm selftest`.
pub fn run(_device: &str) -> anyhow::Result<()> { Ok(()) }
