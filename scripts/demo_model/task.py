"""The demo model's synthetic task: coloured shapes on a plain background, questions about them, short answers.

Every sample is a pure function of (split seed, index), so the train / validation / test splits never change.
Images come in many sizes and aspect ratios so that NVLM-D's dynamic tiling produces 1, 3, 4, 5, 6 and 7 tiles.
"""

import random

from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 195, 20),
}
SIDES = {"triangle": 3, "square": 4, "circle": 0}

# (aspect w:h, weight). 5:1 and 1:5 give the 6-tile grids; 2:1 gives 3 tiles; 3:2 gives 7.
ASPECTS = [
    (1.0, 14), (4 / 3, 3), (3 / 4, 3), (2.0, 3), (0.5, 3), (3.0, 2), (1 / 3, 2),
    (1.5, 2), (2 / 3, 2), (4.0, 1), (0.25, 1), (5.0, 1), (0.2, 1),
]

# Question kinds and their weights in every split.
KINDS = [("what_shape", 3), ("how_many", 3), ("what_colour", 3), ("which_side", 3), ("sides", 1)]

SPLIT_SEEDS = {"train": 1, "validation": 2, "test": 3, "example": 4}


def weighted(rng, items):
    total = sum(w for _, w in items)
    x = rng.uniform(0, total)
    for item, w in items:
        x -= w
        if x <= 0:
            return item
    return items[-1][0]


def image_size(rng, single_tile=False):
    """A random size: the aspect from ASPECTS (jittered 5%), the short side 160..720 pixels; or, for the first
    (cheap) part of training, a square of 160..440 pixels, which is always one tile."""
    if single_tile:
        side = rng.randint(160, 440)
        return side, side
    aspect = weighted(rng, ASPECTS) * rng.uniform(0.95, 1.05)
    short = rng.randint(160, 720)
    if aspect >= 1:
        w, h = round(short * aspect), short
    else:
        w, h = short, round(short / aspect)
    return max(w, 16), max(h, 16)


def label_of(kind, colour):
    """The per-pixel class of a shape in the label map: 1 + shape * 4 + colour (0 is the background)."""
    return 1 + SHAPES.index(kind) * len(COLOURS) + sorted(COLOURS).index(colour)


LABELS = 1 + len(SHAPES) * len(COLOURS)

# Where a shape stands among the picture's shapes: background, leftmost, middle, rightmost, the only one.
RANKS = 5


def rank_of(label, shapes):
    """The `RANKS` class of a pixel of `label_of` class `label` in a picture of `shapes` (left to right): each kind
    appears once per picture, so the class names the slot."""
    if label == 0:
        return 0
    if len(shapes) == 1:
        return 4
    slot = [k for k, _ in shapes].index(SHAPES[(label - 1) // len(COLOURS)])
    return 1 if slot == 0 else 3 if slot == len(shapes) - 1 else 2


def draw_shape(draw, kind, colour, box, fill=None):
    x0, y0, x1, y1 = box
    fill = COLOURS[colour] if fill is None else fill
    if kind == "circle":
        draw.ellipse(box, fill=fill)
    elif kind == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=fill)


def render(rng, shapes, single_tile=False, with_labels=False):
    """Draws `shapes` (list of (kind, colour)) left to right, each in its own vertical slot, and returns the image
    (and, `with_labels`, its label map: an "L" image of `label_of` classes, for training's auxiliary loss)."""
    w, h = image_size(rng, single_tile)
    background = tuple(rng.randint(225, 255) for _ in range(3))
    image = Image.new("RGB", (w, h), background)
    labels = Image.new("L", (w, h), 0)
    draw, label_draw = ImageDraw.Draw(image), ImageDraw.Draw(labels)
    slot = w / len(shapes)
    for i, (kind, colour) in enumerate(shapes):
        size = min(slot, h) * rng.uniform(0.55, 0.85)
        x0 = i * slot + rng.uniform(0, slot - size)
        y0 = rng.uniform(0, h - size)
        box = (x0, y0, x0 + size, y0 + size)
        draw_shape(draw, kind, colour, box)
        draw_shape(label_draw, kind, colour, box, fill=label_of(kind, colour))
    return (image, labels) if with_labels else image


def random_shapes(rng, n):
    kinds = rng.sample(SHAPES, n)
    return [(k, rng.choice(sorted(COLOURS))) for k in kinds]


def ask(rng, kind, shapes, sides=("left", "right"), colour_of=SHAPES):
    """A (question, answer) of `kind` about `shapes` (left to right); text-only kinds ignore them. `sides` are the
    sides "which shape is on the ..." may ask about, `colour_of` the shapes "what colour is the ..." may ask about
    (when the picture has one)."""
    if kind == "what_shape":
        return "What shape is in the image?", f"A {shapes[0][1]} {shapes[0][0]}."
    if kind == "how_many":
        return "How many shapes are there?", f"{len(shapes)}."
    if kind == "what_colour":
        target = rng.choice([s for s in shapes if s[0] in colour_of] or shapes)
        return f"What colour is the {target[0]}?", f"{target[1].capitalize()}."
    if kind == "which_side":
        side = rng.choice(["left", "right"])
        side = side if side in sides else sides[0]
        target = shapes[0] if side == "left" else shapes[-1]
        return f"Which shape is on the {side}?", f"The {target[0]}."
    shape = rng.choice(SHAPES)
    return f"How many sides does a {shape} have?", f"{SIDES[shape]}."


def kinds_for(shapes):
    """The image question kinds that make sense for `shapes`."""
    kinds = ["how_many", "what_colour"]
    if len(shapes) == 1:
        kinds.append("what_shape")
    else:
        kinds.append("which_side")
    return kinds


def sample(split, index, max_turns=1, single_tile=False, kinds=None, sides=("left", "right"), colour_of=SHAPES):
    """Sample `index` of `split`: dict(kind, question, answer, image (PIL.Image or None), shapes, history).

    `history` holds up to `max_turns - 1` earlier (question, answer) turns about the same image, asked before
    `question` in one conversation (training uses them; the test set has none). `single_tile` draws small square
    pictures (training's cheap first phase); `kinds` replaces the question mix `KINDS`, `sides=("left",)` asks only
    for the left shape and `colour_of` names the shapes whose colour may be asked (training's phases)."""
    rng = random.Random(SPLIT_SEEDS[split] * 1_000_003 + index)
    kind = weighted(rng, kinds or KINDS)
    count = {"what_shape": (1, 1), "how_many": (1, 3), "what_colour": (1, 3), "which_side": (2, 3)}.get(kind)
    shapes = random_shapes(rng, rng.randint(*count)) if count else []
    if kind == "what_colour" and shapes and not any(k in colour_of for k, _ in shapes):
        shapes[0] = (rng.choice(colour_of), shapes[0][1])  # the asked-about kind, where it was missing
    question, answer = ask(rng, kind, shapes, sides, colour_of)
    image, labels = render(rng, shapes, single_tile, with_labels=True) if shapes else (None, None)
    history = []
    if shapes and max_turns > 1:
        # Earlier turns about the same picture; the image goes with the first of them.
        history = [ask(rng, rng.choice(kinds_for(shapes)), shapes, sides, colour_of)
                   for _ in range(rng.randint(0, max_turns - 1))]
    return {"kind": kind, "question": question, "answer": answer, "image": image, "labels": labels,
            "shapes": shapes, "history": history}


def example_image():
    """The README's example picture: a red triangle, a blue circle and a yellow square, left to right."""
    rng = random.Random(SPLIT_SEEDS["example"])
    return render(rng, [("triangle", "red"), ("circle", "blue"), ("square", "yellow")])
