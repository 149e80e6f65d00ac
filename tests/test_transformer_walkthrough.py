"""The transformer Attention walkthrough's live formulas, recomputed by LibreOffice, equal the hand side.

A small transformer run (3 steps, 2 heads) is laid out at steps 1 and 2, written through the
workbook writer, recomputed by headless LibreOffice (scripts/recalc.py), and every checked cell
(h₁, the attention weights, a, ∂L/∂h₁, ∂L/∂x: sequence 1 of the batch) compared with the hand
side's traced element to 1e-12. The causal mask: above the diagonal the scores read −∞ and P and
∂L/∂S are 0. A copy with one x input and one W_out input edited must recompute to a fresh hand
LayerNorm + MultiheadAttention (hand/normalization.py, hand/attention.py) of the edited inputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_makemore_walkthrough import assert_cached_values_recompute, block_top, run_capturing
from test_walkthrough import TOLERANCE, assert_checks, read_values, recalc, write_grids

from handgrad.contract.spec import SpecError
from handgrad.contract.trace import StepTrace
from handgrad.contract.training import Optimizer
from handgrad.contract.transformer import Transformer
from handgrad.hand import attention
from handgrad.hand import normalization as nm
from handgrad.scenarios.transformer import transformer_experiment
from handgrad.workbook.grid import Grid
from handgrad.workbook.transformer_walkthrough import (
    MAX_HEADS,
    transformer_unsupported_reason,
    transformer_walkthrough_grids,
)

MODEL = Transformer(context=4, n_embd=6, heads=2, mlp=8)
L, E, H = MODEL.context, MODEL.n_embd, MODEL.heads
TERMS = {"block1.h1", "block1.attn.weights", "block1.a", "block1.dL_dh1", "emb.dL_dx"}


@pytest.fixture(scope="module")
def run() -> tuple[object, dict[int, tuple[StepTrace, StepTrace]]]:
    return run_capturing(
        transformer_experiment(MODEL, Optimizer("adamw", 0.05), steps=3, seed=5, batch_size=3)
    )


@pytest.mark.libreoffice
def test_libreoffice_recomputes_every_attention_cell(run, tmp_path: Path, libreoffice: str) -> None:
    experiment, captured = run
    grids = transformer_walkthrough_grids(experiment, captured, steps=[1, 2])
    assert [g.title for g in grids] == ["Attention walkthrough", "Attention walkthrough 2"]
    edited = copy_with_edits(grids[1])
    path = tmp_path / "transformer.xlsx"
    write_grids(path, [*grids, edited])
    (result,) = recalc([path], tmp_path, libreoffice)
    values = read_values(result)
    hand = {k: captured[k][0] for k in captured}
    for grid in grids:
        assert_checks(values[grid.title], grid, hand)
        assert_cached_values_recompute(values[grid.title], grid)
        assert {term for _, term, _ in grid.checks.values()} == TERMS
        assert_masked(values[grid.title], grid)
    assert_edited(values[edited.title], edited, captured)


def assert_masked(values, grid: Grid) -> None:
    """Above the diagonal (s > t): S reads −∞, P and ∂L/∂S are exactly 0, in every head."""
    for k in range(H):
        for title, masked in (("S = Q·Kᵀ", "−∞"), ("P = softmax", 0), ("∂L/∂S", 0)):
            tops = [
                r + 2
                for (r, c), cell in sorted(grid.cells.items())
                if c == 1 and str(cell.value).startswith(title)
            ]
            top = tops[k]
            for t in range(L):
                for s in range(L):
                    got = values.get((top + t, 2 + s))
                    if s > t:
                        assert got == masked, (title, k, t, s, got)
                    else:
                        assert isinstance(got, float), (title, k, t, s, got)


X_EDIT, WOUT_EDIT = 0.9, -0.4


def copy_with_edits(grid: Grid) -> Grid:
    """Step 2's sheet with x[t=2, e=3] and W_out[1, 4] replaced (the formulas untouched)."""
    edited = Grid("Attention edited", dict(grid.cells), dict(grid.widths), dict(grid.defined_names))
    edited.checks = dict(grid.checks)
    edited.set(block_top(grid, "x (sequence 1") + 2, 2 + 3, X_EDIT, "input")
    edited.set(block_top(grid, "W_out") + 1, 2 + 4, WOUT_EDIT, "input")
    return edited


def assert_edited(values, grid: Grid, captured) -> None:
    """The edited sheet's checked cells against a fresh hand LN₁ + attention of the edited inputs."""
    hand, before = captured[2][0], captured[1][0]

    def param(name: str) -> np.ndarray:
        return np.array(before.value(f"block1.{name}_next"), dtype=float)

    x = np.array(hand.value("emb.x"), dtype=float)[:1]
    x[0, 2, 3] = X_EDIT
    w_out = param("attn.out_proj.weight")
    w_out[1, 4] = WOUT_EDIT
    h1, ln_cache = nm.layernorm_forward(
        x, {"weight": param("ln1.weight"), "bias": param("ln1.bias")}, normalized_shape=E, eps=MODEL.eps
    )
    mha = {"in_proj_weight": param("attn.in_proj_weight"), "out_proj.weight": w_out}
    a, mha_cache = attention.mha_forward(h1, mha, num_heads=H, causal=True, batch_first=True)
    dh1, _ = attention.mha_backward(np.asarray(hand.value("block1.dL_da"), dtype=float)[:1], mha_cache)
    dx, _ = nm.layernorm_backward(dh1, ln_cache)
    dx = dx + np.asarray(hand.value("block1.dL_dx1"), dtype=float)[:1]
    fresh = {
        "block1.h1": h1,
        "block1.attn.weights": mha_cache.weights,
        "block1.a": a,
        "block1.dL_dh1": dh1,
        "emb.dL_dx": dx,
    }
    for (row, col), (_, term, index) in grid.checks.items():
        expected = float(np.ravel(fresh[term])[index])
        got = values[(row, col)]
        assert abs(got - expected) <= TOLERANCE * max(abs(expected), 1.0), (term, index, got, expected)
    a_top = block_top(grid, "a = MHA")
    moved = values[(a_top + 1, 2 + 1)]
    assert abs(moved - float(np.asarray(hand.value("block1.a"))[0, 1, 1])) > 1e-3


def test_the_slice_is_sequence_one(run) -> None:
    experiment, captured = run
    (grid,) = transformer_walkthrough_grids(experiment, captured, steps=[2])
    h1 = sorted(index for _, term, index in grid.checks.values() if term == "block1.h1")
    assert h1 == list(range(L * E))  # sequence 1 of (N, L, E): the first L·E elements
    weights = sorted(index for _, term, index in grid.checks.values() if term == "block1.attn.weights")
    assert weights == list(range(L * L))


def test_too_many_heads_or_float32_say_why(run) -> None:
    many = Transformer(context=4, n_embd=2 * (MAX_HEADS + 1), heads=MAX_HEADS + 1, mlp=8)
    experiment = transformer_experiment(many, Optimizer("adamw", 0.05), steps=1, seed=5, with_twin=False)
    assert "heads" in transformer_unsupported_reason(experiment)
    single = transformer_experiment(
        MODEL, Optimizer("adamw", 0.05), steps=1, seed=5, dtype="float32", with_twin=False
    )
    assert "float64" in transformer_unsupported_reason(single)
    with pytest.raises(SpecError, match="float32"):
        transformer_walkthrough_grids(single, {})
