"""Every loss × reduction gets live Walkthrough and Training sheets that LibreOffice recomputes to the
hand side within 1e-12 (handgrad.workbook.loss_formulas).

Each case is a small dense run (3-3-out, tanh hidden, 3 minibatch steps over 5 rows: a short last
slice) whose first step sits on the kinks: the last layer's first row is 0 with bias ½, so
ŷ₁ = ½ exactly for every sample, and the targets put sample 1 at |d| = δ (huber), |d| = β
(smooth_l1) and sample 2 at d = 0 (l1's sgn(0) = 0); the class losses get z₁ = z₂ (a tie in the
maximum of the log-softmax) on every row. The matrix runs the hand side alone (its numbers are
what the sheets are checked against); the TWIN cases run against torch and keep torch's columns and
the |Δ| cells, which must stay below 1e-12 too. One workbook, one LibreOffice run
(test_walkthrough's helpers).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from openpyxl import load_workbook
from test_walkthrough import Case, assert_checks, read_values, recalc, run_case, stack, write_grids

from handgrad import cli
from handgrad.contract.spec import Data, Network, Schedule
from handgrad.contract.stack import param_table
from handgrad.contract.training import Loss, Optimizer
from handgrad.scenarios.stack import stack_experiment
from handgrad.workbook.grid import Grid
from handgrad.workbook.loss_formulas import ClassLoss, ElementLoss, loss_formulas
from handgrad.workbook.training import training_grid
from handgrad.workbook.walkthrough import unsupported_reason, walkthrough_grids

X = np.array([[0.0, 0.0, 0.0], [0.5, -1.0, 2.0], [-1.5, 0.25, 1.0], [1.0, 1.0, -0.5], [0.2, -0.7, -1.2]])
Y_VALUE = np.array([[0.0, 1.0], [0.5, 0.0], [0.25, 0.75], [1.0, 1.0], [0.0, 0.3]])  # column 1: see KINK
Y_IDS = np.array([[0.0], [1.0], [2.0], [1.0], [0.0]])
Y_IDS_IGNORED = np.array([[0.0], [-100.0], [2.0], [1.0], [2.0]])  # row 2: ignore_index
Y_PROB = np.array([[0.2, 0.5, 0.3], [1.0, 0.0, 0.0], [0.1, 0.1, 0.8], [0.5, 0.25, 0.25], [0.0, 0.6, 0.4]])

LOSSES = {  # name: (loss with reduction mean, targets)
    "mse-none": (Loss("mse", "none"), Y_VALUE),
    "mse-half-none": (Loss("mse", "none", half=True), Y_VALUE),
    "bce-none": (Loss("bce", "none"), Y_VALUE),
    "l1": (Loss("l1"), Y_VALUE),
    "smooth_l1": (Loss("smooth_l1", beta=0.5), Y_VALUE),
    "smooth_l1-beta0": (Loss("smooth_l1", beta=0.0), Y_VALUE),
    "huber": (Loss("huber", delta=1.0), Y_VALUE),
    "huber-small": (Loss("huber", delta=0.3), Y_VALUE),
    "bce_logits": (Loss("bce_logits"), Y_VALUE),
    "bce_logits-pw": (Loss("bce_logits", pos_weight=(2.0, 0.5)), Y_VALUE),
    "bce_logits-pw1": (Loss("bce_logits", pos_weight=(3.0,)), Y_VALUE),
    "cross_entropy": (Loss("cross_entropy"), Y_IDS),
    "cross_entropy-full": (
        Loss("cross_entropy", weight=(0.5, 2.0, 1.25), label_smoothing=0.1),
        Y_IDS_IGNORED,
    ),
    "cross_entropy-weight-ignore1": (Loss("cross_entropy", weight=(0.5, 2.0, 1.25), ignore_index=1), Y_IDS),
    "cross_entropy-prob": (Loss("cross_entropy", label_smoothing=0.2), Y_PROB),
    "cross_entropy-prob-weight": (Loss("cross_entropy", weight=(0.5, 2.0, 1.25)), Y_PROB),
    "nll": (Loss("nll", weight=(0.5, 2.0, 1.25)), Y_IDS_IGNORED),
    "nll-plain": (Loss("nll"), Y_IDS),
}
KINK = {"huber": 1.0, "huber-small": 0.3, "smooth_l1": 0.5}  # sample 1's |d| = δ or β exactly
MATRIX = [
    (name, reduction)
    for name, (loss, _) in LOSSES.items()
    for reduction in (("none",) if loss.reduction == "none" else ("mean", "sum", "none"))
]
TWIN = [("huber", "mean"), ("cross_entropy-full", "mean"), ("bce_logits-pw", "sum"), ("l1", "none")]
PER_SHEET = 12


def loss_case(name: str, reduction: str, *, twin: bool = False, steps: int = 3) -> Case:
    spec, y = LOSSES[name]
    loss = dataclasses.replace(spec, reduction=reduction)
    y = y.copy()
    classes = loss.kind in ("cross_entropy", "nll")
    out = 3 if classes else 2
    if not classes:
        y[0, 0] = 0.5 - KINK.get(name, 0.0)  # d = ŷ₁ − y = δ or β exactly (ŷ₁ = ½ at step 1)
        y[1, 0] = 0.5  # d = 0
    if loss.kind in ("l1", "smooth_l1", "huber"):  # and far outside the quadratic zone
        y[2, 1], y[4, 1] = 2.5, -2.0
    output = "sigmoid" if loss.kind == "bce" else "identity"
    network = Network.mlp((3, 3, out), "tanh", output)
    rng = np.random.default_rng(sum(map(ord, name + reduction)))
    params = {n: rng.uniform(-0.9, 0.9, size=shape) for n, shape, _ in param_table(network)}
    last = param_table(network)[-2][0]  # the last W
    params[last][0] = 0.0
    if classes:  # z₁ = z₂ = 0.3 on every row, z₃ ≤ −2.3: a tie in the maximum
        params[last][1] = 0.0
        params[last.replace(".W", ".b")][:] = [0.3, 0.3, -5.0]
    else:
        params[last.replace(".W", ".b")][0] = 0.0 if output == "sigmoid" else 0.5
    lr = 0.02 if reduction != "mean" else 0.1
    experiment = stack_experiment(
        f"{name}-{reduction}",
        network,
        loss,
        Optimizer("sgd", lr, {}),
        Data(X, y),
        Schedule("minibatch", 3),
        steps=steps,
        seed=0,
        params=params,
    )
    return run_case(experiment, steps, twin)


def _id(params: tuple[str, str]) -> str:
    return "-".join(params)


_RECOMPUTED: list[tuple[dict[str, Case], dict[str, list[Grid]], dict[str, list[Grid]], dict]] = []


@pytest.fixture(scope="module")
def recomputed(tmp_path_factory: pytest.TempPathFactory, libreoffice: str):
    """Every case's sheets in one workbook, one LibreOffice run: the matrix stacked, lean; the
    runs against torch as they are (torch's numbers and |Δ| included)."""
    if not _RECOMPUTED:
        cases, grids, views = {}, {}, {}
        for params in MATRIX:
            case = cases[_id(params)] = loss_case(*params)
            grids[_id(params)] = [
                *walkthrough_grids(case.experiment, case.captured, steps=[1, 2]),
                training_grid(case.experiment, case.report, live_steps=100),
            ]
        for number, params in enumerate(TWIN):
            case_id = "torch-" + _id(params)
            case = cases[case_id] = loss_case(*params, twin=True)
            grids[case_id] = [
                *walkthrough_grids(case.experiment, case.captured, steps=[1, 3]),
                training_grid(case.experiment, case.report, live_steps=100),
            ]
            for grid in grids[case_id]:
                grid.title = f"t{number} {grid.title}"
            views[case_id] = grids[case_id]
        sheets = [grid for params in TWIN for grid in grids["torch-" + _id(params)]]
        ids = [_id(params) for params in MATRIX]
        for first in range(0, len(ids), PER_SHEET):
            chunk = [(case_id, grid) for case_id in ids[first : first + PER_SHEET] for grid in grids[case_id]]
            sheet, placed = stack(f"losses {first // PER_SHEET:02d}", [grid for _, grid in chunk])
            sheets.append(sheet)
            for (case_id, _), view in zip(chunk, placed, strict=True):
                views.setdefault(case_id, []).append(view)
        tmp = tmp_path_factory.mktemp("losses")
        write_grids(tmp / "losses.xlsx", sheets)
        (result,) = recalc([tmp / "losses.xlsx"], tmp, libreoffice)
        _RECOMPUTED.append((cases, grids, views, read_values(result)))
    return _RECOMPUTED[0]


@pytest.mark.libreoffice
@pytest.mark.parametrize("params", MATRIX, ids=_id)
def test_libreoffice_recomputes_every_loss_and_reduction(recomputed, params: tuple[str, str]) -> None:
    cases, _, views, values = recomputed
    case = cases[_id(params)]
    assert len(views[_id(params)]) == 3  # Walkthrough 1 and 2, Training
    for view in views[_id(params)]:
        assert_checks(values[view.title], view, case.hand)


@pytest.mark.libreoffice
@pytest.mark.parametrize("params", TWIN, ids=_id)
def test_the_runs_against_torch_recompute_and_delta_stays_below_the_tolerance(
    recomputed, params: tuple[str, str]
) -> None:
    cases, grids, _, values = recomputed
    case_id = "torch-" + _id(params)
    deltas = []
    for grid in grids[case_id]:
        assert_checks(values[grid.title], grid, cases[case_id].hand)
        deltas += [
            values[grid.title][cell]
            for cell, content in grid.cells.items()
            if content.style == "delta" and str(content.value).startswith("=ABS(")
        ]
    assert len(deltas) > 20 and max(deltas) <= 1e-12


@pytest.mark.parametrize("params", MATRIX, ids=_id)
def test_every_hand_term_has_checked_cells(params: tuple[str, str]) -> None:
    """Every term of the hand trace, ℓ (``loss.l``) under reduction none too, is a formula."""
    case = loss_case(*params, steps=1)
    (grid,) = walkthrough_grids(case.experiment, case.captured, steps=[1])
    checked: dict[str, set[int]] = {}
    for _, term, index in grid.checks.values():
        checked.setdefault(term, set()).add(index)
    for term in case.hand[1]:
        if term.phase != "diagnostic":
            assert checked.get(term.name) == set(range(term.value.size)), term.name
    assert ("loss.l" in checked) == (params[1] == "none")


def test_the_kinks_are_where_the_cases_say() -> None:
    """Step 1 really sits on the kinks: |d| = δ, d = 0, and a tie in the logits."""
    for name, kink in [("huber", 1.0), ("smooth_l1", 0.5), ("l1", 0.0)]:
        case = loss_case(name, "mean", steps=1)
        yhat = np.asarray(case.hand[1].value("dense2.z"))
        y = case.experiment.spec.data.y
        assert abs(yhat[0, 0] - y[0, 0]) == kink or (kink == 0 and yhat[1, 0] - y[1, 0] == 0)
    z = np.asarray(loss_case("cross_entropy", "mean", steps=1).hand[1].value("dense2.z"))
    assert (z[:, 0] == z[:, 1]).all() and (z[:, 2] < z[:, 0]).all()


@pytest.mark.parametrize(
    ("loss", "expected"),
    [
        (Loss("l1"), "SIGN(C5-D5)/6"),  # sgn(0) = 0 by SIGN
        (Loss("huber", delta=0.5), "IF(ABS(C5-D5)<0.5,(1/6)*(C5-D5),(1/6)*0.5*SIGN(C5-D5))"),
        (Loss("huber", "sum", delta=0.5), "IF(ABS(C5-D5)<0.5,(C5-D5),0.5*SIGN(C5-D5))"),
        (Loss("smooth_l1", beta=0.5), "IF(ABS(C5-D5)<0.5,(1/6)*(C5-D5)/0.5,SIGN(C5-D5)*(1/6))"),
        (Loss("smooth_l1", "sum", beta=0.0), "SIGN(C5-D5)"),  # β = 0 is l1, as torch
    ],
)
def test_element_gradients_take_torchs_branch_at_the_kinks(loss: Loss, expected: str) -> None:
    """|d| = δ (β) is the outer branch: ``<`` is strict, as the hand side's ``np.abs(d) < delta``."""
    formulas = loss_formulas(loss)
    assert isinstance(formulas, ElementLoss)
    assert formulas.element_gradient("C5", "D5", 6) == expected


def test_cross_entropy_writes_the_log_softmax_with_max() -> None:
    formulas = loss_formulas(Loss("cross_entropy"))
    assert isinstance(formulas, ClassLoss)
    from handgrad.workbook.loss_formulas import LossCells

    cells = LossCells([["A1", "B1"]], [["C1"]], [])
    assert formulas.helper("logp", cells, 0) == [
        "(A1-MAX(A1,B1))-LN(EXP(A1-MAX(A1,B1))+EXP(B1-MAX(A1,B1)))",
        "(B1-MAX(A1,B1))-LN(EXP(A1-MAX(A1,B1))+EXP(B1-MAX(A1,B1)))",
    ]


@pytest.mark.parametrize("loss", ["l1", "smooth_l1", "huber", "bce_logits", "cross_entropy"])
def test_compare_mlp_writes_live_sheets_for_every_loss(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], loss: str
) -> None:
    """`handgrad compare mlp --loss KIND --xlsx F` gets a Walkthrough and a Training sheet."""
    path = tmp_path / "run.xlsx"
    cli.main(["compare", "mlp", "--steps", "3", "--loss", loss, "--xlsx", str(path)])
    out = capsys.readouterr().out
    assert "No live Walkthrough" not in out, out
    book = load_workbook(path, read_only=True)
    try:
        assert any(title.startswith("Walkthrough") for title in book.sheetnames), book.sheetnames
        assert "Training" in book.sheetnames
    finally:
        book.close()


def test_nothing_dense_is_refused_for_its_loss() -> None:
    for name, reduction in MATRIX:
        assert unsupported_reason(loss_case(name, reduction, steps=1).experiment) is None, (name, reduction)
