"""The Checks sheet's runs (writer.check_runs, folded in arrays) are the runs of the plain greedy
fold: cell by cell down each column, a cell joins the run above it while it keeps the column, the
term and (after the run's second row) both strides."""

from __future__ import annotations

import random

import pytest

from handgrad.workbook.writer import check_runs


def greedy_runs(checks):  # type: ignore[no-untyped-def]
    runs, last = [], None
    for col, row, step, term, index in sorted((col, row, *check) for (row, col), check in checks.items()):
        if last is not None and last[0] == col and last[2] + 1 == row and last[4] == term:
            k = row - last[1]
            if last[2] == last[1]:  # a single cell so far: this row sets the strides
                last[2], last[6], last[7] = row, step - last[3], index - last[5]
                continue
            if (step, index) == (last[3] + k * last[6], last[5] + k * last[7]):
                last[2] = row
                continue
        last = [col, row, row, step, term, index, 0, 0]
        runs.append(last)
    return [tuple(run) for run in runs]


def _checks(seed: int) -> dict[tuple[int, int], tuple[int, str, int]]:
    """Columns of blocks that overlap, change term or step part-way, with every kind of stride."""
    rng = random.Random(seed)
    checks = {}
    for _ in range(rng.randrange(0, 60)):
        col, top, rows = rng.randrange(1, 4), rng.randrange(1, 30), rng.randrange(1, 8)
        step, index, term = rng.randrange(1, 4), rng.randrange(0, 20), rng.choice("abc")
        step_plus, index_plus = rng.choice([0, 0, 1, 2]), rng.choice([0, 1, 3, -1])
        for k in range(rows):
            step += rng.random() < 0.1
            term = rng.choice("abc") if rng.random() < 0.1 else term
            checks[(top + k, col)] = (step + k * step_plus, f"dense1.{term}", index + k * index_plus)
    return checks


@pytest.mark.parametrize("seed", range(200))
def test_check_runs_are_the_greedy_fold(seed: int):
    checks = _checks(seed)
    runs = check_runs(checks)
    assert runs == greedy_runs(checks)
    assert all(type(value) is int for run in runs for k, value in enumerate(run) if k != 4)
