"""The Parameters sheet: initial and final weights of both sides, and where torch keeps each one.

A table first maps each hand parameter (``dense1.W``, symbol W⁽¹⁾, shape) onto torch's
``state_dict`` keys (``0.weight``); a folded W̃ = [W | b] maps onto two keys. Then, per parameter:
the initial values (both sides start from the same numbers), the final values of the hand side and
of torch, and their |Δ|, as plain numbers side by side.
"""

from __future__ import annotations

import numpy as np

from handgrad.contract.runs import StackRun
from handgrad.harness import Experiment, Report
from handgrad.workbook.configuration_table import add_configuration_table
from handgrad.workbook.grid import Grid
from handgrad.workbook.styles import FULL, SCIENTIFIC

TITLE = "Parameters"


def torch_keys(experiment: Experiment) -> dict[str, list[str]]:
    """Hand parameter name → torch ``state_dict`` keys, as the twin maps them (every family's twin
    has ``state_dict_keys``)."""
    return dict(experiment.twin.state_dict_keys())


def _symbols(experiment: Experiment) -> dict[str, str]:
    spec = experiment.spec
    network = spec.network if isinstance(spec, StackRun) else None
    if network is None:
        return {}
    from handgrad.contract.stack import param_table

    return {name: symbol for name, _, symbol in param_table(network)}


def _mapping_text(name: str, keys: list[str], symbol: str) -> str:
    if name.endswith(".Wt") and len(keys) == 2:
        return f"{symbol}[:, :-1] → {keys[0]};  {symbol}[:, -1] → {keys[1]}"
    return ", ".join(keys) if keys else "(no torch key)"


def parameters_grid(experiment: Experiment, report: Report) -> Grid:
    grid = Grid(TITLE)
    grid.widths[1] = 16
    grid.set(1, 1, "Parameters: initial and final, hand and torch", "title")
    grid.text(
        2,
        1,
        "Both sides start from the same initial numbers. Final = after the last step run "
        f"({report.steps_run}). |Δ| = |hand − torch|. Weights are (out, in) as torch.nn.Linear.",
        "note",
    )
    keys = torch_keys(experiment)
    symbols = _symbols(experiment)
    hand_final = report.final_params.get("hand", {})
    torch_final = report.final_params.get("torch", {})
    names = list(experiment.initial_params) or list(hand_final)

    row = 4
    for col, title in enumerate(("hand name", "symbol", "shape", "torch state_dict key"), start=1):
        grid.set(row, col, title, "header")
    grid.widths.update({2: 10, 3: 10, 4: 34})
    for name in names:
        row += 1
        value = experiment.initial_params.get(name, hand_final.get(name))
        symbol = symbols.get(name, name)
        grid.text(row, 1, name)
        grid.text(row, 2, symbol)
        grid.text(row, 3, "×".join(map(str, np.shape(value))) or "scalar")
        grid.text(row, 4, _mapping_text(name, keys.get(name, []), symbol))
    row += 2

    for name in names:
        symbol = symbols.get(name, name)
        grid.text(row, 1, f"{name}  ({symbol})", "subtitle")
        grid.text(row, 4, "torch: " + _mapping_text(name, keys.get(name, []), symbol), "note")
        row += 1
        initial = _matrix(experiment.initial_params.get(name))
        blocks = [
            ("initial (both)", initial, "input", FULL),
            ("final, hand", _matrix(hand_final.get(name)), "update", FULL),
            ("final, torch", _matrix(torch_final.get(name)), "torch", FULL),
        ]
        hand_m, torch_m = blocks[1][1], blocks[2][1]
        if hand_m is not None and torch_m is not None and hand_m.shape == torch_m.shape:
            with np.errstate(invalid="ignore", over="ignore"):
                blocks.append(("|Δ| final", np.abs(hand_m - torch_m), "delta", SCIENTIFIC))
        col = 1
        height = 0
        for title, matrix, style, number_format in blocks:
            if matrix is None:
                continue
            grid.set(row, col, title, "header")
            for j in range(1, matrix.shape[1]):
                grid.set(row, col + j, None, "header")
            grid.block(row + 1, col, matrix, style, number_format)
            for j in range(matrix.shape[1]):
                grid.widths[col + j] = max(grid.widths.get(col + j, 0), 19)
            height = max(height, matrix.shape[0])
            col += matrix.shape[1] + 1
        row += height + 3
    add_configuration_table(grid, row, report)
    return grid


def _matrix(value: object) -> np.ndarray | None:
    if value is None:
        return None
    array = np.asarray(value, dtype=np.float64)
    if array.ndim == 0:
        return array.reshape(1, 1)
    if array.ndim == 1:
        return array.reshape(-1, 1)
    return array.reshape(array.shape[0], -1)
