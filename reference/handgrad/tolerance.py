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
TOLERANCES: dict[str, Tolerance] = {
    "float64": Tolerance(rtol=1e-10, atol=1e-12),
    "float32": Tolerance(rtol=1e-4, atol=1e-5),
}


def tolerance_for(dtype: object) -> Tolerance:
    """The row for ``dtype``: a NumPy dtype or its name, or a torch dtype (``torch.float64``)."""
    name = str(dtype)
    return TOLERANCES[str(np.dtype(name.removeprefix("torch.")))]
