"""The tolerance policy: one dtype-keyed table, atol and rtol always together.

A value agrees when ``|hand − torch| ≤ atol + rtol·|torch|`` element-wise. Every comparison in
handgrad reads its numbers from here: the harness (hand vs torch), and the twin's check that its
two torch references (fused ``torch.nn`` module and elementary ``torch-ops``) agree.
No torch and no handgrad imports here, so any room may import it without a cycle.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    rtol: float
    atol: float

    def describe(self) -> str:
        return f"atol {self.atol:.0e} + rtol {self.rtol:.0e}·|torch|"


# float64: both sides round differently (BLAS order, fused ops) but only at the last bits; over
# thousands of lock-step steps the drift stays near 1e-14. float32 is looser by its epsilon.
# tf32: a float32 run on CUDA with --tf32. Every matmul and convolution (forward and both backward
# products) rounds its float32 operands to TF32's 10-bit mantissa, u = 2⁻¹¹, multiplies exactly and
# accumulates in float32. One such product is off by at most (2u + n·2⁻²⁴)·Σ|aᵢbᵢ| (n: its
# reduction length), and a term inherits that from every product before it in the step: at most
# D = 18 in deep (9 dense layers: 9 forward, 8 backward through the inputs, 1 for the weights,
# n ≤ 64), so rtol = 18·(2u + 64·2⁻²⁴) = 1.8e-2, rounded up. Where a sum cancels, the random part
# of one product's error remains, sd u·√(2/3)·‖a∘b‖₂ with ‖a∘b‖₂ ≤ 1 for the built-in nets' unit
# scale: atol = 5σ = 2.0e-3. Derivation in manual/harness.md ("Tolerances on a GPU");
# tests/test_device.py recomputes both numbers.
TOLERANCES: dict[str, Tolerance] = {
    "float64": Tolerance(rtol=1e-10, atol=1e-12),
    "float32": Tolerance(rtol=1e-4, atol=1e-5),
    "tf32": Tolerance(rtol=2e-2, atol=2e-3),
}


def tolerance_for(dtype: object, *, tf32: bool = False) -> Tolerance:
    """The row for ``dtype``: a NumPy dtype or its name, or a torch dtype (``torch.float64``).

    ``tf32``: the twin ran on CUDA with TF32 allowed (``--tf32``); a float32 run then takes the
    ``tf32`` row. TF32 touches float32 operands only, so any other dtype keeps its own row."""
    name = str(np.dtype(str(dtype).removeprefix("torch.")))
    return TOLERANCES["tf32" if tf32 and name == "float32" else name]
