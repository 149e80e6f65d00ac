"""The makemore BatchNorm walkthrough's live formulas, recomputed by LibreOffice, equal the hand side.

A small makemore run (3 steps) is laid out at steps 1 and 2 (step 2 reads γ, β and the running
statistics from step 1's trace), written through the workbook writer, recomputed by headless
LibreOffice (scripts/recalc.py), and every checked cell (hpreact, running_mean, running_var,
∂L/∂β, ∂L/∂γ, ∂L/∂hprebn) compared with the hand side's traced element to 1e-12. A copy with one
input of hprebn and one γ edited must recompute to a fresh hand BatchNorm of the edited inputs
(hand/normalization.py): pasted numbers would fail it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_walkthrough import TOLERANCE, assert_checks, read_values, recalc, write_grids

from handgrad import harness
from handgrad.contract.makemore import Makemore
from handgrad.contract.spec import SpecError
from handgrad.contract.trace import StepTrace
from handgrad.contract.training import Optimizer
from handgrad.hand import normalization
from handgrad.scenarios.makemore import makemore_experiment
from handgrad.workbook.grid import Grid
from handgrad.workbook.makemore_walkthrough import (
    SLICE_UNITS,
    makemore_unsupported_reason,
    makemore_walkthrough_grids,
)

MODEL = Makemore(hidden=6, batch_size=5)


@pytest.fixture(scope="module")
def run() -> tuple[object, dict[int, tuple[StepTrace, StepTrace]]]:
    return run_capturing(makemore_experiment(MODEL, Optimizer("sgd", 0.1), steps=3, seed=3))


def run_capturing(experiment: object) -> tuple[object, dict[int, tuple[StepTrace, StepTrace]]]:
    """Run the experiment through the harness, keeping every step's (hand, torch) traces."""
    captured: dict[int, tuple[StepTrace, StepTrace]] = {}
    report = harness.run(
        experiment, observers=[lambda k, hand, twin, checks: captured.update({k: (hand, twin)})]
    )
    assert report.ok, report.verdict()
    return experiment, captured


def block_top(grid: Grid, title_start: str) -> int:
    """The first data row of the block whose title (column A) starts with ``title_start``."""
    row = next(
        r for (r, c), cell in sorted(grid.cells.items()) if c == 1 and str(cell.value).startswith(title_start)
    )
    return row + 2


@pytest.mark.libreoffice
def test_libreoffice_recomputes_every_batchnorm_cell(run, tmp_path: Path, libreoffice: str) -> None:
    experiment, captured = run
    grids = makemore_walkthrough_grids(experiment, captured, steps=[1, 2])
    assert [g.title for g in grids] == ["BatchNorm walkthrough", "BatchNorm walkthrough 2"]
    edited = copy_with_edits(grids[1])
    path = tmp_path / "makemore.xlsx"
    write_grids(path, [*grids, edited])
    (result,) = recalc([path], tmp_path, libreoffice)
    values = read_values(result)
    hand = {k: captured[k][0] for k in captured}
    for grid in grids:
        assert_checks(values[grid.title], grid, hand)
        assert_cached_values_recompute(values[grid.title], grid)
        terms = {term for _, term, _ in grid.checks.values()}
        assert terms == {
            "bn.hpreact",
            "bn.running_mean",
            "bn.running_var",
            "bn.dL_dbeta",
            "bn.dL_dgamma",
            "hidden.dL_dhprebn",
        }
    assert_edited(values[edited.title], edited, experiment, captured)


def assert_cached_values_recompute(values, grid: Grid) -> None:
    """Every formula cell that computes no traced term (μ, σ², x̂, ...; not |Δ|) stores a cached
    value, and LibreOffice's recalculation of it equals that value."""
    helpers = 0
    for (row, col), cell in grid.cells.items():
        formula = isinstance(cell.value, str) and cell.value.startswith("=") and not cell.is_text
        if not formula or (row, col) in grid.checks or cell.value.startswith("=ABS("):
            continue
        assert cell.cached is not None, f"{grid.title} row {row} col {col}: {cell.value} has no cached value"
        got = values[(row, col)]
        assert abs(got - cell.cached) <= TOLERANCE * max(abs(cell.cached), 1.0), (row, col, got, cell.cached)
        helpers += 1
    assert helpers > 0


EDIT_ROW, EDIT_UNIT, HPREBN_EDIT, GAMMA_EDIT = 2, 1, 0.75, -1.3


def copy_with_edits(grid: Grid) -> Grid:
    """Step 2's sheet with hprebn[2, 1] and γ[1] replaced (the formulas untouched)."""
    edited = Grid("BatchNorm edited", dict(grid.cells), dict(grid.widths), dict(grid.defined_names))
    edited.checks = dict(grid.checks)
    x_top, gamma_top = block_top(grid, "hprebn"), block_top(grid, "γ before")
    edited.set(x_top + EDIT_ROW, 2 + EDIT_UNIT, HPREBN_EDIT, "input")
    edited.set(gamma_top, 2 + EDIT_UNIT, GAMMA_EDIT, "input")
    return edited


def assert_edited(values, grid: Grid, experiment, captured) -> None:
    """The edited sheet's hpreact, ∂L/∂γ and ∂L/∂hprebn against hand/normalization.py's BatchNorm
    of the edited inputs (the other blocks' inputs as traced)."""
    hand, before = captured[2][0], captured[1][0]
    x = np.array(hand.value("hidden.hprebn"), dtype=float)
    x[EDIT_ROW, EDIT_UNIT] = HPREBN_EDIT
    gamma = np.array(before.value("bn.gamma_next"), dtype=float)
    gamma[EDIT_UNIT] = GAMMA_EDIT
    params = {
        "weight": gamma,
        "bias": np.asarray(before.value("bn.beta_next"), dtype=float),
        "running_mean": np.asarray(before.value("bn.running_mean"), dtype=float),
        "running_var": np.asarray(before.value("bn.running_var"), dtype=float),
        "num_batches_tracked": np.asarray(1),
    }
    y, cache = normalization.batchnorm_forward(
        x, params, dims=1, training=True, eps=MODEL.eps, momentum=MODEL.momentum
    )
    dx, grads = normalization.batchnorm_backward(np.asarray(hand.value("bn.dL_dhpreact"), dtype=float), cache)
    fresh = {
        "bn.hpreact": y,
        "hidden.dL_dhprebn": dx,
        "bn.dL_dgamma": grads["weight"],
        "bn.dL_dbeta": grads["bias"],
    }
    fresh["bn.running_var"] = cache.state["running_var"]
    fresh["bn.running_mean"] = cache.state["running_mean"]
    seen = set()
    for (row, col), (_, term, index) in grid.checks.items():
        expected = float(np.ravel(fresh[term])[index])
        got = values[(row, col)]
        assert abs(got - expected) <= TOLERANCE * max(abs(expected), 1.0), (term, index, got, expected)
        seen.add(term)
    assert len(seen) == 6
    # the edit moved the checked cells of the edited unit away from the traced run
    hpreact_top = block_top(grid, "hpreact")
    moved = values[(hpreact_top + EDIT_ROW, 2 + EDIT_UNIT)]
    assert abs(moved - float(hand.value("bn.hpreact")[EDIT_ROW, EDIT_UNIT])) > 1e-3


def test_the_slice_is_every_row_of_the_first_units(run) -> None:
    experiment, captured = run
    (grid,) = makemore_walkthrough_grids(experiment, captured, steps=[2])
    hpreact = sorted(index for _, term, index in grid.checks.values() if term == "bn.hpreact")
    units = min(SLICE_UNITS, MODEL.hidden)
    assert hpreact == sorted(n * MODEL.hidden + j for n in range(MODEL.batch_size) for j in range(units))
    texts = [str(cell.value) for cell in grid.cells.values() if cell.is_text]
    assert any(
        f"all N = {MODEL.batch_size} rows of the batch, hidden units 1–{units} of {MODEL.hidden}" in t
        for t in texts
    )


def test_a_float32_run_says_why_it_has_no_live_sheet() -> None:
    experiment = makemore_experiment(
        MODEL, Optimizer("sgd", 0.1), steps=1, seed=3, dtype="float32", with_twin=False
    )
    assert "float64" in makemore_unsupported_reason(experiment)
    with pytest.raises(SpecError, match="float32"):
        makemore_walkthrough_grids(experiment, {})


def test_a_walkthrough_step_whose_previous_step_is_missing_is_refused(run) -> None:
    experiment, captured = run
    with pytest.raises(SpecError, match="step 2"):
        makemore_walkthrough_grids(experiment, {3: captured[3]}, steps=[3])


def test_the_grid_cells_are_formulas_reading_the_inputs(run) -> None:
    experiment, captured = run
    (grid,) = makemore_walkthrough_grids(experiment, captured, steps=[1])
    formulas = [grid.cells[cell].value for cell in grid.checks]
    assert all(isinstance(f, str) and f.startswith("=") for f in formulas)
    workbook_formulas = " ".join(str(c.value) for c in grid.cells.values())
    for function in ("AVERAGE(", "DEVSQ(", "SQRT(", "SUMPRODUCT("):
        assert function in workbook_formulas
