r"""The dense (fully connected) layer, as ``torch.nn.Linear``: weights (out, in), a row per sample.

Forward, for a batch X of shape (N, in):

.. math::

    Z = X W^\top + \mathbf{1} b^\top \qquad (N, \text{out})

Backward, given the upstream gradient G = ∂L/∂Z (N, out):

.. math::

    \frac{\partial L}{\partial W} = G^\top X \quad (\text{out}, \text{in}) \qquad
    \frac{\partial L}{\partial b} = \mathbf{1}^\top G \quad (\text{out}) \qquad
    \frac{\partial L}{\partial X} = G W \quad (N, \text{in})

Folded bias (the textbook's "bias combined into the matrix"): append a constant 1 to every input,
:math:`\tilde X = [X \mid \mathbf{1}]`, and use :math:`\tilde W = [W \mid b]` of shape
(out, in + 1); then :math:`Z = \tilde X \tilde W^\top` and
:math:`\partial L/\partial \tilde W = G^\top \tilde X`, whose last column is ∂L/∂b and whose
other columns are ∂L/∂W: torch's ``weight`` is ``W̃[:, :-1]`` and its ``bias`` is ``W̃[:, -1]``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class DenseCache(NamedTuple):
    x: np.ndarray  # the input (augmented with a column of ones when folded)
    W: np.ndarray  # W, or W̃ = [W | b] when folded
    folded: bool


def forward(x: np.ndarray, params: dict[str, np.ndarray]) -> tuple[np.ndarray, DenseCache]:
    """``params`` holds ``W`` and optionally ``b``; or ``Wt`` (= W̃) for the folded form."""
    if "Wt" in params:
        x_aug = np.concatenate([x, np.ones((x.shape[0], 1), dtype=x.dtype)], axis=1)  # N,in+1
        z = x_aug @ params["Wt"].T  # N,out
        return z, DenseCache(x_aug, params["Wt"], True)
    z = x @ params["W"].T  # N,out
    if "b" in params:
        z = z + params["b"]
    return z, DenseCache(x, params["W"], False)


def backward(
    dL_dz: np.ndarray, cache: DenseCache, *, has_bias: bool = True
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    x, W, folded = cache
    if folded:
        dL_dWt = dL_dz.T @ x  # ∂L/∂W̃ = Gᵀ X̃   out,in+1
        dL_dx = dL_dz @ W[:, :-1]  # ∂L/∂X = G W   N,in (the constant 1 has no gradient)
        return dL_dx, {"Wt": dL_dWt}
    grads = {"W": dL_dz.T @ x}  # ∂L/∂W = Gᵀ X   out,in
    if has_bias:
        grads["b"] = dL_dz.sum(axis=0)  # ∂L/∂b = 1ᵀ G   out
    dL_dx = dL_dz @ W  # ∂L/∂X = G W   N,in
    return dL_dx, grads
