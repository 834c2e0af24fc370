"""The reference preprocessing (HF NVLM-D model card's load_image: Pillow + torchvision), timed on the given images.

Usage: python3 reference_preprocess.py SECONDS IMAGE...   Prints one line per image: `name images_per_second`.
Written from the model card's algorithm (dynamic_preprocess with find_closest_aspect_ratio, then
Resize/ToTensor/Normalize per tile). Without torchvision, ToTensor + Normalize run as the equivalent numpy f32
arithmetic and the script says so on stderr (the Pillow part, most of the work, is the same).
"""
import sys
import time

from PIL import Image

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
try:
    import torch
    import torchvision.transforms as T
    from torchvision.transforms.functional import InterpolationMode

    TRANSFORM = T.Compose([T.Resize((448, 448), interpolation=InterpolationMode.BICUBIC), T.ToTensor(),
                           T.Normalize(mean=MEAN, std=STD)])

    def to_pixel_values(tiles):
        return torch.stack([TRANSFORM(t) for t in tiles])
except ImportError:
    import numpy as np

    print("torchvision not importable: ToTensor + Normalize emulated with numpy", file=sys.stderr)
    _mean = np.array(MEAN, dtype=np.float32).reshape(3, 1, 1)
    _std = np.array(STD, dtype=np.float32).reshape(3, 1, 1)

    def to_pixel_values(tiles):
        out = []
        for t in tiles:
            if t.size != (448, 448):
                t = t.resize((448, 448), Image.BICUBIC)
            x = np.asarray(t, dtype=np.uint8).transpose(2, 0, 1).astype(np.float32) / np.float32(255)
            out.append((x - _mean) / _std)
        return np.stack(out)


def closest_ratio(aspect, ratios, w, h, size):
    best_diff, best = float("inf"), (1, 1)
    for ratio in ratios:
        diff = abs(aspect - ratio[0] / ratio[1])
        if diff < best_diff:
            best_diff, best = diff, ratio
        elif diff == best_diff and w * h > 0.5 * size * size * ratio[0] * ratio[1]:
            best = ratio
    return best


def dynamic_preprocess(image, min_num=1, max_num=6, size=448, use_thumbnail=True):
    w, h = image.size
    ratios = sorted({(i, j) for n in range(min_num, max_num + 1) for i in range(1, n + 1) for j in range(1, n + 1)
                     if min_num <= i * j <= max_num}, key=lambda x: x[0] * x[1])
    cols, rows = closest_ratio(w / h, ratios, w, h, size)
    resized = image.resize((size * cols, size * rows))
    tiles = [resized.crop((c * size, r * size, (c + 1) * size, (r + 1) * size)) for r in range(rows) for c in range(cols)]
    if use_thumbnail and len(tiles) != 1:
        tiles.append(image.resize((size, size)))
    return tiles


def load_image(path):
    image = Image.open(path).convert("RGB")
    return to_pixel_values(dynamic_preprocess(image))


def main():
    seconds = float(sys.argv[1])
    for path in sys.argv[2:]:
        load_image(path)
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            load_image(path)
            count += 1
        print(f"{path} {count / (time.perf_counter() - start):.2f}")


if __name__ == "__main__":
    main()
