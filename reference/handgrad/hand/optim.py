r"""Optimizers, as ``torch.optim`` implements them, written as pure functions of (params, grads, state).

``step(spec, params, grads, state) -> (params_next, state_next)``; ``state`` is a dict keyed by
``"<param>"`` holding a dict of torch's state names (``momentum_buffer``, ``exp_avg``, ...) plus a
global ``"step"`` count. Nothing is updated in place.

Plain SGD:

.. math::

    W_{t+1} = W_t - \eta\, \frac{\partial L}{\partial W_t}
"""

from __future__ import annotations

from typing import Any

import numpy as np

from handgrad.spec import Optimizer

State = dict[str, Any]


def init_state(spec: Optimizer, params: dict[str, np.ndarray]) -> State:
    return {"step": 0}


def step(
    spec: Optimizer,
    params: dict[str, np.ndarray],
    grads: dict[str, np.ndarray],
    state: State,
) -> tuple[dict[str, np.ndarray], State]:
    if spec.kind != "sgd":
        raise ValueError(f"unknown optimizer {spec.kind!r}")
    lr = spec.lr
    params_next = {name: value - lr * grads[name] for name, value in params.items()}  # W − η∂L/∂W
    return params_next, {**state, "step": state["step"] + 1}


def state_keys(spec: Optimizer) -> list[tuple[str, str]]:
    """Per-parameter state, as torch's ``optimizer.state`` keys with their symbols, in order."""
    return []


def scalar_state(spec: Optimizer, state: State) -> list[tuple[str, str, np.ndarray]]:
    """Scalars of the optimizer (step count, lr in force) as (key, symbol, value)."""
    return []
