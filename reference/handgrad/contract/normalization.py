"""The normalization layers of the layer stack: ``nn.BatchNorm1d``/``nn.BatchNorm2d`` and ``nn.LayerNorm``.

Specs only (options validated with :class:`~handgrad.contract.spec.SpecError` naming the field);
the hand side's arithmetic is :mod:`handgrad.hand.normalization`, the derivations
``manual/normalization.md``. A BatchNorm stage carries its module's mode (``training``): torch
normalizes with the batch's statistics in training mode (or always, without running statistics)
and with the running ones in eval mode; the running statistics are the stage's buffers,
compared every step as state terms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from handgrad.contract.spec import SpecError, require_float, require_int


@dataclass(frozen=True)
class BatchNorm:
    """``torch.nn.BatchNorm1d`` (``dims`` 1: a (C,) or (C, L) sample) or ``BatchNorm2d`` (``dims`` 2:
    (C, H, W)). ``momentum`` None is torch's cumulative average (factor 1/num_batches_tracked)."""

    num_features: int
    dims: int = 1
    eps: float = 1e-5
    momentum: float | None = 0.1
    affine: bool = True
    track_running_stats: bool = True
    training: bool = True

    prefix = "bn"

    def __post_init__(self) -> None:
        require_int("num_features", self.num_features, 1)
        if self.dims not in (1, 2):
            raise SpecError("dims", f"expected 1 (BatchNorm1d) or 2 (BatchNorm2d), got {self.dims!r}")
        require_float("eps", self.eps, positive=True)
        if self.momentum is not None:
            momentum = require_float("momentum", self.momentum, non_negative=True)
            if momentum > 1:
                raise SpecError("momentum", f"expected a number in [0, 1] or None, got {momentum:g}")

    @property
    def batch_statistics(self) -> bool:
        """Whether x̂ uses the batch's own μ and σ² (torch's ``bn_training``)."""
        return self.training or not self.track_running_stats

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        ranks = {1: (1, 2), 2: (3,)}[self.dims]
        if len(input_shape) not in ranks or input_shape[0] != self.num_features:
            wanted = (
                f"({self.num_features},) or ({self.num_features}, L)"
                if self.dims == 1
                else (f"({self.num_features}, H, W)")
            )
            raise SpecError(
                "num_features", f"BatchNorm{self.dims}d expects samples of shape {wanted}, got {input_shape}"
            )
        return tuple(input_shape)


@dataclass(frozen=True)
class LayerNorm:
    """``torch.nn.LayerNorm(normalized_shape, eps, elementwise_affine, bias)``: each sample
    normalized over its trailing ``normalized_shape`` axes."""

    normalized_shape: tuple[int, ...]
    eps: float = 1e-5
    elementwise_affine: bool = True
    bias: bool = True

    prefix = "ln"

    def __post_init__(self) -> None:
        shape = self.normalized_shape
        if isinstance(shape, int) or not shape:
            raise SpecError("normalized_shape", f"expected a non-empty tuple of sizes, got {shape!r}")
        for size in shape:
            require_int("normalized_shape", size, 1)
        require_float("eps", self.eps, positive=True)

    @property
    def size(self) -> int:
        """D: the values per normalized group."""
        return math.prod(self.normalized_shape)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        k = len(self.normalized_shape)
        if len(input_shape) < k or tuple(input_shape[len(input_shape) - k :]) != self.normalized_shape:
            raise SpecError(
                "normalized_shape",
                f"samples of shape {input_shape} do not end in normalized_shape {self.normalized_shape}",
            )
        return tuple(input_shape)
