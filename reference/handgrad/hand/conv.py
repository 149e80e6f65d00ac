r"""Convolution, pooling, local response norm, flatten and dropout, as ``torch.nn.functional``.

Pure NumPy, never imports torch. Layout is torch's: activations NCHW, conv weights
``W`` of shape (C_out, C_in/G, kH, kW), bias ``b`` of shape (C_out,). Each layer is a pair
``*_forward(x, params or options) -> (out, cache)`` / ``*_backward(dout, cache) -> (dx, grads)``.

Symbols (the same in ``manual/convolution.md``): ``s`` stride, ``p`` padding, ``d`` dilation,
``G`` groups, ``C_g = C_in/G`` input channels per group, ``O_g = C_out/G`` output channels per
group, ``x̃`` the input padded by ``p`` on each side, ``δ = ∂L/∂out`` the upstream gradient.
Every size is per axis (``s = (s_h, s_w)`` and so on); formulas are written for one axis where
the other is the same.

Output size (torch, ``ceil_mode=False``):

.. math::

    H_o = \left\lfloor \frac{H + 2p - d(k-1) - 1}{s} \right\rfloor + 1

Speed: a window view of ``x̃`` (``sliding_window_view``, no copy) is laid out once as the im2col
matrix and multiplied in one (batched over groups) matmul. The backward's scatter back to pixels
(col2im) loops over the kH·kW kernel taps, never over pixels, and never uses ``np.add.at``; it
reads the window gradients in the matmul's own order (channels outer). No function writes into an
array it was given (an output may be a view of one: Flatten's reshape); the hand network relies on
that when it keeps its terms uncopied.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from handgrad.contract.spec import SpecError, require_float, require_int

Pair = tuple[int, int]

# --- validation ----------------------------------------------------------------------------------


def _pair(field: str, value: int | tuple[int, int], minimum: int) -> Pair:
    """An int or an (h, w) pair, each ``>= minimum`` (as torch's ``_pair``); else SpecError."""
    items = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(items) != 2:
        raise SpecError(field, f"expected an int or a pair (h, w), got {value!r}")
    h = require_int(field, items[0], minimum)
    w = require_int(field, items[1], minimum)
    return h, w


def _require_nchw(field: str, x: np.ndarray) -> None:
    if not isinstance(x, np.ndarray) or x.ndim != 4:
        shape = getattr(x, "shape", None)
        raise SpecError(field, f"expected a 4-D array (N, C, H, W), got shape {shape}")


def output_size(hw: Pair, kernel_size: Pair, stride: Pair, padding: Pair, dilation: Pair) -> Pair:
    """``H_o = ⌊(H + 2p − d(k−1) − 1)/s⌋ + 1`` per axis; SpecError('kernel_size') when the
    (dilated) kernel is larger than the padded input, i.e. when an output size would be ≤ 0."""
    sizes = []
    for axis, n, k, s, p, d in zip("HW", hw, kernel_size, stride, padding, dilation, strict=True):
        span = d * (k - 1) + 1  # the dilated kernel's extent
        if span > n + 2 * p:
            raise SpecError(
                "kernel_size",
                f"kernel {k} (dilation {d}, extent {span}) is larger than the padded input "
                f"{axis}: {n} + 2·{p} = {n + 2 * p}; the output size would be "
                f"{(n + 2 * p - span) // s + 1} (must be >= 1)",
            )
        sizes.append((n + 2 * p - span) // s + 1)
    return sizes[0], sizes[1]


def _check_pool_padding(kernel_size: Pair, padding: Pair) -> None:
    """torch refuses pool padding above half the (undilated) kernel size: ``2p <= k``."""
    for k, p in zip(kernel_size, padding, strict=True):
        if 2 * p > k:
            raise SpecError("padding", f"pool padding must be at most half the kernel size, got {p} for {k}")


# --- shared geometry: windows, im2col, col2im -----------------------------------------------------


def _pad(x: np.ndarray, padding: Pair, value: float = 0.0) -> np.ndarray:
    """x̃: ``x`` padded by ``p_h`` rows and ``p_w`` columns on each side with ``value``."""
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    n, c, h, w = x.shape
    xp = np.full((n, c, h + 2 * ph, w + 2 * pw), value, dtype=x.dtype)  # N,C,Hp,Wp
    xp[:, :, ph : ph + h, pw : pw + w] = x  # (np.pad does the same, several times slower)
    return xp


def _unpad(xp: np.ndarray, padding: Pair) -> np.ndarray:
    """Crop the padding back off: ∂L/∂x = ∂L/∂x̃ restricted to the real pixels."""
    ph, pw = padding
    return xp[:, :, ph : xp.shape[2] - ph, pw : xp.shape[3] - pw]  # N,C,H,W


def _windows(xp: np.ndarray, kernel_size: Pair, stride: Pair, dilation: Pair, out_hw: Pair) -> np.ndarray:
    """View (no copy) ``win[n, c, i, j, u, v] = x̃[n, c, i·s_h + u·d_h, j·s_w + v·d_w]``."""
    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = kernel_size, stride, dilation, out_hw
    span = (dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    win = sliding_window_view(xp, span, axis=(2, 3))  # N,C,Hp-spanH+1,Wp-spanW+1,spanH,spanW
    return win[:, :, : (ho - 1) * sh + 1 : sh, : (wo - 1) * sw + 1 : sw, ::dh, ::dw]  # N,C,Ho,Wo,kH,kW


def _tap_slice(u: int, v: int, stride: Pair, dilation: Pair, out_hw: Pair) -> tuple[slice, slice]:
    """The pixels of x̃ that kernel tap (u, v) touches, one per output position (i, j):
    rows ``u·d_h + i·s_h`` for i < H_o, columns ``v·d_w + j·s_w`` for j < W_o."""
    (sh, sw), (dh, dw), (ho, wo) = stride, dilation, out_hw
    return (
        slice(u * dh, u * dh + (ho - 1) * sh + 1, sh),
        slice(v * dw, v * dw + (wo - 1) * sw + 1, sw),
    )


def _col2im(dwin: np.ndarray, padded_hw: Pair, stride: Pair, dilation: Pair) -> np.ndarray:
    """Scatter-add window gradients back onto the padded image (the adjoint of :func:`_windows`).

    ``dwin[n, c, u, v, i, j]`` is ∂L/∂win[n, c, i, j, u, v]; each tap (u, v) adds its whole
    (H_o, W_o) plane onto the strided pixels it read, ``x̃[i·s + u·d, j·s + v·d]``. Pixels read by
    several windows (overlap) receive the sum. One loop over kH·kW taps, none over pixels. The
    two leading axes pass through in their order: (C, N, ...) in gives ∂L/∂x̃ as (C, N, Hp, Wp).
    """
    n, c, kh, kw, ho, wo = dwin.shape
    dxp = np.zeros((n, c, *padded_hw), dtype=dwin.dtype)  # N,C,Hp,Wp (or C,N,Hp,Wp)
    for u in range(kh):
        for v in range(kw):
            rows, cols = _tap_slice(u, v, stride, dilation, (ho, wo))
            dxp[:, :, rows, cols] += dwin[:, :, u, v]  # ∂L/∂x̃[i·s+u·d, j·s+v·d] += ∂L/∂win[i,j,u,v]
    return dxp


# --- Conv2d --------------------------------------------------------------------------------------


class ConvCache(NamedTuple):
    cols: np.ndarray  # im2col X̃: cols[g, (c,u,v), (n,i,j)] = x̃[n, g·C_g+c, i·s+u·d, j·s+v·d]
    W: np.ndarray  # C_out, C_g, kH, kW
    x_shape: tuple[int, int, int, int]  # N, C_in, H, W
    padded_hw: Pair  # H + 2p_h, W + 2p_w
    out_hw: Pair  # H_o, W_o
    stride: Pair
    padding: Pair
    dilation: Pair
    groups: int
    has_bias: bool


def conv2d_forward(
    x: np.ndarray,
    params: dict[str, np.ndarray],
    *,
    stride: int | Pair = 1,
    padding: int | Pair = 0,
    dilation: int | Pair = 1,
    groups: int = 1,
) -> tuple[np.ndarray, ConvCache]:
    r"""Conv2d as ``torch.nn.functional.conv2d``: a cross-correlation (the kernel is not flipped).

    With ``g = ⌊o / O_g⌋`` the group of output channel ``o``:

    .. math::

        z[n,o,i,j] = b[o] + \sum_{c<C_g}\sum_{u<k_H}\sum_{v<k_W}
            W[o,c,u,v]\; \tilde x[n,\, g C_g + c,\, i s_h + u d_h,\, j s_w + v d_w]

    As one matmul (batched over groups): lay each window out as a column (im2col),
    ``cols[g] = X̃_g`` of shape (C_g·kH·kW, N·H_o·W_o), flatten the kernel ``W_g`` to
    (O_g, C_g·kH·kW), then ``Z_g = W_g X̃_g + b_g`` and unfold Z_g's columns back to pixels.

    ``params``: ``W`` (C_out, C_in/G, kH, kW) and optionally ``b`` (C_out,).
    """
    _require_nchw("x", x)
    W = params["W"]
    if not isinstance(W, np.ndarray) or W.ndim != 4:
        raise SpecError("W", f"expected a 4-D weight (C_out, C_in/groups, kH, kW), got {W!r}")
    groups = require_int("groups", groups, 1)
    stride = _pair("stride", stride, 1)
    padding = _pair("padding", padding, 0)
    dilation = _pair("dilation", dilation, 1)
    n, c_in, h, w = x.shape
    c_out, c_g, kh, kw = W.shape
    if c_in % groups:
        raise SpecError("groups", f"input channels {c_in} are not divisible by groups {groups}")
    if c_out % groups:
        raise SpecError("groups", f"output channels {c_out} are not divisible by groups {groups}")
    if c_g != c_in // groups:
        raise SpecError(
            "W",
            f"weight has {c_g} input channels per group, expected C_in/groups = {c_in // groups}",
        )
    has_bias = params.get("b") is not None
    if has_bias and params["b"].shape != (c_out,):
        raise SpecError("b", f"expected shape ({c_out},), got {params['b'].shape}")
    out_hw = output_size((h, w), (kh, kw), stride, padding, dilation)
    ho, wo = out_hw
    o_g = c_out // groups

    xp = _pad(x, padding)  # N,C_in,Hp,Wp
    win = _windows(xp, (kh, kw), stride, dilation, out_hw)  # N,C_in,Ho,Wo,kH,kW (a view)
    win = win.reshape(n, groups, c_g, ho, wo, kh, kw)  # N,G,C_g,Ho,Wo,kH,kW (still a view)
    # im2col, the one copy: a column per window, Wo innermost so the copy streams along rows
    taps, pixels = c_g * kh * kw, n * ho * wo  # K = C_g·kH·kW rows, N·Ho·Wo columns
    cols = win.transpose(1, 2, 5, 6, 0, 3, 4).reshape(groups, taps, pixels)  # X̃_g   G,K,NHoWo
    w_mat = W.reshape(groups, o_g, taps)  # W_g   G,O_g,K
    z_mat = w_mat @ cols  # Z_g = W_g X̃_g   G,O_g,NHoWo
    z = np.empty((n, groups, o_g, ho, wo), dtype=z_mat.dtype)  # N,G,O_g,Ho,Wo
    z_view = z_mat.reshape(groups, o_g, n, ho, wo).transpose(2, 0, 1, 3, 4)  # N,G,O_g,Ho,Wo
    if has_bias:
        b = params["b"].reshape(groups, o_g, 1, 1)  # G,O_g,1,1
        np.add(z_view, b, out=z)  # z = W ⋆ x̃ + b[o]   N,G,O_g,Ho,Wo
    else:
        z[...] = z_view  # N,G,O_g,Ho,Wo
    z = z.reshape(n, c_out, ho, wo)  # N,C_out,Ho,Wo
    cache = ConvCache(
        cols, W, (n, c_in, h, w), xp.shape[2:], out_hw, stride, padding, dilation, groups, has_bias
    )
    return z, cache


def conv2d_backward(dout: np.ndarray, cache: ConvCache) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    r"""Gradients of :func:`conv2d_forward`, with ``δ = ∂L/∂z`` (N, C_out, H_o, W_o).

    Bias: every output pixel of channel ``o`` carries ``b[o]``:

    .. math:: \frac{\partial L}{\partial b[o]} = \sum_{n,i,j} \delta[n,o,i,j]

    With ``Δ_g`` the upstream gradient of group g's channels laid out as (O_g, N·H_o·W_o):

    Weights: a sum over windows of (upstream gradient × the input pixel that tap saw):

    .. math::

        \frac{\partial L}{\partial W[o,c,u,v]} = \sum_{n,i,j} \delta[n,o,i,j]\;
            \tilde x[n,\, g C_g + c,\, i s_h + u d_h,\, j s_w + v d_w]
        \quad\Longleftrightarrow\quad \partial L/\partial W_g = \Delta_g \tilde X_g^\top

    Input: each padded pixel collects from every (window, tap) that read it:

    .. math::

        \frac{\partial L}{\partial \tilde x[n,gC_g+c,h,w]} = \sum_{o \in g}\sum_{u,v}
            \sum_{\substack{i:\, i s_h + u d_h = h\\ j:\, j s_w + v d_w = w}}
            \delta[n,o,i,j]\, W[o,c,u,v]

    For ``s = 1`` substitute ``u' = k−1−u``: this is the *full* correlation of δ (zero-padded
    by ``d(k−1)``) with the kernel rotated 180° (``W[o,c,k−1−u',k−1−v']``) and in/out channels
    swapped; for ``s > 1`` δ is first dilated by ``s`` (``s−1`` zeros between entries). Here it
    is computed in its scatter form: ``∂L/∂X̃_g = W_gᵀ Δ_g`` (the window gradients), then col2im
    adds tap (u, v) back at ``i·s + u·d`` — which is where the flip lives. Finally
    ``∂L/∂x = ∂L/∂x̃`` with the ``p`` border cropped off.
    """
    cols, W = cache.cols, cache.W
    n, c_in, _, _ = cache.x_shape
    c_out, c_g, kh, kw = W.shape
    groups = cache.groups
    o_g = c_out // groups
    ho, wo = cache.out_hw

    grads: dict[str, np.ndarray] = {}
    d_mat = dout.reshape(n, groups, o_g, ho * wo).transpose(1, 2, 0, 3)  # G,O_g,N,HoWo
    d_mat = d_mat.reshape(groups, o_g, n * ho * wo)  # Δ_g   G,O_g,NHoWo
    w_mat = W.reshape(groups, o_g, c_g * kh * kw)  # W_g   G,O_g,K
    dW = d_mat @ cols.transpose(0, 2, 1)  # ∂L/∂W_g = Δ_g X̃_gᵀ (a sum over windows)   G,O_g,K
    grads["W"] = dW.reshape(c_out, c_g, kh, kw)  # C_out,C_g,kH,kW
    if cache.has_bias:
        grads["b"] = dout.sum(axis=(0, 2, 3))  # ∂L/∂b[o] = Σ_{n,i,j} δ[n,o,i,j]   C_out
    dcols = w_mat.transpose(0, 2, 1) @ d_mat  # ∂L/∂X̃_g = W_gᵀ Δ_g   G,K,NHoWo
    # col2im in dcols' own order, channels outer (each tap's plane is then read in one sweep)
    dwin = dcols.reshape(c_in, kh, kw, n, ho, wo).transpose(0, 3, 1, 2, 4, 5)  # C_in,N,kH,kW,Ho,Wo
    dxp = _col2im(dwin, cache.padded_hw, cache.stride, cache.dilation)  # ∂L/∂x̃   C_in,N,Hp,Wp
    dx = _unpad(dxp, cache.padding).transpose(1, 0, 2, 3)  # ∂L/∂x: ∂L/∂x̃ without the border
    return np.ascontiguousarray(dx), grads  # N,C_in,H,W


# --- MaxPool2d -----------------------------------------------------------------------------------


class MaxPoolCache(NamedTuple):
    tap: np.ndarray  # N,C,Ho,Wo: the winning tap u·kW + v inside each window
    index: np.ndarray  # N,C,Ho,Wo: the winner's flat index h·W + w in the unpadded plane (torch's)
    x_shape: tuple[int, int, int, int]
    padded_hw: Pair
    out_hw: Pair
    kernel_size: Pair
    stride: Pair
    padding: Pair
    dilation: Pair


def _pool_options(
    x: np.ndarray,
    kernel_size: int | Pair,
    stride: int | Pair | None,
    padding: int | Pair,
    dilation: int | Pair = 1,
) -> tuple[Pair, Pair, Pair, Pair, Pair]:
    _require_nchw("x", x)
    kernel = _pair("kernel_size", kernel_size, 1)
    step = kernel if stride is None else _pair("stride", stride, 1)  # torch: stride defaults to k
    pad = _pair("padding", padding, 0)
    dil = _pair("dilation", dilation, 1)
    _check_pool_padding(kernel, pad)
    out_hw = output_size(x.shape[2:], kernel, step, pad, dil)
    return kernel, step, pad, dil, out_hw


def _in_bounds(
    hw: Pair, kernel_size: Pair, stride: Pair, padding: Pair, dilation: Pair, out_hw: Pair
) -> np.ndarray:
    """``mask[i, j, u·kW + v]``: does tap (u, v) of window (i, j) land on a real pixel?"""
    axes = []
    for n, k, s, p, d, o in zip(hw, kernel_size, stride, padding, dilation, out_hw, strict=True):
        pos = np.arange(o)[:, None] * s + np.arange(k)[None, :] * d - p  # Ho,kH  (unpadded coord)
        axes.append((pos >= 0) & (pos < n))
    rows, cols = axes
    mask = rows[:, None, :, None] & cols[None, :, None, :]  # Ho,Wo,kH,kW
    return mask.reshape(out_hw[0], out_hw[1], -1)  # Ho,Wo,kH·kW


def maxpool2d_forward(
    x: np.ndarray,
    *,
    kernel_size: int | Pair,
    stride: int | Pair | None = None,
    padding: int | Pair = 0,
    dilation: int | Pair = 1,
) -> tuple[np.ndarray, MaxPoolCache]:
    r"""MaxPool2d as ``torch.nn.functional.max_pool2d`` (``ceil_mode=False``).

    .. math:: z[n,c,i,j] = \max_{u,v}\; \tilde x[n,c,\, i s_h + u d_h,\, j s_w + v d_w]

    with ``x̃`` padded by ``-inf`` (a padding cell never wins).

    Tie rule (found empirically on torch 2.13 CPU, and in its kernel ``val > maxval ||
    isnan(val)``): the winner is the **first** maximal element of the window in row-major scan
    order (u outer, v inner) among the *real* pixels. A window whose real pixels are all
    ``-inf`` picks its first real pixel. A NaN always wins, and among several NaNs the **last**
    one. Each window sends its gradient to its one winner only; a pixel that wins several
    overlapping windows receives the sum of their gradients.
    """
    kernel, step, pad, dil, out_hw = _pool_options(x, kernel_size, stride, padding, dilation)
    n, c, h, w = x.shape
    ho, wo = out_hw
    kk = kernel[0] * kernel[1]
    xp = _pad(x, pad, -np.inf)  # x̃ padded with -inf   N,C,Hp,Wp
    win = _windows(xp, kernel, step, dil, out_hw).reshape(n, c, ho, wo, kk)  # N,C,Ho,Wo,kH·kW
    z = win.max(axis=-1)  # z = max over the window (NaN propagates)   N,C,Ho,Wo
    real = _in_bounds((h, w), kernel, step, pad, dil, out_hw)  # Ho,Wo,kH·kW
    # NOTE: argmax of a boolean returns the first True: the first real maximal tap (torch's rule).
    tap = np.argmax((win == z[..., None]) & real, axis=-1)  # N,C,Ho,Wo
    is_nan = np.isnan(win)  # N,C,Ho,Wo,kH·kW
    if is_nan.any():  # torch keeps overwriting on NaN, so the last NaN of the window wins
        last_nan = kk - 1 - np.argmax(is_nan[..., ::-1], axis=-1)  # N,C,Ho,Wo
        tap = np.where(is_nan.any(axis=-1), last_nan, tap)  # N,C,Ho,Wo
    u, v = np.divmod(tap, kernel[1])  # N,C,Ho,Wo
    rows = np.arange(ho)[:, None] * step[0] + u * dil[0] - pad[0]  # N,C,Ho,Wo
    cols = np.arange(wo)[None, :] * step[1] + v * dil[1] - pad[1]  # N,C,Ho,Wo
    cache = MaxPoolCache(tap, rows * w + cols, (n, c, h, w), xp.shape[2:], out_hw, kernel, step, pad, dil)
    return z, cache


def maxpool2d_backward(dout: np.ndarray, cache: MaxPoolCache) -> tuple[np.ndarray, dict]:
    r"""Route each window's gradient to its single winner (see the tie rule above):

    .. math::

        \frac{\partial L}{\partial \tilde x[n,c,h,w]} =
            \sum_{(i,j):\ \text{winner}(i,j) = (h,w)} \delta[n,c,i,j]
    """
    kh, kw = cache.kernel_size
    n, c, _, _ = cache.x_shape
    ho, wo = cache.out_hw
    hit = cache.tap[..., None] == np.arange(kh * kw)  # [tap = (u,v)]   N,C,Ho,Wo,kH·kW
    dwin = np.where(hit, dout[..., None], 0.0)  # ∂L/∂win[i,j,u,v] = δ[i,j]·[tap = (u,v)]
    dwin = dwin.reshape(n, c, ho, wo, kh, kw).transpose(0, 1, 4, 5, 2, 3)  # N,C,kH,kW,Ho,Wo
    dxp = _col2im(dwin, cache.padded_hw, cache.stride, cache.dilation)  # Σ over windows   N,C,Hp,Wp
    return _unpad(dxp, cache.padding), {}  # ∂L/∂x   N,C,H,W


# --- AvgPool2d -----------------------------------------------------------------------------------


class AvgPoolCache(NamedTuple):
    divisor: np.ndarray  # Ho,Wo: kH·kW, or the count of real pixels (count_include_pad=False)
    x_shape: tuple[int, int, int, int]
    padded_hw: Pair
    out_hw: Pair
    kernel_size: Pair
    stride: Pair
    padding: Pair


def avgpool2d_forward(
    x: np.ndarray,
    *,
    kernel_size: int | Pair,
    stride: int | Pair | None = None,
    padding: int | Pair = 0,
    count_include_pad: bool = True,
) -> tuple[np.ndarray, AvgPoolCache]:
    r"""AvgPool2d as ``torch.nn.functional.avg_pool2d`` (``ceil_mode=False``, no divisor override).

    .. math:: z[n,c,i,j] = \frac{1}{D[i,j]} \sum_{u,v} \tilde x[n,c,\, i s_h + u,\, j s_w + v]

    ``x̃`` padded with zeros; ``D = kH·kW`` when ``count_include_pad`` (torch's default: zeros of
    the padding count), else ``D[i,j]`` = number of real pixels in window (i, j).
    """
    kernel, step, pad, dil, out_hw = _pool_options(x, kernel_size, stride, padding)
    n, c, h, w = x.shape
    xp = _pad(x, pad)  # N,C,Hp,Wp
    if count_include_pad:
        divisor = np.full(out_hw, float(kernel[0] * kernel[1]))  # Ho,Wo
    else:
        divisor = _in_bounds((h, w), kernel, step, pad, dil, out_hw).sum(axis=-1).astype(float)
    win = _windows(xp, kernel, step, dil, out_hw)  # N,C,Ho,Wo,kH,kW (a view)
    total = win.sum(axis=(4, 5))  # Σ_{u,v} x̃[i·s+u, j·s+v]   N,C,Ho,Wo
    z = total / divisor  # N,C,Ho,Wo
    return z, AvgPoolCache(divisor, (n, c, h, w), xp.shape[2:], out_hw, kernel, step, pad)


def avgpool2d_backward(dout: np.ndarray, cache: AvgPoolCache) -> tuple[np.ndarray, dict]:
    r"""Every tap of window (i, j), padding included, gets ``δ[i,j] / D[i,j]``:

    .. math::

        \frac{\partial L}{\partial \tilde x[n,c,h,w]} =
            \sum_{(i,j,u,v):\ i s_h + u = h,\ j s_w + v = w} \frac{\delta[n,c,i,j]}{D[i,j]}

    (the padding cells' share is then cropped off).
    """
    kh, kw = cache.kernel_size
    share = dout / cache.divisor  # ∂L/∂win[i,j,u,v] = δ[i,j] / D[i,j]   N,C,Ho,Wo
    dwin = np.broadcast_to(share[:, :, None, None], (*share.shape[:2], kh, kw, *share.shape[2:]))
    dxp = _col2im(dwin, cache.padded_hw, cache.stride, (1, 1))  # N,C,Hp,Wp
    return _unpad(dxp, cache.padding), {}  # ∂L/∂x   N,C,H,W


# --- LocalResponseNorm ---------------------------------------------------------------------------


class LRNCache(NamedTuple):
    x: np.ndarray  # N,C,...
    D: np.ndarray  # N,C,...: D = k + (α/n)·S, the base of the denominator
    size: int
    alpha: float
    beta: float
    k: float


def _channel_window_sum(a: np.ndarray, before: int, after: int) -> np.ndarray:
    """``out[:, c] = Σ_{j=c−before}^{c+after} a[:, j]`` with zeros outside [0, C)."""
    widths = [(0, 0)] * a.ndim
    widths[1] = (before, after)
    padded = np.pad(a, widths)  # N,C+before+after,...
    out = np.zeros_like(a)  # N,C,...
    c = a.shape[1]
    for offset in range(before + after + 1):
        out += padded[:, offset : offset + c]  # one shifted copy per window slot, not per pixel
    return out


def local_response_norm_forward(
    x: np.ndarray, *, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0
) -> tuple[np.ndarray, LRNCache]:
    r"""LocalResponseNorm across channels (axis 1) exactly as torch's
    ``F.local_response_norm`` (which zero-pads x² by ``⌊n/2⌋`` channels before and
    ``⌊(n−1)/2⌋`` after, then *averages* with ``avg_pool`` of size ``n``):

    .. math::

        S[c] = \sum_{j=c-\lfloor n/2\rfloor}^{c+\lfloor (n-1)/2\rfloor} x[j]^2 \qquad
        D[c] = k + \frac{\alpha}{n} S[c] \qquad
        z[c] = x[c]\, D[c]^{-\beta}

    ``n`` is ``size``; channels outside [0, C) contribute 0 but the divisor stays ``n`` (α is
    divided by ``n`` even where the window hangs over the edge). For even ``n`` the window is
    asymmetric: one more channel before than after.
    """
    size = require_int("size", size, 1)
    alpha = require_float("alpha", alpha)
    beta = require_float("beta", beta)
    k = require_float("k", k)
    if not isinstance(x, np.ndarray) or x.ndim < 3:
        raise SpecError("x", f"expected at least 3-D input (N, C, ...), got {getattr(x, 'shape', x)}")
    S = _channel_window_sum(x * x, size // 2, (size - 1) // 2)  # S = Σ_window x²   N,C,...
    D = k + (alpha / size) * S  # D = k + (α/n) S   N,C,...
    z = x * D**-beta  # z = x D^{−β}   N,C,...
    return z, LRNCache(x, D, size, alpha, beta, k)


def local_response_norm_backward(dout: np.ndarray, cache: LRNCache) -> tuple[np.ndarray, dict]:
    r"""Channel ``j`` enters its own output directly and the denominators of every ``c`` whose
    window holds it, i.e. ``c ∈ [j − ⌊(n−1)/2⌋, j + ⌊n/2⌋]`` (the mirrored window):

    .. math::

        \frac{\partial z[c]}{\partial x[j]} = [c=j]\, D[c]^{-\beta}
            - \frac{2\alpha\beta}{n}\, x[c]\, x[j]\, D[c]^{-\beta-1}\,[j \in \text{win}(c)]

    .. math::

        \frac{\partial L}{\partial x[j]} = \delta[j]\, D[j]^{-\beta}
            - \frac{2\alpha\beta}{n}\, x[j]
              \sum_{c=j-\lfloor (n-1)/2\rfloor}^{j+\lfloor n/2\rfloor}
              \delta[c]\, x[c]\, D[c]^{-\beta-1}
    """
    x, D, n, alpha, beta = cache.x, cache.D, cache.size, cache.alpha, cache.beta
    direct = dout * D**-beta  # δ[j] D[j]^{−β}   N,C,...
    t = dout * x * D ** (-beta - 1.0)  # t[c] = δ[c] x[c] D[c]^{−β−1}   N,C,...
    back = _channel_window_sum(t, (n - 1) // 2, n // 2)  # Σ_{c: j ∈ win(c)} t[c]   N,C,...
    dx = direct - (2.0 * alpha * beta / n) * x * back  # ∂L/∂x[j]   N,C,...
    return dx, {}


# --- Flatten -------------------------------------------------------------------------------------


class FlattenCache(NamedTuple):
    x_shape: tuple[int, ...]


def flatten_forward(x: np.ndarray) -> tuple[np.ndarray, FlattenCache]:
    """``nn.Flatten()`` (start_dim=1): (N, C, H, W) → (N, C·H·W) in C order (c, then h, then w)."""
    if not isinstance(x, np.ndarray) or x.ndim < 1:
        raise SpecError("x", f"expected an array with a batch axis, got {getattr(x, 'shape', x)}")
    return x.reshape(x.shape[0], -1), FlattenCache(x.shape)  # N,C·H·W


def flatten_backward(dout: np.ndarray, cache: FlattenCache) -> tuple[np.ndarray, dict]:
    """A reshape has the identity Jacobian: ∂L/∂x is δ put back into x's shape."""
    return dout.reshape(cache.x_shape), {}  # ∂L/∂x = reshape(δ)   N,C,H,W


# --- Dropout -------------------------------------------------------------------------------------


class DropoutCache(NamedTuple):
    mask: np.ndarray  # same shape as x: 1 where the element is kept, 0 where dropped
    scale: float  # 1/(1−p), or 0 when p = 1 (torch's special case)


def dropout_forward(x: np.ndarray, mask: np.ndarray, *, p: float) -> tuple[np.ndarray, DropoutCache]:
    r"""Inverted dropout with an explicit ``mask`` (drawn once, outside, and given to both sides):

    .. math:: z = x \odot m \,/\, (1-p)

    The mask is data, not something to compare: the hand side never draws it. ``p = 1`` gives
    zeros (torch uses scale 0 there rather than 1/0).
    """
    p = require_float("p", p, non_negative=True)
    if p > 1:
        raise SpecError("p", f"expected a probability in [0, 1], got {p:g}")
    mask = np.asarray(mask)
    if mask.shape != x.shape:
        raise SpecError("mask", f"expected the shape of x {x.shape}, got {mask.shape}")
    scale = 0.0 if p == 1 else 1.0 / (1.0 - p)
    return x * mask * scale, DropoutCache(mask, scale)  # z = x ⊙ m/(1−p)


def dropout_backward(dout: np.ndarray, cache: DropoutCache) -> tuple[np.ndarray, dict]:
    """The same mask and scale: ∂L/∂x = δ ⊙ m/(1−p)."""
    return dout * cache.mask * cache.scale, {}  # ∂L/∂x = δ ⊙ m/(1−p)
