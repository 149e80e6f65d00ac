r"""The tolerance policy: one dtype-keyed table, atol and rtol always together, scaled to the term.

A term ``t`` (torch) and ``h`` (hand) of one step agree when, after values below the dtype's
smallest normal number are flushed to zero on both sides,

* every element satisfies  ``|hᵢ − tᵢ| ≤ atol·s + rtol·|tᵢ|``  with ``s = maxⱼ |tⱼ|``, the term's
  own largest magnitude at that step (never a fixed floor that can exceed the term; for a sum
  over the batch, at least its summands' size: :func:`summand_scale`), and
* the term as a whole satisfies  ``‖h − t‖₂ ≤ rtol·‖t‖₂``  (a term-wide factor error cannot pass).

Both figures are reported as relative errors compared with the same ``rtol``:

* element-wise: ``eᵢ = |hᵢ − tᵢ| / ((atol/rtol)·s + |tᵢ|)``, the element agrees iff ``eᵢ ≤ rtol``;
* normwise: ``‖h − t‖₂ / ‖t‖₂``, the term agrees iff it is ``≤ rtol``.

So "agree" never stands beside a figure above ``rtol``. 0/0 is 0 (both sides exactly zero, or both
in the underflow range); x/0 with x > 0 is inf (one side zero, the other not: a disagreement).
Derivation of each number and a worked example of a vanishing term: manual/harness.md.

Every comparison in handgrad reads its rule from here: the harness (hand vs torch), the Trace
sheet's ok column, the Summary, check_layer, and the twin's check that its two torch references
(fused module and elementary torch ops) agree. No torch and no handgrad imports here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    """One row of the table.

    ``rtol``: relative to each element's |torch|, and the bound on the normwise error.
    ``atol``: relative to the term's largest |torch| at that step (an absolute floor that follows
    the term's size). ``tiny``: the dtype's smallest normal number; values below it are zero.
    """

    rtol: float
    atol: float
    tiny: float = float(np.finfo(np.float64).tiny)

    def describe(self) -> str:
        rtol = f"{self.rtol:.0e}"
        return f"atol {self.atol:.0e}·max|torch| + rtol {rtol}·|torch|; normwise rtol {rtol}"

    @property
    def scale_weight(self) -> float:
        """atol/rtol: how much of the term's largest magnitude enters each element's denominator."""
        return self.atol / self.rtol

    def flush(self, values: np.ndarray) -> np.ndarray:
        """``values`` with every element below the smallest normal set to zero (subnormals are noise)."""
        return np.where(np.abs(values) < self.tiny, 0.0, values)

    def element_errors(
        self,
        diff: np.ndarray,
        magnitude: np.ndarray,
        scale: float | np.ndarray,
        sizes: list[int] | None = None,
    ) -> np.ndarray:
        """eᵢ = |Δᵢ| / ((atol/rtol)·s + |tᵢ|): each element's relative error; it agrees iff eᵢ ≤ rtol.

        ``sizes``: ``diff`` and ``magnitude`` hold several terms one after another, of these sizes,
        and ``scale`` has one s per term (the same doubles as s repeated over each term's elements,
        without the pass that multiplies the repeated array)."""
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # inf is a verdict here
            floor = self.scale_weight * scale
            if sizes is None:
                errors = diff / (floor + magnitude)
            else:  # one array for the denominators and the quotients
                if len(sizes) == 1:
                    denominator = np.add(float(floor[0]), magnitude)
                else:
                    denominator = np.repeat(floor, sizes)
                    denominator += magnitude
                errors = np.divide(diff, denominator, out=denominator)
        # every denominator > 0: 0/d is already 0 and there is no 0/0 (np.where over a mixed mask
        # costs 8× a division: 0.42 ms for 131,072 doubles); a NaN floor keeps the where
        if np.min(floor, initial=np.inf) > 0:
            return errors
        return np.where(diff == 0, 0.0, errors)  # x/0 = inf for x > 0; 0/0 = 0

    def measure(
        self, hand: np.ndarray, torch: np.ndarray, *, scale: float = 0.0, norm_scale: float = 0.0
    ) -> Measure:
        """The rule applied to two finite arrays of one term (flattened, float64).

        ``scale`` and ``norm_scale``: the term's largest |torch| and ‖torch‖₂ over the recent steps
        (:class:`RecentScale`); the measure uses the larger of each and this step's own."""
        hand = self.flush(np.asarray(hand, dtype=np.float64).reshape(-1))
        torch = self.flush(np.asarray(torch, dtype=np.float64).reshape(-1))
        diff = np.abs(hand - torch)
        magnitude = np.abs(torch)
        scale = max(scale, float(magnitude.max(initial=0.0)))
        errors = self.element_errors(diff, magnitude, scale)
        return Measure(diff, errors, relative(norm(diff), max(norm_scale, norm(magnitude))), scale)


@dataclass(frozen=True)
class Measure:
    """One term measured by the rule: |Δ| and eᵢ per element, the normwise figure, the scale s."""

    diff: np.ndarray
    errors: np.ndarray
    norm_rel: float
    scale: float


# How many steps a term's size is remembered: its scale s is its largest |torch| over the last
# SCALE_WINDOW steps (this one included), and ‖torch‖₂ likewise for the normwise figure. A value
# that crosses zero (a scalar pre-activation z = w·a + b, a bias gradient summed over a batch that
# cancels) is computed from summands of the size it had a few steps before; measured against its
# own near-zero value at the crossing, the last bits of those summands read as a large "relative
# error" (seen: deep's ∂L/∂b⁽⁹⁾ at step 11, 1.5e-10 against its own value). A window, not the
# whole run, so a term that shrinks as training converges is judged at the size it has now.
SCALE_WINDOW = 100


class RecentScale:
    """Each term's largest |torch| and ‖torch‖₂ over the last :data:`SCALE_WINDOW` steps.

    Terms are identified by position (every step of a run emits the same terms in the same
    order). ``update`` takes this step's figures and returns the window's."""

    def __init__(self, window: int = SCALE_WINDOW) -> None:
        self.window = window
        # window, 2, terms (max|t|, ‖t‖₂): the window on the leading axis, so its max is an
        # element-wise maximum of contiguous rows (a strided reduction costs ~10× more per step)
        self._peaks: np.ndarray | None = None
        self._count = 0

    def update(self, peaks: np.ndarray, norms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._peaks is None or self._peaks.shape[2] != peaks.shape[0]:
            self._peaks = np.zeros((self.window, 2, peaks.shape[0]))
            self._count = 0
        slot = self._peaks[self._count % self.window]
        slot[0], slot[1] = peaks, norms
        self._count += 1
        recent = np.maximum.reduce(self._peaks, axis=0)  # self._peaks.max(axis=0), without its wrapper
        return recent[0], recent[1]


def summand_scale(subscripts: str, *operands: np.ndarray) -> np.ndarray:
    """``np.einsum(subscripts, |A|, |B|, …)``: the size a sum of products' rounding follows.

    A sum ``sᵢ = Σₖ aₖᵢ·bₖᵢ`` computed in floating point is off by at most γₙ·Σₖ|aₖᵢ·bₖᵢ| (Higham,
    Accuracy and Stability, 3.1), however small ``sᵢ`` itself is. Where the summands cancel —
    exactly, as for ∂L/∂b of a layer feeding a training-mode BatchNorm (Σᵢ ∂L/∂zᵢ = 0 over the
    batch), or to a few digits, as for a weight or bias gradient summed over a batch whose rows
    disagree in sign — the sum carries the rounding of summands far larger than itself, so its
    scale ``s`` is that of the summands. ``operands`` are torch's values; the result has the summed
    term's shape (not finite where an operand is not: the caller then keeps the term's own scale)."""
    magnitudes = [np.abs(operand) for operand in operands]
    subscripts = _without_ellipsis(subscripts, magnitudes)
    # a product of two large operands goes through BLAS (8× faster for an MLP's 64×256 by 64×784);
    # planning that path costs ~30 µs, more than a small einsum itself
    large = len(magnitudes) > 1 and sum(m.size for m in magnitudes) > 4096
    return np.asarray(np.einsum(subscripts, *magnitudes, optimize="greedy" if large else False))


def _without_ellipsis(subscripts: str, operands: list[np.ndarray]) -> str:
    """``nc...->c`` spelled out for these operands (``ncABC->c``): NumPy's einsum keeps the axes
    of an ellipsis in its output; here the ones the output leaves out are summed."""
    if "..." not in subscripts:
        return subscripts
    inputs, output = subscripts.split("->")
    parts = inputs.split(",")
    spare = [letter for letter in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" if letter not in subscripts]
    ranks = [op.ndim - len(part.replace("...", "")) for part, op in zip(parts, operands, strict=True)]
    axes = "".join(spare[: max(ranks)])
    spelled = [part.replace("...", axes[len(axes) - rank :]) for part, rank in zip(parts, ranks, strict=True)]
    return ",".join(spelled) + "->" + output.replace("...", axes)


def relative(difference: float, magnitude: float) -> float:
    """difference / magnitude with 0/0 = 0 and x/0 = inf: how every figure of the report divides."""
    if difference == 0:
        return 0.0
    return difference / magnitude if magnitude > 0 else math.inf


def norm(values: np.ndarray) -> float:
    """‖values‖₂ without overflow or underflow (scaled by the largest magnitude first)."""
    largest = float(np.max(np.abs(values), initial=0.0))
    if largest == 0 or not math.isfinite(largest):
        return largest
    return largest * math.sqrt(float(np.sum(np.square(values / largest))))


# float64 and float32: a term is the end of a chain of D products with reductions of length n, each
# off by at most γₙ ≈ n·u of Σ|aₖbₖ| (Higham, Accuracy and Stability, 3.1). The largest chain among
# the built-in scenarios has D·n ≈ 10⁵ (alexnet-mini: conv1's weight gradient sums 32·16·16 =
# 8,192 positions, about 12 products deep; deep at depth 20 has D = 40 but n ≤ 64). Worst case
# D·n·u: 1.1e-11 in float64, 6e-3 in float32; rounding errors are random in sign, so the typical
# figure is √(D·n)·u: 3.5e-14 and 1.9e-5. rtol is 1e-10 in float64 (9× the worst case, room for
# 10⁴ steps of lock-step drift) and 1e-4 in float32 (5× the typical figure).
# atol = rtol: a small element that came out of cancellation carries the rounding of summands as
# large as the term's largest element, so it may be off by rtol of that. Worked example of a
# vanishing term: manual/harness.md.
# tf32: a float32 run on CUDA with --tf32. Every matmul and convolution (forward and both backward
# products) rounds its float32 operands to TF32's 10-bit mantissa, u = 2⁻¹¹, multiplies exactly and
# accumulates in float32. One such product is off by at most (2u + n·2⁻²⁴)·Σ|aᵢbᵢ| (n: its
# reduction length), and a term inherits that from every product before it in the step: at most
# D = 18 in deep (9 dense layers: 9 forward, 8 backward through the inputs, 1 for the weights,
# n ≤ 64), so rtol = 18·(2u + 64·2⁻²⁴) = 1.8e-2, rounded up. Where a sum cancels, the random part
# of one product's error remains, sd u·√(2/3)·‖a∘b‖₂ with ‖a∘b‖₂ ≤ the term's largest magnitude:
# atol = 5σ = 2.0e-3 of it. Derivation in manual/harness.md ("Tolerances on a GPU");
# tests/test_device.py recomputes both numbers.
_TINY32 = float(np.finfo(np.float32).tiny)
TOLERANCES: dict[str, Tolerance] = {
    "float64": Tolerance(rtol=1e-10, atol=1e-10),
    "float32": Tolerance(rtol=1e-4, atol=1e-4, tiny=_TINY32),
    "tf32": Tolerance(rtol=2e-2, atol=2e-3, tiny=_TINY32),
}


def tolerance_for(dtype: object, *, tf32: bool = False) -> Tolerance:
    """The row for ``dtype``: a NumPy dtype or its name, or a torch dtype (``torch.float64``).

    ``tf32``: the twin ran on CUDA with TF32 allowed (``--tf32``); a float32 run then takes the
    ``tf32`` row. TF32 touches float32 operands only, so any other dtype keeps its own row."""
    name = str(np.dtype(str(dtype).removeprefix("torch.")))
    return TOLERANCES["tf32" if tf32 and name == "float32" else name]
