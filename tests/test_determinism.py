"""Determinism: the same command gives byte-identical workbook and JSON whatever PYTHONHASHSEED and
whatever the working directory; the JSON names the versions that produced it.

(test_workbook.py checks the workbook's fixed zip and document times under two hash seeds; this
adds the JSON, the working directory and user files given by relative path.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np

import handgrad

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "reference")}
DATA = "x1,x2,y\n0,0,0\n0,1,1\n1,0,1\n1,1,0\n"
WEIGHTS = {
    "dense1.W": [[0.15, -0.2], [0.3, 0.45], [-0.5, 0.6]],
    "dense1.b": [0.1, -0.2, 0.3],
    "dense2.W": [[0.7, -0.8, 0.9]],
    "dense2.b": [-0.05],
}
COMMAND = [
    "compare", "xor", "--steps", "9", "--walkthrough", "1,5", "--quiet", "--data", "xor.csv",
    "--weights", "w.json", "--xlsx", "out.xlsx", "--json", "out.json",
]  # fmt: skip


def run_in(folder: Path, seed: str) -> tuple[bytes, bytes]:
    folder.mkdir(parents=True)
    (folder / "xor.csv").write_text(DATA)
    (folder / "w.json").write_text(json.dumps(WEIGHTS))
    done = subprocess.run(
        [sys.executable, "-m", "handgrad", *COMMAND],
        cwd=folder,
        env={**ENV, "PYTHONHASHSEED": seed},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return (folder / "out.xlsx").read_bytes(), (folder / "out.json").read_bytes()


def test_same_command_gives_identical_bytes_across_hash_seeds_and_folders(tmp_path: Path):
    first = run_in(tmp_path / "a", "0")
    second = run_in(tmp_path / "some" / "deeper" / "folder b", "4242")
    assert first[0] == second[0], "the workbooks differ"
    assert first[1] == second[1], "the JSON reports differ"
    assert str(tmp_path).encode() not in first[0] + first[1]  # no absolute path leaks in


def test_json_carries_the_versions_that_made_it(tmp_path: Path):
    from handgrad import cli

    path = tmp_path / "r.json"
    assert cli.main(["compare", "xor", "--steps", "2", "--quiet", "--json", str(path)]) == 0
    versions = json.loads(path.read_text())["versions"]
    assert versions["handgrad"] == handgrad.__version__
    assert versions["numpy"] == np.__version__
    assert versions["torch"] == version("torch")
    assert "seconds" not in json.loads(path.read_text())  # a timing would break byte-identity
