"""Writes the quickstart's review files: short templated reviews whose label follows from their adjectives.

python configs/quickstart/reviews/make_reviews.py   # deterministic: the same bytes every time
"""

import csv
import random
from pathlib import Path

POSITIVE = ["wonderful", "moving", "brilliant", "charming", "superb", "delightful", "gripping", "funny", "tender"]
NEGATIVE = ["dull", "clumsy", "tedious", "bland", "awful", "lifeless", "messy", "boring", "shallow"]
SUBJECTS = ["the film", "the plot", "the acting", "the script", "the ending", "this movie", "the cast", "the score"]
TEMPLATES = [
    "{s} was {a}.",
    "{s} was {a} and {b}.",
    "honestly, {s} felt {a}.",
    "{s} is {a}, and {t} is {b} too.",
    "i found {s} {a} from start to finish.",
    "what a {a} night: {s} was {b}.",
]


def review(rng: random.Random, label: str) -> str:
    words = POSITIVE if label == "positive" else NEGATIVE
    a, b = rng.sample(words, 2)
    return rng.choice(TEMPLATES).format(s=rng.choice(SUBJECTS), t=rng.choice(SUBJECTS), a=a, b=b)


def write(path: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    with open(path, "w", newline="") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(["text", "label"])
        for _ in range(n):
            label = rng.choice(["positive", "negative"])
            out.writerow([review(rng, label), label])


if __name__ == "__main__":
    here = Path(__file__).parent
    write(here / "train.csv", 1600, seed=0)
    write(here / "validation.csv", 300, seed=1)
