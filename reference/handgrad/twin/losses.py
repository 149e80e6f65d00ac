"""The torch loss modules the specs name; ``half`` scales torch's own module output by ½."""

from __future__ import annotations

import torch

from handgrad.spec import Loss


def build(spec: Loss) -> torch.nn.Module:
    if spec.kind == "mse":
        module: torch.nn.Module = torch.nn.MSELoss(reduction=spec.reduction)
    elif spec.kind == "bce":
        module = torch.nn.BCELoss(reduction=spec.reduction)
    else:
        raise ValueError(f"unknown loss {spec.kind!r}")
    return _Half(module) if getattr(spec, "half", False) else module


class _Half(torch.nn.Module):
    """½ · loss: the textbook squared error, computed by torch from torch's own MSELoss."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, yhat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return 0.5 * self.inner(yhat, y)
