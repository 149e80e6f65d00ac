"""The live Training sheet: one row per step, every term a formula reading the row above.

The LibreOffice checks share test_walkthrough's single recomputation (``recomputed``): every
case of activations × losses × modes × fold_bias has its Training sheet in that workbook, and
every checked cell (each row's weights before the step, x·W + b, a, ℓ, L, every gradient, the
updated weights, the lr in force) must equal the hand side's number of the same step. The rest
are layout tests that need no spreadsheet engine.
"""

from __future__ import annotations

import re

import pytest
import test_walkthrough as tw
from openpyxl.utils.cell import coordinate_to_tuple
from test_walkthrough import EXTRA, MATRIX, Recomputed, _case_id, assert_checks, dense_case

from handgrad.contract.spec import SpecError
from handgrad.contract.training import Clip, LRSchedule
from handgrad.workbook.grid import address
from handgrad.workbook.row_stamp import RowTemplate
from handgrad.workbook.training import training_grid

recomputed = tw.recomputed  # the fixture: one LibreOffice run serves both test files


@pytest.mark.libreoffice
@pytest.mark.parametrize("params", MATRIX, ids=_case_id)
def test_libreoffice_recomputes_every_training_cell(recomputed: Recomputed, params: tuple) -> None:
    case_id = _case_id(params)
    case = recomputed.cases[case_id]
    (view,) = [view for view in recomputed.views[case_id] if view.title.startswith("training")]
    assert_checks(recomputed.values[view.title], view, case.hand)


@pytest.mark.libreoffice
@pytest.mark.parametrize("case_id", [case_id for case_id, _ in EXTRA])
def test_libreoffice_recomputes_the_torch_runs(recomputed: Recomputed, case_id: str) -> None:
    """8 steps against torch (3 for xor): every cell as the hand side, and |Δ| of L below 1e-12."""
    case = recomputed.cases[case_id]
    grid = recomputed.grids[case_id][-1]
    assert grid.title.endswith("Training")
    values = recomputed.values[grid.title]
    assert_checks(values, grid, case.hand)
    deltas = [
        values[cell]
        for cell, content in grid.cells.items()
        if content.style == "delta" and str(content.value).startswith("=ABS(")
    ]
    assert len(deltas) == case.report.steps_run
    assert max(deltas) <= 1e-12


def _grid(activation: str = "sigmoid", loss: str = "mse", mode: str = "online", fold: bool = False, **kw):
    case = dense_case(activation, loss, mode, fold, twin=False, **kw)
    return case, training_grid(case.experiment, case.report, kw.get("steps", 3))


@pytest.mark.parametrize("mode", ["online", "batch", "minibatch"])
def test_each_row_checks_the_loss_and_every_updated_weight(mode: str) -> None:
    case, grid = _grid(mode=mode, steps=4)
    per_step: dict[int, set[str]] = {}
    for step, term, _ in grid.checks.values():
        per_step.setdefault(step, set()).add(term)
    for step in range(1, 5):
        wanted = {t.name for t in case.hand[step] if t.phase != "diagnostic"}
        assert wanted <= per_step[step], sorted(wanted - per_step[step])


def test_row_one_reads_the_initial_cells_and_later_rows_the_row_above() -> None:
    case, grid = _grid(steps=3)
    w11 = grid.defined_names["W_1"].split(":")[0]  # $C$6: the initial W⁽¹⁾[1,1]
    cells = {cell.value: (row, col) for (row, col), cell in grid.cells.items() if isinstance(cell.value, str)}
    assert f"={w11}" in cells
    row, col = cells[f"={w11}"]
    next_col = next(
        c for (r, c), check in grid.checks.items() if r == row and check[1:] == ("dense1.W_next", 0)
    )
    below = grid.cells[(row + 1, col)].value
    assert below == f"={address(row, next_col).rstrip('0123456789')}${row}"  # the row above, fixed
    assert grid.checks[(row + 1, col)] == (1, "dense1.W_next", 0)


def test_inputs_are_looked_up_by_row_number() -> None:
    case, grid = _grid(mode="minibatch", steps=2)  # 5 rows, batches of 3: rows 1-3, then 4-5
    lookups = sorted(
        (row, cell.value)
        for (row, _), cell in grid.cells.items()
        if str(cell.value).startswith("=INDEX(x_data,")
    )
    first = lookups[0][0]
    assert sum(1 for row, _ in lookups if row == first) == 3 * 3
    assert sum(1 for row, _ in lookups if row == first + 1) == 2 * 3  # the short last slice
    numbers = [grid.cells[(first + 1, col)].value for col in range(2, 5) if (first + 1, col) in grid.cells]
    assert numbers == [4, 5]


def test_eta_and_the_weights_are_named_input_cells() -> None:
    _, grid = _grid(fold=True)
    assert {"eta", "Wt_1", "Wt_2", "Wt_3", "x_data", "y_data"} <= set(grid.defined_names)
    for name, ref in grid.defined_names.items():
        assert not re.fullmatch(r"[A-Za-z]{1,3}\d+", name)
        row, col = coordinate_to_tuple(ref.split(":")[0].replace("$", ""))
        assert grid.cells[(row, col)].style == "input", name
    updates = [cell.value for cell in grid.cells.values() if str(cell.value).count("-eta*") == 1]
    assert len(updates) == 3 * (4 * 4 + 3 * 5 + 2 * 4)  # every W̃ element of every row


def test_the_cap_is_stated_when_the_run_is_longer() -> None:
    case = dense_case("tanh", "mse", "online", False, twin=False, steps=6)
    grid = training_grid(case.experiment, case.report, live_steps=4)
    notes = " ".join(str(cell.value) for cell in grid.cells.values() if cell.is_text)
    assert "steps 1 to 4 of 6" in notes and "live_steps = 4" in notes
    assert max(step for step, _, _ in grid.checks.values()) == 4
    full = training_grid(case.experiment, case.report, live_steps=1000)
    assert "All 6 steps" in " ".join(str(cell.value) for cell in full.cells.values() if cell.is_text)


@pytest.mark.parametrize("live_steps", [-1, 2.5, True])
def test_bad_live_steps_is_refused(live_steps: object) -> None:
    case = dense_case("sigmoid", "mse", "online", False, twin=False, steps=1)
    with pytest.raises(SpecError, match="live_steps"):
        training_grid(case.experiment, case.report, live_steps)  # type: ignore[arg-type]


def test_zero_live_steps_keeps_the_inputs_only() -> None:
    case = dense_case("sigmoid", "mse", "online", False, twin=False, steps=2)
    grid = training_grid(case.experiment, case.report, live_steps=0)
    assert not grid.checks and "eta" in grid.defined_names


def test_no_two_rows_of_a_column_read_alike() -> None:
    """The weights-before columns read the row above with a fixed row (``DS$12``): LibreOffice's
    threaded formula groups computed a column of like formulas that read back and forth between
    rows as 0s (xor batch, 1000 steps)."""
    _, grid = _grid(mode="batch", steps=3)
    before = {
        (row, col): cell.value
        for (row, col), cell in grid.cells.items()
        if isinstance(cell.value, str) and re.fullmatch(r"=[A-Z]+\$\d+", cell.value)
    }
    assert len(before) == 2 * (4 * 3 + 4 + 3 * 4 + 3 + 2 * 3 + 2)  # steps 2 and 3, every parameter
    assert len(set(before.values())) == len(before)
    for (row, col), value in before.items():
        step, term, _ = grid.checks[(row, col)]
        assert term.endswith("_next") and value.endswith(f"${row - 1}")


def test_a_run_too_wide_for_a_sheet_gets_a_note_instead() -> None:
    """3-600-2 on a batch of 5: a step's terms need more than Excel's 16,384 columns."""
    case = dense_case("relu", "mse", "batch", False, twin=False, steps=1, sizes=(3, 600, 2))
    grid = training_grid(case.experiment, case.report, live_steps=10)
    notes = " ".join(str(cell.value) for cell in grid.cells.values())
    assert "No live Training sheet" in notes and "16,384 columns" in notes
    assert not grid.checks and grid.max_col == 1


STAMPED = {  # minibatch: batches of 2, 2, 1 — a template per batch size, each verified then stamped
    "online": dict(mode="online"),
    "minibatch-ragged": dict(mode="minibatch", activation="relu"),
    "batch-folded-bce": dict(mode="batch", fold=True, loss="bce"),
    "adam-steplr-clip": dict(
        mode="minibatch",
        optimizer="adam",
        schedule=LRSchedule("step", step_size=3, gamma=0.5),
        clip=Clip(max_norm=0.05),
    ),
    "momentum-clip-inf": dict(
        mode="batch",
        optimizer="sgd",
        options={"momentum": 0.9},
        clip=Clip(max_norm=0.02, norm_type=float("inf")),
    ),
}


@pytest.mark.parametrize("kw", STAMPED.values(), ids=STAMPED.keys())
def test_stamped_rows_equal_rows_built_formula_by_formula(kw: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows 4 on are stamped from a verified template (workbook/row_stamp.py): the sheet must be the
    one built formula by formula, cell for cell, check for check, in the same order."""
    stamps = []
    stamp = RowTemplate.stamp
    monkeypatch.setattr(RowTemplate, "stamp", lambda self, *a: stamps.append(a[2]) or stamp(self, *a))
    case, stamped = _grid(steps=9, **kw)
    assert len(stamps) >= 5  # the fast path ran
    monkeypatch.setattr(RowTemplate, "matches", lambda self, built, plain: False)
    direct = training_grid(case.experiment, case.report, 9)
    assert list(stamped.cells.items()) == list(direct.cells.items())
    assert list(stamped.checks.items()) == list(direct.checks.items())
