"""Makes tests/data/synthetic-textvqa: four small images of coloured shapes and TextVQA-format questions
(annotations.json: image_id, question_id, question, answers x10), for `nvlm eval run` end-to-end tests.
Run with Pillow: python3 scripts/make_synthetic_textvqa.py"""
import json
import os

from PIL import Image, ImageDraw

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "synthetic-textvqa")
os.makedirs(os.path.join(OUT, "images"), exist_ok=True)
items = [
    ("red_circle", (96, 64), "red", "ellipse", "What shape is in the image?", "circle"),
    ("blue_square", (64, 64), "blue", "rectangle", "What colour is the square?", "blue"),
    ("green_wide", (160, 48), "green", "rectangle", "What colour is the shape?", "green"),
    ("yellow_tall", (48, 120), "yellow", "ellipse", "What colour is the shape?", "yellow"),
]
annotations = []
for i, (name, size, colour, shape, question, answer) in enumerate(items):
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    box = (size[0] // 6, size[1] // 6, size[0] * 5 // 6, size[1] * 5 // 6)
    getattr(draw, shape)(box, fill=colour)
    image.save(os.path.join(OUT, "images", f"{name}.png"))
    annotations.append({"image_id": f"{name}.png", "question_id": 1000 + i, "question": question, "answers": [answer] * 10})
with open(os.path.join(OUT, "annotations.json"), "w") as f:
    json.dump(annotations, f, indent=1)
