//! The text side of images: tile tags and the `<Image>...</Image>` expansion with one `<|vision_pad|>` per image
//! token, as NVLM-D's `chat()` builds it.

/// The image-context token whose embeddings are replaced by image embeddings.
pub const IMAGE_CONTEXT_TOKEN: &str = "<|vision_pad|>";
/// Image tokens per tile after pixel shuffle.
pub const IMAGE_TOKENS_PER_TILE: usize = 256;
/// The placeholder a question uses for an image.
pub const IMAGE_PLACEHOLDER: &str = "<image>";

/// The tags of an image's tiles: `<tile_1>` ... `<tile_{n-1}>` then `<tile_global_thumbnail>` (so a single tile is
/// tagged `<tile_global_thumbnail>` only).
pub fn tile_tags(num_tiles: usize) -> Vec<String> {
    let mut tags: Vec<String> = (1..num_tiles).map(|k| format!("<tile_{k}>")).collect();
    if num_tiles > 0 {
        tags.push("<tile_global_thumbnail>".to_string());
    }
    tags
}

/// `<Image>` + for each tile (its tag + 256 `<|vision_pad|>`) + `</Image>`.
pub fn image_block(num_tiles: usize) -> String {
    let pads = IMAGE_CONTEXT_TOKEN.repeat(IMAGE_TOKENS_PER_TILE);
    let mut text = String::from("<Image>");
    for tag in tile_tags(num_tiles) {
        text.push_str(&tag);
        text.push_str(&pads);
    }
    text.push_str("</Image>");
    text
}

/// Replaces the first `<image>` placeholder once per image, in order, with that image's block (the reference's
/// `query.replace('<image>', image_tokens, 1)` loop). Placeholders beyond the images are left as text.
pub fn expand_images(text: &str, tiles_per_image: &[usize]) -> String {
    let mut out = text.to_string();
    for &n in tiles_per_image {
        if let Some(at) = out.find(IMAGE_PLACEHOLDER) {
            out.replace_range(at..at + IMAGE_PLACEHOLDER.len(), &image_block(n));
        }
    }
    out
}

/// The reference's rule for a first question about images: without a history and with at least one image, a
/// question that has no `<image>` placeholder gets `"<image>\n"` in front.
pub fn with_image_placeholder(question: &str, num_images: usize, has_history: bool) -> String {
    if num_images > 0 && !has_history && !question.contains(IMAGE_PLACEHOLDER) {
        format!("{IMAGE_PLACEHOLDER}\n{question}")
    } else {
        question.to_string()
    }
}
