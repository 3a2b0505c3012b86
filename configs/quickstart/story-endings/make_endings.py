"""Writes the multiple-choice quickstart's files in SWAG's layout: a one-sentence story, then four endings: the right
one matches the story's mood, one has the other mood and two are scrambled. Each ending is scored alone, so telling
the two well-formed endings apart takes reading the story.

python configs/quickstart/story-endings/make_endings.py   # deterministic: the same bytes every time
"""

import json
import random
from pathlib import Path

NAMES = ["Anna", "Ben", "Chloe", "David", "Emma", "Felix", "Grace", "Hugo", "Iris", "Jack", "Lena", "Max"]
EVENTS = {  # what happened to the subject, by mood
    "happy": ["won the race", "got a puppy", "passed the test", "found the ring", "got the job", "met a friend"],
    "sad": ["lost the race", "lost the puppy", "failed the test", "lost the ring", "lost the job", "missed a friend"],
}  # fmt: skip
ENDINGS = {  # how the subject felt, by mood
    "happy": ["was glad all day.", "smiled and laughed.", "felt proud of it.", "danced with joy.", "sang a song."],
    "sad": ["was sad all day.", "cried and sighed.", "felt upset about it.", "sat alone in gloom.", "wept a tear."],
}  # fmt: skip


def scrambled(rng: random.Random, ending: str) -> str:
    """An ending with its words in reverse order: wrong whatever the story."""
    return " ".join(reversed(ending.rstrip(".").split())) + "."


def example(rng: random.Random) -> dict:
    """One right ending, one of the other mood, two scrambled ones, shuffled."""
    mood = rng.choice(["happy", "sad"])
    other = "sad" if mood == "happy" else "happy"
    name = rng.choice(NAMES)
    right, wrong = rng.choice(ENDINGS[mood]), rng.choice(ENDINGS[other])
    endings = [right, wrong, *(scrambled(rng, rng.choice(ENDINGS[m])) for m in (mood, other))]
    rng.shuffle(endings)
    row = {"sent1": f"{name} {rng.choice(EVENTS[mood])}.", "sent2": name, "label": endings.index(right)}
    return row | {f"ending{i}": ending for i, ending in enumerate(endings)}


def write(path: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    path.write_text("".join(json.dumps(example(rng)) + "\n" for _ in range(n)), encoding="utf-8")


if __name__ == "__main__":
    here = Path(__file__).parent
    write(here / "train.jsonl", 1200, seed=0)
    write(here / "validation.jsonl", 300, seed=1)
