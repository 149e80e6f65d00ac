"""Every label in a Walkthrough's column A belongs to the row beside it (read back from the file).

The Checks sheet says which term each live hand cell computes. A block of a term's cells that runs
down several rows of one column is one row per sample, sequence or unit, so column A beside it
must read ``seq 1``, ``seq 2``, ... (or ``sample k``, ``unit k``) in step with the rows, under the
block's title; a single checked cell must have a label beside it. A label written for another
block (a title beside a data row, ``|Δ|`` beside a sequence) breaks the run and fails here.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from itertools import groupby
from pathlib import Path

import pytest
from openpyxl import load_workbook

from handgrad import harness
from handgrad.cli import scenario_parser
from handgrad.scenarios import SCENARIOS
from handgrad.workbook.writer import WorkbookWriter

LIVE_PREFIXES = ("Walkthrough", "BatchNorm walkthrough", "Attention walkthrough", "Multitask walkthrough")
CONV_PREFIX = "Conv walkthrough"
ORDINAL = re.compile(r"^(seq|sample|unit|out|[a-z])\s?(\d+)\b")  # seq 3, sample 1 · data row 2, i2

CASES = [(name, ()) for name in SCENARIOS if name not in ("parity", "echo")] + [
    (name, ("--cell", cell)) for name in ("parity", "echo") for cell in ("rnn", "gru", "lstm")
]


def _label_problems(path: Path, sheets: Collection[str] | None = None) -> tuple[list[str], int]:
    """(every label that does not belong to its row, the number of checked cells seen) on the
    sheets named (default: those whose titles start with one of :data:`LIVE_PREFIXES`)."""
    book = load_workbook(path, read_only=True)
    checks = list(book["Checks"].iter_rows(min_row=2, values_only=True))
    cells: dict[str, dict[tuple[int, int], tuple[int, str]]] = {}
    for sheet, column, first, last, step, term, _, step_plus, _ in checks:
        if not (str(sheet) in sheets if sheets is not None else str(sheet).startswith(LIVE_PREFIXES)):
            continue
        if str(sheet).startswith(CONV_PREFIX):  # maps, not rows: _conv_label_problems reads them
            continue
        col = sum((ord(c) - 64) * 26**i for i, c in enumerate(reversed(column)))
        for k, row in enumerate(range(first, last + 1)):
            cells.setdefault(sheet, {})[(row, col)] = (step + k * step_plus, term)
    problems, seen = _conv_label_problems(book, checks, sheets)
    for sheet, found in cells.items():
        labels = {row: value for row, value in _column_a(book[sheet])}
        by_column = sorted(found.items(), key=lambda item: (item[0][1], item[0][0]))
        for (col, what), group in groupby(by_column, key=lambda item: (item[0][1], item[1])):
            rows = [row for (row, _), _ in group]
            seen += len(rows)
            for run in _runs(rows):
                problems += _check_run(sheet, col, what[1], run, labels)
    book.close()
    return problems, seen


MAP_LABEL = re.compile(r"^(?:n(\d+) )?[oc]\d+(?: c\d+)?$")  # n1 c2 · o3 c1 · o2 (a bias row)


def _conv_label_problems(book, checks: list[tuple], sheets: Collection[str] | None) -> tuple[list[str], int]:
    """The Conv walkthrough lays out maps, not rows: a checked cell's map label (the nearest
    label at or left of it in the row above its map) must read ``n1 c2``/``o3 c1``/``o2``, column A
    beside a map must be empty up to the block's title, and a sliced sheet (``Slice: image n = 1``
    under its title) shows image n1 only."""
    problems: list[str] = []
    seen = 0
    by_sheet: dict[str, list[tuple[int, int, str]]] = {}
    for sheet, column, first, last, _, term, _, _, _ in checks:
        if str(sheet).startswith(CONV_PREFIX) and (sheets is None or str(sheet) in sheets):
            col = sum((ord(c) - 64) * 26**i for i, c in enumerate(reversed(column)))
            by_sheet.setdefault(sheet, []).extend((row, col, term) for row in range(first, last + 1))
    for sheet, found in by_sheet.items():
        values = {
            (cell.row, cell.column): cell.value
            for row in book[sheet].iter_rows()
            for cell in row
            if cell.value is not None and hasattr(cell, "row")
        }
        sliced = str(values.get((2, 1), "")).startswith("Slice: image n = 1")
        for row, col, term in found:
            seen += 1
            where = f"{sheet} {row},{col} ({term})"
            top = row
            while isinstance(values.get((top - 1, col)), (int, float)) or str(
                values.get((top - 1, col), "")
            ).startswith("="):
                top -= 1
            label_row = top - 1
            left = max((c for (r, c) in values if r == label_row and c <= col), default=None)
            label = str(values.get((label_row, left), ""))
            match = MAP_LABEL.match(label)
            if match is None:
                problems.append(f"{where}: map label {label!r} in row {label_row}")
                continue
            if sliced and match.group(1) not in (None, "1"):
                problems.append(f"{where}: a sliced sheet labels a map {label!r}")
            beside = [r for r in range(label_row, row + 1) if (r, 1) in values]
            if beside:
                problems.append(f"{where}: column A beside its map reads {values[(beside[0], 1)]!r}")
            title = next((r for r in range(label_row, 0, -1) if (r, 1) in values), None)
            if title is None or ORDINAL.match(str(values[(title, 1)])):
                problems.append(f"{where}: column A above its map reads {values.get((title, 1))!r}")
    return problems, seen


def _column_a(sheet) -> list[tuple[int, str]]:
    out = []
    for row in sheet.iter_rows(min_col=1, max_col=1):
        cell = row[0]
        if cell.value is not None and hasattr(cell, "row"):
            out.append((cell.row, str(cell.value)))
    return out


def _runs(rows: list[int]) -> list[list[int]]:
    runs: list[list[int]] = []
    for row in sorted(rows):
        if runs and runs[-1][-1] + 1 == row:
            runs[-1].append(row)
        else:
            runs.append([row])
    return runs


def _check_run(sheet: str, col: int, term: str, run: list[int], labels: dict[int, str]) -> list[str]:
    """A run of a term's cells down one column: each row labelled as a row of the block (``seq 3``,
    ``sample 1 · data row 2``, ``unit 2``, gate units ``i1 … o3``), the numbers of one prefix
    counting down the rows, and a block title just above (past at most one row of column headers)."""
    where = f"{sheet} column {col} rows {run[0]}-{run[-1]} ({term})"
    if len(run) == 1:
        return [] if labels.get(run[0]) else [f"{where}: no label in column A"]
    parsed = []
    for row in run:
        match = ORDINAL.match(labels.get(row, ""))
        if match is None:
            return [f"{where}: row {row} is labelled {labels.get(row)!r}, not a row of the block"]
        parsed.append((match.group(1), int(match.group(2))))
    problems = []
    for (prefix, number), (next_prefix, next_number) in zip(parsed, parsed[1:], strict=False):
        if prefix == next_prefix and next_number != number + 1:
            problems.append(f"{where}: labels {[labels[row] for row in run]} do not count down the rows")
            break
    above = run[0] - 1
    while ORDINAL.match(labels.get(above, "")):
        above -= 1
    if not labels.get(above):
        above -= 1  # a row of column headers between the title and the rows
    if not labels.get(above) or ORDINAL.match(labels[above]):
        problems.append(f"{where}: no block title above the rows (row {above}: {labels.get(above)!r})")
    return problems


@pytest.mark.parametrize(("name", "options"), CASES, ids=[f"{n}{''.join(o)}" for n, o in CASES])
def test_every_walkthrough_label_belongs_to_its_row(
    tmp_path: Path, name: str, options: tuple[str, ...]
) -> None:
    experiment = SCENARIOS[name].build(scenario_parser(name).parse_args(["--steps", "2", *options]))
    writer = WorkbookWriter(experiment, walkthrough_steps=[2])
    try:
        report = harness.run(experiment, observers=[writer.observe])
        writer.write(tmp_path / "run.xlsx", report)
    finally:
        writer.close()
    if not writer.facts or not writer.facts.walkthrough_sheets:
        pytest.skip(f"{name}: no live Walkthrough ({writer.facts.live_note if writer.facts else '?'})")
    problems, seen = _label_problems(tmp_path / "run.xlsx")
    assert seen > 0
    assert not problems, f"{len(problems)} labels off their rows, first: " + "; ".join(problems[:5])
