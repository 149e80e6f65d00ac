"""A long run: 100,000 steps of xor with --xlsx, timed, with the peak memory it took.

    python scripts/longrun.py [--steps 100000] [--out /tmp/longrun.xlsx] [-- extra compare options]

Runs ``handgrad compare xor`` as a child process (on a terminal it shows its progress bar) and
prints the wall time, the child's peak RSS, the workbook's size and its Trace sheets. Not run in
CI: it takes minutes.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--out", default="/tmp/longrun.xlsx")
    parser.add_argument("extra", nargs="*", help="more options for handgrad compare xor")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "reference")}
    command = [sys.executable, "-m", "handgrad", "compare", "xor", "--steps", str(args.steps), "--quiet"]
    command += ["--xlsx", args.out, *args.extra]
    start = time.perf_counter()
    status = subprocess.call(command, env=env)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"exit {status}; {args.steps:,} steps in {seconds:,.1f} s; peak RSS {peak_mb:,.0f} MB")
    out = Path(args.out)
    if out.is_file():
        with zipfile.ZipFile(out) as archive:
            sheets = [n for n in archive.namelist() if n.startswith("xl/worksheets/sheet")]
        print(f"workbook {out}: {out.stat().st_size / 2**20:,.1f} MB, {len(sheets)} sheets")
    return status


if __name__ == "__main__":
    sys.exit(main())
