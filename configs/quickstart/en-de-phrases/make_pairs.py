"""Writes the quickstart's English->German pairs: simple sentences drawn from fixed word lists, seeded.

python configs/quickstart/en-de-phrases/make_pairs.py   # rewrites train.tsv and validation.tsv beside it
"""

import random
from pathlib import Path

# (English, German, German verb form index): ich=0, du=1, er/sie (she)=2, wir/sie (they)=3.
SUBJECTS = [("I", "ich", 0), ("you", "du", 1), ("he", "er", 2), ("she", "sie", 2), ("we", "wir", 3), ("they", "sie", 3)]
# (English base, English third person, German forms by index above)
VERBS = [
    ("have", "has", ["habe", "hast", "hat", "haben"]),
    ("see", "sees", ["sehe", "siehst", "sieht", "sehen"]),
    ("buy", "buys", ["kaufe", "kaufst", "kauft", "kaufen"]),
    ("want", "wants", ["will", "willst", "will", "wollen"]),
    ("paint", "paints", ["male", "malst", "malt", "malen"]),
]
NUMBERS = [
    ("two", "zwei"), ("three", "drei"), ("four", "vier"), ("five", "fünf"), ("six", "sechs"), ("seven", "sieben"),
    ("eight", "acht"), ("nine", "neun"), ("ten", "zehn"), ("eleven", "elf"), ("twelve", "zwölf"),
]  # fmt: skip
ADJECTIVES = [
    ("red", "rote"), ("blue", "blaue"), ("green", "grüne"), ("black", "schwarze"), ("white", "weiße"),
    ("small", "kleine"), ("big", "große"), ("old", "alte"),
]  # fmt: skip
NOUNS = [
    ("cats", "Katzen"), ("dogs", "Hunde"), ("houses", "Häuser"), ("cars", "Autos"), ("books", "Bücher"),
    ("apples", "Äpfel"), ("birds", "Vögel"), ("trees", "Bäume"), ("chairs", "Stühle"), ("boxes", "Kisten"),
]  # fmt: skip


def pair(rng: random.Random) -> tuple[str, str]:
    subject_en, subject_de, form = rng.choice(SUBJECTS)
    verb_en, verb_en_3rd, verb_de = rng.choice(VERBS)
    number, adjective, noun = rng.choice(NUMBERS), rng.choice(ADJECTIVES), rng.choice(NOUNS)
    verb = verb_en_3rd if form == 2 else verb_en
    english = f"{subject_en} {verb} {number[0]} {adjective[0]} {noun[0]}."
    german = f"{subject_de} {verb_de[form]} {number[1]} {adjective[1]} {noun[1]}."
    return english[0].upper() + english[1:], german[0].upper() + german[1:]


def main() -> None:
    rng = random.Random(0)
    pairs = list(dict.fromkeys(pair(rng) for _ in range(1400)))  # distinct pairs, first-drawn order
    out = Path(__file__).parent
    for name, rows in (("validation", pairs[:100]), ("train", pairs[100:1300])):
        lines = ["en\tde"] + [f"{en}\t{de}" for en, de in rows]
        (out / f"{name}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
