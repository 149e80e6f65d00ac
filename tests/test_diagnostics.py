"""Per-layer diagnostics (gradient norm, saturated/dead fraction, update ratio), hand vs torch, float64."""

from __future__ import annotations

import numpy as np
import pytest
from openpyxl import Workbook
from openpyxl.utils import get_column_letter

from handgrad import harness
from handgrad.cli import main, scenario_parser
from handgrad.contract.spec import Data, Network, Schedule
from handgrad.contract.training import Loss, Optimizer
from handgrad.hand import diagnostics
from handgrad.hand.network import init_params
from handgrad.scenarios import SCENARIOS
from handgrad.scenarios.stack import stack_experiment
from handgrad.workbook.diagnostics_sheet import (
    TITLE,
    DiagnosticsHistory,
    diagnostic_charts,
    diagnostics_grid,
    layout,
)


def deep_run(*options: str) -> tuple[harness.Report, dict[str, list[float]]]:
    """Run ``handgrad compare deep OPTIONS``; also return each diagnostic term's hand values per step."""
    experiment = SCENARIOS["deep"].build(scenario_parser("deep").parse_args(list(options)))
    history: dict[str, list[float]] = {}

    def observe(step, hand, twin, checks):
        for term in hand:
            if term.phase == "diagnostic":
                history.setdefault(term.name, []).append(float(term.value))

    return harness.run(experiment, observers=[observe]), history


# (options, a term that must move off zero somewhere in the run: the case is not vacuous)
CASES = {
    "sigmoid-depth8": (["--depth", "8", "--width", "16", "--activation", "sigmoid"], "dense9.grad_norm"),
    "sigmoid-saturating": (
        ["--depth", "4", "--activation", "sigmoid", "--init-gain", "6"],
        "dense1.saturated",
    ),
    "tanh-saturating": (["--depth", "4", "--activation", "tanh", "--init-gain", "3"], "dense2.saturated"),
    "relu-torch-init-dead": (
        ["--depth", "6", "--width", "16", "--activation", "relu", "--init", "torch"],
        "dense3.dead",
    ),
    "relu-he-lr1": (["--depth", "4", "--activation", "relu", "--lr", "1.0"], "dense2.update_ratio"),
    "leaky-relu": (["--depth", "4", "--activation", "leaky_relu", "--slope", "0.1"], "dense1.grad_norm"),
    "sigmoid-adam-minibatch": (
        ["--depth", "3", "--optimizer", "adam", "--lr", "0.01", "--mode", "minibatch", "--batch-size", "5"],
        "dense1.update_ratio",
    ),
    "tanh-folded-bias-clipped": (
        ["--depth", "3", "--activation", "tanh", "--fold-bias", "--clip-norm", "0.05"],
        "dense1.grad_norm",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_every_diagnostic_term_agrees_with_torch_for_100_steps(case):
    options, moving = CASES[case]
    report, history = deep_run(*options, "--steps", "100")
    assert report.ok, report.verdict()
    assert report.steps_run == 100
    names = [name for name, stats in report.terms.items() if stats.phase == "diagnostic"]
    assert moving in names
    assert max(history[moving]) > 0, f"{moving} stayed 0: the case tests nothing"
    assert all(report.terms[name].torch_source == "torch-ops" for name in names)


def test_term_names_and_order_for_a_small_stack():
    report, _ = deep_run("--depth", "2", "--width", "3", "--activation", "relu", "--steps", "1")
    names = [name for name, stats in report.terms.items() if stats.phase == "diagnostic"]
    assert names == [
        "dense1.grad_norm",
        "dense1.update_ratio",
        "dense1.dead",
        "dense2.grad_norm",
        "dense2.update_ratio",
        "dense2.dead",
        "dense3.grad_norm",
        "dense3.update_ratio",
        "dense3.saturated",  # the sigmoid output layer
    ]


def test_units_exactly_on_the_relu_kink_are_dead():
    """Two of five units have z = 0 exactly on every row (zero weights and bias): relu′(0) = 0 on both
    sides, so both count them dead; a unit with z < 0 on some rows and > 0 on others is not."""
    network = Network.mlp([3, 5, 1], "relu", "sigmoid")
    params = init_params(network, seed=2)
    params["dense1.W"][[1, 3]] = 0.0
    params["dense1.b"][[1, 3]] = 0.0
    rng = np.random.default_rng(4)
    data = Data(rng.uniform(-1, 1, size=(6, 3)), rng.uniform(0.2, 0.8, size=(6, 1)))
    experiment = stack_experiment(
        "deep", network, Loss("mse"), Optimizer("sgd", 0.1), data, Schedule("batch"),
        steps=20, seed=0, params=params, diagnostics=True,
    )  # fmt: skip
    dead: list[float] = []
    report = harness.run(
        experiment, observers=[lambda s, h, t, c: dead.append(float(h.value("dense1.dead")))]
    )
    assert report.ok, report.verdict()
    assert min(dead) >= 0.4  # the two kink units stay dead: their weights get no gradient


@pytest.mark.parametrize(
    ("kind", "f_prime", "expected"),
    [
        ("sigmoid", [0.025, 0.0249999, 0.25, 0.0], 0.5),  # f′ = ρ·max f′ exactly is not saturated
        ("tanh", [0.1, 0.0999999, 1.0, 0.5], 0.25),
    ],
)
def test_saturation_threshold_is_strict_and_relative(kind, f_prime, expected):
    assert diagnostics.saturated_fraction(kind, np.array([f_prime])) == expected


def test_dead_means_zero_slope_on_every_sample():
    f_prime = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # unit 0 dead; 1 and 2 alive on one row
    assert diagnostics.dead_fraction(f_prime) == pytest.approx(1 / 3, rel=0, abs=0)


def test_planted_absolute_threshold_is_caught_at_a_saturated_term(monkeypatch):
    """The hand side using an absolute 0.01 for sigmoid (instead of ρ·¼ = 0.025) is named at the
    first saturation term that differs, in phase diagnostic, with the term before it agreeing."""
    monkeypatch.setattr(diagnostics, "SATURATION_THRESHOLD", {"sigmoid": 0.01, "tanh": 0.1})
    report, _ = deep_run("--depth", "4", "--activation", "sigmoid", "--init-gain", "6", "--steps", "5")
    first = report.first
    assert first is not None
    assert first.term.endswith(".saturated") and first.phase == "diagnostic", first.message()
    assert first.hand < first.torch
    assert first.previous_max_abs is not None  # the term before agreed: the fault is this term's own


def test_cli_runs_deep_and_refuses_a_bad_depth(capsys):
    assert main(["compare", "deep", "--depth", "2", "--width", "4", "--steps", "3", "--quiet"]) == 0
    assert main(["compare", "deep", "--depth", "0"]) == 2
    assert "depth" in capsys.readouterr().err


def test_diagnostics_sheet_and_charts_hold_the_hand_and_torch_values():
    experiment = SCENARIOS["deep"].build(
        scenario_parser("deep").parse_args(
            ["--depth", "2", "--width", "3", "--activation", "tanh", "--steps", "5"]
        )
    )
    history = DiagnosticsHistory(experiment.steps, max_points=2)  # stride 3: steps 1, 4 and the last, 5
    traces = {}
    report = harness.run(experiment, observers=[history, lambda s, h, t, c: traces.update({s: (h, t)})])
    grid = diagnostics_grid(experiment, report, history)
    where = layout(history)
    assert list(history.steps) == [1, 4, 5]
    for i, step in enumerate(history.steps):
        row = where.first_row + i
        assert grid.cells[(row, 1)].value == step
        for name in history.names:
            hand, torch = traces[step]
            assert grid.cells[(row, where.hand[name])].value == float(hand.value(name))
            assert grid.cells[(row, where.torch[name])].value == float(torch.value(name))
    charts = diagnostic_charts(Workbook().create_sheet(TITLE), history)
    assert [chart.y_axis.scaling.logBase for chart in charts] == [10, None, 10]
    assert [len(chart.series) for chart in charts] == [3, 3, 3]  # one series per layer
    first = where.hand[history.names[0]]
    column = get_column_letter(first)
    assert charts[0].series[0].yVal.numRef.f == f"'{TITLE}'!${column}$7:${column}$9"
