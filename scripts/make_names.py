"""Write reference/handgrad/data/names.txt: 300 made-up first names, built deterministically from
syllables (no external list, so no licence question). Rerunning writes the same file.

    python scripts/make_names.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

ONSETS = ["", "b", "br", "c", "ch", "d", "el", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "sh"]
ONSETS += ["t", "th", "v", "w", "z", "q", "x", "y"]
VOWELS = ["a", "e", "i", "o", "u", "ia", "ae", "ei", "ou", "y"]
CODAS = ["", "", "", "n", "l", "r", "s", "th", "x", "m", "k", "nd", "lla", "ne", "ra"]
COUNT = 300
TARGET = Path(__file__).resolve().parent.parent / "reference" / "handgrad" / "data" / "names.txt"


def make_names(count: int = COUNT, seed: int = 20240101) -> list[str]:
    """``count`` distinct names of 2 to 3 syllables, lower-case a–z, from ``seed``."""
    rng = np.random.default_rng(seed)
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < count:
        syllables = int(rng.integers(2, 4))
        parts = [
            ONSETS[rng.integers(len(ONSETS))] + VOWELS[rng.integers(len(VOWELS))] for _ in range(syllables)
        ]
        name = "".join(parts) + CODAS[rng.integers(len(CODAS))]
        if 3 <= len(name) <= 10 and name not in seen:
            seen.add(name)
            names.append(name)
    return names


if __name__ == "__main__":
    TARGET.write_text("\n".join(make_names()) + "\n", encoding="ascii")
    print(f"wrote {COUNT} names to {TARGET}")
