"""Every built-in scenario at its defaults (``handgrad list``) writes a workbook whose live sheets
are right (issue 15, "Done when", item 2).

Each scenario runs in-process through the CLI (``handgrad compare NAME --xlsx FILE``, no other
option), then one headless LibreOffice run recomputes every workbook (scripts/recalc.py). For
each scenario:

- a live walkthrough sheet exists (a sheet of the hidden Checks sheet other than Training), or
  the console names why not in exactly one line (``NAME: workbook: No live Walkthrough: why``);
- every formula cell recomputed by LibreOffice holds a value, and every checked cell equals the
  hand side's number on the Trace to 1e-12 (recalc.py's ``check_workbook``);
- every label in column A of each live walkthrough sheet belongs to its row (the read-back of
  tests/test_walkthrough_labels.py).

Slow: nine default runs (about 2.5 minutes on two busy cores) and their recomputation (about 4
minutes for ~50 MB of workbooks) — `pytest -m slow tests/test_workbook_defaults.py`.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

import pytest
from openpyxl import load_workbook
from test_walkthrough import RECALC
from test_walkthrough_labels import _label_problems

from handgrad import cli
from handgrad.scenarios import SCENARIOS

pytestmark = [pytest.mark.libreoffice, pytest.mark.slow]
TRAINING = "Training"


@dataclass
class Default:
    """One scenario's default run: its workbook, what the console said, and the recomputation."""

    path: Path
    code: int
    console: str
    result: object  # recalc.CheckResult


def listed_scenarios() -> list[str]:
    """The scenarios ``handgrad list`` prints (its first column)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["list"]) == cli.EXIT_OK
    return [line.split()[0] for line in out.getvalue().splitlines() if line.strip()]


NAMES = listed_scenarios()


@pytest.fixture(scope="module")
def defaults(tmp_path_factory: pytest.TempPathFactory, libreoffice: str) -> dict[str, Default]:
    folder = tmp_path_factory.mktemp("defaults")
    runs: dict[str, tuple[Path, int, str]] = {}
    for name in NAMES:
        path = folder / f"{name}.xlsx"
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            code = cli.main(["compare", name, "--xlsx", str(path)])
        runs[name] = (path, code, out.getvalue())
    results, _ = RECALC.recalc_and_check([path for path, _, _ in runs.values() if path.exists()])
    by_path = {Path(result.workbook).resolve(): result for result in results}
    return {
        name: Default(path, code, console, by_path.get(path.resolve()))
        for name, (path, code, console) in runs.items()
    }


def test_the_listed_scenarios_are_the_built_in_ones() -> None:
    assert NAMES == list(SCENARIOS)


def live_sheets(path: Path) -> list[str]:
    """The sheets the Checks sheet names (every sheet of live formulas), less the Training sheet."""
    with RECALC.XlsxReader(path) as reader:
        sheets = {run[0] for run in RECALC.read_checks(reader)}
    return sorted(sheets - {TRAINING})


@pytest.mark.parametrize("name", NAMES)
def test_a_live_walkthrough_or_one_line_saying_why_not(defaults: dict[str, Default], name: str) -> None:
    run = defaults[name]
    assert run.code == cli.EXIT_OK, run.console[-2000:]
    said = [
        line for line in run.console.splitlines() if line.startswith(f"{name}: workbook: No live Walkthrough")
    ]
    sheets = live_sheets(run.path)
    if sheets:
        assert not said, said
        book = load_workbook(run.path, read_only=True)
        assert set(sheets) <= set(book.sheetnames)
        book.close()
    else:
        assert len(said) == 1, run.console[-2000:]
        reason = said[0].split("No live Walkthrough", 1)[1].strip(" :.")
        assert len(reason) > 10, said[0]


@pytest.mark.parametrize("name", NAMES)
def test_every_live_cell_recomputes_to_the_hand_value(defaults: dict[str, Default], name: str) -> None:
    result = defaults[name].result
    assert result is not None, f"{name}: no workbook was recomputed"
    assert result.ok, f"{name}:\n" + "\n".join(result.problems[:20])
    if live_sheets(defaults[name].path):
        assert result.checked > 0


@pytest.mark.parametrize("name", NAMES)
def test_every_label_belongs_to_its_row(defaults: dict[str, Default], name: str) -> None:
    path = defaults[name].path
    sheets = live_sheets(path)
    if not sheets:
        pytest.skip(f"{name}: no live walkthrough at its defaults (the console says why)")
    problems, seen = _label_problems(path, sheets)
    assert seen > 0
    assert not problems, f"{len(problems)} labels off their rows, first: " + "; ".join(problems[:5])
