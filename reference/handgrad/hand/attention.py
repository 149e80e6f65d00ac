r"""Softmax attention, GELU, residuals and a pre-LN transformer block, as torch's modules.

Pure NumPy, never imports torch. Each layer is a pair ``*_forward(x, params, **options) -> (out,
cache)`` / ``*_backward(dout, cache) -> (dx, grads)``, grads keyed by torch's parameter names
(``in_proj_weight``, ``out_proj.weight``, ``fc1.bias`` …). Symbols (the same in
``manual/attention.md``): ``Q, K, V`` queries (L, d), keys (S, d), values (S, d_v); ``S = c·QKᵀ``
the scores with ``c = 1/√d``; ``P = softmax(S)`` row-wise; ``O = PV``; ``δ = ∂L/∂out``.

* :func:`softmax_forward` / :func:`softmax_backward`: the Jacobian-vector product with its
  row-sum term, ``∂L/∂s = p ⊙ (g − Σ_j g_j p_j)``.
* :func:`sdpa_forward` / :func:`sdpa_backward`: ``F.scaled_dot_product_attention`` (no dropout),
  with ``causal`` (torch's ``is_causal``: query i sees keys j ≤ i) or a boolean/additive mask.
* :func:`mha_forward` / :func:`mha_backward`: ``nn.MultiheadAttention`` self-attention with the
  packed ``in_proj_weight`` (rows: W_q, W_k, W_v), ``out_proj``, heads, ``batch_first``, the
  attention weights (averaged over heads or not) in ``cache.weights``; dropout = 0.
* :func:`gelu_forward` / :func:`gelu_backward`: ``nn.GELU`` with ``approximate='none'`` (erf)
  and ``'tanh'``.
* :func:`linear_forward` / :func:`linear_backward`: ``nn.Linear`` on any leading shape.
* :func:`residual_forward` / :func:`residual_backward`: ``y = x + f(x)``; the gradient goes to both.
* :func:`block_forward` / :func:`block_backward`: the pre-LN block
  ``x₁ = x + MHA(LN₁(x))``, ``y = x₁ + fc₂(GELU(fc₁(LN₂(x₁))))`` composed of the layers above.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from handgrad.contract.spec import SpecError
from handgrad.hand import normalization as nm

# --- softmax -------------------------------------------------------------------------------------


class SoftmaxCache(NamedTuple):
    p: np.ndarray  # the probabilities, same shape as the input
    axis: int


def softmax_forward(s: np.ndarray, axis: int = -1) -> tuple[np.ndarray, SoftmaxCache]:
    r"""``p_i = e^{s_i − max s} / Σ_j e^{s_j − max s}`` (the max shift changes nothing but the
    overflow). A −inf score gives p = 0 exactly. A row of only −inf gives NaN, as torch."""
    shifted = s - s.max(axis=axis, keepdims=True)  # s − max s   (≤ 0)
    e = np.exp(shifted)  # e^{s − max s}
    p = e / e.sum(axis=axis, keepdims=True)  # p = e / Σ e
    return p, SoftmaxCache(p, axis)


def softmax_backward(dp: np.ndarray, cache: SoftmaxCache) -> np.ndarray:
    r"""The Jacobian ``∂p_i/∂s_j = p_i([i=j] − p_j)`` applied to ``g = ∂L/∂p`` without forming it:

    .. math:: \frac{\partial L}{\partial s_j} = p_j \Big(g_j - \sum_i g_i p_i\Big)

    The row-sum term ``Σ g_i p_i`` is the off-diagonal part of the Jacobian. Where ``p_j = 0``
    (a masked score) the gradient is exactly 0, whatever g is.
    """
    p = cache.p
    row = (dp * p).sum(axis=cache.axis, keepdims=True)  # Σ_i g_i p_i (the row-sum term)
    return p * (dp - row)  # ∂L/∂s = p ⊙ (g − Σ g p)


# --- scaled dot-product attention -----------------------------------------------------------------


class SDPACache(NamedTuple):
    q: np.ndarray  # …,L,d
    k: np.ndarray  # …,S,d
    v: np.ndarray  # …,S,d_v
    softmax: SoftmaxCache  # p = softmax(c·QKᵀ + mask)   …,L,S
    scale: float  # c = 1/√d unless given


def causal_mask(L: int, S: int) -> np.ndarray:
    """torch's ``is_causal``: ``ones(L, S).tril()``, True where query i may see key j (j ≤ i)."""
    return np.tril(np.ones((L, S), dtype=bool))  # L,S


def sdpa_forward(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    *,
    causal: bool = False,
    attn_mask: np.ndarray | None = None,
    scale: float | None = None,
) -> tuple[np.ndarray, SDPACache]:
    r"""``F.scaled_dot_product_attention(q, k, v, attn_mask, dropout_p=0, is_causal, scale)``:

    .. math:: S = c\,QK^\top + M \qquad P = \mathrm{softmax}(S) \qquad O = PV

    ``c = 1/√d`` (d the query/key width) keeps the scores' variance near 1 when Q and K have
    unit-variance entries; without it softmax saturates as d grows. ``attn_mask`` follows SDPA:
    boolean True = *take part*, or float added to the scores. Masked scores are −inf before
    softmax, so their probability is exactly 0.
    """
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise SpecError("q", f"incompatible shapes q {q.shape}, k {k.shape}, v {v.shape}")
    c = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    scores = (q @ k.swapaxes(-1, -2)) * c  # S = c QKᵀ   …,L,S
    L, S = scores.shape[-2:]
    if causal:
        scores = np.where(causal_mask(L, S), scores, -np.inf)  # j > i: −inf   …,L,S
    if attn_mask is not None:
        attn_mask = np.asarray(attn_mask)
        if attn_mask.dtype == bool:
            scores = np.where(attn_mask, scores, -np.inf)  # False: −inf
        else:
            scores = scores + attn_mask  # additive mask
    p, sm = softmax_forward(scores)  # P = softmax(S)   …,L,S
    out = p @ v  # O = P V   …,L,d_v
    return out, SDPACache(q, k, v, sm, c)


def sdpa_backward(dout: np.ndarray, cache: SDPACache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""``(∂L/∂Q, ∂L/∂K, ∂L/∂V)`` from ``Δ = ∂L/∂O``:

    .. math::

        \frac{\partial L}{\partial V} = P^\top \Delta \qquad
        \frac{\partial L}{\partial P} = \Delta V^\top \qquad
        \frac{\partial L}{\partial S} = P \odot \Big(\frac{\partial L}{\partial P}
            - \mathrm{rowsum}\big(\tfrac{\partial L}{\partial P} \odot P\big)\Big)

        \frac{\partial L}{\partial Q} = c\,\frac{\partial L}{\partial S} K \qquad
        \frac{\partial L}{\partial K} = c\,\Big(\frac{\partial L}{\partial S}\Big)^\top Q
    """
    p = cache.softmax.p
    dv = p.swapaxes(-1, -2) @ dout  # ∂L/∂V = Pᵀ Δ   …,S,d_v
    dp = dout @ cache.v.swapaxes(-1, -2)  # ∂L/∂P = Δ Vᵀ   …,L,S
    ds = softmax_backward(dp, cache.softmax)  # ∂L/∂S (0 where masked)   …,L,S
    dq = (ds @ cache.k) * cache.scale  # ∂L/∂Q = c ∂L/∂S K   …,L,d
    dk = (ds.swapaxes(-1, -2) @ cache.q) * cache.scale  # ∂L/∂K = c (∂L/∂S)ᵀ Q   …,S,d
    return dq, dk, dv


# --- linear (any leading shape) --------------------------------------------------------------------


class LinearCache(NamedTuple):
    x: np.ndarray  # …,in
    weight: np.ndarray  # out,in
    has_bias: bool


def linear_forward(x: np.ndarray, params: dict[str, np.ndarray]) -> tuple[np.ndarray, LinearCache]:
    """``nn.Linear``: ``z = x Wᵀ + b`` over the last axis; ``params``: ``weight``, ``bias``."""
    z = x @ params["weight"].T  # z = x Wᵀ   …,out
    if "bias" in params:
        z = z + params["bias"]  # + b
    return z, LinearCache(x, params["weight"], "bias" in params)


def linear_backward(dz: np.ndarray, cache: LinearCache) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    n_in, n_out = cache.x.shape[-1], dz.shape[-1]
    G, X = dz.reshape(-1, n_out), cache.x.reshape(-1, n_in)  # every leading index is a row
    grads = {"weight": G.T @ X}  # ∂L/∂W = Gᵀ X   out,in
    if cache.has_bias:
        grads["bias"] = G.sum(axis=0)  # ∂L/∂b = 1ᵀ G   out
    return dz @ cache.weight, grads  # ∂L/∂x = G W   …,in


# --- multi-head attention --------------------------------------------------------------------------


class MHACache(NamedTuple):
    x: np.ndarray  # N,L,E (batch first inside)
    in_proj: LinearCache  # qkv = x W_inᵀ + b_in   N,L,3E
    sdpa: SDPACache  # per head   N,H,L,d
    out_proj: LinearCache  # out = concat W_oᵀ + b_o
    num_heads: int
    batch_first: bool
    weights: np.ndarray | None  # what torch returns as attn_output_weights (None: need_weights=False)


def _sub(params: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The entries of ``params`` under ``prefix.`` with the prefix removed (torch's submodule)."""
    return {key[len(prefix) + 1 :]: value for key, value in params.items() if key.startswith(prefix + ".")}


def mha_forward(
    x: np.ndarray,
    params: dict[str, np.ndarray],
    *,
    num_heads: int,
    causal: bool = False,
    batch_first: bool = False,
    need_weights: bool = True,
    average_attn_weights: bool = True,
) -> tuple[np.ndarray, MHACache]:
    r"""``nn.MultiheadAttention(E, num_heads, batch_first=…)(x, x, x, attn_mask=causal)``.

    ``params`` by torch's names: ``in_proj_weight`` (3E, E) = [W_q; W_k; W_v],
    ``in_proj_bias`` (3E) (omit for ``bias=False``), ``out_proj.weight`` (E, E),
    ``out_proj.bias``. Head h takes columns ``h·d … (h+1)·d`` of Q, K, V (d = E/H):

    .. math::

        [Q\,K\,V] = X W_{in}^\top + b_{in} \qquad
        O_h = \mathrm{softmax}\!\Big(\frac{Q_h K_h^\top}{\sqrt d}\Big) V_h \qquad
        Y = [O_1 \dots O_H]\, W_o^\top + b_o

    ``x``: (L, N, E), or (N, L, E) with ``batch_first``. The attention weights torch returns
    (``need_weights``) are P averaged over heads (N, L, S), or per head (N, H, L, S) with
    ``average_attn_weights=False``; they are in ``cache.weights``.
    """
    if not isinstance(x, np.ndarray) or x.ndim != 3:
        raise SpecError("x", f"expected a 3-D input (L, N, E) or (N, L, E), got {getattr(x, 'shape', x)}")
    xb = x if batch_first else x.swapaxes(0, 1)  # N,L,E
    N, L, E = xb.shape
    if num_heads < 1 or E % num_heads:
        raise SpecError("num_heads", f"embed_dim {E} must be divisible by num_heads {num_heads}")
    if np.shape(params["in_proj_weight"]) != (3 * E, E):
        shape = np.shape(params["in_proj_weight"])
        raise SpecError("in_proj_weight", f"expected shape {(3 * E, E)}, got {shape}")
    H, d = num_heads, E // num_heads
    proj = {"weight": params["in_proj_weight"]}
    if "in_proj_bias" in params:
        proj["bias"] = params["in_proj_bias"]
    qkv, in_cache = linear_forward(xb, proj)  # [Q K V] = X W_inᵀ + b_in   N,L,3E
    q, k, v = (qkv[..., i * E : (i + 1) * E].reshape(N, L, H, d).transpose(0, 2, 1, 3) for i in range(3))
    o, sdpa_cache = sdpa_forward(q, k, v, causal=causal)  # O_h = softmax(Q_h K_hᵀ/√d) V_h   N,H,L,d
    concat = o.transpose(0, 2, 1, 3).reshape(N, L, E)  # [O_1 … O_H]   N,L,E
    out, out_cache = linear_forward(concat, _sub(params, "out_proj"))  # Y = concat W_oᵀ + b_o   N,L,E
    weights = None
    if need_weights:
        p = sdpa_cache.softmax.p  # N,H,L,S
        weights = p.mean(axis=1) if average_attn_weights else p  # N,L,S or N,H,L,S
    if not batch_first:
        out = out.swapaxes(0, 1)  # L,N,E
    return out, MHACache(xb, in_cache, sdpa_cache, out_cache, H, batch_first, weights)


def mha_backward(dout: np.ndarray, cache: MHACache) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Back through out_proj, the heads' attention, the head split and the packed in_proj; the
    three gradients ∂L/∂Q, ∂L/∂K, ∂L/∂V are stacked again in in_proj's row order."""
    db = dout if cache.batch_first else dout.swapaxes(0, 1)  # N,L,E
    N, L, E = db.shape
    H, d = cache.num_heads, E // cache.num_heads
    dconcat, out_grads = linear_backward(db, cache.out_proj)  # ∂L/∂concat = Δ W_o   N,L,E
    do = dconcat.reshape(N, L, H, d).transpose(0, 2, 1, 3)  # split into heads   N,H,L,d
    dq, dk, dv = sdpa_backward(do, cache.sdpa)  # per head   N,H,L,d (each)
    dqkv = np.concatenate(
        [g.transpose(0, 2, 1, 3).reshape(N, L, E) for g in (dq, dk, dv)], axis=-1
    )  # ∂L/∂[Q K V]   N,L,3E
    dx, in_grads = linear_backward(dqkv, cache.in_proj)  # ∂L/∂X = ∂L/∂[QKV] W_in   N,L,E
    grads = {"in_proj_weight": in_grads["weight"]}  # ∂L/∂W_in = ∂L/∂[QKV]ᵀ X   3E,E
    if "bias" in in_grads:
        grads["in_proj_bias"] = in_grads["bias"]  # ∂L/∂b_in   3E
    grads.update({f"out_proj.{key}": value for key, value in out_grads.items()})
    return (dx if cache.batch_first else dx.swapaxes(0, 1)), grads


# --- GELU ----------------------------------------------------------------------------------------

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def erf(x: np.ndarray) -> np.ndarray:
    """The error function element-wise: ``math.erf`` (the C library's, within an ulp of the exact
    value, as torch's own erf) mapped over the values; NumPy has none. Computed in float64,
    returned in x's dtype. About 0.15 µs an element: the one slow line of the block."""
    x = np.asarray(x)
    flat = np.fromiter(map(math.erf, x.astype(np.float64).ravel().tolist()), np.float64, x.size)
    return flat.reshape(x.shape).astype(x.dtype)


class GeluCache(NamedTuple):
    x: np.ndarray
    approximate: str
    s: np.ndarray  # Φ(x) for 'none', t = tanh(√(2/π)(x + 0.044715x³)) for 'tanh' (kept for backward)


def gelu_forward(x: np.ndarray, approximate: str = "none") -> tuple[np.ndarray, GeluCache]:
    r"""``nn.GELU(approximate)``:

    .. math::

        \text{none:}\ y = x\,\Phi(x) = \tfrac12 x\big(1 + \mathrm{erf}(x/\sqrt2)\big) \qquad
        \text{tanh:}\ y = \tfrac12 x\big(1 + \tanh(\sqrt{2/\pi}\,(x + 0.044715\,x^3))\big)
    """
    if approximate == "none":
        s = 0.5 * (1.0 + erf(x / math.sqrt(2.0)))  # Φ(x) = ½(1 + erf(x/√2))
    elif approximate == "tanh":
        s = np.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x**3))  # t = tanh(√(2/π)(x + 0.044715x³))
    else:
        raise SpecError("approximate", f"expected 'none' or 'tanh', got {approximate!r}")
    y = x * s if approximate == "none" else 0.5 * x * (1.0 + s)  # x Φ(x)  or  ½x(1 + t)
    return y, GeluCache(x, approximate, s)


def gelu_backward(dout: np.ndarray, cache: GeluCache) -> np.ndarray:
    r"""

    .. math::

        \text{none:}\ y' = \Phi(x) + x\,\varphi(x),\ \varphi(x) = e^{-x^2/2}/\sqrt{2\pi}

        \text{tanh:}\ y' = \tfrac12(1+t) + \tfrac12 x (1-t^2)\sqrt{2/\pi}\,(1 + 3\cdot0.044715\,x^2)
    """
    x, s = cache.x, cache.s
    if cache.approximate == "none":
        pdf = np.exp(-0.5 * x * x) * _INV_SQRT_2PI  # φ(x)
        return dout * (s + x * pdf)  # ∂L/∂x = δ (Φ + x φ)
    dinner = _SQRT_2_OVER_PI * (1.0 + 3 * 0.044715 * x * x)  # d/dx √(2/π)(x + 0.044715x³)
    return dout * (0.5 * (1.0 + s) + 0.5 * x * (1.0 - s * s) * dinner)  # ∂L/∂x = δ y′


# --- residual ------------------------------------------------------------------------------------


class ResidualCache(NamedTuple):
    shape: tuple[int, ...]


def residual_forward(x: np.ndarray, fx: np.ndarray) -> tuple[np.ndarray, ResidualCache]:
    """``y = x + f(x)``: the skip path and the branch meet in a sum."""
    if x.shape != fx.shape:
        raise SpecError("fx", f"a residual needs equal shapes, got {x.shape} and {fx.shape}")
    return x + fx, ResidualCache(x.shape)  # y = x + f(x)


def residual_backward(dout: np.ndarray, cache: ResidualCache) -> tuple[np.ndarray, np.ndarray]:
    """``(∂L/∂x via the skip, ∂L/∂f(x))``: a sum passes δ unchanged to both of its inputs. The
    caller adds the branch's own ∂L/∂x (through f) to the skip's."""
    return dout, dout  # ∂y/∂x = I (skip), ∂y/∂f = I (branch)


# --- the pre-LN transformer block -----------------------------------------------------------------

BLOCK_TERMS = ("h1", "a", "x1", "h2", "u", "g", "m", "y")


class BlockCache(NamedTuple):
    ln1: nm.LayerNormCache
    attn: MHACache
    res1: ResidualCache
    ln2: nm.LayerNormCache
    fc1: LinearCache
    gelu: GeluCache
    fc2: LinearCache
    res2: ResidualCache
    terms: dict[str, np.ndarray]  # the named intermediates h1, a, x1, h2, u, g, m, y


def block_forward(
    x: np.ndarray,
    params: dict[str, np.ndarray],
    *,
    num_heads: int,
    causal: bool = True,
    eps: float = 1e-5,
    approximate: str = "none",
) -> tuple[np.ndarray, BlockCache]:
    r"""A pre-LN block on (N, L, E), batch first, parameters named as the submodules ``ln1``,
    ``attn`` (MultiheadAttention), ``ln2``, ``fc1``, ``fc2`` (Linear) of a torch module:

    .. math::

        h_1 = \mathrm{LN}_1(x) \quad a = \mathrm{MHA}(h_1) \quad x_1 = x + a \quad
        h_2 = \mathrm{LN}_2(x_1) \quad u = \mathrm{fc}_1(h_2) \quad g = \mathrm{GELU}(u) \quad
        m = \mathrm{fc}_2(g) \quad y = x_1 + m
    """
    E = x.shape[-1]
    h1, c_ln1 = nm.layernorm_forward(x, _sub(params, "ln1"), normalized_shape=E, eps=eps)  # N,L,E
    a, c_attn = mha_forward(h1, _sub(params, "attn"), num_heads=num_heads, causal=causal, batch_first=True)
    x1, c_res1 = residual_forward(x, a)  # x₁ = x + a   N,L,E
    h2, c_ln2 = nm.layernorm_forward(x1, _sub(params, "ln2"), normalized_shape=E, eps=eps)  # N,L,E
    u, c_fc1 = linear_forward(h2, _sub(params, "fc1"))  # N,L,F
    g, c_gelu = gelu_forward(u, approximate)  # N,L,F
    m, c_fc2 = linear_forward(g, _sub(params, "fc2"))  # N,L,E
    y, c_res2 = residual_forward(x1, m)  # y = x₁ + m   N,L,E
    terms = dict(zip(BLOCK_TERMS, (h1, a, x1, h2, u, g, m, y), strict=True))
    return y, BlockCache(c_ln1, c_attn, c_res1, c_ln2, c_fc1, c_gelu, c_fc2, c_res2, terms)


def block_backward_terms(
    dout: np.ndarray, cache: BlockCache
) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """:func:`block_backward` that also returns ∂L/∂ of every named intermediate (``dL_d<term>``)."""
    grads: dict[str, Any] = {}

    def prefixed(prefix: str, sub: dict[str, np.ndarray]) -> None:
        grads.update({f"{prefix}.{key}": value for key, value in sub.items()})

    dx1_skip, dm = residual_backward(dout, cache.res2)  # y = x₁ + m
    dg, g2 = linear_backward(dm, cache.fc2)  # ∂L/∂g = ∂L/∂m W₂
    prefixed("fc2", g2)
    du = gelu_backward(dg, cache.gelu)  # ∂L/∂u = ∂L/∂g ⊙ GELU′(u)
    dh2, g1 = linear_backward(du, cache.fc1)  # ∂L/∂h₂ = ∂L/∂u W₁
    prefixed("fc1", g1)
    dx1_branch, gl2 = nm.layernorm_backward(dh2, cache.ln2)  # through LN₂
    prefixed("ln2", gl2)
    dx1 = dx1_skip + dx1_branch  # ∂L/∂x₁ = skip + branch
    dx_skip, da = residual_backward(dx1, cache.res1)  # x₁ = x + a
    dh1, ga = mha_backward(da, cache.attn)  # through attention
    prefixed("attn", ga)
    dx_branch, gl1 = nm.layernorm_backward(dh1, cache.ln1)  # through LN₁
    prefixed("ln1", gl1)
    dx = dx_skip + dx_branch  # ∂L/∂x = skip + branch
    terms = {"dL_dy": dout, "dL_dm": dm, "dL_dg": dg, "dL_du": du, "dL_dh2": dh2, "dL_dx1": dx1,
             "dL_da": da, "dL_dh1": dh1}  # fmt: skip
    return dx, grads, terms


def block_backward(dout: np.ndarray, cache: BlockCache) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``(∂L/∂x, grads)`` of :func:`block_forward`, grads keyed ``ln1.weight``, ``attn.in_proj_weight``…"""
    dx, grads, _ = block_backward_terms(dout, cache)
    return dx, grads
