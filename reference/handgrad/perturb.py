"""Perturb one hand term by a factor: the scale sweep's planted bug.

A :class:`PerturbedSide` wraps the hand side of an experiment and multiplies one term of its trace
by ``factor`` at every step (0: a zeroed gradient, 2: a doubled one, 1 + 1e-6: a small term-wide
error), leaving every other term and the training itself intact. The harness must then name that
term as the first divergence and flag every element the factor changed: that is what
``tests/test_scale_sweep.py`` requires at every scale (manual/harness.md, "A worked example").
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from handgrad.contract.trace import StepTrace


class PerturbedSide:
    """The hand side with ``term`` multiplied by ``factor`` in every step's trace."""

    def __init__(self, side: Any, term: str, factor: float) -> None:
        self.side = side
        self.term = term
        self.factor = factor

    def step(self, step: int) -> StepTrace:
        trace = self.side.step(step)
        position = trace.names().index(self.term)  # ValueError names a term the side never emits
        original = trace.terms[position]
        value = np.asarray(original.value * self.factor, dtype=original.value.dtype)
        trace.terms[position] = replace(original, value=value)
        return trace

    def __getattr__(self, name: str) -> Any:  # params(), load_params(), ... of the wrapped side
        return getattr(self.side, name)


def changed_elements(value: np.ndarray, factor: float) -> int:
    """How many elements of ``value`` the factor changes (after rounding to the term's dtype)."""
    value = np.asarray(value)
    return int(np.count_nonzero(np.asarray(value * factor, dtype=value.dtype) != value))
