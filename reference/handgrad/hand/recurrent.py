r"""Recurrent layers by hand: Elman RNN (tanh, relu), GRU and LSTM, forward and backpropagation
through time (BPTT), in torch's conventions exactly. Pure NumPy; never imports torch.

Parameters are torch's, with torch's names and shapes (``G`` = 1 for the RNN, 3 for the GRU, 4
for the LSTM; the gate blocks are stacked row-wise in this order):

    weight_ih_l{k}  (G·H, I_k)   [W_ii | W_if | W_ig | W_io] (lstm),  [W_ir | W_iz | W_in] (gru)
    weight_hh_l{k}  (G·H, H)     [W_hi | W_hf | W_hg | W_ho] (lstm),  [W_hr | W_hz | W_hn] (gru)
    bias_ih_l{k}    (G·H,)       two biases, as torch: b_ih and b_hh are both learned
    bias_hh_l{k}    (G·H,)

Forward, one step (``x`` = x_t, ``h`` = h_{t-1}, ``c`` = c_{t-1}; σ the logistic sigmoid):

    rnn   z = W_ih x + b_ih + W_hh h + b_hh             h' = tanh(z)   or   relu(z)
    lstm  z_k = W_ik x + b_ik + W_hk h + b_hk           k ∈ {i, f, g, o}
          i = σ(z_i)  f = σ(z_f)  g = tanh(z_g)  o = σ(z_o)
          c' = f ⊙ c + i ⊙ g                            h' = o ⊙ tanh(c')
    gru   z_r = W_ir x + b_ir + W_hr h + b_hr           r = σ(z_r)
          z_z = W_iz x + b_iz + W_hz h + b_hz           z = σ(z_z)
          z_n = W_in x + b_in + r ⊙ (W_hn h + b_hn)     n = tanh(z_n)     (torch's reset placement)
          h' = (1 − z) ⊙ n + z ⊙ h

Backward, one step (``dh`` = ∂L/∂h_t in total: from the output / the layer above plus the part
carried back from step t+1; likewise ``dc``):

    rnn   ∂L/∂z = ∂L/∂h ⊙ (1 − h'²)   (tanh)     ∂L/∂z = ∂L/∂h ⊙ [z > 0]   (relu; ReLU′(0) = 0)
          ∂L/∂h_{t-1} = W_hhᵀ ∂L/∂z
    lstm  ∂L/∂o = ∂L/∂h ⊙ tanh(c')     ∂L/∂c' = ∂L/∂c'(carried) + ∂L/∂h ⊙ o ⊙ (1 − tanh²c')
          ∂L/∂i = ∂L/∂c' ⊙ g   ∂L/∂f = ∂L/∂c' ⊙ c   ∂L/∂g = ∂L/∂c' ⊙ i
          ∂L/∂z_k = ∂L/∂k ⊙ k(1 − k) for k ∈ {i, f, o};   ∂L/∂z_g = ∂L/∂g ⊙ (1 − g²)
          ∂L/∂c_{t-1} = ∂L/∂c' ⊙ f             ∂L/∂h_{t-1} = W_hhᵀ ∂L/∂z
    gru   ∂L/∂n = ∂L/∂h ⊙ (1 − z)   ∂L/∂z = ∂L/∂h ⊙ (h − n)
          ∂L/∂z_n = ∂L/∂n ⊙ (1 − n²)   ∂L/∂(W_hn h + b_hn) = ∂L/∂z_n ⊙ r
          ∂L/∂r = ∂L/∂z_n ⊙ (W_hn h + b_hn)   ∂L/∂z_r = ∂L/∂r ⊙ r(1 − r)
          ∂L/∂z_z = ∂L/∂z ⊙ z(1 − z)
          ∂L/∂h_{t-1} = ∂L/∂h ⊙ z + W_hhᵀ [∂L/∂z_r; ∂L/∂z_z; ∂L/∂z_n ⊙ r]

Over the sequence: ∂L/∂W_ih = Σ_t ∂L/∂z_tᵀ x_t, ∂L/∂W_hh = Σ_t ∂L/∂(W_hh h)_tᵀ h_{t-1}, the biases
the column sums of the same, ∂L/∂x_t = W_ihᵀ ∂L/∂z_t (done for all steps in one matmul each).

The whole sequence (layers, BPTT, ragged batches, the terms) is unrolled in
:mod:`handgrad.hand.recurrent_sequence`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from handgrad.contract.names import CELLS, PARAM_NAMES
from handgrad.contract.spec import SpecError


def _sigmoid(a: np.ndarray) -> np.ndarray:
    """σ(a) = 1 / (1 + e^{−a}); e^{−a} overflows to inf for a ≪ 0, giving exactly 0 (as torch)."""
    s = np.negative(a)  # N,k
    np.exp(s, out=s)
    s += 1.0
    return np.reciprocal(s, out=s)


def check_cell(cell: str) -> None:
    if cell not in CELLS:
        raise SpecError("cell", f"expected one of {', '.join(CELLS)}; got {cell!r}")


# --- one step of each cell: the cores the sequence loop calls ---------------------------------
#
# ``xp`` is the input projection of one step with the biases folded in where they add plainly:
# rnn / lstm: W_ih x + b_ih + b_hh;
# gru: [W_ir x + b_ir + b_hr; W_iz x + b_iz + b_hz; W_in x + b_in] (b_hn stays inside r ⊙ (...)).


def _input_projection(
    x: np.ndarray, W_ih: np.ndarray, b_ih: np.ndarray, b_hh: np.ndarray, cell: str
) -> np.ndarray:
    """W_ih x_t + biases for every step at once: x (T,N,I) -> (T,N,G·H), one matmul."""
    T, N, I = x.shape
    bias = b_ih + b_hh  # G·H
    if cell == "gru":
        H = b_hh.shape[0] // 3
        bias[2 * H :] = b_ih[2 * H :]  # b_hn is applied inside r ⊙ (W_hn h + b_hn)
    xp = x.reshape(T * N, I) @ W_ih.T  # T·N,G·H
    xp += bias
    return xp.reshape(T, N, -1)  # T,N,G·H


class RNNStep(NamedTuple):
    h: np.ndarray  # N,H   h' = act(a)


class GRUStep(NamedTuple):
    acts: np.ndarray  # N,3H  [r | z | n]
    hh_n: np.ndarray  # N,H   W_hn h + b_hn
    h: np.ndarray  # N,H


class LSTMStep(NamedTuple):
    acts: np.ndarray  # N,4H  [i | f | g | o]
    c: np.ndarray  # N,H
    tanh_c: np.ndarray  # N,H
    h: np.ndarray  # N,H


def _rnn_step(xp: np.ndarray, h: np.ndarray, W_hh: np.ndarray, relu: bool) -> RNNStep:
    a = xp + h @ W_hh.T  # N,H    a = W_ih x + b_ih + W_hh h + b_hh
    return RNNStep(np.maximum(a, 0.0) if relu else np.tanh(a))  # N,H


def _rnn_step_back(
    dh: np.ndarray, h_new: np.ndarray, W_hh: np.ndarray, relu: bool
) -> tuple[np.ndarray, np.ndarray]:
    """-> (∂L/∂z, ∂L/∂h_{t-1})."""
    if relu:
        da = dh * (h_new > 0.0)  # N,H   ∂L/∂z = ∂L/∂h ⊙ [z > 0]   (ReLU′(0) = 0; h' > 0 ⇔ z > 0)
    else:
        da = dh * (1.0 - h_new * h_new)  # N,H   ∂L/∂z = ∂L/∂h ⊙ (1 − h'²)
    return da, da @ W_hh  # N,H   ∂L/∂h_{t-1} = W_hhᵀ ∂L/∂z


def _gru_step(xp: np.ndarray, h: np.ndarray, W_hh: np.ndarray, b_hn: np.ndarray) -> GRUStep:
    H = h.shape[1]
    hh = h @ W_hh.T  # N,3H   [W_hr h | W_hz h | W_hn h]
    acts = np.empty_like(hh)  # N,3H
    acts[:, : 2 * H] = _sigmoid(xp[:, : 2 * H] + hh[:, : 2 * H])  # r = σ(a_r), z = σ(a_z)
    hh_n = hh[:, 2 * H :] + b_hn  # N,H    W_hn h + b_hn
    r, z = acts[:, :H], acts[:, H : 2 * H]
    n = np.tanh(xp[:, 2 * H :] + r * hh_n)  # N,H    n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))
    acts[:, 2 * H :] = n
    h_new = n + z * (h - n)  # N,H    h' = (1 − z) ⊙ n + z ⊙ h
    return GRUStep(acts, hh_n, h_new)


def _gru_step_back(
    dh: np.ndarray, h: np.ndarray, acts: np.ndarray, hh_n: np.ndarray, W_hh: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> (∂L/∂z = [∂z_r | ∂z_z | ∂z_n] (input side), ∂L/∂(W_hh h + b_hh) (hidden side),
    ∂L/∂h_{t-1})."""
    H = h.shape[1]
    r, z, n = acts[:, :H], acts[:, H : 2 * H], acts[:, 2 * H :]
    da = np.empty_like(acts)  # N,3H
    da_n = dh * (1.0 - z) * (1.0 - n * n)  # N,H   ∂L/∂z_n = ∂L/∂h ⊙ (1 − z) ⊙ (1 − n²)
    da[:, 2 * H :] = da_n
    da[:, H : 2 * H] = dh * (h - n) * z * (1.0 - z)  # ∂L/∂z_z = ∂L/∂h ⊙ (h − n) ⊙ z(1 − z)
    da[:, :H] = da_n * hh_n * r * (1.0 - r)  # ∂L/∂z_r = ∂L/∂z_n ⊙ (W_hn h + b_hn) ⊙ r(1 − r)
    dgh = da.copy()  # N,3H
    dgh[:, 2 * H :] *= r  # ∂L/∂(W_hn h + b_hn) = ∂L/∂z_n ⊙ r
    dh_prev = dh * z + dgh @ W_hh  # N,H   ∂L/∂h_{t-1} = ∂L/∂h ⊙ z + W_hhᵀ ∂L/∂(W_hh h)
    return da, dgh, dh_prev


def _lstm_step(xp: np.ndarray, h: np.ndarray, c: np.ndarray, W_hh: np.ndarray) -> LSTMStep:
    H = h.shape[1]
    a = xp + h @ W_hh.T  # N,4H   a = W_ih x + b_ih + W_hh h + b_hh, blocks [a_i|a_f|a_g|a_o]
    acts = np.empty_like(a)  # N,4H
    acts[:, : 2 * H] = _sigmoid(a[:, : 2 * H])  # i = σ(a_i), f = σ(a_f)
    acts[:, 2 * H : 3 * H] = np.tanh(a[:, 2 * H : 3 * H])  # g = tanh(a_g)
    acts[:, 3 * H :] = _sigmoid(a[:, 3 * H :])  # o = σ(a_o)
    i, f, g, o = acts[:, :H], acts[:, H : 2 * H], acts[:, 2 * H : 3 * H], acts[:, 3 * H :]
    c_new = f * c + i * g  # N,H    c' = f ⊙ c + i ⊙ g
    tanh_c = np.tanh(c_new)  # N,H
    return LSTMStep(acts, c_new, tanh_c, o * tanh_c)  # h' = o ⊙ tanh(c')


def _lstm_step_back(
    dh: np.ndarray,
    dc_carried: np.ndarray,
    c: np.ndarray,
    acts: np.ndarray,
    tanh_c: np.ndarray,
    W_hh: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """-> (∂L/∂z (N,4H), ∂L/∂c_t in total, ∂L/∂h_{t-1}, ∂L/∂c_{t-1}); ``c`` is c_{t-1}."""
    H = c.shape[1]
    i, f, g, o = acts[:, :H], acts[:, H : 2 * H], acts[:, 2 * H : 3 * H], acts[:, 3 * H :]
    dc = dc_carried + dh * o * (1.0 - tanh_c * tanh_c)  # N,H  ∂L/∂c' += ∂L/∂h ⊙ o ⊙ (1 − tanh²c')
    da = np.empty_like(acts)  # N,4H
    da[:, :H] = dc * g * i * (1.0 - i)  # ∂L/∂z_i = ∂L/∂c' ⊙ g ⊙ i(1 − i)
    da[:, H : 2 * H] = dc * c * f * (1.0 - f)  # ∂L/∂z_f = ∂L/∂c' ⊙ c ⊙ f(1 − f)
    da[:, 2 * H : 3 * H] = dc * i * (1.0 - g * g)  # ∂L/∂z_g = ∂L/∂c' ⊙ i ⊙ (1 − g²)
    da[:, 3 * H :] = dh * tanh_c * o * (1.0 - o)  # ∂L/∂z_o = ∂L/∂h ⊙ tanh(c') ⊙ o(1 − o)
    return da, dc, da @ W_hh, dc * f  # ∂L/∂h_{t-1} = W_hhᵀ ∂L/∂z;  ∂L/∂c_{t-1} = ∂L/∂c' ⊙ f


# --- single cells in the layer style (as torch.nn.RNNCell / GRUCell / LSTMCell) ----------------


class CellCache(NamedTuple):
    cell: str
    x: np.ndarray  # N,I
    h: np.ndarray  # N,H   h_{t-1}
    c: np.ndarray | None  # N,H   c_{t-1} (lstm)
    step: RNNStep | GRUStep | LSTMStep
    params: Mapping[str, np.ndarray]


def cell_forward(
    cell: str,
    x: np.ndarray,
    state: np.ndarray | tuple[np.ndarray, np.ndarray],
    params: Mapping[str, np.ndarray],
) -> tuple[np.ndarray | tuple[np.ndarray, np.ndarray], CellCache]:
    """One step of ``cell`` on x (N,I); ``state`` is h (N,H), or (h, c) for the lstm.

    ``params`` holds ``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh`` (torch's cell names).
    Returns h' (or (h', c') for the lstm) and the cache.
    """
    check_cell(cell)
    h, c = state if cell == "lstm" else (state, None)
    W_ih, W_hh, b_ih, b_hh = (np.asarray(params[k], dtype=float) for k in PARAM_NAMES)
    xp = _input_projection(np.asarray(x, dtype=float)[None], W_ih, b_ih, b_hh, cell)[0]  # N,G·H
    with np.errstate(over="ignore"):
        if cell == "lstm":
            step: RNNStep | GRUStep | LSTMStep = _lstm_step(xp, h, c, W_hh)
            out: np.ndarray | tuple[np.ndarray, np.ndarray] = (step.h, step.c)
        elif cell == "gru":
            step = _gru_step(xp, h, W_hh, b_hh[2 * h.shape[1] :])
            out = step.h
        else:
            step = _rnn_step(xp, h, W_hh, cell == "rnn_relu")
            out = step.h
    return out, CellCache(cell, x, h, c, step, params)


def cell_backward(
    dout: np.ndarray | tuple[np.ndarray, np.ndarray], cache: CellCache
) -> tuple[tuple[np.ndarray, ...], dict[str, np.ndarray]]:
    """``dout`` is ∂L/∂h' (or (∂L/∂h', ∂L/∂c') for the lstm).

    Returns ((∂L/∂x, ∂L/∂h) or (∂L/∂x, ∂L/∂h, ∂L/∂c), grads keyed by torch's cell names).
    """
    W_ih, W_hh = cache.params["weight_ih"], cache.params["weight_hh"]
    dc_prev = None
    if cache.cell == "lstm":
        dh, dc = dout
        da, _, dh_prev, dc_prev = _lstm_step_back(
            dh, dc, cache.c, cache.step.acts, cache.step.tanh_c, W_hh
        )
        dgh = da
    elif cache.cell == "gru":
        da, dgh, dh_prev = _gru_step_back(dout, cache.h, cache.step.acts, cache.step.hh_n, W_hh)
    else:
        da, dh_prev = _rnn_step_back(dout, cache.step.h, W_hh, cache.cell == "rnn_relu")
        dgh = da
    grads = {
        "weight_ih": da.T @ cache.x,  # G·H,I   ∂L/∂W_ih = ∂L/∂zᵀ x
        "weight_hh": dgh.T @ cache.h,  # G·H,H   ∂L/∂W_hh = ∂L/∂(W_hh h)ᵀ h
        "bias_ih": da.sum(axis=0),  # G·H
        "bias_hh": dgh.sum(axis=0),  # G·H
    }
    dx = da @ W_ih  # N,I   ∂L/∂x = W_ihᵀ ∂L/∂z
    return ((dx, dh_prev) if dc_prev is None else (dx, dh_prev, dc_prev)), grads
