"""The conv walkthrough's live formulas, recomputed by LibreOffice, equal the hand values.

Two small first layers are laid out (a 1×6×6 input with two 3×3 filters, padding 1, relu and a
2×2 max-pool; and a grouped, strided conv with tanh and an overlapping max-pool), written with
the workbook writer, recomputed in headless LibreOffice by ``scripts/recalc.py``'s
``recalculate`` (a private profile with ``OOXMLRecalcMode`` = 0: always recalculate), and every
formula cell named in ``grid.checks`` is compared with the hand side's element (rel ≤ 1e-12).
A copy with an edited pixel, kernel tap and η must recompute to a fresh hand calculation with
those inputs: pasted numbers would fail it. Under the stateful optimizers (momentum, Adam, AdamW,
RMSprop, Adagrad), with clipping and a schedule, the sheets of steps 1 and 2 (the state before
step 2 read from step 1's trace) recompute to the hand side's state and updated weights.
"""

from __future__ import annotations

import copy
import importlib.util
import sys
from pathlib import Path

import numpy as np
import openpyxl
import pytest

from handgrad import harness
from handgrad.contract.conv_layers import Conv2d, Flatten, MaxPool2d
from handgrad.contract.spec import Activation, Data, Dense, Network, Schedule, SpecError
from handgrad.contract.trace import StepTrace
from handgrad.contract.training import Clip, Loss, LRSchedule, Optimizer
from handgrad.hand import activations, conv
from handgrad.harness import Experiment
from handgrad.scenarios.conv import bars
from handgrad.scenarios.stack import stack_experiment
from handgrad.workbook.conv_walkthrough import conv_unsupported_reason, conv_walkthrough_grids
from handgrad.workbook.grid import Grid
from handgrad.workbook.package import save
from handgrad.workbook.writer import Book, write_grid

REL = 1e-12
ROOT = Path(__file__).resolve().parents[1]


def _recalc_script():
    """scripts/recalc.py (not a package): its ``recalculate`` runs LibreOffice with a private
    profile set to always recalculate, and checks that every conversion happened."""
    spec = importlib.util.spec_from_file_location("handgrad_scripts_recalc", ROOT / "scripts" / "recalc.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


Captured = dict[int, tuple[StepTrace, StepTrace]]


def small_run(name: str, optimizer: Optimizer | None = None) -> tuple[Experiment, Captured]:
    """Run a small conv net through the harness (SGD with η = 0.3 unless ``optimizer``), keeping
    every step's two traces."""
    if name == "6x6-two-filters":
        layers = (Conv2d(1, 2, 3, padding=1), Activation("relu"), MaxPool2d(2), Flatten(), Dense(18, 2))
        network, data, steps = Network(layers, (1, 6, 6)), bars(4, 6, seed=2), 2
    else:  # grouped, strided, tanh, overlapping pool windows, values {0, 1} (ties)
        layers = (
            Conv2d(2, 4, 3, stride=2, padding=1, groups=2),
            Activation("tanh"),
            MaxPool2d(2, stride=1),
            Flatten(),
            Dense(36, 3),
        )
        rng = np.random.default_rng(5)
        x = rng.integers(0, 2, size=(3, 2, 7, 7)).astype(float)
        network, data, steps = Network(layers, (2, 7, 7)), Data(x, np.array([[0.0], [2.0], [1.0]])), 1
    experiment = stack_experiment(
        name,
        network,
        Loss("cross_entropy"),
        optimizer or Optimizer("sgd", 0.3),
        data,
        Schedule("minibatch", 2 if steps == 2 else 3),
        steps=steps,
        seed=4,
    )
    captured: Captured = {}
    report = harness.run(
        experiment, observers=[lambda k, hand, twin, checks: captured.update({k: (hand, twin)})]
    )
    assert report.ok, report.verdict()
    return experiment, captured


def write(grids: list[Grid], path: Path) -> None:
    book = Book(grids[0].title)
    write_grid(book, grids[0], book.first)
    for grid in grids[1:]:
        write_grid(book, grid)
    save(book.workbook, path, book.sheet_data)
    book.close()


def compare(sheet, grid: Grid, expected: dict[tuple[int, str], np.ndarray]) -> dict[str, float]:
    """Every checked formula cell against ``expected[(step, term)]``; returns max rel per term.
    rel = |LibreOffice − hand| / max(|hand|, 1e-3·max|term|): element-wise, except that an element
    near zero out of cancellation is measured against its term's scale."""
    worst: dict[str, float] = {}
    for (row, col), (step, term, index) in grid.checks.items():
        value = sheet.cell(row, col).value
        assert isinstance(value, (int, float)), f"{grid.title}!{row},{col} ({term}[{index}]): {value!r}"
        hand = expected[(step, term)].reshape(-1)
        floor = 1e-3 * float(np.abs(hand).max())
        rel = abs(value - hand[index]) / max(abs(hand[index]), floor, 1e-300)
        worst[term] = max(worst.get(term, 0.0), rel)
    return worst


TERMS = {"conv1.z", "conv1.a", "pool1.out", "conv1.dL_da", "conv1.dL_dz", "conv1.dL_dW", "conv1.dL_db"}
TERMS |= {"input.dL_dx", "conv1.W_next", "conv1.b_next"}


def _edited(grid: Grid, x_size: int) -> tuple[Grid, dict[str, tuple[tuple[int, int], float]]]:
    """A copy with η, x[0,0,0,0] and W[0,0,0,0] changed. Input cells in row-major order are η,
    then x (one input channel: its maps read in order), then W."""
    edited = copy.deepcopy(grid)
    inputs = sorted(key for key, cell in grid.cells.items() if cell.style == "input")
    changes = {"eta": (inputs[0], 0.7), "x": (inputs[1], 0.75), "W": (inputs[1 + x_size], -0.9)}
    for key, value in changes.values():
        edited.cells[key].value = value
    return edited, changes


def _fresh_hand(experiment: Experiment, captured: Captured, x: np.ndarray, params: dict, lr: float):
    """The first layer's step by the hand functions, with the sheet's upstream ∂L/∂out⁽pool1⁾."""
    layer = experiment.spec.network.layers[0]
    z, c_conv = conv.conv2d_forward(
        x, params, stride=layer.stride, padding=layer.padding, dilation=layer.dilation, groups=layer.groups
    )
    a, c_act = activations.forward("relu", z)
    out, c_pool = conv.maxpool2d_forward(a, kernel_size=2)
    da, _ = conv.maxpool2d_backward(captured[1][0].value("pool1.dL_dout"), c_pool)
    dz = activations.backward("relu", da, c_act)
    dx, grads = conv.conv2d_backward(dz, c_conv)
    values = {"conv1.z": z, "conv1.a": a, "pool1.out": out, "conv1.dL_da": da, "conv1.dL_dz": dz}
    values |= {"conv1.dL_dW": grads["W"], "conv1.dL_db": grads["b"], "input.dL_dx": dx}
    values |= {"conv1.W_next": params["W"] - lr * grads["W"], "conv1.b_next": params["b"] - lr * grads["b"]}
    return {(1, term): value for term, value in values.items()}


@pytest.mark.libreoffice
def test_libreoffice_recomputes_the_conv_walkthrough(libreoffice: str, tmp_path: Path) -> None:
    first, first_captured = small_run("6x6-two-filters")
    second, second_captured = small_run("grouped-strided")
    grids = conv_walkthrough_grids(first, first_captured, steps=[1, 2])
    (grouped,) = conv_walkthrough_grids(second, second_captured)
    grouped.title = "Conv grouped"
    grids.append(grouped)
    expected: dict[str, dict[tuple[int, str], np.ndarray]] = {}
    for grid, captured in (
        (grids[0], first_captured),
        (grids[1], first_captured),
        (grids[2], second_captured),
    ):
        assert {term for _, term, _ in grid.checks.values()} == TERMS, grid.title
        for (row, col), (_, term, _) in grid.checks.items():
            assert str(grid.cells[(row, col)].value).startswith("="), (grid.title, term)
        counts = {term: 0 for term in TERMS}
        for _, term, _ in grid.checks.values():
            counts[term] += 1
        hand = captured[min(k for k, _, _ in grid.checks.values())][0]
        assert counts == {term: hand.value(term).size for term in TERMS}  # every element, once
        expected[grid.title] = {(k, t): captured[k][0].value(t) for k, t, _ in grid.checks.values()}

    x = first.spec.data.x[first.spec.batches[0]].copy()
    edited, changes = _edited(grids[0], x.size)
    edited.title = "Conv edited"
    params = {name: value.copy() for name, value in first.initial_params.items() if name.startswith("conv1")}
    x[0, 0, 0, 0] = changes["x"][1]
    params["conv1.W"][0, 0, 0, 0] = changes["W"][1]
    fresh = _fresh_hand(first, first_captured, x, {"W": params["conv1.W"], "b": params["conv1.b"]}, 0.7)
    expected[edited.title] = fresh

    source = tmp_path / "conv.xlsx"
    write([*grids, edited], source)
    results, _ = _recalc_script().recalculate([source], tmp_path / "recalculated", soffice=libreoffice)
    result = results[source.resolve()]
    book = openpyxl.load_workbook(result, data_only=True)
    for grid in [*grids, edited]:
        worst = compare(book[grid.title], grid, expected[grid.title])
        assert max(worst.values()) <= REL, (grid.title, worst)


def test_edited_cells_are_the_inputs_the_test_means() -> None:
    """The liveness test edits η, x[0,0,0,0] and W[0,0,0,0]: check it finds those cells."""
    experiment, captured = small_run("6x6-two-filters")
    grid = conv_walkthrough_grids(experiment, captured, steps=[1])[0]
    x = experiment.spec.data.x[experiment.spec.batches[0]]
    _, changes = _edited(grid, x.size)
    assert grid.cells[changes["eta"][0]].value == 0.3
    assert grid.cells[changes["x"][0]].value == x[0, 0, 0, 0]
    assert grid.cells[changes["W"][0]].value == experiment.initial_params["conv1.W"][0, 0, 0, 0]


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"--channels": "16,8"}, "too large for a live walkthrough"),  # 16×16×16 maps of one image
        ({"--dilation": "2"}, "dilation"),
    ],
)
def test_larger_layers_get_the_trace_sheet(options, reason) -> None:
    from handgrad.cli import scenario_parser
    from handgrad.scenarios import SCENARIOS

    argv = ["--steps", "1", *(item for pair in options.items() for item in pair)]
    experiment = SCENARIOS["alexnet-mini"].build(scenario_parser("alexnet-mini").parse_args(argv))
    assert reason in (conv_unsupported_reason(experiment) or "")
    with pytest.raises(SpecError) as info:
        conv_walkthrough_grids(experiment, {})
    assert info.value.field == "workbook"


OPTIMIZERS = {
    "momentum-nesterov-clip-norm": Optimizer(
        "sgd", 0.3, {"momentum": 0.9, "nesterov": True}, clip=Clip(max_norm=0.05)
    ),
    "adam": Optimizer("adam", 0.05),
    "adamw-amsgrad": Optimizer("adamw", 0.05, {"weight_decay": 0.1, "amsgrad": True}),
    "rmsprop-centered-clip-value": Optimizer(
        "rmsprop",
        0.01,
        {"momentum": 0.5, "centered": True},
        schedule=LRSchedule("step", step_size=1, gamma=0.5),
        clip=Clip(value=0.01),
    ),
    "adagrad-clip-inf": Optimizer(
        "adagrad", 0.1, {"lr_decay": 0.1}, clip=Clip(max_norm=0.02, norm_type=np.inf)
    ),
}


def _state_terms(optimizer: Optimizer) -> set[str]:
    """The update's terms the sheet computes for the conv layer: state, clipped gradients, W′, b′."""
    keys = {
        "sgd": ["momentum_buffer"],
        "adam": ["exp_avg", "exp_avg_sq"],
        "adamw": ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"],
        "rmsprop": ["square_avg", "grad_avg", "momentum_buffer"],
        "adagrad": ["sum"],
    }[optimizer.kind]
    terms = {f"{optimizer.kind}.{key}.conv1.{p}" for key in keys for p in "Wb"}
    if optimizer.clip is not None:
        terms |= {"clip.grad.conv1.W", "clip.grad.conv1.b"}
    return terms | {"conv1.W_next", "conv1.b_next"}


@pytest.mark.libreoffice
def test_libreoffice_recomputes_the_update_of_every_stateful_optimizer(
    libreoffice: str, tmp_path: Path
) -> None:
    grids: list[Grid] = []
    expected: dict[str, dict[tuple[int, str], np.ndarray]] = {}
    for case, optimizer in OPTIMIZERS.items():
        experiment, captured = small_run("6x6-two-filters", optimizer)
        for grid in conv_walkthrough_grids(experiment, captured, steps=[1, 2]):
            step = min(k for k, _, _ in grid.checks.values())
            update = {term for _, term, _ in grid.checks.values()} - TERMS
            assert update == _state_terms(optimizer) - {"conv1.W_next", "conv1.b_next"}, (case, step)
            if step == 2:  # the state before step 2: step 1's numbers, as input cells
                state = next(term for term in sorted(update) if term.startswith(f"{optimizer.kind}."))
                before = captured[1][0].value(state)
                inputs = [cell.value for cell in grid.cells.values() if cell.style == "input"]
                assert all(any(v == float(b) for v in inputs) for b in np.ravel(before)), case
            grid.title = f"{case[:20]} {step}"
            expected[grid.title] = {(k, t): captured[k][0].value(t) for k, t, _ in grid.checks.values()}
            grids.append(grid)
    source = tmp_path / "conv-optimizers.xlsx"
    write(grids, source)
    results, _ = _recalc_script().recalculate([source], tmp_path / "recalculated", soffice=libreoffice)
    book = openpyxl.load_workbook(results[source.resolve()], data_only=True)
    for grid in grids:
        worst = compare(book[grid.title], grid, expected[grid.title])
        assert max(worst.values()) <= REL, (grid.title, worst)


def test_a_step_without_the_step_before_it_is_refused() -> None:
    """The weights before step k come from step k − 1's trace: without it, a one-line SpecError."""
    experiment, captured = small_run("6x6-two-filters")
    with pytest.raises(SpecError) as info:
        conv_walkthrough_grids(experiment, {2: captured[2]}, steps=[2])
    assert info.value.field == "walkthrough"
    assert "step 1" in info.value.message
