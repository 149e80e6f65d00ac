"""Every branch of the live-formula builders (handgrad/workbook/formulas.py) is recomputed by
LibreOffice: the cases here take the branches that neither the defaults nor the EXTRA cases of
test_walkthrough.py take. ``make coverage-formulas`` measures it (branch mode, 100 % or fail).

Each case is a small run against torch (dense_case: 3-4-3-2, ≤ 5 steps); its Walkthrough and
Training sheets go into one workbook, one LibreOffice start, and every checked cell is compared
with the hand side by test_walkthrough's comparison (1e-12)."""

from __future__ import annotations

import pytest
from test_walkthrough import Case, assert_checks, dense_case, read_values, recalc, write_grids

from handgrad.contract.training import Clip
from handgrad.workbook.training import training_grid
from handgrad.workbook.walkthrough import walkthrough_grids

pytestmark = pytest.mark.libreoffice

BRANCH_CASES = [  # (id, dense_case kwargs, why: the branch it takes)
    (
        "clipnorm3-sgd-tanh-batch",  # a general p-norm: (Σ|g|^p)^(1/p)
        dict(activation="tanh", loss="mse", mode="batch", fold_bias=False, steps=4,
             clip=Clip(max_norm=0.05, norm_type=3.0)),
    ),
    (  # ∞-norm over more than Excel's 255 arguments of one MAX: nested MAX(MAX(...), MAX(...))
        "clipnorminf-wide-sgd-sigmoid-online",
        dict(activation="sigmoid", loss="mse", mode="online", fold_bias=False, steps=3,
             sizes=(3, 20, 12, 2), clip=Clip(max_norm=0.05, norm_type=float("inf"))),
    ),
    (  # RMSprop centered with α = 0.3: lerp's weight 1 − α = 0.7 ≥ ½, torch's second branch
        "rmsprop-centered-lerp-high-tanh-minibatch",
        dict(activation="tanh", loss="mse_sum", mode="minibatch", fold_bias=False, steps=5, lr=0.005,
             optimizer="rmsprop", options={"centered": True, "alpha": 0.3}),
    ),
]  # fmt: skip


_RECOMPUTED: list[tuple[dict[str, Case], dict[str, list], dict]] = []


@pytest.fixture(scope="module")
def recomputed(tmp_path_factory: pytest.TempPathFactory, libreoffice: str):
    """Every case's sheets in one workbook, recomputed by one LibreOffice run."""
    if not _RECOMPUTED:
        tmp = tmp_path_factory.mktemp("branches")
        cases, grids = {}, {}
        for number, (case_id, kwargs) in enumerate(BRANCH_CASES):
            case = cases[case_id] = dense_case(**kwargs)
            grids[case_id] = walkthrough_grids(case.experiment, case.captured, steps=[1, 2])
            grids[case_id].append(training_grid(case.experiment, case.report, live_steps=100))
            for grid in grids[case_id]:
                grid.title = f"b{number} {grid.title}"
        source = tmp / "branches.xlsx"
        write_grids(source, [grid for case_id in grids for grid in grids[case_id]])
        (result,) = recalc([source], tmp, libreoffice)
        _RECOMPUTED.append((cases, grids, read_values(result)))
    return _RECOMPUTED[0]


@pytest.mark.parametrize("case_id", [case_id for case_id, _ in BRANCH_CASES])
def test_libreoffice_recomputes_the_branch_cases(recomputed, case_id: str) -> None:
    cases, grids, values = recomputed
    for grid in grids[case_id]:
        assert_checks(values[grid.title], grid, cases[case_id].hand)
