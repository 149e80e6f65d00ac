r"""Embedding, as ``torch.nn.Embedding``: a row lookup in ``weight`` (num_embeddings, embedding_dim).

Pure NumPy, never imports torch. Forward, for integer indices ``i`` of any shape:

.. math:: y[\dots, :] = W[i[\dots], :]

Backward: the lookup is a gather, so its gradient is a scatter-*add*: every position that read
row ``r`` adds its upstream gradient to ``∂L/∂W[r]``; a row read twice gets the sum, a row never
read gets zero. ``padding_idx`` (as torch) marks one row whose gradient is always zero (its
value is still looked up). The indices are data, not parameters: they have no gradient.

.. math:: \frac{\partial L}{\partial W[r]} = [r \ne p] \sum_{\dots:\ i[\dots] = r} \delta[\dots, :]
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from handgrad.contract.spec import SpecError


class EmbeddingCache(NamedTuple):
    idx: np.ndarray  # the indices, any shape
    num_embeddings: int
    padding_idx: int | None  # normalized to [0, num_embeddings)


def forward(
    idx: np.ndarray, params: dict[str, np.ndarray], *, padding_idx: int | None = None
) -> tuple[np.ndarray, EmbeddingCache]:
    """``params``: ``weight`` (num_embeddings, embedding_dim). ``padding_idx`` may be negative
    (counted from the end, as torch)."""
    weight = params["weight"]
    if not isinstance(weight, np.ndarray) or weight.ndim != 2:
        raise SpecError("weight", f"expected a 2-D weight (num_embeddings, dim), got {np.shape(weight)}")
    idx = np.asarray(idx)
    if not np.issubdtype(idx.dtype, np.integer):
        raise SpecError("idx", f"expected integer indices, got dtype {idx.dtype} (torch wants Long/Int)")
    n = weight.shape[0]
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        bad = int(idx[(idx < 0) | (idx >= n)].flat[0])
        raise SpecError("idx", f"index {bad} out of range [0, {n}) (torch: 'index out of range in self')")
    if padding_idx is not None:
        if not -n <= padding_idx < n:
            raise SpecError("padding_idx", f"must be within num_embeddings ({n}), got {padding_idx}")
        padding_idx = padding_idx + n if padding_idx < 0 else padding_idx
    out = weight[idx]  # y = W[i]   …,dim
    return out, EmbeddingCache(idx, n, padding_idx)


def backward(dout: np.ndarray, cache: EmbeddingCache) -> tuple[None, dict[str, np.ndarray]]:
    """``(None, {"weight": ∂L/∂W})``: indices have no gradient."""
    dim = dout.shape[-1]
    dW = np.zeros((cache.num_embeddings, dim), dtype=dout.dtype)  # num_embeddings,dim
    # NOTE: np.add.at, not dW[idx] += δ: fancy-index assignment keeps only one of the repeats
    np.add.at(dW, cache.idx.reshape(-1), dout.reshape(-1, dim))  # ∂L/∂W[r] = Σ_{i=r} δ
    if cache.padding_idx is not None:
        dW[cache.padding_idx] = 0  # padding row: no gradient, as torch
    return None, {"weight": dW}
