r"""Training diagnostics of a layer stack, per step: why training stalls, in four numbers per layer.

Pure functions of what one hand step produced (its caches, its trace, the weights before and after
the update); they run after the update and add terms of phase ``diagnostic``.

For every layer with a weight matrix W⁽ᵏ⁾ (``dense{k}``; W̃⁽ᵏ⁾ = [W | b] when the bias is folded):

.. math::

    \texttt{grad\_norm} = \Big\lVert \frac{\partial L}{\partial W^{(k)}} \Big\rVert_F
    \qquad
    \texttt{update\_ratio} = \frac{\lVert W^{(k)\prime} - W^{(k)} \rVert_F}{\lVert W^{(k)} \rVert_F}

with ∂L/∂W⁽ᵏ⁾ the backward term ``dense{k}.dL_dW`` (the gradient as backward produced it, before
any clipping) and W⁽ᵏ⁾′ the weights after the optimizer step (``dense{k}.W_next``).

For every sigmoid or tanh activation, over the N × units elements of the step's batch:

.. math::

    \texttt{saturated} = \frac{1}{N\,n}\sum_{i,j} \big[f'(z_{ij}) < \rho \cdot \max f'\big],
    \qquad \rho = 0.1

One threshold relative to each activation's largest slope, because σ′ ≤ 1/4 while tanh′ ≤ 1: an
absolute threshold would call a sigmoid "saturated" four times earlier than a tanh. ρ = 0.1 is
"passes back less than a tenth of what it could":

* sigmoid: σ′(z) = a(1 − a) < 0.025, i.e. a < 0.0257 or a > 0.9743 (|z| > 3.64);
* tanh: 1 − a² < 0.1, i.e. |a| > 0.9487 (|z| > 1.82).

For every ReLU, over its n units:

.. math::

    \texttt{dead} = \frac{1}{n}\sum_j \big[\mathrm{relu}'(z_{ij}) = 0 \text{ for every sample } i\big]

that is z ≤ 0 on every row of the batch (relu′(0) = 0, as torch): the unit passes no gradient
this step, so its incoming weights do not move. leaky_relu and identity have neither term (their
slope never vanishes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from handgrad.contract.names import DEAD_KINDS, SATURATION_THRESHOLD, Row, weight_name
from handgrad.contract.spec import Activation, Stage
from handgrad.contract.trace import StepTrace
from handgrad.hand import activations


def grad_norm(dL_dW: np.ndarray) -> np.ndarray:
    """‖∂L/∂W‖_F."""
    return np.asarray(np.linalg.norm(dL_dW.reshape(-1)), dtype=dL_dW.dtype)


def update_ratio(W: np.ndarray, W_next: np.ndarray) -> np.ndarray:
    """‖W′ − W‖_F / ‖W‖_F."""
    delta = (W_next - W).reshape(-1)  # ΔW = W′ − W
    return np.asarray(np.linalg.norm(delta) / np.linalg.norm(W.reshape(-1)), dtype=W.dtype)


def saturated_fraction(kind: str, f_prime: np.ndarray) -> np.ndarray:
    """Fraction of the batch's elements with f′(z) < ρ·max f′."""
    return np.asarray(np.mean(f_prime < SATURATION_THRESHOLD[kind]), dtype=f_prime.dtype)


def dead_fraction(f_prime: np.ndarray) -> np.ndarray:
    """Fraction of units whose derivative is 0 on every sample of the batch (axis 0)."""
    return np.asarray(np.mean(np.all(f_prime == 0, axis=0)), dtype=f_prime.dtype)


def step_terms(
    stages: Sequence[Stage],
    caches: Sequence[object],
    trace: StepTrace,
    params_before: Mapping[str, np.ndarray],
    params_after: Mapping[str, np.ndarray],
    symbols: Mapping[str, str],
) -> list[Row]:
    """The diagnostic terms of one step as (name, symbol, value), in stage order.

    ``caches`` are the forward caches aligned with ``stages`` (an activation's holds z and a);
    ``trace`` the step's terms so far (gradients and symbols are read by name).
    """
    rows: list[Row] = []
    for stage, cache in zip(stages, caches, strict=True):
        weight = weight_name(stage, params_before)
        if weight is not None:
            short = weight.split(".", 1)[1]
            W, W_symbol = params_before[weight], symbols[weight]
            dL_dW = trace.value(f"{stage.name}.dL_d{short}")
            rows.append((f"{stage.name}.grad_norm", f"‖∂L/∂{W_symbol}‖", grad_norm(dL_dW)))
            ratio = update_ratio(W, params_after[weight])
            rows.append((f"{stage.name}.update_ratio", f"‖Δ{W_symbol}‖/‖{W_symbol}‖", ratio))
        if not isinstance(stage.layer, Activation):
            continue
        kind = stage.layer.kind
        a_symbol = trace[f"{stage.name}.a"].symbol
        if kind in SATURATION_THRESHOLD:
            f_prime = activations.derivative(kind, cache)  # f′(z), N,units
            rows.append((f"{stage.name}.saturated", f"sat[{a_symbol}]", saturated_fraction(kind, f_prime)))
        elif kind in DEAD_KINDS:
            f_prime = activations.derivative(kind, cache)  # relu′(z) = [z > 0], N,units
            rows.append((f"{stage.name}.dead", f"dead[{a_symbol}]", dead_fraction(f_prime)))
    return rows
