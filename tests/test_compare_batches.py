"""The batched comparison of a step's large terms gives each term the doubles it gets alone.

compare_traces measures the terms above BATCHED_TERM_LIMIT elements in batches (harness/batches.py
LargeTerms): runs of terms of one size are reduced as the rows of one 2-d view, a term of a
batch's size or more is a batch of its own between the others, and subnormals are found by
counts. Each check must equal, field by field, what compare_values gives for the term alone at
the same scales.
"""

from __future__ import annotations

import numpy as np
import pytest

from handgrad.contract.tolerance import TOLERANCES, norm
from handgrad.contract.trace import StepTrace
from handgrad.harness import compare_traces, compare_values, segments
from handgrad.harness.batches import LARGE_BATCH_ELEMENTS

F64 = TOLERANCES["float64"]
SUBNORMAL = 5e-324


def _shapes(case: str) -> list[tuple[int, ...]]:
    """Large-term shapes of one step: one run of one size, a few runs, many runs of one term, a
    term of a batch's size between the others."""
    big = (LARGE_BATCH_ELEMENTS // 64 + 1, 64)
    return {
        "one run": [(16, 64)] * 12,
        "few runs": [(16, 64), (64, 16), (8, 20), (8, 20), (8, 20), (100,)],
        "many runs": [(70,), (80,), (90,), (100,), (110,), (120,), (70,), (80,)],
        "big between": [(12, 20), (12, 20), big, (300,), (12, 20), big, (65,)],
    }[case]


def _values(shape: tuple[int, ...], rng: np.random.Generator, kind: int) -> tuple[np.ndarray, np.ndarray]:
    torch = rng.normal(size=shape) * 10.0 ** rng.integers(-3, 3)
    if kind == 1:  # ReLU-like zeros
        torch = np.where(torch > 0, torch, 0.0)
    hand = torch * (1 + rng.uniform(-1e-13, 1e-13, shape))
    if kind == 2:  # a subnormal among zeros, on each side at another place
        torch = np.where(torch > 0, torch, 0.0)
        hand = np.where(torch > 0, hand, 0.0)
        torch.reshape(-1)[0], hand.reshape(-1)[1] = SUBNORMAL, -3 * SUBNORMAL
    if kind == 3:  # elements off
        hand = hand + (np.arange(hand.size).reshape(shape) % 5 == 0) * 1e-6
    if kind == 4:  # a term-wide factor
        hand = torch * (1 + 1.5e-10)
    if kind == 5:
        hand, torch = np.zeros(shape), np.zeros(shape)
    return hand, torch


@pytest.mark.parametrize("case", ["one run", "few runs", "many runs", "big between"])
def test_each_batched_term_is_measured_as_compare_values_measures_it(case: str) -> None:
    rng = np.random.default_rng(len(case))
    hand, torch = StepTrace(1), StepTrace(1)
    pairs = []
    for position, shape in enumerate(_shapes(case)):
        h, t = _values(shape, rng, position % 6)
        name = f"layer{position}.v"
        hand.add(name, "v", "forward", h)
        torch.add(name, "v", "forward", t)
        pairs.append((name, h, t))
    checks = compare_traces(hand, torch, F64)
    assert not all(check.ok for check in checks) and any(check.ok for check in checks)
    for check, (name, h, t) in zip(checks, pairs, strict=True):
        magnitude = np.abs(F64.flush(t))
        alone = compare_values(
            name, h, t, F64, scale=float(magnitude.max(initial=0.0)), norm_scale=norm(magnitude)
        )
        assert repr(check) == repr(alone)


def test_flushed_finds_a_subnormal_among_zeros_and_copies_nothing_without_one() -> None:
    values = np.array([0.0, -0.0, 1.0, -2.0, 0.0])
    same, magnitude = segments.flushed(values, F64.tiny)
    assert same is values and magnitude.tolist() == [0.0, 0.0, 1.0, 2.0, 0.0]
    values[0] = -SUBNORMAL
    flushed, magnitude = segments.flushed(values, F64.tiny)
    assert flushed is not values and flushed.tolist() == [0.0, -0.0, 1.0, -2.0, 0.0]
    assert magnitude.tolist() == [0.0, 0.0, 1.0, 2.0, 0.0]


@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 3, 4), (1, 1), (4, 1, 2, 3)])
def test_unravel_is_numpys(shape: tuple[int, ...]) -> None:
    for flat in range(int(np.prod(shape))):
        index = segments.unravel(flat, shape)
        assert index == tuple(int(i) for i in np.unravel_index(flat, shape))
        assert all(type(i) is int for i in index)
