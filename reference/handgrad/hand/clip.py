r"""Gradient clipping as pure functions, exactly as ``torch.nn.utils.clip_grad_norm_`` and
``torch.nn.utils.clip_grad_value_``. Pure NumPy; never imports torch.

Clip by norm (torch's ``clip_grad_norm_``):

    ‖g‖_p   = (Σ_k ‖g_k‖_p^p)^{1/p}      the norm of the vector of per-tensor norms;
                                           p = inf: max_k max|g_k|
    coef    = max_norm / (‖g‖_p + 1e-6)   NOTE: torch adds 1e-6 to the norm, so a gradient whose
                                           norm equals max_norm is still scaled by a hair (< 1)
    coef    = min(coef, 1)                 clamped: small gradients are left alone
    g_k    ← coef · g_k                    every gradient is multiplied, also when coef = 1

and the *unclipped* total norm is returned, as torch returns it.

Clip by value (torch's ``clip_grad_value_``): g_k ← clamp(g_k, −clip_value, clip_value).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from handgrad.contract.spec import SpecError

CLIP_EPS = 1e-6  # torch: clip_coef = max_norm / (total_norm + 1e-6)


def total_norm(grads: Mapping[str, np.ndarray], norm_type: float = 2.0) -> float:
    """The norm of all gradients together, computed as torch does (norm of per-tensor norms)."""
    p = _norm_type(norm_type)
    if not grads:
        return 0.0
    arrays = [np.asarray(g, dtype=np.float64).ravel() for g in grads.values()]
    if math.isinf(p):
        return float(max((np.max(np.abs(a)) if a.size else 0.0) for a in arrays))
    norms = np.array([np.sum(np.abs(a) ** p) ** (1.0 / p) for a in arrays])  # k
    return float(np.sum(norms**p) ** (1.0 / p))


def clip_grad_norm(
    grads: Mapping[str, np.ndarray], max_norm: float, norm_type: float = 2.0
) -> tuple[dict[str, np.ndarray], float]:
    """-> (the clipped gradients (new arrays, same keys), the total norm before clipping)."""
    if isinstance(max_norm, bool) or not isinstance(max_norm, (int, float, np.floating)):
        raise SpecError("max_norm", f"expected a number, got {max_norm!r}")
    if not math.isfinite(max_norm) or max_norm < 0:
        raise SpecError("max_norm", f"expected a finite number >= 0, got {max_norm}")
    norm = total_norm(grads, norm_type)
    coef = min(max_norm / (norm + CLIP_EPS), 1.0)  # clip_coef clamped to 1.0
    return {k: np.asarray(g, dtype=np.float64) * coef for k, g in grads.items()}, norm


def clip_grad_value(grads: Mapping[str, np.ndarray], clip_value: float) -> dict[str, np.ndarray]:
    """-> the gradients clamped element-wise to [−clip_value, clip_value] (new arrays)."""
    if isinstance(clip_value, bool) or not isinstance(clip_value, (int, float, np.floating)):
        raise SpecError("clip_value", f"expected a number, got {clip_value!r}")
    if not math.isfinite(clip_value) or clip_value < 0:
        raise SpecError("clip_value", f"expected a finite number >= 0, got {clip_value}")
    return {
        k: np.clip(np.asarray(g, dtype=np.float64), -clip_value, clip_value)
        for k, g in grads.items()
    }


def _norm_type(norm_type: float) -> float:
    if isinstance(norm_type, bool) or not isinstance(norm_type, (int, float, np.floating)):
        raise SpecError("norm_type", f"expected a number or inf, got {norm_type!r}")
    p = float(norm_type)
    if math.isnan(p) or p <= 0:
        raise SpecError("norm_type", f"expected a p > 0 or inf, got {norm_type}")
    return p
