//! The error type of `nvlm-tiling`.

/// Everything that can go wrong turning an image file into tiles.
#[derive(Debug, thiserror::Error)]
pub enum TilingError {
    /// The file could not be read.
    #[error("cannot read image `{path}`")]
    Io {
        /// The path given.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The bytes are not a PNG or a JPEG.
    #[error("unsupported image format{}: only PNG and JPEG are supported", describe(.0))]
    UnsupportedFormat(Option<String>),
    /// The file is empty.
    #[error("the image file is empty")]
    Empty,
    /// The decoder rejected the data (corrupt or truncated file).
    #[error("corrupt or truncated {format} image: {detail}")]
    Decode {
        /// `PNG` or `JPEG`.
        format: &'static str,
        /// The decoder's message.
        detail: String,
    },
    /// Width or height is zero.
    #[error("the image has zero size ({width}x{height})")]
    ZeroSized {
        /// Width in pixels.
        width: u64,
        /// Height in pixels.
        height: u64,
    },
    /// More pixels than the configured limit (a possible decompression bomb), refused before decoding.
    #[error(
        "the image is {width}x{height} = {} pixels, over the limit of {limit} (a possible decompression bomb); \
         raise the limit if the image is trusted", width * height
    )]
    TooLarge {
        /// Width in pixels.
        width: u64,
        /// Height in pixels.
        height: u64,
        /// The configured limit.
        limit: u64,
    },
    /// A configuration value is out of range.
    #[error("invalid tiling setting: {0}")]
    InvalidConfig(String),
}

fn describe(kind: &Option<String>) -> String {
    kind.as_ref().map(|k| format!(" ({k})")).unwrap_or_default()
}

/// `Result` with [`TilingError`].
pub type Result<T, E = TilingError> = std::result::Result<T, E>;
