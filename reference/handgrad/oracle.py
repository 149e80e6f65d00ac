r"""A second oracle that needs no torch: central finite differences of the hand pass, in float64.

For a scalar loss L(θ) and the hand side's analytic gradient g = ∂L/∂θ:

* small tensors (at most ``ELEMENTWISE_LIMIT`` elements) are checked element by element,

  .. math:: \frac{L(\theta + h e_i) - L(\theta - h e_i)}{2h} \approx g_i

* larger ones along ``DIRECTIONS`` random unit directions d (seeded), the directional derivative
  against the inner product with the analytic gradient,

  .. math:: \frac{L(\theta + h d) - L(\theta - h d)}{2h} \approx \langle g, d \rangle

The step: the central difference's truncation error is O(h²·L‴) and its rounding error
O(ε·|L|/h); they balance at h ≈ ε^{1/3} ≈ 6e-6 for float64. We take h = 6e-6·max(1, |θ_i|) per
element (per direction, scaled by max(1, ‖θ‖∞)). The result is accurate to about 1e-10 relative
for smooth losses, so the oracle's tolerance is its own row: |fd − g| ≤ 1e-7 + 1e-5·|g|.

A difference quotient is meaningless where the step crosses a kink (ReLU at 0, a max-pool tie):
the check reports it like any other mismatch, so use smooth activations (the default ``xor``) or
inputs away from kinks when you want a clean oracle.

This module imports no torch: it is the oracle for the case "PyTorch and my derivation share a
mistake".
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

EPSILON_CUBE_ROOT = 6e-6
ELEMENTWISE_LIMIT = 64
DIRECTIONS = 6
FD_RTOL = 1e-5
FD_ATOL = 1e-7


@dataclass(frozen=True)
class OracleCheck:
    """Finite differences against the analytic gradient of one tensor."""

    name: str
    method: str  # "elementwise" or "directions"
    max_abs: float
    worst_index: tuple[int, ...]
    analytic: float
    numeric: float
    mismatched: int
    total: int
    numeric_values: np.ndarray | None = None  # the element-wise estimate, for reports

    @property
    def ok(self) -> bool:
        return self.mismatched == 0

    def message(self) -> str:
        where = f"{self.name} ({self.method}, {self.total} checks)"
        if self.ok:
            return f"{where}: finite differences agree (max |Δ| {self.max_abs:.1e})"
        return (
            f"{where}: {self.mismatched} disagree; worst at {list(self.worst_index)}: analytic "
            f"{self.analytic!r}, finite difference {self.numeric!r} (|Δ| {self.max_abs:.2e}; tolerance "
            f"{FD_ATOL:.0e} + {FD_RTOL:.0e}·|analytic|)"
        )


def _agrees(analytic: float, numeric: float) -> bool:
    return abs(analytic - numeric) <= FD_ATOL + FD_RTOL * abs(analytic)


def check_gradients(
    loss: Callable[[dict[str, np.ndarray]], float],
    point: dict[str, np.ndarray],
    gradients: dict[str, np.ndarray],
    *,
    seed: int = 0,
) -> list[OracleCheck]:
    """Check ``gradients[name]`` = ∂loss/∂point[name] for every name, by central differences.

    ``loss`` takes a dict like ``point`` (parameters and, if wanted, the input under its own name)
    and returns the scalar loss; it must not change state. ``point`` is not modified.
    """
    rng = np.random.default_rng(seed)
    base = {name: np.array(value, dtype=np.float64) for name, value in point.items()}
    results = []
    for name, analytic in gradients.items():
        analytic = np.asarray(analytic, dtype=np.float64)
        value = base[name]

        def loss_at(shifted: np.ndarray, name: str = name) -> float:
            return float(loss({**base, name: shifted}))

        if value.size <= ELEMENTWISE_LIMIT:
            results.append(_elementwise(name, value, analytic, loss_at))
        else:
            results.append(_directional(name, value, analytic, loss_at, rng))
    return results


def _elementwise(
    name: str, value: np.ndarray, analytic: np.ndarray, loss_at: Callable[[np.ndarray], float]
) -> OracleCheck:
    numeric = np.empty_like(value)
    for index in np.ndindex(value.shape):
        h = EPSILON_CUBE_ROOT * max(1.0, abs(float(value[index])))
        plus, minus = value.copy(), value.copy()
        plus[index] += h
        minus[index] -= h
        numeric[index] = (loss_at(plus) - loss_at(minus)) / (plus[index] - minus[index])
    return _summarise(name, "elementwise", analytic, numeric, numeric)


def _directional(
    name: str,
    value: np.ndarray,
    analytic: np.ndarray,
    loss_at: Callable[[np.ndarray], float],
    rng: np.random.Generator,
) -> OracleCheck:
    h = EPSILON_CUBE_ROOT * max(1.0, float(np.abs(value).max()))
    expected, numeric = np.empty(DIRECTIONS), np.empty(DIRECTIONS)
    for k in range(DIRECTIONS):
        direction = rng.standard_normal(value.shape)
        direction /= np.linalg.norm(direction)
        expected[k] = float(np.sum(analytic * direction))  # ⟨g, d⟩
        numeric[k] = (loss_at(value + h * direction) - loss_at(value - h * direction)) / (2 * h)
    return _summarise(name, "directions", expected, numeric, None)


def _summarise(
    name: str, method: str, analytic: np.ndarray, numeric: np.ndarray, values: np.ndarray | None
) -> OracleCheck:
    diff = np.abs(analytic - numeric)
    bad = diff > FD_ATOL + FD_RTOL * np.abs(analytic)
    flat = int(np.argmax(np.where(bad, diff, -1.0))) if bad.any() else int(np.argmax(diff))
    index = tuple(int(i) for i in np.unravel_index(flat, analytic.shape))
    max_abs = float(diff.max()) if diff.size else 0.0
    if not math.isfinite(max_abs):
        bad = bad | ~np.isfinite(diff)
    return OracleCheck(
        name, method, max_abs, index, float(analytic.reshape(-1)[flat]), float(numeric.reshape(-1)[flat]),
        int(bad.sum()), int(analytic.size), values,
    )
