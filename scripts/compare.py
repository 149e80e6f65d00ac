#!/usr/bin/env python3
"""``python scripts/compare.py SCENARIO [options]``: the same code as ``handgrad compare``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "reference"))

import handgrad.cli  # noqa: E402

if __name__ == "__main__":
    sys.exit(handgrad.cli.main(["compare", *sys.argv[1:]]))
