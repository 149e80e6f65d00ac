"""The recurrent walkthrough (live formulas, one column band per time step), recomputed by
LibreOffice: every formula cell that computes a hand term equals the hand value (normwise rel
≤ 1e-12) for the RNN, the GRU and the LSTM, and at step 2 of a stateful optimizer under a
schedule (its state before the step read from step 1's trace); editing η and a weight in the
sheet recomputes to a fresh hand run with the new values (the sheet is live, not pasted numbers).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import openpyxl
import pytest
from openpyxl.utils import quote_sheetname
from openpyxl.utils.cell import column_index_from_string, coordinate_from_string
from openpyxl.workbook.defined_name import DefinedName

from handgrad import harness
from handgrad.contract.recurrent import RecurrentModel, SequenceData, param_table
from handgrad.contract.spec import Schedule, SpecError
from handgrad.contract.trace import StepTrace
from handgrad.contract.training import Clip, Loss, LRSchedule, Optimizer
from handgrad.scenarios.recurrent import recurrent_experiment
from handgrad.workbook import recurrent_walkthrough as rw
from handgrad.workbook.grid import Grid

REL = 1e-12
ROOT = Path(__file__).resolve().parents[1]


def run_case(
    cell: str,
    layers: int,
    head: str,
    *,
    hidden: int = 3,
    steps_t: int = 5,
    batch_first: bool = False,
    loss: Loss | None = None,
    clip: Clip | None = None,
    lr: float = 0.4,
    optimizer: Optimizer | None = None,
    params: dict[str, np.ndarray] | None = None,
    steps: int = 2,
) -> tuple[harness.Experiment, dict[int, tuple[StepTrace, StepTrace]]]:
    """A ragged batch of 3 sequences with a random initial state; both sides run ``steps`` steps."""
    rng = np.random.default_rng(5)
    lengths = np.array([3, steps_t, 1])
    x = rng.normal(0.0, 1.0, (3, steps_t, 2))
    y = rng.uniform(0.1, 0.9, (3, 1) if head == "many-to-one" else (3, steps_t, 1))
    model = RecurrentModel(cell, 2, hidden, layers, 1, head, "sigmoid", batch_first)
    h0 = rng.normal(0.0, 0.7, (layers, 3, hidden))
    c0 = rng.normal(0.0, 0.7, (layers, 3, hidden)) if cell == "lstm" else None
    experiment = recurrent_experiment(
        "walkthrough",
        model,
        loss or Loss("mse"),
        optimizer or Optimizer("sgd", lr, clip=clip),
        SequenceData(x, y, lengths),
        Schedule("batch"),
        steps=steps,
        seed=3,
        params=params,
        h0=h0,
        c0=c0,
    )
    captured: dict[int, tuple[StepTrace, StepTrace]] = {}
    report = harness.run(experiment, observers=[lambda s, h, t, c: captured.__setitem__(s, (h, t))])
    assert report.ok, report.verdict()
    return experiment, captured


CASES = {
    "rnn": dict(cell="rnn_tanh", layers=2, head="many-to-one", clip=Clip(max_norm=0.05)),
    "gru": dict(
        cell="gru", layers=1, head="many-to-many", batch_first=True, loss=Loss("bce"), clip=Clip(value=0.01)
    ),
    "lstm": dict(
        cell="lstm", layers=2, head="many-to-one", hidden=4, steps_t=6, loss=Loss("mse", "sum", half=True)
    ),
    "adam": dict(
        cell="gru",
        layers=1,
        head="many-to-many",
        optimizer=Optimizer(
            "adam", 0.05, schedule=LRSchedule("step", step_size=1, gamma=0.5), clip=Clip(max_norm=0.1)
        ),
    ),
}


def write_xlsx(grids: list[Grid], path: Path) -> None:
    """A plain openpyxl writer for the test (the project's writer streams; this one need not)."""
    book = openpyxl.Workbook()
    book.remove(book.active)
    for grid in grids:
        sheet = book.create_sheet(grid.title)
        for (row, col), cell in grid.cells.items():
            sheet.cell(row, col).value = cell.value
            if cell.is_text:
                sheet.cell(row, col).data_type = "s"
        for name, ref in grid.defined_names.items():
            sheet.defined_names[name] = DefinedName(name, attr_text=f"{quote_sheetname(grid.title)}!{ref}")
    book.save(path)


def _recalc_script():  # noqa: ANN202 (the module scripts/recalc.py)
    spec = importlib.util.spec_from_file_location("handgrad_scripts_recalc", ROOT / "scripts" / "recalc.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


def recalculate(path: Path, out_dir: Path) -> Path:
    """scripts/recalc.py's headless LibreOffice run (a private profile set to always recalculate)."""
    outputs, _ = _recalc_script().recalculate([path], out_dir)
    result = outputs[path.resolve()]
    assert result.exists(), "LibreOffice exits 0 even when a conversion fails: no output was written"
    return result


def worst_differences(grid: Grid, sheet: object, traces: dict[int, StepTrace]) -> dict[str, float]:
    """Per term, max over its checked cells of |LibreOffice − hand| / max|hand term|."""
    worst: dict[str, float] = {}
    for (row, col), (step, term, index) in grid.checks.items():
        hand = np.asarray(traces[step].value(term), dtype=float).reshape(-1)
        value = sheet.cell(row, col).value  # type: ignore[attr-defined]
        assert isinstance(value, (int, float)), f"{grid.title}!{row},{col} ({term}) recomputed to {value!r}"
        scale = float(np.max(np.abs(hand))) or 1.0
        worst[term] = max(worst.get(term, 0.0), abs(value - hand[index]) / scale)
    return worst


def input_cell(grid: Grid, name: str) -> tuple[int, int]:
    """The top-left (row, col) of a defined name's range."""
    letters, row = coordinate_from_string(grid.defined_names[name].split(":")[0].replace("$", ""))
    return row, column_index_from_string(letters)


@pytest.mark.libreoffice
def test_walkthrough_recomputes_to_the_hand_values_in_libreoffice(tmp_path: Path) -> None:
    grids: list[tuple[Grid, dict[int, StepTrace]]] = []
    for label, case in CASES.items():
        experiment, captured = run_case(**case)
        for grid in rw.recurrent_walkthrough_grids(experiment, captured, steps=[1, 2]):
            hand = captured[1][0] if grid.title == "Walkthrough" else None
            if hand is not None:  # every hand term of the step has formula cells
                checked = {term for _, term, _ in grid.checks.values()}
                assert checked == set(hand.names()), set(hand.names()) - checked
            grid.title = f"{label} {grid.title}"
            grids.append((grid, {k: v[0] for k, v in captured.items()}))

    # liveness: η and one weight edited in the sheet, against a fresh hand run with those values
    experiment, captured = run_case(**CASES["lstm"])
    live = rw.recurrent_walkthrough_grids(experiment, captured, steps=[1])[0]
    live.title = "lstm edited"
    eta_cell, weight_cell = input_cell(live, "eta"), input_cell(live, "W_hh_1")
    live.cells[eta_cell].value = 0.05
    live.cells[weight_cell].value = 0.75
    params = {name: np.array(value) for name, value in experiment.initial_params.items()}
    params["lstm1.W_hh"][0, 0] = 0.75
    _, fresh = run_case(**CASES["lstm"], params=params, lr=0.05, steps=1)
    grids.append((live, {1: fresh[1][0]}))

    path = tmp_path / "recurrent.xlsx"
    write_xlsx([grid for grid, _ in grids], path)
    recomputed = openpyxl.load_workbook(recalculate(path, tmp_path / "out"), data_only=True)
    for grid, traces in grids:
        worst = worst_differences(grid, recomputed[grid.title], traces)
        bad = {term: rel for term, rel in worst.items() if rel > REL}
        assert not bad, f"{grid.title}: {bad}"
        assert len(worst) > 50


def test_the_weights_before_a_step_come_from_the_step_before() -> None:
    experiment, captured = run_case(**CASES["adam"])
    grid = rw.recurrent_walkthrough_grids(experiment, captured, steps=[2])[0]
    row, col = input_cell(grid, "W_hh_1")
    assert grid.cells[(row, col)].value == captured[1][0].value("gru1.W_hh_next")[0, 0]
    row, col = input_cell(grid, "eta")  # the lr in force at step 2 under the schedule: 0.05·0.5
    assert grid.cells[(row, col)].value == pytest.approx(0.025, rel=1e-15)
    with pytest.raises(SpecError, match="step 1 .* was not captured"):
        rw.recurrent_walkthrough_grids(experiment, {2: captured[2]}, steps=[2])


def test_every_check_points_at_a_formula_of_its_term() -> None:
    experiment, captured = run_case(**CASES["gru"])
    grid = rw.recurrent_walkthrough_grids(experiment, captured)[0]
    hand = captured[1][0]
    for (row, col), (step, term, index) in grid.checks.items():
        assert step == 1
        assert str(grid.cells[(row, col)].value).startswith("=")
        assert 0 <= index < hand.value(term).size
    # per-step terms hold the active rows only: gru1.h[5] has the one sequence of length 5
    assert sum(1 for _, term, _ in grid.checks.values() if term == "gru1.h[5]") == 3  # 1 row × hidden 3


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (dict(hidden=5), "hidden 5"),
        (dict(steps_t=9), "length 9"),
        (dict(clip=Clip(max_norm=1.0, norm_type=1.0)), "2-norm"),
    ],
)
def test_larger_runs_are_not_live(change: dict, reason: str) -> None:
    experiment, captured = run_case(**{**CASES["rnn"], **change}, steps=1)
    assert reason in rw.recurrent_unsupported_reason(experiment)
    with pytest.raises(SpecError, match=reason):
        rw.recurrent_walkthrough_grids(experiment, captured)


def test_gradient_through_time_table() -> None:
    experiment, captured = run_case(**CASES["lstm"], steps=1)
    grid = rw.gradient_through_time_grid(experiment, captured)
    hand = captured[1][0]
    headers = {cell.value: col for (row, col), cell in grid.cells.items() if row == 4}
    col = headers["step 1 lstm1 (hand)"]
    for t in range(1, 7):
        expected = float(np.linalg.norm(hand.value(f"lstm1.dL_dh[{t}]")))
        assert grid.cells[(4 + t, col)].value == pytest.approx(expected, rel=1e-15)
    chart = rw.gradient_through_time_chart(grid)
    assert len(chart.series) == 2  # one line per layer (hand)


def test_parameter_names_cover_the_model() -> None:
    model = RecurrentModel("gru", 2, 3, 2)
    names = [name for name, _, _ in param_table(model)]
    assert names[:4] == ["gru1.W_ih", "gru1.W_hh", "gru1.b_ih", "gru1.b_hh"] and names[-2:] == [
        "dense1.W",
        "dense1.b",
    ]
