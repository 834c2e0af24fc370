"""Generates tests/data/decode/: small images in the modes the tiling fixtures do not cover, written by Pillow, with
the SHA-256 of what Pillow's `Image.open(f).convert('RGB')` gives (the reference's first step) in cases.json.

Run with the reference's Pillow (13.0.0, libjpeg-turbo 3.2.0): python3 scripts/gen_decode_cases.py
"""
import hashlib
import json
import os

import numpy as np
import PIL
from PIL import Image, features

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "decode")
rng = np.random.default_rng(20261130)


def gradient(w, h, channels):
    y, x = np.mgrid[0:h, 0:w]
    planes = [(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)), ((x + y) * 7 % 256)]
    noise = rng.integers(0, 40, size=(h, w, channels))
    img = np.stack(planes[:channels] + [planes[0]] * max(0, channels - 3), axis=-1)[..., :channels]
    return np.clip(img + noise, 0, 255).astype(np.uint8)


cases = {}


def save(name, image, **kwargs):
    path = os.path.join(OUT, name)
    image.save(path, **kwargs)
    with Image.open(path) as reopened:
        mode = reopened.mode
        rgb = reopened.convert("RGB")
    cases[name] = {"mode": mode, "size": list(rgb.size), "rgb_sha256": hashlib.sha256(rgb.tobytes()).hexdigest()}


os.makedirs(OUT, exist_ok=True)
save("bilevel_1bit.png", Image.fromarray(gradient(37, 23, 1)[..., 0] > 128).convert("1"))
save("gray_alpha_la.png", Image.fromarray(gradient(31, 17, 2), "LA"))
save("rgba_odd.png", Image.fromarray(gradient(29, 19, 4), "RGBA"))
palette = Image.fromarray(gradient(41, 13, 3), "RGB").quantize(colors=12)
save("palette_4bit_trns.png", palette, bits=4, transparency=3)
save("gray.jpg", Image.fromarray(gradient(45, 27, 1)[..., 0], "L"), quality=90)
rgb = Image.fromarray(gradient(53, 35, 3), "RGB")
save("rgb_420_odd.jpg", rgb, quality=85, subsampling=2)
save("rgb_444.jpg", rgb, quality=95, subsampling=0)
save("rgb_422_progressive.jpg", rgb, quality=80, subsampling=1, progressive=True)
save("cmyk_adobe.jpg", Image.fromarray(gradient(33, 21, 4), "CMYK"), quality=90)
with open(os.path.join(OUT, "cases.json"), "w") as f:
    json.dump({"pillow": PIL.__version__, "libjpeg_turbo": features.version("libjpeg_turbo"), "cases": cases}, f,
              indent=1, sort_keys=True)
print(json.dumps(cases, indent=1))
