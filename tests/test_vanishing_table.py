"""The vanishing-gradient table in manual/vanishing-gradients.md is what the command beside it prints now."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "manual" / "vanishing-gradients.md"
BEGIN, END = "<!-- vanishing-table:begin -->", "<!-- vanishing-table:end -->"


def committed_table_and_command() -> tuple[str, list[str]]:
    page = PAGE.read_text(encoding="utf-8")
    block = page.split(BEGIN, 1)[1].split(END, 1)[0].lstrip("\n")
    before = page.split(BEGIN, 1)[0]
    shown = re.findall(r"^\s*\$ (python scripts/vanishing\.py[^\n]*)$", before, flags=re.MULTILINE)
    assert shown, "the page must show the command that produced the table, right before it"
    return block, shlex.split(shown[-1])


def test_committed_table_matches_the_commands_output():
    committed, command = committed_table_and_command()
    assert command[:2] == ["python", "scripts/vanishing.py"]
    assert "--write" not in command
    env = {**os.environ, "PYTHONPATH": str(ROOT / "reference"), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, *command[1:]], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == committed, (
        "the table in manual/vanishing-gradients.md is stale; regenerate it with "
        "`python scripts/vanishing.py --write manual/vanishing-gradients.md`"
    )


def test_the_table_shows_sigmoid_vanishing_and_relu_not():
    committed, _ = committed_table_and_command()
    own_init = committed.split("`--init torch`")[0]
    rows = {
        line.split("|")[1].strip(): [float(cell) for cell in line.split("|")[2:-1]]
        for line in own_init.splitlines()
        if line.startswith("| ") and not line.startswith("| activation")
    }
    assert rows["sigmoid"][-1] < 1e-6  # depth 12: below a millionth of the last layer's
    assert rows["sigmoid"] == sorted(rows["sigmoid"], reverse=True)  # falls with every depth
    assert all(0.05 < ratio < 20 for ratio in rows["relu"])  # stays of order one
