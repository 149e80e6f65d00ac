r"""Element-wise activations and their derivatives, written from the output where that is exact.

Each activation is a pair ``forward(z) -> (a, cache)`` / ``backward(dL_da, cache) -> dL_dz``.

.. math::

    \sigma(z) = \frac{1}{1+e^{-z}},\quad \sigma'(z) = a(1-a)

    \tanh'(z) = 1 - a^2

    \mathrm{relu}(z) = \max(z, 0),\quad \mathrm{relu}'(z) = [z > 0]
    \qquad (\mathrm{relu}'(0) = 0, \text{ as torch})

    \mathrm{leaky}(z) = z \text{ if } z > 0 \text{ else } s z,\quad
    \mathrm{leaky}'(z) = 1 \text{ if } z > 0 \text{ else } s \qquad (\text{at } 0: s, \text{ as torch})
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class ActivationCache(NamedTuple):
    z: np.ndarray
    a: np.ndarray
    slope: float


def sigmoid(z: np.ndarray) -> np.ndarray:
    """σ(z) without overflow: exp is only taken of −|z|."""
    e = np.exp(-np.abs(z))
    t = 1.0 + e
    return np.where(z >= 0, 1.0 / t, e / t)


def forward(kind: str, z: np.ndarray, slope: float = 0.01) -> tuple[np.ndarray, ActivationCache]:
    if kind == "sigmoid":
        a = sigmoid(z)
    elif kind == "tanh":
        a = np.tanh(z)
    elif kind == "relu":
        a = np.maximum(z, 0)
    elif kind == "leaky_relu":
        a = np.where(z > 0, z, z * slope)
    elif kind == "identity":
        a = z
    else:
        raise ValueError(f"unknown activation {kind!r}")
    return a, ActivationCache(z, a, slope)


def derivative(kind: str, cache: ActivationCache) -> np.ndarray:
    """f'(z), element-wise, with torch's choice at the kinks."""
    z, a, slope = cache
    if kind == "sigmoid":
        return a * (1 - a)  # σ'(z) = a(1 − a)
    if kind == "tanh":
        return 1 - a * a  # tanh'(z) = 1 − a²
    if kind == "relu":
        return (z > 0).astype(z.dtype)  # NOTE: relu'(0) = 0, as torch's threshold_backward
    if kind == "leaky_relu":
        return np.where(z > 0, 1, slope).astype(z.dtype)  # NOTE: leaky'(0) = s, as torch
    if kind == "identity":
        return np.ones_like(z)
    raise ValueError(f"unknown activation {kind!r}")


def backward(kind: str, dL_da: np.ndarray, cache: ActivationCache) -> np.ndarray:
    return dL_da * derivative(kind, cache)  # dL/dz = dL/da ⊙ f'(z)
