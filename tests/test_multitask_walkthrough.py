"""The Multitask walkthrough's live formulas, recomputed by LibreOffice, equal the hand side.

The multitask scenario at its defaults (3 steps; batch mode, all 16 rows, a trunk of 8 tanh units,
an mse head and a 3-class cross-entropy head, w₁ = w₂ = 1, plain SGD) is laid out at steps 1 and 2
(step 2 reads the weights after step 1), and a second run with a minibatch, leaky_relu, sum
reduction, w = (0.3, 2), momentum SGD and gradient clipping at steps 1 and 2 (step 2 reads the
momentum buffers after step 1). All go into one workbook that headless LibreOffice recomputes
once; every checked cell (both heads, L₁, L₂, L, the trunk's ∂L/∂a as the sum of the two heads'
blocks, every parameter gradient, the update) must equal the hand side's traced element to
1e-12·max(|hand|, 1).

Two copies of the defaults' step 2 go in beside them: one with an input x, a weight of W⁽trunk⁾
and w₂ edited, which must recompute to a fresh hand step (hand/multitask.py) of the edited inputs
(pasted numbers would fail it); and one with a planted error (one cell of ∂L/∂a⁽trunk⁾ reads
head 1's path only), which the same comparison must flag.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from test_makemore_walkthrough import assert_cached_values_recompute, block_top, run_capturing
from test_walkthrough import TOLERANCE, assert_checks, mismatches, read_values, recalc, write_grids

from handgrad.cli import scenario_parser
from handgrad.contract.multitask import param_table
from handgrad.contract.spec import SpecError
from handgrad.contract.trace import StepTrace
from handgrad.hand.multitask import HandMultitask
from handgrad.scenarios import SCENARIOS
from handgrad.workbook.cached import fill_cached
from handgrad.workbook.grid import Grid
from handgrad.workbook.multitask_walkthrough import (
    multitask_unsupported_reason,
    multitask_walkthrough_grids,
)

LEFT = 2  # the hand blocks start in column B
VARIANT = [
    "--mode", "minibatch", "--batch-size", "5", "--activation", "leaky_relu", "--reduction", "sum",
    "--loss-weights", "0.3,2", "--momentum", "0.9", "--clip-norm", "0.5", "--lr", "0.05",
]  # fmt: skip
EVERY_TERM = {
    "trunk.z", "trunk.a", "head1.z", "head2.z", "loss.L1", "loss.L2", "loss.L",
    "head1.dL_dz", "head1.dL_dW", "head1.dL_db", "trunk.dL1_da",
    "head2.dL_dz", "head2.dL_dW", "head2.dL_db", "trunk.dL2_da",
    "trunk.dL_da", "trunk.dL_dz", "trunk.dL_dW", "trunk.dL_db", "input.dL_dx",
    "trunk.W_next", "trunk.b_next", "head1.W_next", "head1.b_next", "head2.W_next", "head2.b_next",
    "sgd.lr",
}  # fmt: skip


def multitask_run(*options: str) -> tuple[object, dict[int, tuple[StepTrace, StepTrace]]]:
    args = scenario_parser("multitask").parse_args(["--steps", "3", *options])
    return run_capturing(SCENARIOS["multitask"].build(args))


@pytest.fixture(scope="module")
def defaults() -> tuple[object, dict[int, tuple[StepTrace, StepTrace]]]:
    return multitask_run()


@pytest.fixture(scope="module")
def variant() -> tuple[object, dict[int, tuple[StepTrace, StepTrace]]]:
    return multitask_run(*VARIANT)


def renamed(grid: Grid, title: str) -> Grid:
    copy = Grid(title, dict(grid.cells), dict(grid.widths), dict(grid.defined_names))
    copy.checks = dict(grid.checks)
    return copy


@pytest.mark.libreoffice
def test_libreoffice_recomputes_every_multitask_cell(
    defaults, variant, tmp_path: Path, libreoffice: str
) -> None:
    experiment, captured = defaults
    grids = multitask_walkthrough_grids(experiment, captured, steps=[1, 2])
    assert [g.title for g in grids] == ["Multitask walkthrough", "Multitask walkthrough 2"]
    other_experiment, other_captured = variant
    others = [
        renamed(grid, f"Variant {grid.title}")
        for grid in multitask_walkthrough_grids(other_experiment, other_captured, steps=[1, 2])
    ]
    for grid in others:  # the clip coefficient's cached value, as the writer stores it
        fill_cached(grid, lambda step, term: np.ravel(other_captured[step][0].value(term)))
    edited, planted = copy_with_edits(grids[1]), copy_with_planted_error(grids[1])
    path = tmp_path / "multitask.xlsx"
    write_grids(path, [*grids, *others, edited, planted])
    (result,) = recalc([path], tmp_path, libreoffice)
    values = read_values(result)
    for grid, run in [(g, captured) for g in grids] + [(g, other_captured) for g in others]:
        hand = {k: run[k][0] for k in run}
        assert_checks(values[grid.title], grid, hand)
        assert_cached_values_recompute(values[grid.title], grid)
        terms = {term for _, term, _ in grid.checks.values()}
        if grid in grids:
            assert terms == EVERY_TERM
        else:  # momentum's buffers and the clipped gradients are laid out and checked too
            assert {"sgd.momentum_buffer.trunk.W", "clip.total_norm", "clip.grad.head2.W"} <= terms
            assert terms >= EVERY_TERM
    assert_edited(values[edited.title], edited, experiment, captured)
    assert_planted_error_is_seen(values[planted.title], planted, captured)


EDIT_ROW, EDIT_IN, X_EDIT = 2, 1, 0.9  # x[2, 1]
EDIT_UNIT, W_EDIT = 4, -0.7  # W⁽trunk⁾[4, EDIT_IN]
W2_EDIT = 0.5  # w₂


def copy_with_edits(grid: Grid) -> Grid:
    """Step 2's sheet with x[2, 1], W⁽trunk⁾[4, 1] and w₂ replaced (the formulas untouched)."""
    edited = renamed(grid, "Multitask edited")
    x_top, w_top = block_top(grid, "x: the step's"), block_top(grid, "W⁽trunk⁾ and")
    edited.set(x_top + EDIT_ROW, LEFT + EDIT_IN, X_EDIT, "input")
    edited.set(w_top + EDIT_UNIT, LEFT + EDIT_IN, W_EDIT, "input")
    w2_row = next(r for (r, c), cell in grid.cells.items() if c == 1 and str(cell.value).startswith("w₂ ("))
    edited.set(w2_row, LEFT, W2_EDIT, "input")
    return edited


def assert_edited(values, grid: Grid, experiment, captured) -> None:
    """Every checked cell of the edited sheet against a fresh hand step (hand/multitask.py) from
    the edited x, W⁽trunk⁾ and w₂, the other inputs as step 2 read them."""
    spec = experiment.spec
    model = dataclasses.replace(spec.model, weights=(spec.model.weights[0], W2_EDIT))
    rows = np.asarray(spec.batches[1])
    x = np.array(spec.data.x, dtype=float)
    x[rows[EDIT_ROW], EDIT_IN] = X_EDIT
    before = captured[1][0]
    params = {name: np.array(before.value(f"{name}_next"), dtype=float) for name, _, _ in param_table(model)}
    params["trunk.W"][EDIT_UNIT, EDIT_IN] = W_EDIT
    fresh = HandMultitask(model, spec.optimizer, params, x, spec.data.y, [rows]).step(1)
    checked = 0
    for (row, col), (_, term, index) in grid.checks.items():
        expected = float(np.ravel(fresh.value(term))[index])
        got = values[(row, col)]
        assert abs(got - expected) <= TOLERANCE * max(abs(expected), 1.0), (term, index, got, expected)
        checked += 1
    assert checked == len(grid.checks) > 0
    # the edits moved the sheet away from the traced run: L, and ∂L/∂a⁽trunk⁾ of the edited row
    traced = captured[2][0]
    for term, index in (("loss.L", 0), ("trunk.dL_da", EDIT_ROW * model.hidden)):
        where = next(rc for rc, (_, t, i) in grid.checks.items() if (t, i) == (term, index))
        assert abs(values[where] - float(np.ravel(traced.value(term))[index])) > 1e-6, term


def copy_with_planted_error(grid: Grid) -> Grid:
    """Step 2's sheet with one cell of ∂L/∂a⁽trunk⁾ reading head 1's path only (the bug that
    hand/multitask.py's mutant plants: the trunk trained for one task)."""
    planted = renamed(grid, "Multitask planted")
    top = block_top(grid, "∂L/∂a⁽trunk⁾ = w₁")
    formula = str(grid.cells[(top, LEFT)].value)
    assert formula.count("+") == 1, formula
    planted.set(top, LEFT, formula.split("+")[0], "backward")
    return planted


def assert_planted_error_is_seen(values, grid: Grid, captured) -> None:
    hand = {k: captured[k][0] for k in captured}
    _, bad = mismatches(values, grid, hand)
    top = block_top(grid, "∂L/∂a⁽trunk⁾ = w₁")
    assert any(message.startswith(f"{grid.title}!B{top} (trunk.dL_da[0]") for message in bad), bad[:3]


def test_every_hand_term_has_its_block_and_the_trunk_gradient_sums_the_heads(defaults) -> None:
    experiment, captured = defaults
    (grid,) = multitask_walkthrough_grids(experiment, captured, steps=[1])
    assert {term for _, term, _ in grid.checks.values()} == EVERY_TERM
    top = block_top(grid, "∂L/∂a⁽trunk⁾ = w₁")
    head1, head2 = block_top(grid, "w₁·∂L₁/∂a⁽trunk⁾ ="), block_top(grid, "w₂·∂L₂/∂a⁽trunk⁾ =")
    assert grid.cells[(top, LEFT)].value == f"=B{head1}+B{head2}"
    texts = [str(cell.value) for cell in grid.cells.values() if cell.is_text]
    assert any("all N = 16 rows of the batch, all 8 trunk units, both heads" in text for text in texts)


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        (["--loss", "huber"], "head 1's loss 'huber'"),
        (["--label-smoothing", "0.1"], "label smoothing"),
        (["--dtype", "float32"], "float64"),
    ],
)
def test_what_has_no_live_formulas_says_why(options: list[str], reason: str) -> None:
    args = scenario_parser("multitask").parse_args(["--steps", "1", *options])
    experiment = SCENARIOS["multitask"].build_hand(args)
    assert reason in multitask_unsupported_reason(experiment)
    with pytest.raises(SpecError, match=reason.split("'")[0]):
        multitask_walkthrough_grids(experiment, {})


def test_a_walkthrough_step_whose_previous_step_is_missing_is_refused(defaults) -> None:
    experiment, captured = defaults
    with pytest.raises(SpecError, match="step 2"):
        multitask_walkthrough_grids(experiment, {3: captured[3]}, steps=[3])
