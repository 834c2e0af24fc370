"""NVLM-D's input side in Python, as the HF model card does it: dynamic tiling (Pillow bicubic, classic pass order),
ImageNet normalisation, and the chatml prompt with tile tags."""

import numpy as np
from PIL import Image

TILE = 448
MAX_TILES = 6
# The reference's candidate grids in its scan order (spec 3.2).
GRIDS = [(1, 1), (1, 2), (2, 1), (3, 1), (1, 3), (4, 1), (1, 4), (2, 2), (1, 5), (5, 1), (6, 1), (2, 3), (1, 6), (3, 2)]
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

SYSTEM = "Answer the questions."
IMAGE_CONTEXT = "<|vision_pad|>"
EOS_ID = 151645
IMAGE_CONTEXT_ID = 151654


def resize_classic(image, size):
    """Pillow BICUBIC with the horizontal pass first (Pillow <= 12, what NVLM-D used; Pillow 13 may reorder)."""
    w, h = size
    if image.size[0] != w:
        image = image.resize((w, image.size[1]), Image.BICUBIC)
    if image.size[1] != h:
        image = image.resize((w, h), Image.BICUBIC)
    return image


def closest_grid(width, height):
    aspect = width / height
    best, best_diff = (1, 1), float("inf")
    for i, j in GRIDS:
        diff = abs(aspect - i / j)
        if diff < best_diff:
            best, best_diff = (i, j), diff
        elif diff == best_diff and width * height > 0.5 * TILE * TILE * i * j:
            best = (i, j)
    return best


def tiles(image, resize=resize_classic):
    """The image's tiles, row-major, then the thumbnail when there is more than one: a list of 448x448 images."""
    if image.mode != "L":
        image = image.convert("RGB")
    cols, rows = closest_grid(*image.size)
    resized = resize(image, (TILE * cols, TILE * rows))
    out = []
    for k in range(cols * rows):
        c, r = k % cols, k // cols
        out.append(resized.crop((c * TILE, r * TILE, (c + 1) * TILE, (r + 1) * TILE)))
    if len(out) != 1:
        out.append(resize(image, (TILE, TILE)))
    return out


def token_labels(labels, patch):
    """The label map tiled like the image (nearest-neighbour resizes), read at the centre of each image token's
    `2 patch x 2 patch` square: `[T, (448 / 2 patch)^2]` classes in the pixel-shuffled token order."""
    per_tile = tiles(labels, resize=lambda im, size: im.resize(size, Image.NEAREST))
    step = 2 * patch
    centres = np.arange(step // 2, TILE, step)
    return np.stack([np.asarray(t)[np.ix_(centres, centres)].reshape(-1) for t in per_tile]).astype(np.int64)


# ToTensor + Normalize of every byte value of each channel, in the same f32 maths: a table lookup per pixel gives
# exactly the values of the arithmetic on the whole image, three times faster.
NORMALISED = (np.arange(256, dtype=np.float32)[None, :] / np.float32(255.0) - MEAN[:, None]) / STD[:, None]


def pixel_values(tile_images):
    """[T, 3, 448, 448] float32, ToTensor + Normalize exactly (f32 maths, through the `NORMALISED` table)."""
    channels_first = np.stack([np.asarray(t, dtype=np.uint8) for t in tile_images]).transpose(0, 3, 1, 2)
    out = np.empty(channels_first.shape, dtype=np.float32)
    for c in range(3):
        np.take(NORMALISED[c], channels_first[:, c], out=out[:, c])
    return out


def tile_tags(n):
    return [f"<tile_{k}>" for k in range(1, n)] + ["<tile_global_thumbnail>"]


def image_block(num_tiles, tokens_per_tile):
    return "<Image>" + "".join(t + IMAGE_CONTEXT * tokens_per_tile for t in tile_tags(num_tiles)) + "</Image>"


def prompt_segments(questions, num_tiles, tokens_per_tile):
    """NVLM-D's chat() prompt (chatml, MPT join, no newline between turns) cut before each answer: segment k ends
    with `<|im_start|>assistant\n` for question k, and the answers (then `<|im_end|>`) go between the segments. The
    image (if any) goes with the first question, as `<image>\n` expanded to its tile block."""
    segments = []
    for k, question in enumerate(questions):
        if k == 0 and num_tiles:
            question = image_block(num_tiles, tokens_per_tile) + "\n" + question
        head = f"<|im_start|>system\n{SYSTEM}<|im_end|>" if k == 0 else ""
        segments.append(f"{head}<|im_start|>user\n{question}<|im_end|><|im_start|>assistant\n")
    return segments


def prompt(question, num_tiles, tokens_per_tile):
    """The single-question prompt."""
    return prompt_segments([question], num_tiles, tokens_per_tile)[0]
