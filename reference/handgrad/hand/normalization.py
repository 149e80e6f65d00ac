r"""BatchNorm (1d, 2d) and LayerNorm, as ``torch.nn.BatchNorm1d`` / ``BatchNorm2d`` / ``LayerNorm``.

Pure NumPy, never imports torch. Layout is torch's: BatchNorm1d takes (N, C) or (N, C, L),
BatchNorm2d takes (N, C, H, W); the channel axis is 1 and the statistics run over every other
axis. LayerNorm normalizes over the trailing ``normalized_shape`` axes. Parameters and buffers are
keyed by torch's names (``weight``, ``bias``, ``running_mean``, ``running_var``,
``num_batches_tracked``) so a network engine can copy them one to one.

Symbols (the same in ``manual/normalization.md``; the BatchNorm cache uses the names of the
makemore "backprop ninja" exercise): ``m`` the number of values per channel (N, N·L or N·H·W),
``μ = bnmean``, ``x − μ = bndiff``, ``σ² = bnvar`` (the *biased* variance, divided by m),
``(σ² + ε)^{-1/2} = bnvar_inv``, ``x̂ = bnraw``, ``γ = weight``, ``β = bias``, ``δ = ∂L/∂y``.

Forward (training mode):

.. math::

    \mu = \frac1m \sum x \qquad \sigma^2 = \frac1m \sum (x-\mu)^2 \qquad
    \hat x = (x-\mu)(\sigma^2+\varepsilon)^{-1/2} \qquad y = \gamma \hat x + \beta

Backward, the compact three-term form (every sum over the m values of one channel):

.. math::

    \frac{\partial L}{\partial \hat x} = \gamma\,\delta \qquad
    \frac{\partial L}{\partial x} = \frac{(\sigma^2+\varepsilon)^{-1/2}}{m}
        \Big( m\,\frac{\partial L}{\partial \hat x} - \sum \frac{\partial L}{\partial \hat x}
              - \hat x \sum \frac{\partial L}{\partial \hat x}\,\hat x \Big)

    \frac{\partial L}{\partial \gamma} = \sum \delta\,\hat x \qquad
    \frac{\partial L}{\partial \beta} = \sum \delta

Running statistics (torch's update; the *unbiased* variance, ``f`` = momentum, or ``1/t`` with
``t = num_batches_tracked`` after its increment when ``momentum=None``):

.. math::

    \hat\mu \leftarrow (1-f)\,\hat\mu + f\,\mu \qquad
    \hat\sigma^2 \leftarrow (1-f)\,\hat\sigma^2 + f\,\frac{m}{m-1}\sigma^2

No hidden state: the updated buffers are new arrays in ``cache.state`` (the inputs are not
written to).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from handgrad.contract.spec import SpecError

# --- BatchNorm -----------------------------------------------------------------------------------


class BatchNormCache(NamedTuple):
    bnmean: np.ndarray  # μ per channel, broadcastable (1,C,1,…); running_mean in eval mode
    bndiff: np.ndarray  # x − μ   N,C,…
    bnvar: np.ndarray  # σ², the biased batch variance (1,C,1,…); running_var in eval mode
    bnvar_inv: np.ndarray  # (σ² + ε)^{-1/2}   1,C,1,…
    bnraw: np.ndarray  # x̂ = (x − μ)(σ² + ε)^{-1/2}   N,C,…
    weight: np.ndarray | None  # γ (C,), None without affine
    axes: tuple[int, ...]  # the statistics axes: every axis but 1
    m: int  # values per channel
    batch_stats: bool  # True when x̂ used the batch's own statistics (μ, σ² depend on x)
    state: dict[str, np.ndarray]  # the buffers after this forward (new arrays; {} without them)


def _channel_shape(x: np.ndarray) -> tuple[int, ...]:
    return (1, x.shape[1]) + (1,) * (x.ndim - 2)


def batchnorm_forward(
    x: np.ndarray,
    params: dict[str, np.ndarray],
    *,
    dims: int = 1,
    training: bool = True,
    eps: float = 1e-5,
    momentum: float | None = 0.1,
) -> tuple[np.ndarray, BatchNormCache]:
    r"""BatchNorm{dims}d as torch's module in ``training`` or eval mode.

    ``params``: ``weight`` and ``bias`` (C,) when affine (omit both for ``affine=False``);
    ``running_mean``, ``running_var`` (C,) and ``num_batches_tracked`` (a 0-d integer) when the
    module tracks running statistics (omit all three for ``track_running_stats=False``).

    Which statistics normalize (torch's ``bn_training``): the batch's when training, or when
    there are no running statistics at all (then even eval mode uses the batch); otherwise the
    running ones. Using the batch needs more than one value per channel (torch's error message).
    """
    expected = {1: (2, 3), 2: (4,)}.get(dims)
    if expected is None:
        raise SpecError("dims", f"expected 1 or 2 (BatchNorm1d, BatchNorm2d), got {dims!r}")
    if not isinstance(x, np.ndarray) or x.ndim not in expected:
        names = {1: "2-D (N, C) or 3-D (N, C, L)", 2: "4-D (N, C, H, W)"}[dims]
        raise SpecError("x", f"BatchNorm{dims}d expects {names} input, got shape {getattr(x, 'shape', x)}")
    c = x.shape[1]
    affine = "weight" in params
    tracking = "running_mean" in params
    keys = (("weight", "bias") if affine else ()) + (("running_mean", "running_var") if tracking else ())
    for key in keys:
        if np.shape(params[key]) != (c,):
            raise SpecError(key, f"expected shape ({c},) for {c} channels, got {np.shape(params[key])}")
    if momentum is not None and not 0 <= momentum <= 1:
        raise SpecError("momentum", f"expected a number in [0, 1] or None, got {momentum!r}")
    axes = (0,) + tuple(range(2, x.ndim))
    m = x.size // c if c else 0
    shape = _channel_shape(x)
    batch_stats = training or not tracking
    state: dict[str, np.ndarray] = {}
    if batch_stats:
        if m <= 1:
            raise SpecError(
                "x",
                "Expected more than 1 value per channel when training, got input size "
                f"{tuple(x.shape)} (torch raises this too; use eval mode with running statistics)",
            )
        bnmean = x.mean(axis=axes, keepdims=True)  # μ = (1/m) Σ x   1,C,1,…
        bndiff = x - bnmean  # x − μ   N,C,…
        bnvar = (bndiff * bndiff).mean(axis=axes, keepdims=True)  # σ² = (1/m) Σ (x−μ)², biased
    else:
        bnmean = params["running_mean"].reshape(shape)  # eval: μ̂   1,C,1,…
        bndiff = x - bnmean  # x − μ̂   N,C,…
        bnvar = params["running_var"].reshape(shape)  # eval: σ̂²   1,C,1,…
    bnvar_inv = 1.0 / np.sqrt(bnvar + eps)  # (σ² + ε)^{-1/2}   1,C,1,…
    bnraw = bndiff * bnvar_inv  # x̂   N,C,…
    out = bnraw * params["weight"].reshape(shape) + params["bias"].reshape(shape) if affine else bnraw
    if tracking:
        count = np.asarray(params.get("num_batches_tracked", 0)).astype(np.int64)
        if training:
            count = count + 1  # torch increments before it reads the factor
            f = 1.0 / float(count) if momentum is None else momentum  # cumulative average or EMA
            mean_c = bnmean.reshape(c)
            var_unbiased = bnvar.reshape(c) * (m / (m - 1))  # Bessel: the running var is unbiased
            state = {
                "running_mean": (1 - f) * params["running_mean"] + f * mean_c,  # μ̂ ← (1−f)μ̂ + fμ
                "running_var": (1 - f) * params["running_var"] + f * var_unbiased,  # σ̂² ← …
                "num_batches_tracked": np.asarray(count, dtype=np.int64),
            }
        else:
            state = {
                "running_mean": params["running_mean"].copy(),
                "running_var": params["running_var"].copy(),
                "num_batches_tracked": np.asarray(count, dtype=np.int64),
            }
    weight = params["weight"] if affine else None
    cache = BatchNormCache(bnmean, bndiff, bnvar, bnvar_inv, bnraw, weight, axes, m, batch_stats, state)
    return out, cache


def batchnorm_backward(dout: np.ndarray, cache: BatchNormCache) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    r"""Gradients of :func:`batchnorm_forward` (the module docstring's three-term form).

    With the running statistics (eval mode) μ̂ and σ̂² are constants, so only the direct term is
    left: ``∂L/∂x = γ δ (σ̂² + ε)^{-1/2}``.
    """
    shape = _channel_shape(dout)  # 1,C,1,…
    grads: dict[str, np.ndarray] = {}
    if cache.weight is not None:
        grads["weight"] = (dout * cache.bnraw).sum(axis=cache.axes)  # ∂L/∂γ = Σ δ x̂   C
        grads["bias"] = dout.sum(axis=cache.axes)  # ∂L/∂β = Σ δ   C
        dbnraw = dout * cache.weight.reshape(shape)  # ∂L/∂x̂ = γ δ   N,C,…
    else:
        dbnraw = dout  # ∂L/∂x̂ = δ   N,C,…
    if not cache.batch_stats:
        return dbnraw * cache.bnvar_inv, grads  # ∂L/∂x = ∂L/∂x̂ (σ̂²+ε)^{-1/2}   N,C,…
    m = cache.m
    term2 = dbnraw.sum(axis=cache.axes, keepdims=True)  # Σ ∂L/∂x̂ (through μ)   1,C,1,…
    term3 = cache.bnraw * (dbnraw * cache.bnraw).sum(axis=cache.axes, keepdims=True)  # x̂ Σ ∂L/∂x̂ x̂ (σ²)
    dx = cache.bnvar_inv / m * (m * dbnraw - term2 - term3)  # ∂L/∂x, three terms   N,C,…
    return dx, grads


# --- LayerNorm -----------------------------------------------------------------------------------


class LayerNormCache(NamedTuple):
    xhat: np.ndarray  # x̂ = (x − μ) r   …,D…
    rstd: np.ndarray  # r = (σ² + ε)^{-1/2}, σ² biased over the normalized axes   …,1…
    weight: np.ndarray | None  # γ (normalized_shape) or None without elementwise_affine
    has_bias: bool
    axes: tuple[int, ...]  # the normalized (trailing) axes
    D: int  # values per normalized group (the product of normalized_shape)


def layernorm_forward(
    x: np.ndarray,
    params: dict[str, np.ndarray],
    *,
    normalized_shape: int | tuple[int, ...],
    eps: float = 1e-5,
) -> tuple[np.ndarray, LayerNormCache]:
    r"""LayerNorm as ``torch.nn.LayerNorm(normalized_shape)``: per sample (every leading index),
    over the trailing axes, with the biased variance (there are no running statistics):

    .. math::

        \mu = \frac1D \sum x \quad \sigma^2 = \frac1D \sum (x-\mu)^2 \quad
        \hat x = (x-\mu)\,r,\ r = (\sigma^2+\varepsilon)^{-1/2} \quad y = \gamma \odot \hat x + \beta

    ``params``: ``weight`` (and ``bias``) of shape ``normalized_shape``; omit ``weight`` for
    ``elementwise_affine=False``, omit ``bias`` alone for ``bias=False``. D = 1 is allowed (as
    torch: x̂ is then 0 and y = β).
    """
    single = isinstance(normalized_shape, (int, np.integer))
    shape = (normalized_shape,) if single else tuple(normalized_shape)
    k = len(shape)
    if not isinstance(x, np.ndarray) or k == 0 or x.ndim < k or tuple(x.shape[x.ndim - k :]) != shape:
        raise SpecError(
            "x", f"expected input ending in normalized_shape {shape}, got shape {getattr(x, 'shape', x)}"
        )
    for key in ("weight", "bias"):
        if key in params and np.shape(params[key]) != shape:
            raise SpecError(key, f"expected shape {shape}, got {np.shape(params[key])}")
    if "bias" in params and "weight" not in params:
        raise SpecError("bias", "a bias without a weight: torch has both or neither or weight alone")
    axes = tuple(range(x.ndim - k, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)  # μ   …,1…
    xc = x - mean  # x − μ   …,D…
    var = (xc * xc).mean(axis=axes, keepdims=True)  # σ² (biased)   …,1…
    rstd = 1.0 / np.sqrt(var + eps)  # r = (σ² + ε)^{-1/2}   …,1…
    xhat = xc * rstd  # x̂   …,D…
    out = xhat
    weight = params.get("weight")
    if weight is not None:
        out = xhat * weight  # γ ⊙ x̂
    if "bias" in params:
        out = out + params["bias"]  # + β
    return out, LayerNormCache(xhat, rstd, weight, "bias" in params, axes, int(np.prod(shape)))


def layernorm_backward(dout: np.ndarray, cache: LayerNormCache) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    r"""The same three terms as BatchNorm, summed over the normalized axes of one sample:

    .. math::

        g = \gamma \odot \delta \qquad
        \frac{\partial L}{\partial x} = \frac{r}{D}\Big(D\,g - \sum g - \hat x \sum g\,\hat x\Big)

        \frac{\partial L}{\partial \gamma} = \sum_{\text{leading}} \delta \odot \hat x \qquad
        \frac{\partial L}{\partial \beta} = \sum_{\text{leading}} \delta
    """
    lead = tuple(range(dout.ndim - len(cache.axes)))
    grads: dict[str, np.ndarray] = {}
    if cache.weight is not None:
        grads["weight"] = (dout * cache.xhat).sum(axis=lead)  # ∂L/∂γ = Σ δ ⊙ x̂   normalized_shape
        g = dout * cache.weight  # g = ∂L/∂x̂ = γ ⊙ δ   …,D…
    else:
        g = dout  # g = ∂L/∂x̂ = δ   …,D…
    if cache.has_bias:
        grads["bias"] = dout.sum(axis=lead)  # ∂L/∂β = Σ δ   normalized_shape
    D = cache.D
    term2 = g.sum(axis=cache.axes, keepdims=True)  # Σ g (through μ)   …,1…
    term3 = cache.xhat * (g * cache.xhat).sum(axis=cache.axes, keepdims=True)  # x̂ Σ g x̂ (through σ²)
    dx = cache.rstd / D * (D * g - term2 - term3)  # ∂L/∂x, three terms   …,D…
    return dx, grads
