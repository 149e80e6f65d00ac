"""Planted bugs in the normalization, embedding and attention layers: proof that the layer checks bite.

Each :class:`LayerMutant` swaps one shipped hand function for a broken copy defined here (the
shipped code is never edited) for the length of a ``with mutant.planted():`` block, names the
layer test case that must catch it (``case``, a key of ``CASES`` in tests/test_normalization_layers.py
or tests/test_attention_layers.py) and the term where the bug must first show.

The broken copies are the slips the issue lists: the unbiased variance in the normalization,
running statistics with the biased variance, BatchNorm2d statistics over the wrong axes, eval mode
normalizing with the batch, a LayerNorm backward without its mean term, attention without 1/√d,
softmax's backward without the row-sum term, a causal mask leaking one future position, GELU's
exact and tanh forms swapped, Embedding gradients overwritten on repeated indices, a residual's
skip gradient dropped, and the attention weights summed (not averaged) over heads.

No torch here: the broken copies are NumPy, like the functions they replace.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from handgrad.hand import attention, embedding
from handgrad.hand import normalization as nm
from handgrad.mutants.registry import LayerMutant

# The shipped functions, kept before any patching: the broken copies call them for the parts
# they do not break.
_BN_FORWARD = nm.batchnorm_forward
_LN_FORWARD, _LN_BACKWARD = nm.layernorm_forward, nm.layernorm_backward
_SDPA_FORWARD = attention.sdpa_forward
_MHA_FORWARD = attention.mha_forward
_GELU_FORWARD = attention.gelu_forward


# --- BatchNorm -----------------------------------------------------------------------------------


def _renormalize(cache: nm.BatchNormCache, bnvar: np.ndarray, eps: float) -> tuple[np.ndarray, Any]:
    """Out and cache rebuilt from ``cache.bndiff`` with another variance (for the broken copies)."""
    bnvar_inv = 1.0 / np.sqrt(bnvar + eps)
    bnraw = cache.bndiff * bnvar_inv
    shape = bnvar_inv.shape
    out = bnraw if cache.weight is None else bnraw * cache.weight.reshape(shape)
    return out, cache._replace(bnvar=bnvar, bnvar_inv=bnvar_inv, bnraw=bnraw)


def batchnorm_forward_unbiased_var(x, params, **options):  # noqa: ANN001, ANN201
    """Bug: x̂ divides by the unbiased variance (÷(m−1)); torch uses the biased one (÷m) there."""
    out, cache = _BN_FORWARD(x, params, **options)
    out, cache = _renormalize(cache, cache.bnvar * cache.m / (cache.m - 1), options.get("eps", 1e-5))
    if "bias" in params:
        out = out + params["bias"].reshape(cache.bnvar.shape)
    return out, cache


def batchnorm_forward_running_var_biased(x, params, **options):  # noqa: ANN001, ANN201
    """Bug: running_var updated with the biased batch variance; torch uses the unbiased (÷(m−1))."""
    out, cache = _BN_FORWARD(x, params, **options)
    momentum = options.get("momentum", 0.1)
    state = dict(cache.state)
    f = 1.0 / float(state["num_batches_tracked"]) if momentum is None else momentum
    state["running_var"] = (1 - f) * params["running_var"] + f * cache.bnvar.reshape(-1)
    return out, cache._replace(state=state)


def batchnorm_forward_wrong_axes(x, params, **options):  # noqa: ANN001, ANN201
    """Bug: BatchNorm2d statistics over axis 0 only (BatchNorm1d's axis on NCHW): one per pixel."""
    eps = options.get("eps", 1e-5)
    out, cache = _BN_FORWARD(x, params, **options)
    bnmean = x.mean(axis=0, keepdims=True)  # 1,C,H,W: per pixel, not per channel
    bndiff = x - bnmean
    bnvar = (bndiff * bndiff).mean(axis=0, keepdims=True)
    bnvar_inv = 1.0 / np.sqrt(bnvar + eps)
    bnraw = bndiff * bnvar_inv
    shape = (1, x.shape[1], 1, 1)
    out = bnraw * params["weight"].reshape(shape) + params["bias"].reshape(shape)
    return out, cache._replace(
        bnmean=bnmean, bndiff=bndiff, bnvar=bnvar, bnvar_inv=bnvar_inv, bnraw=bnraw, axes=(0,), m=x.shape[0]
    )


def batchnorm_forward_eval_uses_batch(x, params, **options):  # noqa: ANN001, ANN201
    """Bug: eval mode normalizes with the batch's statistics instead of the running ones."""
    _, eval_cache = _BN_FORWARD(x, params, **options)
    out, cache = _BN_FORWARD(x, params, **{**options, "training": True})
    return out, cache._replace(batch_stats=eval_cache.batch_stats, state=eval_cache.state)


# --- LayerNorm -----------------------------------------------------------------------------------


def layernorm_backward_without_mean_term(dout, cache):  # noqa: ANN001, ANN201
    """Bug: ∂L/∂x without the −Σg term (the path through the mean μ)."""
    _, grads = _LN_BACKWARD(dout, cache)
    g = dout if cache.weight is None else dout * cache.weight
    term3 = cache.xhat * (g * cache.xhat).sum(axis=cache.axes, keepdims=True)
    return cache.rstd / cache.D * (cache.D * g - term3), grads


# --- Embedding -----------------------------------------------------------------------------------


def embedding_backward_overwrites(dout, cache):  # noqa: ANN001, ANN201
    """Bug: ∂L/∂W[i] = δ by fancy-index assignment: a repeated index keeps one gradient, not the sum."""
    dim = dout.shape[-1]
    dW = np.zeros((cache.num_embeddings, dim), dtype=dout.dtype)
    dW[cache.idx.reshape(-1)] = dout.reshape(-1, dim)
    if cache.padding_idx is not None:
        dW[cache.padding_idx] = 0
    return None, {"weight": dW}


# --- attention -----------------------------------------------------------------------------------


def sdpa_forward_without_scale(q, k, v, **options):  # noqa: ANN001, ANN201
    """Bug: scores QKᵀ without the 1/√d scale."""
    return _SDPA_FORWARD(q, k, v, **{**options, "scale": 1.0})


def softmax_backward_without_rowsum(dp, cache):  # noqa: ANN001, ANN201
    """Bug: ∂L/∂s = p ⊙ g, the Jacobian's diagonal only (the row-sum term −p Σ g p forgotten)."""
    return cache.p * dp


def causal_mask_leaks_one(L, S):  # noqa: ANN001, ANN201
    """Bug: the causal mask lets query i see key i + 1 (tril with diagonal=1)."""
    return np.tril(np.ones((L, S), dtype=bool), k=1)


def gelu_forward_forms_swapped(x, approximate="none"):  # noqa: ANN001, ANN201
    """Bug: GELU's exact (erf) and tanh forms swapped."""
    return _GELU_FORWARD(x, {"none": "tanh", "tanh": "none"}[approximate])


def residual_backward_drops_skip(dout, cache):  # noqa: ANN001, ANN201
    """Bug: y = x + f(x) passes δ to the branch only; the skip path's gradient is dropped."""
    return np.zeros_like(dout), dout


def mha_forward_weights_summed(x, params, **options):  # noqa: ANN001, ANN201
    """Bug: the returned attention weights summed over heads; torch averages them."""
    out, cache = _MHA_FORWARD(x, params, **options)
    if cache.weights is not None and options.get("average_attn_weights", True):
        cache = cache._replace(weights=cache.sdpa.softmax.p.sum(axis=1))
    return out, cache


MUTANTS: tuple[LayerMutant, ...] = (
    LayerMutant(
        "bn_unbiased_var_in_normalization", "normalization",
        ((nm, "batchnorm_forward", batchnorm_forward_unbiased_var),), "bn1d_train", "bn1.bnvar_inv",
    ),
    LayerMutant(
        "bn_running_var_biased", "normalization",
        ((nm, "batchnorm_forward", batchnorm_forward_running_var_biased),), "bn1d_train", "bn1.running_var",
    ),
    LayerMutant(
        "bn2d_wrong_axes", "normalization",
        ((nm, "batchnorm_forward", batchnorm_forward_wrong_axes),), "bn2d_train", "bn1.bnmean",
    ),
    LayerMutant(
        "bn_eval_uses_batch_stats", "normalization",
        ((nm, "batchnorm_forward", batchnorm_forward_eval_uses_batch),), "bn1d_eval", "bn1.out",
    ),
    LayerMutant(
        "ln_backward_without_mean_term", "normalization",
        ((nm, "layernorm_backward", layernorm_backward_without_mean_term),), "ln", "ln1.dL_dx",
    ),
    LayerMutant(
        "embedding_grad_overwritten", "normalization",
        ((embedding, "backward", embedding_backward_overwrites),), "emb_repeats", "emb1.dL_dweight",
    ),
    LayerMutant(
        "attention_without_scale", "attention",
        ((attention, "sdpa_forward", sdpa_forward_without_scale),), "sdpa", "sdpa1.out",
    ),
    LayerMutant(
        "softmax_backward_without_rowsum", "attention",
        ((attention, "softmax_backward", softmax_backward_without_rowsum),), "softmax", "softmax1.dL_dx",
    ),
    LayerMutant(
        "causal_mask_leaks_one", "attention",
        ((attention, "causal_mask", causal_mask_leaks_one),), "sdpa_causal", "sdpa1.out",
    ),
    LayerMutant(
        "gelu_forms_swapped", "attention",
        ((attention, "gelu_forward", gelu_forward_forms_swapped),), "gelu", "gelu1.out",
    ),
    LayerMutant(
        "residual_grad_dropped", "attention",
        ((attention, "residual_backward", residual_backward_drops_skip),), "block", "block1.dL_dx1",
    ),
    LayerMutant(
        "mha_weights_summed", "attention",
        ((attention, "mha_forward", mha_forward_weights_summed),), "mha", "mha1.weights",
    ),
)  # fmt: skip
