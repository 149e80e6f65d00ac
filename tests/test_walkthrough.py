"""The live Walkthrough sheets of dense networks, recomputed by a real spreadsheet engine.

Every case of activations × losses × modes × fold_bias is run through the harness, laid out as
Walkthrough (steps 1 and 3) and Training sheets, and all of them go into ONE workbook that
headless LibreOffice recomputes once (``OOXMLRecalcMode`` = 0: always recalculate; each soffice
start costs seconds). Then every formula cell named in ``grid.checks`` must equal the hand side's
number of the same (step, term, element): |sheet − hand| ≤ 1e-12·max(|hand|, 1) (LibreOffice
stores 15 significant digits, so this is rel 1e-12, abs 1e-12 for values below 1).

The data put the hard places in the first step: the first data row is all zeros and b⁽¹⁾₁ = 0,
so z⁽¹⁾₁ = 0 exactly (relu′(0) = 0, leaky′(0) = s, as torch); a minibatch of 2 over 5 rows
leaves a short last slice of 1 (the sheet's missing samples stay blank).

The helpers here (``recalc``, ``write_grids``, ``read_values``, ``assert_checks``, ``dense_case``)
are shared with test_training_sheet.py and test_liveness.py.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import openpyxl
import pytest
from openpyxl.utils import range_boundaries

from handgrad import harness
from handgrad.contract.spec import ACTIVATIONS, Data, Network, Schedule, SpecError
from handgrad.contract.stack import param_table
from handgrad.contract.trace import StepTrace
from handgrad.contract.training import Clip, Loss, LRSchedule, Optimizer
from handgrad.hand.network import HandNetwork
from handgrad.harness import Experiment, Report
from handgrad.scenarios.stack import stack_experiment
from handgrad.workbook import formulas as fx
from handgrad.workbook.grid import Grid
from handgrad.workbook.training import training_grid
from handgrad.workbook.walkthrough import unsupported_reason, walkthrough_grids
from handgrad.workbook.writer import Book, write_grid

TOLERANCE = 1e-12  # |sheet − hand| ≤ TOLERANCE·max(|hand|, 1)

Captured = dict[int, tuple[StepTrace, StepTrace]]


def replay_hand(experiment: Experiment, steps: int) -> list[StepTrace]:
    """The hand side's traces of steps 1..steps, from the run's initial weights (a fresh
    HandNetwork): what the sheets are checked against, computed apart from the workbook."""
    spec = experiment.spec
    hand = HandNetwork(
        spec.network,
        spec.loss,
        spec.optimizer,
        {name: np.array(value) for name, value in experiment.initial_params.items()},
        spec.data.x,
        spec.data.y,
        spec.batches,
        experiment.dtype,
    )
    return [hand.step(step) for step in range(1, steps + 1)]


# --- shared helpers --------------------------------------------------------------------------------


def _recalc_script() -> ModuleType:
    """scripts/recalc.py (the project's LibreOffice recomputation), imported from its file."""
    path = Path(__file__).resolve().parents[1] / "scripts" / "recalc.py"
    spec = importlib.util.spec_from_file_location("handgrad_scripts_recalc", path)
    assert spec is not None and spec.loader is not None, f"no {path}"
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


RECALC = _recalc_script()


def recalc(paths: list[Path], tmp: Path, soffice: str) -> list[Path]:
    """Recompute workbooks in one headless LibreOffice run that always recalculates on load, with
    LibreOffice's default threaded calculation of formula groups: what a reader who opens the file
    gets (see the NOTE in handgrad.workbook.training); return the recomputed copies."""
    results, _ = RECALC.recalculate(paths, tmp / "recalculated", soffice=soffice, threaded=True)
    return [results[path.resolve()] for path in paths]


def write_grids(path: Path, grids: list[Grid]) -> None:
    """The grids as sheets of one workbook, through the workbook writer's own code."""
    book = Book(grids[0].title)
    try:
        write_grid(book, grids[0], book.first)
        for grid in grids[1:]:
            write_grid(book, grid)
        book.save(path)
    finally:
        book.close()


def read_values(path: Path, titles: Iterable[str] | None = None) -> dict[str, dict[tuple[int, int], object]]:
    """Every non-empty cell's (recomputed) value, by sheet and (row, col); an error as its text."""
    with RECALC.XlsxReader(path) as reader:
        wanted = reader.sheets if titles is None else titles
        return {
            title: {
                (row, col): cell.value for row, col, cell in reader.cells(title) if cell.value is not None
            }
            for title in wanted
        }


def mismatches(
    values: Mapping[tuple[int, int], object], grid: Grid, hand: Mapping[int, StepTrace]
) -> tuple[int, list[str]]:
    """(checked cells, messages for the cells that differ from the hand value)."""
    bad: list[str] = []
    for (row, col), (step, term, index) in sorted(grid.checks.items()):
        expected = float(np.asarray(hand[step].value(term), dtype=float).reshape(-1)[index])
        got = values.get((row, col))
        if not isinstance(got, (int, float)) or isinstance(got, bool):
            where = f"{grid.title}!{openpyxl.utils.get_column_letter(col)}{row}"
            bad.append(f"{where} ({term}[{index}] step {step}): {got!r}")
            continue
        if abs(got - expected) > TOLERANCE * max(abs(expected), 1.0):
            bad.append(
                f"{grid.title}!{openpyxl.utils.get_column_letter(col)}{row} ({term}[{index}] step {step}): "
                f"sheet {got!r}, hand {expected!r}, |Δ| {abs(got - expected):.2e}"
            )
    return len(grid.checks), bad


def assert_checks(
    values: Mapping[tuple[int, int], object], grid: Grid, hand: Mapping[int, StepTrace]
) -> None:
    checked, bad = mismatches(values, grid, hand)
    assert checked > 0, f"{grid.title}: no checked cells"
    assert not bad, (
        f"{len(bad)} / {checked} cells differ (tolerance {TOLERANCE:g}·max(|hand|, 1)); first: "
        + ("; ".join(bad[:3]))
    )


@dataclass
class Case:
    """One run of a small dense network with everything the sheets need."""

    name: str
    experiment: Experiment
    report: Report
    captured: Captured
    hand: dict[int, StepTrace]  # every step's hand trace (a fresh replay from the initial weights)


X = np.array(
    [
        [0.0, 0.0, 0.0],  # all zeros: with b⁽¹⁾₁ = 0, z⁽¹⁾₁ = 0 exactly at step 1 (the relu kink)
        [0.5, -1.0, 2.0],
        [-1.5, 0.25, 1.0],
        [1.0, 1.0, -0.5],
        [0.2, -0.7, -1.2],
    ]
)
Y = np.array([[0.0, 1.0], [1.0, 0.0], [0.25, 0.75], [1.0, 1.0], [0.0, 0.0]])

LOSSES = {
    "mse": Loss("mse"),
    "mse_sum": Loss("mse", "sum"),
    "mse_half": Loss("mse", "mean", half=True),
    "mse_half_sum": Loss("mse", "sum", half=True),
    "bce": Loss("bce"),
    "bce_sum": Loss("bce", "sum"),
}
MODES = {"online": Schedule("online"), "batch": Schedule("batch"), "minibatch": Schedule("minibatch", 3)}


def dense_case(
    activation: str,
    loss: str,
    mode: str,
    fold_bias: bool,
    *,
    bias: bool = True,
    steps: int = 3,
    lr: float | None = None,
    sizes: tuple[int, ...] = (3, 4, 3, 2),
    twin: bool = True,
    options: dict | None = None,
    optimizer: str = "sgd",
    schedule: LRSchedule | None = None,
    clip: Clip | None = None,
) -> Case:
    """A 3-4-3-2 network (two hidden layers of ``activation``; a sigmoid output for bce, else the
    same activation) on :data:`X`, :data:`Y`, for ``steps`` steps: run through the harness against
    torch, or (``twin=False``, cheap) the hand side alone, its own numbers standing in for torch's
    (what the sheets are checked against is the hand side either way)."""
    output = "sigmoid" if loss.startswith("bce") else activation
    network = Network.mlp(sizes, activation, output, slope=0.05, bias=bias, fold_bias=fold_bias)
    rng = np.random.default_rng(sum(map(ord, activation + loss + mode)) + fold_bias)
    params = {name: rng.uniform(-0.9, 0.9, size=shape) for name, shape, _ in param_table(network)}
    if fold_bias:
        params["dense1.Wt"][0, -1] = 0.0  # b⁽¹⁾₁ = 0: the zero row sits on the kink
    elif bias:
        params["dense1.b"][0] = 0.0
    if lr is None:  # a sum over the batch makes the gradient N·out times larger
        lr = 0.02 if LOSSES[loss].reduction == "sum" else 0.2
    experiment = stack_experiment(
        f"{activation}-{loss}-{mode}-{'folded' if fold_bias else 'bias' if bias else 'nobias'}",
        network,
        LOSSES[loss],
        Optimizer(optimizer, lr, options or {}, schedule=schedule, clip=clip),
        Data(X[:, : sizes[0]], Y[:, : sizes[-1]]),
        MODES[mode],
        steps=steps,
        seed=0,
        params=params,
    )
    return run_case(experiment, steps, twin)


def run_case(experiment: Experiment, steps: int, twin: bool) -> Case:
    """``steps`` steps of ``experiment``: through the harness against torch (which must agree), or
    (``twin=False``) the hand side alone, its numbers standing in for torch's."""
    hand = {trace.step: trace for trace in replay_hand(experiment, steps)}
    if not twin:
        captured = {step: (trace, trace) for step, trace in hand.items()}
        report = Report(experiment.scenario, {}, "float64", harness.tolerance_for("float64"), steps, steps)
        report.loss_history = [(float(t.value("loss.L")), float(t.value("loss.L"))) for t in hand.values()]
        return Case(experiment.scenario, experiment, report, captured, hand)
    captured = {}
    report = harness.run(
        experiment, observers=[lambda k, hand, twin, checks: captured.update({k: (hand, twin)})]
    )
    assert report.ok, report.verdict()
    return Case(experiment.scenario, experiment, report, captured, hand)


# --- the matrix: every case in one workbook, one LibreOffice run ---------------------------------------

MATRIX = [
    (activation, loss, mode, fold)
    for activation in ACTIVATIONS
    for loss in ("mse", "mse_sum", "mse_half", "mse_half_sum", "bce")
    for mode in MODES
    for fold in (False, True)
]
MATRIX_SIZES = (3, 3, 2)  # one hidden layer of 3: every formula kind, few cells (150 cases)
EXTRA = [  # (id, builder kwargs): runs against torch, deeper, longer; their sheets go in unchanged
    (
        "bce-sum-relu-minibatch",
        dict(activation="relu", loss="bce_sum", mode="minibatch", fold_bias=False, steps=8),
    ),
    (
        "no-bias-tanh-batch",
        dict(activation="tanh", loss="mse", mode="batch", fold_bias=False, bias=False, steps=8),
    ),
    (
        "leaky-folded-online",
        dict(activation="leaky_relu", loss="mse_half", mode="online", fold_bias=True, steps=8),
    ),
    (
        "xor-2-3-1-sigmoid",
        dict(activation="sigmoid", loss="mse", mode="online", fold_bias=False, sizes=(2, 3, 1)),
    ),
    (  # SGD with momentum: the buffer is state, read from the row above / the step before
        "momentum-sigmoid-minibatch",
        dict(
            activation="sigmoid",
            loss="mse",
            mode="minibatch",
            fold_bias=False,
            steps=8,
            options={"momentum": 0.9, "dampening": 0.1, "weight_decay": 0.01},
        ),
    ),
    (
        "nesterov-maximize-tanh-bce-folded",
        dict(
            activation="tanh",
            loss="bce",
            mode="online",
            fold_bias=True,
            steps=8,
            lr=0.05,
            options={"momentum": 0.5, "nesterov": True, "maximize": True},
        ),
    ),
    (  # Adam: m, v and t in the sheet, bias-corrected, ε after the square root
        "adam-sigmoid-online",
        dict(
            activation="sigmoid",
            loss="mse",
            mode="online",
            fold_bias=False,
            steps=8,
            lr=0.05,
            optimizer="adam",
            sizes=(2, 3, 1),
        ),
    ),
    (
        "adamw-amsgrad-tanh-minibatch",
        dict(
            activation="tanh",
            loss="mse",
            mode="minibatch",
            fold_bias=False,
            steps=8,
            lr=0.02,
            optimizer="adamw",
            options={"amsgrad": True, "weight_decay": 0.05},
        ),
    ),
    (
        "adam-decay-maximize-bce-folded",
        dict(
            activation="relu",
            loss="bce",
            mode="batch",
            fold_bias=True,
            steps=8,
            lr=0.01,
            optimizer="adam",
            options={"weight_decay": 0.01, "maximize": True},
        ),
    ),
    (  # RMSprop with everything on: v, ḡ and b as state, √(v − ḡ²) + ε
        "rmsprop-centered-momentum-tanh-minibatch",
        dict(
            activation="tanh",
            loss="mse",
            mode="minibatch",
            fold_bias=False,
            steps=8,
            lr=0.01,
            optimizer="rmsprop",
            options={"centered": True, "momentum": 0.5, "weight_decay": 0.01, "alpha": 0.9},
        ),
    ),
    (
        "rmsprop-plain-sigmoid-bce-online",
        dict(
            activation="sigmoid",
            loss="bce",
            mode="online",
            fold_bias=True,
            steps=8,
            lr=0.02,
            optimizer="rmsprop",
        ),
    ),
    (  # Adagrad: G starts at G₀, η̃ decays with t
        "adagrad-decay-relu-batch",
        dict(
            activation="relu",
            loss="mse_half",
            mode="batch",
            fold_bias=False,
            steps=8,
            lr=0.1,
            optimizer="adagrad",
            options={"lr_decay": 0.05, "initial_accumulator_value": 0.1, "weight_decay": 0.02},
        ),
    ),
    (  # schedules: the lr in force reads the row above's
        "steplr-momentum-sigmoid-online",
        dict(
            activation="sigmoid",
            loss="mse",
            mode="online",
            fold_bias=False,
            steps=8,
            options={"momentum": 0.9},
            schedule=LRSchedule("step", step_size=3, gamma=0.5),
        ),
    ),
    (
        "exponential-adam-tanh-batch",
        dict(
            activation="tanh",
            loss="mse",
            mode="batch",
            fold_bias=False,
            steps=8,
            lr=0.05,
            optimizer="adam",
            schedule=LRSchedule("exponential", gamma=0.8),
        ),
    ),
    (  # T_max = 3 over 8 steps: through η_min and the restart branch (e − 1 − T ≡ 0 mod 2T)
        "cosine-rmsprop-leaky-minibatch",
        dict(
            activation="leaky_relu",
            loss="mse",
            mode="minibatch",
            fold_bias=True,
            steps=8,
            lr=0.02,
            optimizer="rmsprop",
            schedule=LRSchedule("cosine", t_max=3, eta_min=0.001),
        ),
    ),
    (  # clipping by the 2-norm (max_norm small enough to clip every step), then by ∞ and 1
        "clipnorm2-sgd-sigmoid-batch",
        dict(
            activation="sigmoid", loss="mse", mode="batch", fold_bias=False, steps=8, clip=Clip(max_norm=0.05)
        ),
    ),
    (
        "clipnorminf-adam-tanh-online",
        dict(
            activation="tanh",
            loss="mse",
            mode="online",
            fold_bias=False,
            steps=8,
            lr=0.05,
            optimizer="adam",
            clip=Clip(max_norm=0.02, norm_type=float("inf")),
        ),
    ),
    (
        "clipnorm1-cosine-adagrad-relu-minibatch",
        dict(
            activation="relu",
            loss="mse",
            mode="minibatch",
            fold_bias=True,
            steps=8,
            lr=0.1,
            optimizer="adagrad",
            clip=Clip(max_norm=0.3, norm_type=1.0),
            schedule=LRSchedule("cosine", t_max=4),
        ),
    ),
    (
        "clipvalue-momentum-tanh-bce-batch",
        dict(
            activation="tanh",
            loss="bce",
            mode="batch",
            fold_bias=False,
            steps=8,
            options={"momentum": 0.9, "nesterov": True},
            clip=Clip(value=0.01),
        ),
    ),
]
PER_SHEET = 15  # cases stacked on one sheet: LibreOffice spends ~0.1 s per sheet on load and save


def _case_id(params: tuple) -> str:
    activation, loss, mode, fold = params
    return f"{activation}-{loss}-{mode}-{'folded' if fold else 'bias'}"


def _matrix_kwargs(params: tuple) -> dict:
    keys = ("activation", "loss", "mode", "fold_bias")
    return {**dict(zip(keys, params, strict=True)), "sizes": MATRIX_SIZES, "steps": 2, "twin": False}


_REF = re.compile(r"(?<![A-Za-z0-9_$.])(\$?)([A-Z]{1,3})(\$?)(\d+)(?![A-Za-z0-9_(])")


def _moved(text: str, offset: int, names: re.Pattern[str] | None, suffix: str) -> str:
    """A formula (or range) with every cell reference ``offset`` rows down and every defined name
    given ``suffix``."""
    text = _REF.sub(lambda m: f"{m[1]}{m[2]}{m[3]}{int(m[4]) + offset}", text)
    return names.sub(lambda m: m[0] + suffix, text) if names is not None else text


def stack(title: str, grids: list[Grid], *, lean: bool = True) -> tuple[Grid, list[Grid]]:
    """Several grids stacked on one sheet (each moved down below the one before, its defined names
    suffixed so that they stay unique; ``lean``: without texts, torch's numbers and |Δ| cells);
    returns the sheet and, per input grid, a view holding the sheet's title and the grid's checks
    at their new places."""
    from openpyxl.worksheet.formula import ArrayFormula

    sheet, views, offset = Grid(title), [], 0
    for number, grid in enumerate(grids):
        suffix = f"_k{number}"
        pattern = "|".join(sorted(map(re.escape, grid.defined_names), key=len, reverse=True))
        names = re.compile(rf"(?<![A-Za-z0-9_])(?:{pattern})(?![A-Za-z0-9_])") if pattern else None
        for (row, col), cell in grid.cells.items():
            if lean and (cell.is_text or cell.style in ("torch", "delta")):
                continue  # the matrix needs the computation only (the extra cases keep everything)
            value = cell.value
            if isinstance(value, ArrayFormula):
                value = ArrayFormula(
                    _moved(value.ref, offset, None, ""), _moved(value.text, offset, names, suffix)
                )
            elif isinstance(value, str) and value.startswith("=") and not cell.is_text:
                value = _moved(value, offset, names, suffix)
            sheet.cells[(row + offset, col)] = type(cell)(value, cell.style, cell.number_format, cell.is_text)
        for name, ref in grid.defined_names.items():
            sheet.defined_names[name + suffix] = _moved(ref, offset, None, "")
        for col, width in grid.widths.items():
            sheet.widths[col] = max(width, sheet.widths.get(col, 0))
        view = Grid(title)
        view.checks = {(row + offset, col): check for (row, col), check in grid.checks.items()}
        sheet.checks.update(view.checks)
        views.append(view)
        offset += grid.max_row + 2
    return sheet, views


@dataclass
class Recomputed:
    cases: dict[str, Case]
    views: dict[str, list[Grid]]  # case id -> its sheets' checks, where they were recomputed
    grids: dict[str, list[Grid]]  # case id -> its grids as built (Walkthrough(s), then Training)
    values: dict[str, dict[tuple[int, int], object]]  # sheet title -> recomputed values


@pytest.fixture(scope="session")
def recomputed(tmp_path_factory: pytest.TempPathFactory, libreoffice: str) -> Recomputed:
    """Every case's Walkthrough and Training sheets in one workbook, recomputed in one LibreOffice
    run: the matrix cases stacked :data:`PER_SHEET` to a sheet, the extra cases as they are.
    test_training_sheet.py imports this fixture; :func:`_recompute`'s cache makes the two modules
    share the one run."""
    if not _RECOMPUTED:
        _RECOMPUTED.append(_recompute(tmp_path_factory.mktemp("walkthrough"), libreoffice))
    return _RECOMPUTED[0]


_RECOMPUTED: list[Recomputed] = []


def _recompute(tmp: Path, libreoffice: str) -> Recomputed:
    cases: dict[str, Case] = {}
    grids: dict[str, list[Grid]] = {}
    for number, params in enumerate(MATRIX):
        case_id = _case_id(params)
        case = cases[case_id] = dense_case(**_matrix_kwargs(params))
        # every third case also walks through step 2 (its weights come from step 1's trace)
        steps = [1, 2] if number % 3 == 0 else [1]
        grids[case_id] = walkthrough_grids(case.experiment, case.captured, steps=steps)
        grids[case_id].append(training_grid(case.experiment, case.report, live_steps=100))
    for number, (case_id, kwargs) in enumerate(EXTRA):
        case = cases[case_id] = dense_case(**kwargs)
        # step 3 reads the weights and state after step 2 from step 2's trace
        grids[case_id] = walkthrough_grids(case.experiment, case.captured, steps=[1, 3])
        grids[case_id].append(training_grid(case.experiment, case.report, live_steps=100))
        for grid in grids[case_id]:
            grid.title = f"x{number} {grid.title}"
    sheets: list[Grid] = []
    views: dict[str, list[Grid]] = {case_id: [] for case_id in grids}
    matrix_ids = [_case_id(params) for params in MATRIX]
    for kind in ("walkthrough", "training"):
        for first in range(0, len(matrix_ids), PER_SHEET):
            chunk = matrix_ids[first : first + PER_SHEET]
            parts = [
                (case_id, grid)
                for case_id in chunk
                for grid in grids[case_id]
                if (grid.title == "Training") == (kind == "training")
            ]
            sheet, placed = stack(f"{kind} {first // PER_SHEET:02d}", [grid for _, grid in parts])
            sheets.append(sheet)
            for (case_id, _), view in zip(parts, placed, strict=True):
                views[case_id].append(view)
    for case_id, _ in EXTRA:
        sheets += grids[case_id]
        views[case_id] = grids[case_id]
    source = tmp / "matrix.xlsx"
    write_grids(source, sheets)
    (result,) = recalc([source], tmp, libreoffice)
    return Recomputed(cases, views, grids, read_values(result))


# --- the tests --------------------------------------------------------------------------------------


@pytest.mark.libreoffice
@pytest.mark.parametrize("params", MATRIX, ids=_case_id)
def test_libreoffice_recomputes_every_walkthrough_cell(recomputed: Recomputed, params: tuple) -> None:
    case_id = _case_id(params)
    case = recomputed.cases[case_id]
    walkthroughs = [view for view in recomputed.views[case_id] if view.title.startswith("walkthrough")]
    assert walkthroughs
    for view in walkthroughs:
        assert_checks(recomputed.values[view.title], view, case.hand)


@pytest.mark.libreoffice
@pytest.mark.parametrize("case_id", [case_id for case_id, _ in EXTRA])
def test_libreoffice_recomputes_the_extra_cases(recomputed: Recomputed, case_id: str) -> None:
    case = recomputed.cases[case_id]
    for view in recomputed.views[case_id]:
        assert_checks(recomputed.values[view.title], view, case.hand)


@pytest.mark.libreoffice
def test_the_delta_cells_are_below_the_tolerance(recomputed: Recomputed) -> None:
    """The in-sheet |Δ| = |hand − torch| blocks of the runs against torch, recomputed, are all tiny."""
    worst = 0.0
    counted = 0
    for case_id, _ in EXTRA:
        for grid in recomputed.grids[case_id][:2]:
            values = recomputed.values[grid.title]
            for (row, col), cell in grid.cells.items():
                if cell.style == "delta" and isinstance(cell.value, str) and cell.value.startswith("=ABS("):
                    worst = max(worst, float(values[(row, col)]))
                    counted += 1
    assert counted > 300
    assert worst <= 1e-12


@pytest.mark.parametrize("params", [MATRIX[0], MATRIX[-1]], ids=_case_id)
def test_every_hand_term_has_checked_cells(params: tuple) -> None:
    """Each term of the hand trace (step 1) is computed by formulas, element by element."""
    case = dense_case(**dict(zip(("activation", "loss", "mode", "fold_bias"), params, strict=True)), steps=1)
    (grid,) = walkthrough_grids(case.experiment, case.captured)
    checked: dict[str, set[int]] = {}
    for step, term, index in grid.checks.values():
        assert step == 1
        checked.setdefault(term, set()).add(index)
    for term in case.hand[1]:
        assert checked.get(term.name) == set(range(term.value.size)), term.name


def test_z_is_one_array_formula_and_the_names_are_not_addresses() -> None:
    case = dense_case("sigmoid", "mse", "batch", False, steps=1)
    (grid,) = walkthrough_grids(case.experiment, case.captured)
    arrays = [cell.value for cell in grid.cells.values() if type(cell.value).__name__ == "ArrayFormula"]
    texts = [array.text for array in arrays]
    assert "=MMULT(x_in,TRANSPOSE(W_1))+TRANSPOSE(b_1)" in texts
    assert {"eta", "x_in", "y_in", "W_1", "b_1", "W_2", "b_2", "W_3", "b_3"} <= set(grid.defined_names)
    for name in grid.defined_names:
        assert not re.fullmatch(r"[A-Za-z]{1,3}\d+|[RrCc]|[Rr]\d*[Cc]\d*", name), name


def test_folded_walkthrough_shows_the_augmented_input() -> None:
    case = dense_case("tanh", "mse", "batch", True, steps=1)
    (grid,) = walkthrough_grids(case.experiment, case.captured)
    texts = [cell.value.text for cell in grid.cells.values() if type(cell.value).__name__ == "ArrayFormula"]
    assert any(text.startswith("=MMULT(") and "TRANSPOSE(Wt_1)" in text for text in texts)
    assert "Wt_1" in grid.defined_names and "W_1" not in grid.defined_names
    ones = [cell for cell in grid.cells.values() if cell.value == 1.0 and cell.style == "note"]
    assert len(ones) == 3 * 5  # a column of ones beside x, a⁽¹⁾ and a⁽²⁾ (5 samples)


@pytest.mark.parametrize(
    ("kind", "z", "expected"),
    [
        ("sigmoid", "C5", "IF(C5>=0,1/(1+EXP(-C5)),EXP(C5)/(1+EXP(C5)))"),
        ("relu", "C5", "MAX(C5,0)"),
        ("leaky_relu", "C5", "IF(C5>0,C5,C5*0.05)"),
        ("tanh", "C5", "TANH(C5)"),
        ("identity", "C5", "C5"),
    ],
)
def test_activation_formulas(kind: str, z: str, expected: str) -> None:
    assert fx.activation(kind, z, 0.05) == expected


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("sigmoid", "G5*(D5*(1-D5))"),
        ("tanh", "G5*(1-D5*D5)"),
        ("relu", "G5*(IF(C5>0,1,0))"),  # relu′(0) = 0
        ("leaky_relu", "G5*(IF(C5>0,1,0.05))"),  # leaky′(0) = s
        ("identity", "G5"),
    ],
)
def test_derivative_formulas_take_torchs_side_at_the_kink(kind: str, expected: str) -> None:
    assert fx.times_derivative(kind, "G5", "C5", "D5", 0.05) == expected


def test_formulas_longer_than_excel_allows_are_refused() -> None:
    with pytest.raises(SpecError, match="8,192"):
        fx.formula(fx.dot([(f"A{i}", f"B{i}") for i in range(1, 1000)]))


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (dict(dtype="float32"), "float32"),
    ],
)
def test_what_has_no_live_formulas_is_named(change: dict, reason: str) -> None:
    case = dense_case("sigmoid", "mse", "online", False, steps=1, twin=False)
    change = dict(change)
    dtype = change.pop("dtype", None)
    case.experiment.spec = dataclasses.replace(case.experiment.spec, **change)
    if dtype is not None:
        case.experiment.dtype = dtype
    assert reason in (unsupported_reason(case.experiment) or "")
    with pytest.raises(SpecError):
        walkthrough_grids(case.experiment, case.captured)


def test_a_step_without_the_step_before_it_is_refused() -> None:
    """The weights and state before step k are step k − 1's, read from its trace: without it, a
    one-line SpecError naming the missing step (the workbook never re-runs a side)."""
    case = dense_case("tanh", "mse", "online", False, steps=3, twin=False, optimizer="adam")
    captured = {k: v for k, v in case.captured.items() if k != 2}
    with pytest.raises(SpecError) as info:
        walkthrough_grids(case.experiment, captured, steps=[3])
    assert info.value.field == "walkthrough"
    assert "step 2" in info.value.message
    (grid,) = walkthrough_grids(case.experiment, case.captured, steps=[3])
    left, top, right, bottom = range_boundaries(grid.defined_names["W_1"].replace("$", ""))
    cells = [grid.cells[(row, col)].value for row in range(top, bottom + 1) for col in range(left, right + 1)]
    assert cells == list(np.ravel(case.hand[2].value("dense1.W_next")))  # W⁽¹⁾ after step 2


@pytest.mark.parametrize(
    ("options", "previous", "state", "expected"),
    [
        ({}, None, {}, "C5-eta*D5"),
        ({"weight_decay": 0.1, "maximize": True}, None, {}, "C5-eta*((-D5)+weight_decay*C5)"),
        ({"momentum": 0.9}, None, {"momentum_buffer": "D5"}, "C5-eta*E5"),  # t = 1: b = g, no dampening
        (
            {"momentum": 0.9, "dampening": 0.2},
            "E4",
            {"momentum_buffer": "E4*momentum+(1-dampening)*D5"},
            "C5-eta*E5",
        ),
        (
            {"momentum": 0.9, "nesterov": True},
            "E4",
            {"momentum_buffer": "E4*momentum+(1-dampening)*D5"},
            "C5-eta*(D5+momentum*E5)",
        ),
    ],
)
def test_sgd_update_formulas(options: dict, previous: str | None, state: dict, expected: str) -> None:
    """θ, ∂L/∂θ in C5, D5; the new buffer lives in E5, the one before in E4."""
    rule = fx.update_rule(Optimizer("sgd", 0.1, options))
    names = {hyper.key: hyper.name for hyper in rule.hyper(Optimizer("sgd", 0.1, options))}
    keys = [key for key, _ in rule.state_keys(Optimizer("sgd", 0.1, options))]
    built = rule.build("C5", "D5", names, {key: previous for key in keys}, "7", {key: "E5" for key in keys})
    assert built.state == state and built.next == expected
