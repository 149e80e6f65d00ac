"""Planted bugs of the convolution stack: the conv backward without the kernel flip, bias and
weight gradients over the wrong axes, max-pool ties, LRN's exponent, dropout without its scale;
AvgPool2d's divisor and Flatten's order in a small stack of their own."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from handgrad.hand import conv
from handgrad.mutants.registry import ALEX, Mutant

_CONV_FORWARD, _CONV_BACKWARD = conv.conv2d_forward, conv.conv2d_backward
_MAXPOOL_FORWARD = conv.maxpool2d_forward
_COL2IM = conv._col2im
_LRN_FORWARD = conv.local_response_norm_forward
_AVGPOOL_FORWARD, _FLATTEN_FORWARD = conv.avgpool2d_forward, conv.flatten_forward


@contextlib.contextmanager
def _swapped(module: Any, name: str, replacement: Any) -> Iterator[None]:
    original = getattr(module, name)
    setattr(module, name, replacement)
    try:
        yield
    finally:
        setattr(module, name, original)


def conv_backward_without_flip(dout, cache):  # noqa: ANN001, ANN201
    """Bug: ∂L/∂x correlates δ with W itself, not rot180(W): tap (u, v) goes back to (k−1−u, k−1−v)."""

    def col2im_no_flip(dwin, padded_hw, stride, dilation):  # noqa: ANN001, ANN202
        return _COL2IM(dwin[:, :, ::-1, ::-1], padded_hw, stride, dilation)

    with _swapped(conv, "_col2im", col2im_no_flip):
        return _CONV_BACKWARD(dout, cache)


def conv_backward_bias_wrong_axes(dout, cache):  # noqa: ANN001, ANN201
    """Bug: ∂L/∂b summed over (channels, H, W) instead of (batch, H, W)."""
    dx, grads = _CONV_BACKWARD(dout, cache)
    if "b" in grads:
        grads["b"] = dout.sum(axis=(1, 2, 3))  # N, equal to C_out only by accident
    return dx, grads


def conv_backward_dW_flipped(dout, cache):  # noqa: ANN001, ANN201
    """Bug: the flip put into ∂L/∂W (a convolution, not a correlation, of δ with x)."""
    dx, grads = _CONV_BACKWARD(dout, cache)
    grads["W"] = grads["W"][:, :, ::-1, ::-1].copy()
    return dx, grads


def col2im_without_flip(dwin, padded_hw, stride, dilation):  # noqa: ANN001, ANN201
    """Bug: tap (u, v) scattered back at the mirrored offset (k−1−u, k−1−v): no kernel flip."""
    return _COL2IM(dwin[:, :, ::-1, ::-1], padded_hw, stride, dilation)


def unpad_off_by_one(xp, padding):  # noqa: ANN001, ANN201
    """Bug: the crop starts one row and one column early."""
    ph, pw = padding
    return xp[:, :, ph - 1 : xp.shape[2] - ph - 1, pw - 1 : xp.shape[3] - pw - 1]


def pad_off_by_one(x, padding, value=0.0):  # noqa: ANN001, ANN201
    """Bug: one row/column too many before and one too few after (same output shape)."""
    ph, pw = padding
    widths = ((0, 0), (0, 0), (ph + 1, ph - 1), (pw + 1, pw - 1))
    return np.pad(x, widths, constant_values=value)


HELPER_BUGS = (
    # (helper of handgrad.hand.conv, its broken copy, the conv layer's first term it corrupts)
    ("_col2im", col2im_without_flip, "dL_dx"),
    ("_unpad", unpad_off_by_one, "dL_dx"),
    ("_pad", pad_off_by_one, "z"),
)


def conv_forward_padding_off_by_one(x, params, **options):  # noqa: ANN001, ANN201
    """Bug: one more padding row/column before and one fewer after (same output shape)."""
    with _swapped(conv, "_pad", pad_off_by_one):
        return _CONV_FORWARD(x, params, **options)


def lrn_forward_alpha_not_averaged(x, *, size, alpha, beta, k):  # noqa: ANN001, ANN201
    """Bug (the textbook/AlexNet-paper form): α multiplies the window *sum*, not its average."""
    return _LRN_FORWARD(x, size=size, alpha=alpha * size, beta=beta, k=k)


def maxpool_forward_keeping_x(x, **options):  # noqa: ANN001, ANN201
    z, cache = _MAXPOOL_FORWARD(x, **options)
    return z, (cache, x)


def maxpool_backward_to_every_tie(dout, kept):  # noqa: ANN001, ANN201
    """Bug: every element equal to its window's maximum receives the window's whole gradient."""
    cache, x = kept
    xp = conv._pad(x, cache.padding, -np.inf)
    win = conv._windows(xp, cache.kernel_size, cache.stride, cache.dilation, cache.out_hw)  # N,C,Ho,Wo,kH,kW
    top = win.max(axis=(-2, -1))[..., None, None]
    dwin = np.where(win == top, dout[..., None, None], 0.0).transpose(0, 1, 4, 5, 2, 3)  # N,C,kH,kW,Ho,Wo
    dxp = conv._col2im(dwin, cache.padded_hw, cache.stride, cache.dilation)
    return conv._unpad(dxp, cache.padding), {}


def lrn_backward_beta_exponent(dout, cache):  # noqa: ANN001, ANN201
    """Bug: the cross term uses D^{−β} where the derivative of D^{−β} gives D^{−β−1}."""
    x, D, n, alpha, beta = cache.x, cache.D, cache.size, cache.alpha, cache.beta
    back = conv._channel_window_sum(dout * x * D**-beta, (n - 1) // 2, n // 2)
    return dout * D**-beta - (2.0 * alpha * beta / n) * x * back, {}


def dropout_backward_without_scale(dout, cache):  # noqa: ANN001, ANN201
    """Bug: ∂L/∂x = δ ⊙ m, the 1/(1 − p) of inverted dropout forgotten in the backward."""
    return dout * cache.mask, {}


def avgpool_forward_padding_not_counted(x, **options):  # noqa: ANN001, ANN201
    """Bug: the average divides by the real pixels of a window only; torch's default
    count_include_pad=True counts the padding's zeros in the divisor (kH·kW)."""
    return _AVGPOOL_FORWARD(x, **{**options, "count_include_pad": False})


def flatten_forward_channels_last(x):  # noqa: ANN001, ANN201
    """Bug: Flatten in (h, w, c) order; nn.Flatten keeps torch's (c, h, w) order."""
    _, cache = _FLATTEN_FORWARD(x)
    return np.moveaxis(x, 1, -1).reshape(x.shape[0], -1), cache


def pooled_stack() -> Any:
    """Conv2d(pad 1) → ReLU → AvgPool2d(2, pad 1, count_include_pad) → Flatten → Linear on 5×5
    images: the padding enters the average's divisor, and Flatten's order reaches the Linear."""
    from handgrad.contract.conv_layers import AvgPool2d, Conv2d, Flatten
    from handgrad.contract.spec import Activation, Data, Dense, Network, Schedule
    from handgrad.contract.training import Loss, Optimizer  # fmt: skip
    from handgrad.scenarios.stack import stack_experiment

    rng = np.random.default_rng(6)
    layers = (Conv2d(1, 2, 3, padding=1), Activation("relu"), AvgPool2d(2, 2, 1), Flatten(), Dense(18, 2))
    network = Network(layers, (1, 5, 5))
    data = Data(rng.standard_normal((4, 1, 5, 5)), rng.standard_normal((4, 2)))
    return stack_experiment(
        "pooled-stack", network, Loss(), Optimizer("sgd", 0.1), data, Schedule("batch"), steps=2, seed=6
    )


MUTANTS: tuple[Mutant, ...] = (
    # convolution
    Mutant(
        "conv-no-kernel-flip",
        "conv",
        ((conv, "conv2d_backward", conv_backward_without_flip),),
        "alexnet-mini",
        ALEX,
        "pool1.dL_dout",
    ),  # conv2's ∂L/∂x
    Mutant(
        "conv-db-wrong-axes",
        "conv",
        ((conv, "conv2d_backward", conv_backward_bias_wrong_axes),),
        "alexnet-mini",
        (*ALEX, "--channels", "8,8"),
        "conv2.dL_db",
    ),  # C_out = N = 8
    Mutant(
        "conv-dW-flipped",
        "conv",
        ((conv, "conv2d_backward", conv_backward_dW_flipped),),
        "alexnet-mini",
        ALEX,
        "conv2.dL_dW",
    ),
    Mutant(
        "maxpool-grad-to-every-tie",
        "conv",
        (
            (conv, "maxpool2d_forward", maxpool_forward_keeping_x),
            (conv, "maxpool2d_backward", maxpool_backward_to_every_tie),
        ),
        "alexnet-mini",
        ALEX,
        "lrn2.dL_dout",
    ),  # pool2's ∂L/∂x
    Mutant(
        "lrn-beta-exponent",
        "conv",
        ((conv, "local_response_norm_backward", lrn_backward_beta_exponent),),
        "alexnet-mini",
        ALEX,
        "conv2.dL_da",
    ),  # lrn2's ∂L/∂x
    Mutant(
        "dropout-backward-no-scale",
        "conv",
        ((conv, "dropout_backward", dropout_backward_without_scale),),
        "alexnet-mini",
        ALEX,
        "dense1.dL_da",
    ),  # dropout1's ∂L/∂x
    Mutant(
        "conv-padding-off-by-one",
        "conv",
        ((conv, "conv2d_forward", conv_forward_padding_off_by_one),),
        "alexnet-mini",
        ALEX,
        "conv1.z",
    ),
    Mutant(
        "lrn-alpha-not-averaged",
        "conv",
        ((conv, "local_response_norm_forward", lrn_forward_alpha_not_averaged),),
        "alexnet-mini",
        ALEX,
        "lrn1.out",
    ),
)

POOL_STACK_MUTANTS: tuple[Mutant, ...] = (
    Mutant(
        "stack-avgpool-padding-not-counted", "conv",
        ((conv, "avgpool2d_forward", avgpool_forward_padding_not_counted),), "pooled-stack", (),
        "avgpool1.out", build=pooled_stack,
    ),
    Mutant(
        "stack-flatten-channels-last", "conv",
        ((conv, "flatten_forward", flatten_forward_channels_last),), "pooled-stack", (), "flatten1.out",
        build=pooled_stack,
    ),
)  # fmt: skip
