"""The sliced conv walkthrough: alexnet-mini at its defaults (8 images of 1×16×16, conv1 with 4
channels) is too large for a live sheet of the whole batch, so the Conv walkthrough shows image 1
of the batch, every channel, checked at the first image's flat indices of each batch term.

LibreOffice recomputes the sheet (every checked cell equals the hand side to 1e-12), an edited
copy (η, a pixel of x, a tap of W, a cell of the upstream ∂L/∂a from the Trace) recomputes as a
fresh hand computation of the same slice says, and a planted error in one formula is caught.
The expected numbers come from the hand trace and from hand/ (never from the workbook).
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import openpyxl
import pytest
from test_conv_walkthrough import REL, _recalc_script, compare, write

from handgrad import harness
from handgrad.cli import scenario_parser
from handgrad.contract.conv_layers import Conv2d, Flatten, MaxPool2d
from handgrad.contract.spec import Activation, Dense, Network, Schedule
from handgrad.contract.trace import StepTrace
from handgrad.contract.training import Loss, Optimizer
from handgrad.hand import activations, conv
from handgrad.harness import Experiment
from handgrad.scenarios import SCENARIOS
from handgrad.scenarios.conv import bars
from handgrad.scenarios.stack import stack_experiment
from handgrad.workbook.blocks import LEFT
from handgrad.workbook.conv_walkthrough import conv_unsupported_reason, conv_walkthrough_grids, slice_note
from handgrad.workbook.grid import Grid
from handgrad.workbook.map_blocks import Maps

Captured = dict[int, tuple[StepTrace, StepTrace]]
SLICE_TERMS = {"conv1.z", "conv1.a", "conv1.dL_dz", "input.dL_dx", "conv1.W_next", "conv1.b_next"}


def alexnet_step() -> tuple[Experiment, Captured]:
    experiment = SCENARIOS["alexnet-mini"].build(scenario_parser("alexnet-mini").parse_args(["--steps", "1"]))
    captured: Captured = {}
    report = harness.run(
        experiment, observers=[lambda k, hand, twin, checks: captured.update({k: (hand, twin)})]
    )
    assert report.ok, report.verdict()
    return experiment, captured


def pooled_step() -> tuple[Experiment, Captured]:
    """conv → relu → max-pool on 8 bar images of 16×16 (8·4·16·16 cells: sliced), Adam: the
    sliced sheet with the pool's windows, winners and routed gradient, and an optimizer's state."""
    layers = (Conv2d(1, 4, 3, padding=1), Activation("relu"), MaxPool2d(2), Flatten(), Dense(256, 2))
    experiment = stack_experiment(
        "pooled",
        Network(layers, (1, 16, 16)),
        Loss("cross_entropy"),
        Optimizer("adam", 0.05),
        bars(8, 16, seed=3),
        Schedule("minibatch", 8),
        steps=2,
        seed=6,
    )
    captured: Captured = {}
    report = harness.run(
        experiment, observers=[lambda k, hand, twin, checks: captured.update({k: (hand, twin)})]
    )
    assert report.ok, report.verdict()
    return experiment, captured


def _map_under(grid: Grid, title: str, shape: tuple[int, int, int, int]) -> Maps:
    """The maps of the block whose column-A title starts with ``title`` (the maps start one row
    below the title: :meth:`ConvSheet.map_computed`)."""
    rows = [row for (row, col), cell in grid.cells.items() if col == 1 and str(cell.value).startswith(title)]
    assert len(rows) == 1, (title, rows)
    return Maps(rows[0] + 1, LEFT, shape)


def test_alexnet_mini_at_defaults_is_sliced_to_one_image() -> None:
    experiment, captured = alexnet_step()
    assert conv_unsupported_reason(experiment) is None
    note = slice_note(experiment)
    assert note is not None and "image n = 1" in note
    (grid,) = conv_walkthrough_grids(experiment, captured)
    assert grid.cells[(2, 1)].value.startswith("Slice: image n = 1")  # named under the title
    hand = captured[1][0]
    counts: dict[str, list[int]] = {}
    for _, term, index in grid.checks.values():
        counts.setdefault(term, []).append(index)
    assert set(counts) == SLICE_TERMS
    for term, indices in counts.items():
        value = hand.value(term)
        per_image = (
            value.size // value.shape[0]
            if term in ("conv1.z", "conv1.a", "conv1.dL_dz", "input.dL_dx")
            else value.size
        )
        assert sorted(indices) == list(range(per_image)), term  # image 1's cells, each once
    for row, col in grid.checks:
        assert str(grid.cells[(row, col)].value).startswith("="), (row, col)


def _edited(grid: Grid, experiment: Experiment, captured: Captured) -> tuple[Grid, dict[str, float]]:
    """A copy with η, x[0,0,5,5], W[0,0,1,1] and ∂L/∂a[0,o,i,j] (a pixel where z > 0) changed."""
    edited = copy.deepcopy(grid)
    hand = captured[1][0]
    z = hand.value("conv1.z")
    o, i, j = (int(v) for v in np.argwhere(z[0] > 0)[0])
    inputs = sorted(key for key, cell in grid.cells.items() if cell.style == "input")
    x_maps = _map_under(grid, "x: image 1", (1, 1, 16, 16))
    w_maps = _map_under(grid, "W⁽conv1⁾: the kernel", (4, 1, 3, 3))
    da_maps = _map_under(grid, "∂L/∂a⁽conv1⁾", (1, 4, 16, 16))
    spots = {
        "eta": inputs[0],
        "x": x_maps.origin(0, 0),
        "W": w_maps.origin(0, 0),
        "da": da_maps.origin(0, o),
    }
    spots["x"] = (spots["x"][0] + 5, spots["x"][1] + 5)
    spots["W"] = (spots["W"][0] + 1, spots["W"][1] + 1)
    spots["da"] = (spots["da"][0] + i, spots["da"][1] + j)
    x = np.asarray(experiment.spec.data.x[experiment.spec.batches[0]], dtype=float)
    before = {
        "eta": 0.5,
        "x": x[0, 0, 5, 5],
        "W": experiment.initial_params["conv1.W"][0, 0, 1, 1],
        "da": hand.value("conv1.dL_da")[0, o, i, j],
    }
    for key, spot in spots.items():
        assert grid.cells[spot].style == "input" and grid.cells[spot].value == before[key], key
    changes = {"eta": 0.7, "x": 0.75, "W": -0.9, "da": 0.25}
    for key, value in changes.items():
        edited.cells[spots[key]].value = value
    changes |= {"o": o, "i": i, "j": j}
    return edited, changes


def _fresh_hand(experiment: Experiment, captured: Captured, changes: dict[str, float]) -> dict:
    """Image 1's slice by the hand functions, with the edits: the batch's ∂L/∂W, ∂L/∂b stay the
    Trace's (inputs on the sheet), so W′ = W − η·∂L/∂W with the edited W and η."""
    hand = captured[1][0]
    layer = experiment.spec.network.layers[0]
    x = np.asarray(experiment.spec.data.x[experiment.spec.batches[0]][:1], dtype=float).copy()
    x[0, 0, 5, 5] = changes["x"]
    params = {"W": experiment.initial_params["conv1.W"].copy(), "b": experiment.initial_params["conv1.b"]}
    params["W"][0, 0, 1, 1] = changes["W"]
    z, c_conv = conv.conv2d_forward(
        x, params, stride=layer.stride, padding=layer.padding, dilation=layer.dilation, groups=layer.groups
    )
    a, c_act = activations.forward("relu", z)
    da = hand.value("conv1.dL_da")[:1].copy()
    da[0, int(changes["o"]), int(changes["i"]), int(changes["j"])] = changes["da"]
    dz = activations.backward("relu", da, c_act)
    dx, _ = conv.conv2d_backward(dz, c_conv)
    eta = changes["eta"]
    values = {"conv1.z": z, "conv1.a": a, "conv1.dL_dz": dz, "input.dL_dx": dx}
    values["conv1.W_next"] = params["W"] - eta * hand.value("conv1.dL_dW")
    values["conv1.b_next"] = params["b"] - eta * hand.value("conv1.dL_db")
    return {(1, term): value for term, value in values.items()}


@pytest.mark.libreoffice
def test_libreoffice_recomputes_the_sliced_conv_walkthrough(libreoffice: str, tmp_path: Path) -> None:
    experiment, captured = alexnet_step()
    (grid,) = conv_walkthrough_grids(experiment, captured)
    hand = captured[1][0]
    expected = {grid.title: {(1, term): hand.value(term) for _, term, _ in grid.checks.values()}}

    edited, changes = _edited(grid, experiment, captured)
    edited.title = "Conv edited"
    expected[edited.title] = _fresh_hand(experiment, captured, changes)
    fresh = expected[edited.title]
    for term in ("conv1.z", "conv1.dL_dz", "input.dL_dx", "conv1.W_next"):  # the edits reach each block
        assert not np.allclose(fresh[(1, term)], hand.value(term)[: len(fresh[(1, term)])]), term

    planted = copy.deepcopy(grid)
    planted.title = "Conv planted"
    spot = next(key for key, (_, term, index) in grid.checks.items() if term == "conv1.z" and index == 17)
    planted.cells[spot].value = str(grid.cells[spot].value) + "+1E-9"
    expected[planted.title] = expected[grid.title]

    pooled, pooled_captured = pooled_step()
    (pool_grid,) = conv_walkthrough_grids(pooled, pooled_captured, steps=[2])
    pool_grid.title = "Conv pooled"
    assert str(pool_grid.cells[(2, 1)].value).startswith("Slice: image n = 1")
    terms = {term for _, term, _ in pool_grid.checks.values()}
    assert {"pool1.out", "conv1.dL_da", "adam.exp_avg.conv1.W"} <= terms, terms
    expected[pool_grid.title] = {
        (k, t): pooled_captured[k][0].value(t) for k, t, _ in pool_grid.checks.values()
    }

    source = tmp_path / "slice.xlsx"
    write([grid, edited, planted, pool_grid], source)
    results, _ = _recalc_script().recalculate([source], tmp_path / "recalculated", soffice=libreoffice)
    book = openpyxl.load_workbook(results[source.resolve()], data_only=True)
    for checked in (grid, edited, pool_grid):
        worst = compare(book[checked.title], checked, expected[checked.title])
        assert max(worst.values()) <= REL, (checked.title, worst)
    worst = compare(book[planted.title], planted, expected[planted.title])
    assert worst["conv1.z"] > REL, worst  # the planted error is seen at its cell
    sheet = book[planted.title]
    z = hand.value("conv1.z").reshape(-1)
    assert abs(sheet.cell(*spot).value - z[17] - 1e-9) < 1e-12
