"""`python bench/gpu_check_compare.py LABEL RUN_A RUN_B REL`: prints each shared metric of two runs' results.json
and "ok" when every one agrees within the relative tolerance REL (BLEU and chrF of a random model are ~0 and
only printed); exits 1 otherwise."""

import json
import sys
from pathlib import Path


def results(root: str) -> dict[str, float]:
    (path,) = Path(root).rglob("results.json")
    return {k: v for k, v in json.loads(path.read_text()).items() if k.startswith("val/")}


def main(label: str, a: str, b: str, rel: float) -> int:
    first, second = results(a), results(b)
    bad = []
    for key in sorted(first):
        x, y = first[key], second.get(key, float("nan"))
        close = abs(x - y) <= rel * max(abs(x), 1e-12) or key.endswith(("bleu", "chrf"))
        bad += [] if close else [key]
        print(f"gpu_check:   {key}: {x:.6g} vs {y:.6g} ({'ok' if close else 'DIFF'})")
    print(f"gpu_check: {label}: {'ok' if not bad else 'DIFF in ' + ', '.join(bad)} (tolerance {rel:g})")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])))
