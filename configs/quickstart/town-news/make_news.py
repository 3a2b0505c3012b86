"""Writes the summarization quickstart's files: short templated news items (two sentences, the news one before or
after a filler) and a one-sentence summary naming who did what, where.

python configs/quickstart/town-news/make_news.py   # deterministic: the same bytes every time
"""

import json
import random
from pathlib import Path

NAMES = ["Anna Berg", "Tom Hale", "Mia Cruz", "Leo Park", "Ada Moss", "Sam Reid", "Eva Lind", "Noah Kent"]
TOWNS = ["Leeds", "York", "Derby", "Bath", "Hull", "Ely", "Wells", "Ripon"]
DEEDS = [  # (what the news sentence says, what the summary says)
    ("opened a new bakery on the high street", "opened a bakery"),
    ("won the county chess final on Sunday", "won a chess final"),
    ("rescued a cat from a tall oak tree", "rescued a cat"),
    ("painted a huge mural near the station", "painted a mural"),
    ("planted two hundred trees by the river", "planted trees"),
    ("raised money for the local hospital", "raised money"),
]
FILLERS = ["It was mild.", "Many came to watch.", "The mayor was pleased.", "Shops stayed open.", "It was news."]


def item(rng: random.Random) -> dict:
    name, town = rng.choice(NAMES), rng.choice(TOWNS)
    long, short = rng.choice(DEEDS)
    sentences = rng.sample(FILLERS, 1)
    sentences.insert(rng.randint(0, len(sentences)), f"{name} of {town} {long}.")
    return {"document": " ".join(sentences), "summary": f"{name} {short} in {town}."}


def write(path: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    path.write_text("".join(json.dumps(item(rng)) + "\n" for _ in range(n)), encoding="utf-8")


if __name__ == "__main__":
    here = Path(__file__).parent
    write(here / "train.jsonl", 800, seed=0)
    write(here / "validation.jsonl", 50, seed=1)
