"""Draws the quickstart's image set: 32x32 PNGs of circles, squares, triangles and crosses, one folder per class.

    python configs/quickstart/shapes/make_shapes.py   # rewrites train/ and validation/ beside this file

Each shape has a random colour, size and position on a random dark background, so the class is the outline alone.
"""

import random
import shutil
from pathlib import Path

from PIL import Image, ImageDraw

SIZE = 32
CLASSES = ("circle", "cross", "square", "triangle")
COUNTS = {"train": 100, "validation": 25}  # per class


def draw(shape: str, rng: random.Random) -> Image.Image:
    background = tuple(rng.randrange(0, 90) for _ in range(3))
    colour = tuple(rng.randrange(140, 256) for _ in range(3))
    image = Image.new("RGB", (SIZE, SIZE), background)
    pen = ImageDraw.Draw(image)
    r = rng.randrange(6, 13)  # half the shape's extent in pixels
    x, y = rng.randrange(r + 1, SIZE - r - 1), rng.randrange(r + 1, SIZE - r - 1)
    if shape == "circle":
        pen.ellipse((x - r, y - r, x + r, y + r), fill=colour)
    elif shape == "square":
        pen.rectangle((x - r, y - r, x + r, y + r), fill=colour)
    elif shape == "triangle":
        pen.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=colour)
    else:
        width = max(2, r // 2)
        pen.rectangle((x - r, y - width // 2, x + r, y + width // 2), fill=colour)
        pen.rectangle((x - width // 2, y - r, x + width // 2, y + r), fill=colour)
    return image


def main() -> None:
    root = Path(__file__).parent
    rng = random.Random(0)
    for split, count in COUNTS.items():
        shutil.rmtree(root / split, ignore_errors=True)
        for shape in CLASSES:
            (root / split / shape).mkdir(parents=True)
            for i in range(count):
                draw(shape, rng).save(root / split / shape / f"{i:03d}.png", optimize=True)


if __name__ == "__main__":
    main()
