r"""The makemore walkthrough: BatchNorm1d in training mode, forward and backward, as live formulas
for a slice of the step: every one of the N rows of the batch, units 1..U of the H hidden units.

Inputs (plain cells, the hand side's traced values): hprebn[:, :U] (the layer's input), γ and β
before the step, ∂L/∂hpreact[:, :U] (the gradient arriving from tanh: the layers after are on the
Trace), the running statistics before the step, ε and the momentum f. The blocks:

    μ_j    = AVERAGE(hprebn[:, j])                                  (not traced: inside torch's kernel)
    σ²_j   = DEVSQ(hprebn[:, j]) / N                                 (biased; not traced)
    x̂_nj   = (hprebn_nj − μ_j) / √(σ²_j + ε)                        (bnraw; not traced)
    hpreact_nj = γ_j x̂_nj + β_j                                     checked against bn.hpreact
    μ̂′_j   = (1 − f) μ̂_j + f μ_j,  σ̂²′_j = (1 − f) σ̂²_j + f N/(N−1) σ²_j   (running statistics)
    ∂L/∂β_j = Σₙ ∂L/∂hpreact_nj,  ∂L/∂γ_j = Σₙ ∂L/∂hpreact_nj x̂_nj
    ∂L/∂hprebn_nj = γ_j / (N √(σ²_j + ε)) · (N ∂L/∂hpreact_nj − ∂L/∂β_j − x̂_nj ∂L/∂γ_j)

The last line is the compact three-term form (manual/normalization.md): its two sums are the
∂L/∂β and ∂L/∂γ cells above it. Each checked cell is element (n, j) of the full (N, H) term.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from handgrad.contract.makemore import Makemore
from handgrad.contract.runs import MakemoreRun
from handgrad.contract.trace import StepTrace
from handgrad.harness import Experiment
from handgrad.workbook.blocks import step_grids
from handgrad.workbook.grid import Grid
from handgrad.workbook.slice_blocks import (
    before,
    checked,
    float64_reason,
    helper,
    labels,
    scalar_input,
    section,
    start_sheet,
)

SLICE_UNITS = 4  # U: the hidden units laid out (all N rows of the batch each)


def makemore_unsupported_reason(experiment: Experiment) -> str | None:
    """``None`` when the makemore walkthrough can be written for this run, else why not."""
    spec = experiment.spec
    if not isinstance(spec, MakemoreRun):
        return "the makemore walkthrough needs a makemore run"
    return float64_reason(experiment)


def sheet_name(step: int) -> str:
    return "BatchNorm walkthrough" if step == 1 else f"BatchNorm walkthrough {step}"


def makemore_walkthrough_grids(
    experiment: Experiment,
    captured: Mapping[int, tuple[StepTrace, StepTrace]],
    steps: Iterable[int] | None = None,
) -> list[Grid]:
    """One Grid per walkthrough step; ``captured[k]`` is (hand trace, torch trace) of step k."""
    return step_grids(experiment, captured, steps, makemore_unsupported_reason, makemore_walkthrough_grid)


def makemore_walkthrough_grid(
    experiment: Experiment, step: int, captured: Mapping[int, tuple[StepTrace, StepTrace]]
) -> Grid:
    """BatchNorm1d of units 1..U over the whole batch at ``step``, forward and backward."""
    model: Makemore = experiment.spec.model
    n, h = model.batch_size, model.hidden
    u = min(SLICE_UNITS, h)
    grid, sheet = start_sheet(
        sheet_name(step),
        step,
        max(u, 2),
        captured,
        [
            f"BatchNorm walkthrough of step {step}: BatchNorm1d (training mode) as live formulas",
            f"Slice: all N = {n} rows of the batch, hidden units 1–{u} of {h}. Yellow cells are inputs "
            "(the hand side's values): edit one and the blocks below recompute.",
            "Embedding, W1, tanh, W2, cross-entropy, the other units and the update are on the Trace; "
            "∂L/∂hpreact arrives from tanh as plain numbers.",
        ],
    )
    hand = captured[step][0]
    drawn = np.asarray(experiment.spec.batches[step - 1])
    rows = [f"sample {i + 1} · data row {int(r) + 1}" for i, r in enumerate(drawn)]
    units = labels("unit", u)
    grid_index = np.arange(n)[:, None] * h + np.arange(u)[None, :]  # (n, j) of an (N, H) term
    unit_index = np.arange(u)[None, :]

    section(sheet, "Inputs (plain cells: edit them)")
    eps = scalar_input(sheet, "ε (eps, name eps_bn)", model.eps, "eps_bn")
    f = scalar_input(sheet, "f (momentum, name momentum_bn)", model.momentum, "momentum_bn")
    sheet.top += 1
    x = sheet.inputs(
        "hprebn = embcat W1ᵀ (N × U, the BatchNorm's input)",
        np.asarray(hand.value("hidden.hprebn"), dtype=float)[:, :u],
        units,
        rows,
    )
    initial = experiment.initial_params
    gamma = sheet.inputs(
        "γ before the step",
        before(experiment, step, captured, "bn.gamma_next", initial["bn.gamma"])[None, :u],
        units,
        ["γ"],
    )
    beta = sheet.inputs(
        "β before the step",
        before(experiment, step, captured, "bn.beta_next", initial["bn.beta"])[None, :u],
        units,
        ["β"],
    )
    mean_before = sheet.inputs(
        "μ̂ (running_mean) before the step",
        before(experiment, step, captured, "bn.running_mean", np.zeros(h))[None, :u],
        units,
        ["μ̂"],
    )
    var_before = sheet.inputs(
        "σ̂² (running_var) before the step",
        before(experiment, step, captured, "bn.running_var", np.ones(h))[None, :u],
        units,
        ["σ̂²"],
    )
    dy = sheet.inputs(
        "∂L/∂hpreact (N × U, from tanh: ∂L/∂h ⊙ (1 − h²), on the Trace)",
        np.asarray(hand.value("bn.dL_dhpreact"), dtype=float)[:, :u],
        units,
        rows,
    )

    def x_col(j: int) -> str:
        return f"{x.cell(0, j)}:{x.cell(n - 1, j)}"

    def dy_col(j: int) -> str:
        return f"{dy.cell(0, j)}:{dy.cell(n - 1, j)}"

    # the helper blocks' cached values: the same computation from the same input cells
    x_values = np.asarray(hand.value("hidden.hprebn"), dtype=float)[:, :u]
    mu_values = x_values.mean(axis=0, keepdims=True)  # 1,U
    var_values = np.square(x_values - mu_values).mean(axis=0, keepdims=True)  # 1,U
    xhat_values = (x_values - mu_values) / np.sqrt(var_values + model.eps)  # N,U

    section(sheet, "Forward")
    mu = helper(
        sheet,
        "μ = (1/N) Σₙ hprebn",
        "forward",
        lambda i, j: f"AVERAGE({x_col(j)})",
        (1, u),
        units,
        ["μ"],
        mu_values,
    )
    var = helper(
        sheet,
        "σ² = (1/N) Σₙ (hprebn − μ)²  (biased: the normalization's)",
        "forward",
        lambda i, j: f"DEVSQ({x_col(j)})/{n}",
        (1, u),
        units,
        ["σ²"],
        var_values,
    )
    xhat = helper(
        sheet,
        "x̂ = (hprebn − μ)/√(σ² + ε)  (bnraw)",
        "forward",
        lambda i, j: f"({x.cell(i, j)}-{mu.cell(0, j)})/SQRT({var.cell(0, j)}+{eps})",
        (n, u),
        units,
        rows,
        xhat_values,
    )
    checked(
        sheet,
        "bn.hpreact",
        "γ·x̂ + β",
        "forward",
        lambda i, j: f"{gamma.cell(0, j)}*{xhat.cell(i, j)}+{beta.cell(0, j)}",
        grid_index,
        units,
        rows,
    )
    checked(
        sheet,
        "bn.running_mean",
        "(1 − f)·μ̂ + f·μ",
        "state",
        lambda i, j: f"(1-{f})*{mean_before.cell(0, j)}+{f}*{mu.cell(0, j)}",
        unit_index,
        units,
        ["μ̂′"],
    )
    checked(
        sheet,
        "bn.running_var",
        f"(1 − f)·σ̂² + f·N/(N−1)·σ²  (unbiased: N/(N−1) = {n}/{n - 1})",
        "state",
        lambda i, j: f"(1-{f})*{var_before.cell(0, j)}+{f}*{n}/{n - 1}*{var.cell(0, j)}",
        unit_index,
        units,
        ["σ̂²′"],
    )
    sheet.top += 1

    section(sheet, "Backward")
    dbeta = checked(
        sheet,
        "bn.dL_dbeta",
        "Σₙ ∂L/∂hpreact",
        "backward",
        lambda i, j: f"SUM({dy_col(j)})",
        unit_index,
        units,
        ["∂L/∂β"],
    )
    dgamma = checked(
        sheet,
        "bn.dL_dgamma",
        "Σₙ ∂L/∂hpreact ⊙ x̂",
        "backward",
        lambda i, j: f"SUMPRODUCT({dy_col(j)},{xhat.cell(0, j)}:{xhat.cell(n - 1, j)})",
        unit_index,
        units,
        ["∂L/∂γ"],
    )
    checked(
        sheet,
        "hidden.dL_dhprebn",
        "γ/(N·√(σ² + ε)) · (N·∂L/∂hpreact − ∂L/∂β − x̂·∂L/∂γ)  (the three-term form)",
        "backward",
        lambda i, j: (
            f"{gamma.cell(0, j)}/({n}*SQRT({var.cell(0, j)}+{eps}))"
            f"*({n}*{dy.cell(i, j)}-{dbeta.cell(0, j)}-{xhat.cell(i, j)}*{dgamma.cell(0, j)})"
        ),
        grid_index,
        units,
        rows,
    )
    return grid
