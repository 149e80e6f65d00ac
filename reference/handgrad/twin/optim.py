"""The real ``torch.optim`` optimizer for a spec, and its scalar state read back.

Per-parameter state (``momentum_buffer``, ``exp_avg``, ...) is read by the twin network straight
from ``optimizer.state[param][key]`` for the keys :func:`handgrad.hand.optim.state_keys` names.
"""

from __future__ import annotations

import numpy as np
import torch

from handgrad.spec import Optimizer


def build(spec: Optimizer, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    if spec.kind == "sgd":
        return torch.optim.SGD(params, lr=spec.lr)
    raise ValueError(f"unknown optimizer {spec.kind!r}")


def scalar_state(spec: Optimizer, optimizer: torch.optim.Optimizer) -> list[tuple[str, str, np.ndarray]]:
    """Scalars of the optimizer (step count, lr in force) as (key, symbol, value), in the hand
    side's order (:func:`handgrad.hand.optim.scalar_state`)."""
    return []
