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

No torch here: the broken copies are NumPy, like the functions they replace. (This file joins the
mutants package when it lands.)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from handgrad.hand import attention, conv, embedding
from handgrad.hand import normalization as nm

# The shipped functions, kept before any patching: the broken copies call them for the parts
# they do not break.
_BN_FORWARD = nm.batchnorm_forward
_LN_FORWARD, _LN_BACKWARD = nm.layernorm_forward, nm.layernorm_backward
_SDPA_FORWARD = attention.sdpa_forward
_MHA_FORWARD = attention.mha_forward
_GELU_FORWARD = attention.gelu_forward

Patch = tuple[Any, str, Callable[..., Any]]


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


# --- the registry --------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerMutant:
    """One planted bug: what it swaps, the layer case that must catch it, and its first term."""

    id: str
    family: str
    patches: tuple[Patch, ...]
    case: str
    expected_term: str
    expected_step: int = 1

    @property
    def bug(self) -> str:
        doc = (self.patches[0][2].__doc__ or "").strip()
        return doc.splitlines()[0] if doc else self.id

    @contextlib.contextmanager
    def planted(self) -> Iterator[None]:
        """Swap the broken copies in for the length of the block, then put the shipped code back."""
        saved = []
        try:
            for target, name, replacement in self.patches:
                saved.append((target, name, getattr(target, name)))
                setattr(target, name, replacement)
            yield
        finally:
            for target, name, original in reversed(saved):
                setattr(target, name, original)


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


# --- the same slips inside a scenario: the makemore MLP (issue 17) ------------------------------


def _makemore_mutants() -> tuple[Any, ...]:
    """Four layer bugs planted in the whole makemore run (handgrad.mutants.Mutant, run through
    the harness by ``run_mutant``), each caught at the first term of the scenario it touches."""
    from handgrad.hand import activations
    from handgrad.mutants import Mutant, derivative_tanh_from_z

    argv = ("--steps", "2", "--hidden", "8", "--batch-size", "8")
    return (
        Mutant(
            "makemore-bn-unbiased-var", "makemore",
            ((nm, "batchnorm_forward", batchnorm_forward_unbiased_var),), "makemore", argv, "bn.hpreact",
        ),
        Mutant(
            "makemore-bn-running-var-biased", "makemore",
            ((nm, "batchnorm_forward", batchnorm_forward_running_var_biased),), "makemore", argv,
            "bn.running_var",
        ),
        Mutant(
            "makemore-embedding-grad-overwritten", "makemore",
            ((embedding, "backward", embedding_backward_overwrites),), "makemore", argv, "emb.dL_dC",
        ),
        Mutant(
            "makemore-tanh-derivative-from-z", "makemore",
            ((activations, "derivative", derivative_tanh_from_z),), "makemore", argv, "bn.dL_dhpreact",
        ),
    )  # fmt: skip


def _transformer_mutants() -> tuple[Any, ...]:
    """Three attention slips planted in the transformer run, each caught at its first term."""
    from handgrad.mutants import Mutant

    argv = ("--steps", "2", "--n-embd", "8", "--mlp", "8", "--context", "5", "--batch-size", "3")
    return (
        Mutant(
            "transformer-attention-without-scale", "transformer",
            ((attention, "sdpa_forward", sdpa_forward_without_scale),), "transformer", argv,
            "block1.attn.weights",
        ),
        Mutant(
            "transformer-mask-leaks-one", "transformer",
            ((attention, "causal_mask", causal_mask_leaks_one),), "transformer", argv, "block1.attn.weights",
        ),
        Mutant(
            "transformer-residual-grad-dropped", "transformer",
            ((attention, "residual_backward", residual_backward_drops_skip),), "transformer", argv,
            "block1.dL_dx1",
        ),
    )  # fmt: skip


# --- the pools and Flatten in a layer stack ------------------------------------------------------

_AVGPOOL_FORWARD, _FLATTEN_FORWARD = conv.avgpool2d_forward, conv.flatten_forward


def avgpool_forward_padding_not_counted(x, **options):  # noqa: ANN001, ANN201
    """Bug: the average divides by the real pixels of a window only; torch's default
    count_include_pad=True counts the padding's zeros in the divisor (kH·kW)."""
    return _AVGPOOL_FORWARD(x, **{**options, "count_include_pad": False})


def flatten_forward_channels_last(x):  # noqa: ANN001, ANN201
    """Bug: Flatten in (h, w, c) order; nn.Flatten keeps torch's (c, h, w) order."""
    _, cache = _FLATTEN_FORWARD(x)
    return np.moveaxis(x, 1, -1).reshape(x.shape[0], -1), cache


def _stack_norm_mutants() -> tuple[Any, ...]:
    """Layers of the stack planted in small networks of their own (handgrad.mutants.normed_stack,
    pooled_stack): the norms of a check_model model, AvgPool2d's divisor, Flatten's order."""
    from handgrad.mutants import Mutant, normed_stack, pooled_stack

    return (
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
        Mutant(
            "stack-batchnorm-unbiased-var", "normalization",
            ((nm, "batchnorm_forward", batchnorm_forward_unbiased_var),), "batchnorm-stack", (), "bn1.y",
            build=lambda: normed_stack("batchnorm"),
        ),
        Mutant(
            "stack-layernorm-backward-without-mean", "normalization",
            ((nm, "layernorm_backward", layernorm_backward_without_mean_term),), "layernorm-stack", (),
            "dense1.dL_dz", build=lambda: normed_stack("layernorm"),
        ),
    )  # fmt: skip


SCENARIO_MUTANTS = _makemore_mutants() + _transformer_mutants() + _stack_norm_mutants()
