//! The text side of images: tile tags and the `<Image>...</Image>` expansion with one `<|vision_pad|>` per image
//! token, as NVLM-D's `chat()` builds it.

/// The image-context token whose embeddings are replaced by image embeddings.
pub const IMAGE_CONTEXT_TOKEN: &str = "<|vision_pad|>";
/// Image tokens per tile after pixel shuffle in NVLM-D-72B (`(448 / 14)^2 * 0.5^2`); smaller models built the same
/// way may have fewer (the vision config decides: `nvlm_vit::VisionConfig::tokens_per_tile`).
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

/// `<Image>` + for each tile (its tag + `tokens_per_tile` `<|vision_pad|>`, 256 in NVLM-D-72B) + `</Image>`.
pub fn image_block(num_tiles: usize, tokens_per_tile: usize) -> String {
    let pads = IMAGE_CONTEXT_TOKEN.repeat(tokens_per_tile);
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
pub fn expand_images(text: &str, tiles_per_image: &[usize], tokens_per_tile: usize) -> String {
    let mut out = text.to_string();
    for &n in tiles_per_image {
        if let Some(at) = out.find(IMAGE_PLACEHOLDER) {
            out.replace_range(at..at + IMAGE_PLACEHOLDER.len(), &image_block(n, tokens_per_tile));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_follow_the_reference() {
        assert_eq!(tile_tags(1), vec!["<tile_global_thumbnail>"]);
        assert_eq!(
            tile_tags(3),
            vec!["<tile_1>", "<tile_2>", "<tile_global_thumbnail>"]
        );
        assert!(tile_tags(0).is_empty());
    }

    #[test]
    fn several_images_expand_in_order() {
        let text = expand_images("<image>\nA <image> B <image>", &[1, 3], IMAGE_TOKENS_PER_TILE);
        let pad = IMAGE_CONTEXT_TOKEN.repeat(IMAGE_TOKENS_PER_TILE);
        let first = format!("<Image><tile_global_thumbnail>{pad}</Image>");
        let second = format!("<Image><tile_1>{pad}<tile_2>{pad}<tile_global_thumbnail>{pad}</Image>");
        // The third placeholder has no image and stays as text, as in the reference.
        assert_eq!(text, format!("{first}\nA {second} B <image>"));
        assert_eq!(
            text.matches(IMAGE_CONTEXT_TOKEN).count(),
            4 * IMAGE_TOKENS_PER_TILE
        );
    }

    #[test]
    fn placeholder_rule() {
        assert_eq!(with_image_placeholder("Q?", 1, false), "<image>\nQ?");
        assert_eq!(with_image_placeholder("<image> Q?", 1, false), "<image> Q?");
        assert_eq!(with_image_placeholder("Q?", 1, true), "Q?");
        assert_eq!(with_image_placeholder("Q?", 0, false), "Q?");
    }
}
