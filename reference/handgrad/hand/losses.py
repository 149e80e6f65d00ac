r"""Losses: the scalar L of a batch and its gradient ∂L/∂ŷ, as the torch module of the same name.

Squared error (``nn.MSELoss``), over the n = N·out elements of ŷ:

.. math::

    L = c \sum_i (\hat y_i - y_i)^2, \qquad \frac{\partial L}{\partial \hat y_i} = 2c(\hat y_i - y_i)

with c = 1/n for ``mean`` (torch's default), c = 1 for ``sum``, times ½ with ``half`` (the
textbook ½·Σ(ŷ−y)², whose gradient is ŷ − y).

Binary cross-entropy on probabilities p = ŷ (``nn.BCELoss``):

.. math::

    L = -c \sum_i \big[y_i \log p_i + (1-y_i)\log(1-p_i)\big], \qquad
    \frac{\partial L}{\partial p_i} = c\,\frac{p_i - y_i}{\max(p_i(1-p_i), 10^{-12})}

NOTE: torch clamps each log at −100 and the gradient's denominator at 1e-12; so do we, so that
both sides agree at p ∈ {0, 1} instead of one of them producing inf.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from handgrad.spec import Loss

BCE_LOG_FLOOR = -100.0
BCE_GRAD_EPS = 1e-12


class LossCache(NamedTuple):
    yhat: np.ndarray
    y: np.ndarray
    scale: float  # c in the docstring


def _scale(spec: Loss, count: int) -> float:
    scale = 1.0 / count if spec.reduction == "mean" else 1.0
    return scale * 0.5 if spec.half else scale


def forward(spec: Loss, yhat: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, LossCache]:
    scale = _scale(spec, yhat.size)
    if spec.kind == "mse":
        residual = yhat - y
        L = scale * np.sum(residual * residual)
    elif spec.kind == "bce":
        log_p = np.maximum(np.log(yhat), BCE_LOG_FLOOR)
        log_1mp = np.maximum(np.log1p(-yhat), BCE_LOG_FLOOR)
        L = -scale * np.sum(y * log_p + (1 - y) * log_1mp)
    else:
        raise ValueError(f"unknown loss {spec.kind!r}")
    return np.asarray(L, dtype=yhat.dtype), LossCache(yhat, y, scale)


def backward(spec: Loss, cache: LossCache) -> np.ndarray:
    yhat, y, scale = cache
    if spec.kind == "mse":
        return 2 * scale * (yhat - y)  # ∂L/∂ŷ = 2c(ŷ − y)
    if spec.kind == "bce":
        denominator = np.maximum(yhat * (1 - yhat), BCE_GRAD_EPS)
        return scale * (yhat - y) / denominator  # ∂L/∂p = c(p − y)/max(p(1 − p), ε)
    raise ValueError(f"unknown loss {spec.kind!r}")
