r"""Losses: the loss L of a batch and its gradient ∂L/∂ŷ, as the torch module of the same name.

Every loss is an element-wise (or row-wise) loss ℓ followed by torch's ``reduction``:

.. math::

    L = \frac{1}{D}\sum_i \ell_i \;(\text{mean}), \qquad L = \sum_i \ell_i \;(\text{sum}), \qquad
    L = \ell \;(\text{none})

with D = n, the number of elements of ŷ, except for the class losses (below). The backward takes an
upstream gradient u = ∂(whatever)/∂L (a scalar for mean and sum, an array of ℓ's shape for none;
1 by default) and returns u ⊙ ∂L/∂ŷ; with c = u/D (mean), u (sum or none), d = ŷ − y:

============  ==========================================  ==========================================
loss          ℓ                                           ∂L/∂ŷ
============  ==========================================  ==========================================
mse           d²  (× ½ with ``half``)                     c·2d  (c·d with ``half``)
l1            |d|                                         c·sgn(d)            NOTE: sgn(0) = 0
smooth_l1     ½d²/β  if |d| < β,  else |d| − ½β           c·d/β  if |d| < β, else c·sgn(d); β = 0: l1
huber         ½d²  if |d| < δ,  else δ(|d| − ½δ)          c·d  if |d| < δ, else c·δ·sgn(d)
bce           −[y·max(log p, −100) + (1−y)·max(log(1−p), −100)]    c·(p − y)/max((1−p)p, ε₃₂)
bce_logits    (1−y)x − w⁺·log σ(x),  w⁺ = 1 + (pw − 1)y   c·((pw·y + 1 − y)σ(x) − pw·y)
============  ==========================================  ==========================================

NOTE: BCE clamps each log at −100 and the gradient's denominator at ε₃₂ = float32(1e-12)
= 9.999999960041972e-13 (torch's constant is a float32 literal, also in float64), so that both
sides agree at p ∈ {0, 1} instead of one of them producing inf. BCEWithLogits is the
numerically stable form: log σ(x) = min(x, 0) − log1p(exp(−|x|)) never overflows.

Class losses on an (N, C) input. ``cross_entropy`` takes logits x and works on the log-softmax
with the max shift,

.. math::

    \log p_{ic} = (x_{ic} - m_i) - \log\textstyle\sum_k e^{x_{ik} - m_i}, \quad
    m_i = \max_k x_{ik}

(so logits of ±50, or ±1000, stay finite); ``nll`` takes log p directly. Both are written with a
target-weight matrix T (N, C): ℓ_i = −Σ_c T_ic log p_ic, and

* class ids t_i (``y`` one column): T_ic = (1 − ε)·w_{t_i}·[c = t_i] + (ε/C)·w_c, with ε the
  label smoothing and w the class weights (all 1 by default); a row whose id is ``ignore_index``
  has T_i = 0, and D = Σ over the other rows of w_{t_i} (the weighted count, as ``NLLLoss``);
* class probabilities q (``y`` with C columns, cross_entropy only): T_ic = w_c·q̃_ic with
  q̃ = (1 − ε)q + ε/C, and D = N.  NOTE: here torch divides by N, not by the weights.

The gradient goes through the log-softmax (its backward is torch's, on exp(log p)):

.. math::

    \frac{\partial L}{\partial \log p_{ic}} = -c_i T_{ic}, \qquad
    \frac{\partial L}{\partial x_{ic}} = \frac{\partial L}{\partial \log p_{ic}}
        - p_{ic}\sum_k \frac{\partial L}{\partial \log p_{ik}}
    = c_i\,\big(p_{ic}\textstyle\sum_k T_{ik} - T_{ic}\big)

For ``nll`` the first equation is the gradient. With every row ignored, mean is 0/0 = NaN, as
torch.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from handgrad.contract.training import Loss

BCE_LOG_FLOOR = -100.0
# NOTE: torch's BCE backward clamps (1 − p)p at ``EPSILON = 1e-12`` written as a float32 constant,
# so in float64 too the floor is float32(1e-12) = 9.999999960041972e-13, not 1e-12: at p = 1e-12
# the product (1 − p)p ≈ 0.999999999999e-12 is *not* clamped, and at p = 0 the gradient is
# −y/9.99999996e-13 (≈ −1.000000004·y·1e12).
BCE_GRAD_EPS = float(np.float32(1e-12))


class LossCache(NamedTuple):
    """What the backward needs: the loss's input ŷ (logits for bce_logits and cross_entropy,
    log-probabilities for nll), the targets, D (the mean's divisor), the target form, and for
    the class losses log p (log-softmax; ŷ itself for nll) and the target weights T."""

    yhat: np.ndarray
    y: np.ndarray
    divisor: float  # D
    form: str  # "value", "index" or "probability"
    logp: np.ndarray | None = None  # N,C
    T: np.ndarray | None = None  # N,C
    d: np.ndarray | None = None  # ŷ − y of the element-wise losses, made once for both passes


# --- softmax and log-softmax, the one implementation (the convolution family uses it too) -------


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """log p = (x − m) − log Σ exp(x − m) with m the row maximum: no overflow at any logit."""
    shifted = x - np.max(x, axis=axis, keepdims=True)  # N,C: x − m
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))  # N,C


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """p = exp(x − m) / Σ exp(x − m)."""
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))  # N,C
    return e / np.sum(e, axis=axis, keepdims=True)


def log_softmax_backward(dlogp: np.ndarray, logp: np.ndarray, axis: int = -1) -> np.ndarray:
    """∂/∂x = ∂/∂log p − p·Σ_k ∂/∂log p_k, with p = exp(log p) (torch's form)."""
    return dlogp - np.exp(logp) * np.sum(dlogp, axis=axis, keepdims=True)  # N,C


def log_sigmoid(x: np.ndarray) -> np.ndarray:
    """log σ(x) = min(x, 0) − log1p(exp(−|x|)), finite for every finite x."""
    return np.minimum(x, 0) - np.log1p(np.exp(-np.abs(x)))


def sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # exp(−x) = inf for x < −709 gives σ = 0, as torch
        return 1 / (1 + np.exp(-x))


# --- the forward ------------------------------------------------------------------------------


def _reduce(spec: Loss, ell: np.ndarray, divisor: float) -> np.ndarray:
    if spec.reduction == "none":
        return ell
    total = ell.sum()
    if spec.reduction == "sum":
        return total
    if divisor == 0:
        with np.errstate(invalid="ignore", divide="ignore"):  # every row ignored: 0/0 = NaN, as torch
            return total / divisor
    return total / divisor


def _class_targets(spec: Loss, y: np.ndarray, n_classes: int, form: str) -> tuple[np.ndarray, float]:
    """(T, D) of the docstring: the target weights of each class per row, and the mean's divisor."""
    n = y.shape[0]
    w = np.ones(n_classes) if spec.weight is None else np.asarray(spec.weight, dtype=np.float64)  # C
    eps = spec.label_smoothing
    if form == "probability":
        q = y * (1 - eps) + eps / n_classes if eps > 0 else y  # q̃ = (1 − ε)q + ε/C
        return w * q, float(n)  # N,C ; D = N
    ids = y[:, 0].astype(np.int64)  # N
    keep = ids != spec.ignore_index  # N
    safe = np.where(keep, ids, 0)  # N
    w_t = np.where(keep, w[safe], 0.0)  # N: w_{t_i}, 0 where ignored
    T = np.zeros((n, n_classes))  # N,C
    T[np.arange(n), safe] = (1 - eps) * w_t if eps > 0 else w_t
    if eps > 0:
        T += (eps / n_classes) * w * keep[:, None]  # + (ε/C)·w_c on rows kept
    return T, float(np.sum(w_t))


def forward(spec: Loss, yhat: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, LossCache]:
    """L (a 0-d array; ℓ's shape for reduction none) and the cache for :func:`backward`."""
    kind = spec.kind
    form = spec.target_form(y.shape[1], yhat.shape[1])
    n = yhat.size
    if kind in ("cross_entropy", "nll"):
        T, divisor = _class_targets(spec, y, yhat.shape[1], form)
        T = T.astype(yhat.dtype)
        logp = log_softmax(yhat) if kind == "cross_entropy" else yhat  # N,C
        ell = -np.sum(T * logp, axis=1)  # N: ℓ_i = −Σ_c T_ic log p_ic
        L = _reduce(spec, ell, divisor)
        return np.asarray(L, dtype=yhat.dtype), LossCache(yhat, y, divisor, form, logp, T)
    d = yhat - y  # N,out
    if kind == "mse":
        ell = d * d
    elif kind == "l1" or (kind == "smooth_l1" and spec.beta == 0):  # torch: beta = 0 is L1
        ell = np.abs(d)
    elif kind == "smooth_l1":
        z = np.abs(d)
        ell = np.where(z < spec.beta, 0.5 * z * z / spec.beta, z - 0.5 * spec.beta)
    elif kind == "huber":
        z = np.abs(d)
        ell = np.where(z < spec.delta, 0.5 * z * z, spec.delta * (z - 0.5 * spec.delta))
    elif kind == "bce":
        with np.errstate(divide="ignore"):  # log 0 = −inf, clamped at −100 just below
            log_p = np.maximum(np.log(yhat), BCE_LOG_FLOOR)
            log_1mp = np.maximum(np.log1p(-yhat), BCE_LOG_FLOOR)
        ell = (y - 1) * log_1mp - y * log_p  # −[y log p + (1 − y) log(1 − p)]
    elif kind == "bce_logits":
        log_sig = log_sigmoid(yhat)
        if spec.pos_weight is not None:
            pw = np.asarray(spec.pos_weight, dtype=yhat.dtype)  # out (or 1)
            log_sig = log_sig * ((pw - 1) * y + 1)  # w⁺ = 1 + (pw − 1)y
        ell = (1 - y) * yhat - log_sig  # (1 − y)x − w⁺ log σ(x)
    else:
        raise ValueError(f"unknown loss {kind!r}")
    L = _reduce(spec, ell, n)
    if spec.half:
        L = 0.5 * L  # the textbook ½·Σ(ŷ − y)²: ½ times torch's MSELoss
    return np.asarray(L, dtype=yhat.dtype), LossCache(yhat, y, float(n), form, d=d)


# --- the backward -----------------------------------------------------------------------------


def backward(spec: Loss, cache: LossCache, upstream: float | np.ndarray | None = None) -> np.ndarray:
    """u ⊙ ∂L/∂ŷ, with u the upstream gradient (1, or ones of ℓ's shape for reduction none)."""
    yhat, y, divisor, form, logp, T, d = cache
    if upstream is None:  # 1, or ones of ℓ's shape for reduction none
        upstream = np.ones(_loss_shape(spec, yhat), dtype=yhat.dtype) if spec.reduction == "none" else 1.0
    u = 0.5 * upstream if spec.half else upstream  # ∂(½L)/∂L = ½
    kind = spec.kind
    if kind in ("cross_entropy", "nll"):
        with np.errstate(divide="ignore", invalid="ignore"):  # D = 0 (every row ignored): NaN, as torch
            c = np.divide(u, divisor) if spec.reduction == "mean" else u  # c = u/D, or u
            c = np.asarray(c, dtype=yhat.dtype)
        c = c[:, None] if c.ndim == 1 else c  # N,1 for none
        with np.errstate(invalid="ignore"):  # ignored rows: exactly 0 even when c = 1/0, as torch
            dlogp = np.where(T != 0, -(c * T), 0.0)  # ∂L/∂log p = −c·T
        if kind == "nll":
            return dlogp
        return log_softmax_backward(dlogp, logp)  # ∂L/∂x = ∂L/∂log p − p Σ_k ∂L/∂log p_k
    c = u / divisor if spec.reduction == "mean" else u  # c = u/n for mean
    d = yhat - y if d is None else d  # N,out
    if kind == "mse":
        if spec.reduction == "mean":
            return _times((2 / divisor) * d, u)  # torch: (2/n)(ŷ − y)·u
        return _times(2 * d, u)  # ∂L/∂ŷ = 2c(ŷ − y)
    if kind == "l1" or (kind == "smooth_l1" and spec.beta == 0):
        return c * np.sign(d)  # ∂L/∂ŷ = c·sgn(d), sgn(0) = 0
    norm = 1 / divisor if spec.reduction == "mean" else 1.0  # torch multiplies by 1/n here
    if kind == "smooth_l1":
        inside = np.abs(d) < spec.beta
        return np.where(inside, norm * d * u / spec.beta, np.sign(d) * (norm * u))  # d/β in, sgn(d) out
    if kind == "huber":
        inside = np.abs(d) < spec.delta
        return np.where(inside, norm * d * u, norm * u * spec.delta * np.sign(d))  # d in, δ·sgn(d) out
    if kind == "bce":
        denominator = np.maximum((1 - yhat) * yhat, BCE_GRAD_EPS)  # max((1 − p)p, ε)
        grad = u * d / denominator  # ∂ℓ/∂p = (p − y)/max((1 − p)p, ε)
        return grad / divisor if spec.reduction == "mean" else grad
    if kind == "bce_logits":
        sig = sigmoid(yhat)  # σ(x)
        if spec.pos_weight is not None:
            pt = np.asarray(spec.pos_weight, dtype=yhat.dtype) * y  # pw·y
            grad = (pt + 1 - y) * sig - pt  # ∂ℓ/∂x = (pw·y + 1 − y)σ(x) − pw·y
        else:
            grad = sig - y  # ∂ℓ/∂x = σ(x) − y
        grad = grad * u
        return grad / divisor if spec.reduction == "mean" else grad
    raise ValueError(f"unknown loss {kind!r}")


def _times(g: np.ndarray, u: float | np.ndarray) -> np.ndarray:
    """g·u; g itself when u is the scalar 1 (g·1 = g exactly: one pass over g saved)."""
    return g if type(u) is float and u == 1.0 else g * u


def _loss_shape(spec: Loss, yhat: np.ndarray) -> tuple[int, ...]:
    """The shape of ℓ (torch's output with reduction none)."""
    return yhat.shape[:1] if spec.kind in ("cross_entropy", "nll") else yhat.shape
