"""The convolution family's layer specs (NCHW; per-sample shapes are (C, H, W)) and a user's own
layer: Conv2d, the pools, LocalResponseNorm, Flatten, Dropout, UserLayer. Options validated with
:class:`~handgrad.contract.spec.SpecError` naming the field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from handgrad.contract.spec import SpecError, require_float, require_int

# --- convolution family (NCHW; per-sample shapes are (C, H, W)) ------------------------------


def _pair(field_name: str, value: object, minimum: int) -> tuple[int, int]:
    """An int or an (h, w) pair, each ``>= minimum``, as torch's ``_pair``."""
    items = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(items) != 2:
        raise SpecError(field_name, f"expected an int or a pair (h, w), got {value!r}")
    return require_int(field_name, items[0], minimum), require_int(field_name, items[1], minimum)


def _image_shape(field_name: str, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise SpecError(field_name, f"expected a (C, H, W) input per sample, got shape {input_shape}")
    c, h, w = input_shape
    return c, h, w


def _window_output(
    hw: tuple[int, int],
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> tuple[int, int]:
    """``H_o = ⌊(H + 2p − d(k−1) − 1)/s⌋ + 1`` per axis; the dilated kernel must fit the padded input."""
    sizes = []
    for axis, n, k, s, p, d in zip("HW", hw, kernel_size, stride, padding, dilation, strict=True):
        span = d * (k - 1) + 1
        if span > n + 2 * p:
            raise SpecError(
                "kernel_size",
                f"kernel {k} (dilation {d}, extent {span}) is larger than the padded input {axis}: "
                f"{n} + 2·{p} = {n + 2 * p}",
            )
        sizes.append((n + 2 * p - span) // s + 1)
    return sizes[0], sizes[1]


@dataclass(frozen=True)
class Conv2d:
    """``torch.nn.Conv2d``: weight (C_out, C_in/groups, kH, kW), bias (C_out,), NCHW.

    Sizes given as an int mean the same on both axes; they are stored as (h, w) pairs.
    """

    in_channels: int
    out_channels: int
    kernel_size: int | tuple[int, int]
    stride: int | tuple[int, int] = 1
    padding: int | tuple[int, int] = 0
    dilation: int | tuple[int, int] = 1
    groups: int = 1
    bias: bool = True

    prefix = "conv"

    def __post_init__(self) -> None:
        require_int("in_channels", self.in_channels, 1)
        require_int("out_channels", self.out_channels, 1)
        object.__setattr__(self, "kernel_size", _pair("kernel_size", self.kernel_size, 1))
        object.__setattr__(self, "stride", _pair("stride", self.stride, 1))
        object.__setattr__(self, "padding", _pair("padding", self.padding, 0))
        object.__setattr__(self, "dilation", _pair("dilation", self.dilation, 1))
        groups = require_int("groups", self.groups, 1)
        if self.in_channels % groups:
            raise SpecError("groups", f"in_channels {self.in_channels} not divisible by groups {groups}")
        if self.out_channels % groups:
            raise SpecError("groups", f"out_channels {self.out_channels} not divisible by groups {groups}")

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        c, h, w = _image_shape("in_channels", input_shape)
        if c != self.in_channels:
            raise SpecError("in_channels", f"expected {self.in_channels} channels, got shape {input_shape}")
        ho, wo = _window_output((h, w), self.kernel_size, self.stride, self.padding, self.dilation)
        return (self.out_channels, ho, wo)


def _pool_pairs(layer: object) -> None:
    """Normalise a pool's sizes to pairs (stride defaults to the kernel, as torch) and check 2p ≤ k."""
    kernel = _pair("kernel_size", layer.kernel_size, 1)  # type: ignore[attr-defined]
    stride = kernel if layer.stride is None else _pair("stride", layer.stride, 1)  # type: ignore[attr-defined]
    padding = _pair("padding", layer.padding, 0)  # type: ignore[attr-defined]
    for k, p in zip(kernel, padding, strict=True):
        if 2 * p > k:
            raise SpecError("padding", f"pool padding must be at most half the kernel size, got {p} for {k}")
    object.__setattr__(layer, "kernel_size", kernel)
    object.__setattr__(layer, "stride", stride)
    object.__setattr__(layer, "padding", padding)


@dataclass(frozen=True)
class MaxPool2d:
    """``torch.nn.MaxPool2d`` (``ceil_mode=False``); ``stride`` defaults to ``kernel_size``."""

    kernel_size: int | tuple[int, int]
    stride: int | tuple[int, int] | None = None
    padding: int | tuple[int, int] = 0
    dilation: int | tuple[int, int] = 1

    prefix = "pool"

    def __post_init__(self) -> None:
        _pool_pairs(self)
        object.__setattr__(self, "dilation", _pair("dilation", self.dilation, 1))

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        c, h, w = _image_shape("kernel_size", input_shape)
        return (c, *_window_output((h, w), self.kernel_size, self.stride, self.padding, self.dilation))


@dataclass(frozen=True)
class AvgPool2d:
    """``torch.nn.AvgPool2d`` (``ceil_mode=False``, no divisor override); ``stride`` defaults to
    ``kernel_size``; ``count_include_pad`` as torch (padding zeros count in the divisor)."""

    kernel_size: int | tuple[int, int]
    stride: int | tuple[int, int] | None = None
    padding: int | tuple[int, int] = 0
    count_include_pad: bool = True

    prefix = "avgpool"

    def __post_init__(self) -> None:
        _pool_pairs(self)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        c, h, w = _image_shape("kernel_size", input_shape)
        return (c, *_window_output((h, w), self.kernel_size, self.stride, self.padding, (1, 1)))


@dataclass(frozen=True)
class LocalResponseNorm:
    """``torch.nn.LocalResponseNorm``: across channels, ``D = k + (α/n)·Σ_window x²``, ``z = x·D^−β``."""

    size: int
    alpha: float = 1e-4
    beta: float = 0.75
    k: float = 1.0

    prefix = "lrn"

    def __post_init__(self) -> None:
        require_int("size", self.size, 1)
        require_float("alpha", self.alpha)
        require_float("beta", self.beta)
        require_float("k", self.k)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) < 2:
            raise SpecError("size", f"expected a (C, ...) input per sample, got shape {input_shape}")
        return input_shape


@dataclass(frozen=True)
class Flatten:
    """``torch.nn.Flatten()``: (C, H, W) per sample → (C·H·W,), in C order."""

    prefix = "flatten"

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (math.prod(input_shape),)


@dataclass(frozen=True)
class Dropout:
    """Inverted dropout with drop probability ``p``: ``z = x ⊙ m/(1−p)``. The keep mask ``m`` is
    data, drawn once per step before the run and given to both sides (see ``manual/convolution.md``)."""

    p: float = 0.5

    prefix = "dropout"

    def __post_init__(self) -> None:
        p = require_float("p", self.p, non_negative=True)
        if p > 1:
            raise SpecError("p", f"expected a probability in [0, 1], got {p:g}")

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return input_shape


@dataclass(frozen=True, eq=False)
class UserLayer:
    """A layer the user brings: their own hand ``forward``/``backward`` (the ``check_layer`` pair,
    either form) for a module type handgrad does not know (``check_model(custom_layers=...)``).

    ``params`` lists the module's parameters as (name, shape), named as the module names them
    (``weight``, ``lin.bias``); the hand functions receive and return them under those names.
    ``input_shape``/``out_shape`` are per sample, found by running the module once; ``prefix``
    names the stage (``mylayer1``). The twin runs the user's own module (a copy).
    """

    type_name: str
    params: tuple[tuple[str, tuple[int, ...]], ...]
    input_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    forward: object = field(repr=False, default=None)
    backward: object = field(repr=False, default=None)
    prefix: str = "user"

    def __post_init__(self) -> None:
        if not callable(self.forward) or not callable(self.backward):
            raise SpecError(
                "custom_layers", f"{self.type_name}: expected a (forward, backward) pair of callables"
            )

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if tuple(input_shape) != tuple(self.input_shape):
            raise SpecError(
                "input_shape", f"{self.type_name} was sized for inputs {self.input_shape}, got {input_shape}"
            )
        return tuple(self.out_shape)
