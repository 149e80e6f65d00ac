"""The torch loss modules the specs name.

Two wrappers only move data, they compute nothing: ``half`` scales torch's own module output by ½,
and class-id targets (stored as floats in a (N, 1) column, like every target) become the (N,)
long tensor ``CrossEntropyLoss`` / ``NLLLoss`` take.
"""

from __future__ import annotations

import torch

from handgrad.contract.training import Loss


def build(
    spec: Loss,
    dtype: torch.dtype = torch.float64,
    *,
    index_targets: bool = False,
    device: torch.device | str = "cpu",
) -> torch.nn.Module:
    """The module for ``spec``; ``index_targets`` when ``y`` is a column of class ids
    (:meth:`handgrad.contract.training.Loss.target_form` says ``index``)."""
    kind, reduction = spec.kind, spec.reduction

    def tensor(values: tuple[float, ...] | None) -> torch.Tensor | None:
        return None if values is None else torch.tensor(values, dtype=dtype, device=device)

    if kind == "mse":
        module: torch.nn.Module = torch.nn.MSELoss(reduction=reduction)
    elif kind == "l1":
        module = torch.nn.L1Loss(reduction=reduction)
    elif kind == "smooth_l1":
        module = torch.nn.SmoothL1Loss(reduction=reduction, beta=spec.beta)
    elif kind == "huber":
        module = torch.nn.HuberLoss(reduction=reduction, delta=spec.delta)
    elif kind == "bce":
        module = torch.nn.BCELoss(reduction=reduction)
    elif kind == "bce_logits":
        module = torch.nn.BCEWithLogitsLoss(reduction=reduction, pos_weight=tensor(spec.pos_weight))
    elif kind == "cross_entropy":
        module = torch.nn.CrossEntropyLoss(
            weight=tensor(spec.weight),
            ignore_index=spec.ignore_index,
            reduction=reduction,
            label_smoothing=spec.label_smoothing,
        )
    elif kind == "nll":
        module = torch.nn.NLLLoss(
            weight=tensor(spec.weight), ignore_index=spec.ignore_index, reduction=reduction
        )
    else:
        raise ValueError(f"unknown loss {kind!r}")
    if index_targets:
        module = _IndexTargets(module)
    return _Half(module) if spec.half else module


class _Half(torch.nn.Module):
    """½ · loss: the textbook squared error, computed by torch from torch's own MSELoss."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, yhat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return 0.5 * self.inner(yhat, y)


class _IndexTargets(torch.nn.Module):
    """Class ids kept as floats in an (N, 1) column → the (N,) long tensor torch's class losses take."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, yhat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.inner(yhat, y[:, 0].round().long())
