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

Ragged batches (``lengths``). Row b is *active* at step t (1-based) when ``t <= lengths[b]``.
A row past its length carries its state unchanged (h_t = h_{t-1}, c_t = c_{t-1}), its output is
0 (as ``pad_packed_sequence`` with padding 0), its gate caches hold 0, and it gets no gradient:
∂L/∂z_t = 0 there, ∂L/∂x_t = 0 at padded positions, and ∂L/∂h, ∂L/∂c pass through unchanged, so
the final state h_n of each row is its state at its own last step and the upstream ∂L/∂h_n
arrives there. The upstream gradient of the output at padded positions is ignored.

The term rule (identical on the twin side). A per-step term ``<prefix>.<name>[t]`` holds the rows
active at step t only, in ascending batch order: ``value = full[t-1][lengths >= t]``, of shape
(n_t, H) (or (n_t, 4H) ...); a step with no active row has no term. Whole-layer terms
(``dL_dx``, ``h_n``, ``dL_dh0``, parameter gradients) are full arrays in torch's layout, with
exact zeros at padded positions of ``dL_dx``. ``dL_dh0`` / ``dL_dc0`` are emitted only when the
initial state was given (torch has no tensor to report otherwise).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from handgrad.contract.names import (
    CELLS,
    GATES,
    PARAM_NAMES,
    PARAM_SYMBOLS,
    PARAM_TERMS,
    gate_grad_names,
    term_prefix,
    term_symbol,
)
from handgrad.contract.spec import SpecError
from handgrad.contract.trace import StepTrace


def _sigmoid(a: np.ndarray) -> np.ndarray:
    """σ(a) = 1 / (1 + e^{−a}); e^{−a} overflows to inf for a ≪ 0, giving exactly 0 (as torch)."""
    s = np.negative(a)  # N,k
    np.exp(s, out=s)
    s += 1.0
    return np.reciprocal(s, out=s)


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
    _check_cell(cell)
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


# --- a multi-layer sequence ---------------------------------------------------------------------


class SequenceOut(NamedTuple):
    """What torch's module returns: output (T,N,H) or (N,T,H) if batch_first; h_n, c_n (L,N,H)."""

    output: np.ndarray
    h_n: np.ndarray
    c_n: np.ndarray | None = None


class LayerCache(NamedTuple):
    """The named intermediates of one layer, time-major, in the caller's batch order."""

    x: np.ndarray  # T,N,I    layer input (the layer below's output, 0 at padded positions)
    h: np.ndarray  # T+1,N,H  h[0] = h0, h[t] state after step t (carried past a row's length)
    c: np.ndarray | None  # T+1,N,H  lstm cell state, same layout
    acts: np.ndarray  # T,N,G·H  gate activations (lstm i,f,g,o; gru r,z,n; rnn h); 0 if inactive
    hh_n: np.ndarray | None  # T,N,H  gru: W_hn h_{t-1} + b_hn; 0 if inactive
    tanh_c: np.ndarray | None  # T,N,H  lstm: tanh(c_t); 0 if inactive
    output: np.ndarray  # T,N,H    h_t where active, 0 past the length
    params: dict[str, np.ndarray]  # weight_ih, weight_hh, bias_ih, bias_hh of this layer


class SequenceCache(NamedTuple):
    cell: str
    lengths: np.ndarray  # N   (T for every row when none were given)
    active: np.ndarray  # T,N  bool, row b active at step t+1 ⇔ t < lengths[b]
    batch_first: bool
    initial_given: bool  # h0 (and c0) were given, not zero by default
    layers: tuple[LayerCache, ...]


class LayerGrads(NamedTuple):
    """The backward intermediates of one layer, time-major."""

    dh: np.ndarray  # T,N,H    ∂L/∂h_t in total (from the output / layer above + carried)
    dc: np.ndarray | None  # T,N,H  lstm: ∂L/∂c_t in total
    da: np.ndarray  # T,N,G·H  ∂L/∂(gate pre-activations); 0 past a row's length
    dgh: np.ndarray  # T,N,G·H  ∂L/∂(W_hh h + b_hh): da for rnn/lstm, n block ⊙ r for gru
    dx: np.ndarray  # T,N,I    ∂L/∂(layer input)
    dh0: np.ndarray  # N,H
    dc0: np.ndarray | None  # N,H
    grads: dict[str, np.ndarray]  # weight_ih, weight_hh, bias_ih, bias_hh of this layer


class SequenceGrads(NamedTuple):
    dx: np.ndarray  # T,N,I (N,T,I if batch_first)
    dh0: np.ndarray  # L,N,H
    dc0: np.ndarray | None  # L,N,H
    layers: tuple[LayerGrads, ...]


def _check_cell(cell: str) -> None:
    if cell not in CELLS:
        raise SpecError("cell", f"expected one of {', '.join(CELLS)}; got {cell!r}")


def num_layers_of(params: Mapping[str, np.ndarray]) -> int:
    """How many layers the parameter dict holds (weight_ih_l0, weight_ih_l1, ...)."""
    count = 0
    while f"weight_ih_l{count}" in params:
        count += 1
    if count == 0:
        raise SpecError("params", "expected weight_ih_l0 (torch's names), found none")
    return count


def _layer_params(
    params: Mapping[str, np.ndarray], layer: int, cell: str, in_size: int, hidden: int | None
) -> dict[str, np.ndarray]:
    G = len(GATES[cell])
    out: dict[str, np.ndarray] = {}
    for base in PARAM_NAMES:
        key = f"{base}_l{layer}"
        if key not in params:
            raise SpecError("params", f"missing {key}")
        out[base] = np.asarray(params[key], dtype=np.float64)
    H = out["weight_hh"].shape[1] if hidden is None else hidden
    expected = {
        "weight_ih": (G * H, in_size),
        "weight_hh": (G * H, H),
        "bias_ih": (G * H,),
        "bias_hh": (G * H,),
    }
    for base, shape in expected.items():
        if out[base].shape != shape:
            raise SpecError(
                f"params.{base}_l{layer}", f"expected shape {shape}, got {out[base].shape}"
            )
    return out


def _initial(value: np.ndarray | None, name: str, L: int, N: int, H: int) -> np.ndarray:
    if value is None:
        return np.zeros((L, N, H))
    array = np.asarray(value, dtype=np.float64)
    if array.shape != (L, N, H):
        raise SpecError(
            name, f"expected shape {(L, N, H)} (num_layers, batch, hidden), got {array.shape}"
        )
    return array


def forward(
    x: np.ndarray,
    params: Mapping[str, np.ndarray],
    *,
    cell: str,
    lengths: np.ndarray | None = None,
    h0: np.ndarray | None = None,
    c0: np.ndarray | None = None,
    batch_first: bool = False,
) -> tuple[SequenceOut, SequenceCache]:
    """The stacked recurrent layer over a padded batch, as torch.nn.RNN / GRU / LSTM.

    ``x`` is (T,N,I), or (N,T,I) with ``batch_first``; ``lengths`` (N,) in 1..T, any order (rows
    past their length are padding and are masked: see the module docstring); ``h0`` / ``c0``
    (num_layers,N,H) or None for zeros. The number of layers is read from ``params``
    (``weight_ih_l0``, ``weight_ih_l1``, ...).
    """
    _check_cell(cell)
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 3:
        raise SpecError("x", f"expected a 3-D array (T,N,I) or (N,T,I), got shape {x.shape}")
    xt = x.transpose(1, 0, 2) if batch_first else x  # T,N,I
    T, N, I = xt.shape
    L = num_layers_of(params)
    H = _layer_params(params, 0, cell, I, None)["weight_hh"].shape[1]
    if lengths is None:
        lens = np.full(N, T, dtype=np.int64)
    else:
        lens = np.asarray(lengths)
        if lens.shape != (N,) or not np.issubdtype(lens.dtype, np.integer):
            raise SpecError("lengths", f"expected {N} integers (one per sequence), got {lengths!r}")
        if np.any(lens < 1) or np.any(lens > T):
            raise SpecError("lengths", f"expected every length in 1..{T}, got {lens.tolist()}")
        lens = lens.astype(np.int64)
    if cell == "lstm" and (h0 is None) != (c0 is None):
        raise SpecError("c0", "the lstm takes h0 and c0 together (both or neither), as torch")
    if cell != "lstm" and c0 is not None:
        raise SpecError("c0", f"only the lstm has a cell state; got c0 for {cell}")
    h0_all = _initial(h0, "h0", L, N, H)
    c0_all = _initial(c0, "c0", L, N, H) if cell == "lstm" else None
    active = np.arange(T)[:, None] < lens[None, :]  # T,N
    full = active.all(axis=1)  # T    steps where no row is masked
    layers: list[LayerCache] = []
    inp = np.ascontiguousarray(xt)  # T,N,I
    with np.errstate(over="ignore"):
        for layer in range(L):
            p = _layer_params(params, layer, cell, inp.shape[2], H)
            cache = _layer_forward(
                cell, inp, p, h0_all[layer], None if c0_all is None else c0_all[layer], active, full
            )
            layers.append(cache)
            inp = cache.output
    h_n = np.stack([lc.h[T] for lc in layers])  # L,N,H   each row's state at its own last step
    c_n = None if cell != "lstm" else np.stack([lc.c[T] for lc in layers])  # L,N,H
    output = inp.transpose(1, 0, 2) if batch_first else inp
    cache = SequenceCache(cell, lens, active, batch_first, h0 is not None, tuple(layers))
    return SequenceOut(output, h_n, c_n), cache


def _layer_forward(
    cell: str,
    x: np.ndarray,
    p: dict[str, np.ndarray],
    h: np.ndarray,
    c: np.ndarray | None,
    active: np.ndarray,
    full: np.ndarray,
) -> LayerCache:
    T, N, _ = x.shape
    H = h.shape[1]
    G = len(GATES[cell])
    W_hh = p["weight_hh"]
    xp = _input_projection(x, p["weight_ih"], p["bias_ih"], p["bias_hh"], cell)  # T,N,G·H
    hs = np.empty((T + 1, N, H))  # T+1,N,H
    hs[0] = h
    cs = None
    if cell == "lstm":
        cs = np.empty((T + 1, N, H))  # T+1,N,H
        cs[0] = c
    acts = np.zeros((T, N, G * H))  # T,N,G·H
    hh_n = np.zeros((T, N, H)) if cell == "gru" else None  # T,N,H
    tanh_c = np.zeros((T, N, H)) if cell == "lstm" else None  # T,N,H
    b_hn = p["bias_hh"][2 * H :]
    relu = cell == "rnn_relu"
    for t in range(T):
        h_prev = hs[t]
        if cell == "lstm":
            st = _lstm_step(xp[t], h_prev, cs[t], W_hh)
            new_h, new_c, act = st.h, st.c, st.acts
        elif cell == "gru":
            st = _gru_step(xp[t], h_prev, W_hh, b_hn)
            new_h, act = st.h, st.acts
        else:
            st = _rnn_step(xp[t], h_prev, W_hh, relu)
            new_h, act = st.h, st.h
        if full[t]:
            hs[t + 1] = new_h
            acts[t] = act
            if cell == "lstm":
                cs[t + 1] = new_c
                tanh_c[t] = st.tanh_c
            elif cell == "gru":
                hh_n[t] = st.hh_n
            continue
        # NOTE: rows past their length keep their state; nothing computed for them is kept.
        m = active[t]  # N
        hs[t + 1] = np.where(m[:, None], new_h, h_prev)  # N,H   h_t = h_{t-1} when inactive
        acts[t, m] = act[m]
        if cell == "lstm":
            cs[t + 1] = np.where(m[:, None], new_c, cs[t])  # N,H
            tanh_c[t, m] = st.tanh_c[m]
        elif cell == "gru":
            hh_n[t, m] = st.hh_n[m]
    output = np.where(active[:, :, None], hs[1:], 0.0)  # T,N,H   0 at padded positions
    return LayerCache(x, hs, cs, acts, hh_n, tanh_c, output, p)


def backward(
    dout: SequenceOut | tuple[np.ndarray, np.ndarray | None, np.ndarray | None],
    cache: SequenceCache,
) -> tuple[SequenceGrads, dict[str, np.ndarray]]:
    """BPTT. ``dout`` = (∂L/∂output, ∂L/∂h_n, ∂L/∂c_n) in the forward's layouts (None = zeros).

    Returns (SequenceGrads(dx, dh0, dc0, per-layer intermediates), grads keyed by torch's names
    ``weight_ih_l0``, ``weight_hh_l0``, ``bias_ih_l0``, ``bias_hh_l0``, ``..._l1``).
    """
    d_output, dh_n, dc_n = dout
    T, N = cache.active.shape
    L = len(cache.layers)
    H = cache.layers[0].h.shape[2]
    d_output = np.asarray(d_output, dtype=np.float64)
    dy = d_output.transpose(1, 0, 2) if cache.batch_first else d_output  # T,N,H
    if dy.shape != (T, N, H):
        raise SpecError("dout", f"expected the output's shape, got {d_output.shape}")
    dy = np.where(cache.active[:, :, None], dy, 0.0)  # T,N,H  padded positions get no gradient
    dh_n = _initial(dh_n, "dh_n", L, N, H)
    dc_n = _initial(dc_n, "dc_n", L, N, H) if cache.cell == "lstm" else None
    full = cache.active.all(axis=1)
    per_layer: list[LayerGrads] = [None] * L  # type: ignore[list-item]
    for layer in reversed(range(L)):
        lg = _layer_backward(
            cache.cell,
            dy,
            dh_n[layer],
            None if dc_n is None else dc_n[layer],
            cache.layers[layer],
            cache.active,
            full,
        )
        per_layer[layer] = lg
        dy = lg.dx  # T,N,I   the layer below's output gradient
    grads: dict[str, np.ndarray] = {}
    for layer, lg in enumerate(per_layer):
        for base in PARAM_NAMES:
            grads[f"{base}_l{layer}"] = lg.grads[base]
    dx = dy.transpose(1, 0, 2) if cache.batch_first else dy
    dh0 = np.stack([lg.dh0 for lg in per_layer])  # L,N,H
    dc0 = None if cache.cell != "lstm" else np.stack([lg.dc0 for lg in per_layer])  # L,N,H
    return SequenceGrads(dx, dh0, dc0, tuple(per_layer)), grads


def _layer_backward(
    cell: str,
    dy: np.ndarray,
    dh_last: np.ndarray,
    dc_last: np.ndarray | None,
    lc: LayerCache,
    active: np.ndarray,
    full: np.ndarray,
) -> LayerGrads:
    T, N, I = lc.x.shape
    H = lc.h.shape[2]
    W_ih, W_hh = lc.params["weight_ih"], lc.params["weight_hh"]
    dhs = np.empty((T, N, H))  # T,N,H
    dcs = np.empty((T, N, H)) if cell == "lstm" else None  # T,N,H
    da = np.zeros_like(lc.acts)  # T,N,G·H
    dgh = da if cell != "gru" else np.zeros_like(lc.acts)  # T,N,G·H
    dh_carry = dh_last  # N,H   ∂L/∂h_T arrives from h_n
    dc_carry = dc_last  # N,H
    relu = cell == "rnn_relu"
    for t in reversed(range(T)):
        dh = dy[t] + dh_carry  # N,H   ∂L/∂h_t = from the output / above + carried from t+1
        dhs[t] = dh
        dc = None
        if cell == "lstm":
            da_t, dc, dh_prev, dc_prev = _lstm_step_back(
                dh, dc_carry, lc.c[t], lc.acts[t], lc.tanh_c[t], W_hh
            )
            dgh_t = da_t
        elif cell == "gru":
            da_t, dgh_t, dh_prev = _gru_step_back(dh, lc.h[t], lc.acts[t], lc.hh_n[t], W_hh)
        else:
            da_t, dh_prev = _rnn_step_back(dh, lc.h[t + 1], W_hh, relu)
            dgh_t = da_t
        if full[t]:
            da[t] = da_t
            if cell == "gru":
                dgh[t] = dgh_t
            if cell == "lstm":
                dcs[t] = dc
                dc_carry = dc_prev
            dh_carry = dh_prev
            continue
        # NOTE: a row past its length is the identity h_t = h_{t-1}: its gradient passes through.
        m = active[t]  # N
        da[t, m] = da_t[m]
        if cell == "gru":
            dgh[t, m] = dgh_t[m]
        if cell == "lstm":
            dcs[t] = np.where(m[:, None], dc, dc_carry)  # N,H
            dc_carry = np.where(m[:, None], dc_prev, dc_carry)  # N,H
        dh_carry = np.where(m[:, None], dh_prev, dh)  # N,H
    G = da.shape[2]
    da2 = da.reshape(T * N, G)  # T·N,G·H
    dgh2 = dgh.reshape(T * N, G)  # T·N,G·H
    grads = {
        "weight_ih": da2.T @ lc.x.reshape(T * N, I),  # G·H,I  ∂L/∂W_ih = Σ_t ∂L/∂z_tᵀ x_t
        "weight_hh": dgh2.T
        @ lc.h[:T].reshape(T * N, H),  # G·H,H  ∂L/∂W_hh = Σ_t ∂L/∂(W_hh h)_tᵀ h_{t-1}
        "bias_ih": da2.sum(axis=0),  # G·H   ∂L/∂b_ih = Σ_t Σ_rows ∂L/∂z_t
        "bias_hh": dgh2.sum(axis=0),  # G·H   ∂L/∂b_hh = Σ_t Σ_rows ∂L/∂(W_hh h)_t
    }
    dx = (da2 @ W_ih).reshape(T, N, I)  # T,N,I  ∂L/∂x_t = W_ihᵀ ∂L/∂z_t (0 at padded positions)
    return LayerGrads(dhs, dcs, da, dgh, dx, dh_carry, dc_carry, grads)


# --- terms -------------------------------------------------------------------------------------

def _step_rows(full: np.ndarray, active_t: np.ndarray) -> np.ndarray:
    return full[active_t]  # n_t,...   rows active at this step, ascending batch order


def add_forward_terms(
    trace: StepTrace, cache: SequenceCache, layer: int, name: str | None = None
) -> None:
    """Append the forward terms of one layer: per step the gates then the states, then h_n, c_n."""
    cell = cache.cell
    lc = cache.layers[layer]
    prefix = term_prefix(cell, layer, name)
    T = cache.active.shape[0]
    H = lc.h.shape[2]
    gates = () if cell in ("rnn_tanh", "rnn_relu") else GATES[cell]
    for t in range(1, T + 1):
        m = cache.active[t - 1]
        if not m.any():
            continue
        for k, g in enumerate(gates):
            value = _step_rows(lc.acts[t - 1, :, k * H : (k + 1) * H], m)
            trace.add(f"{prefix}.{g}[{t}]", term_symbol(g, layer + 1, t), "forward", value)
        if cell == "lstm":
            trace.add(
                f"{prefix}.c[{t}]",
                term_symbol("c", layer + 1, t),
                "forward",
                _step_rows(lc.c[t], m),
            )
        trace.add(
            f"{prefix}.h[{t}]", term_symbol("h", layer + 1, t), "forward", _step_rows(lc.h[t], m)
        )
    trace.add(f"{prefix}.h_n", term_symbol("h_n", layer + 1), "forward", lc.h[T])
    if cell == "lstm":
        trace.add(f"{prefix}.c_n", term_symbol("c_n", layer + 1), "forward", lc.c[T])


def add_backward_terms(
    trace: StepTrace,
    cache: SequenceCache,
    grads: SequenceGrads,
    layer: int,
    name: str | None = None,
) -> None:
    """Append the backward terms of one layer: per step (t = T..1) ∂L/∂h, ∂L/∂c, ∂L/∂z_gate;
    then ∂L/∂h0, ∂L/∂c0 (if given), ∂L/∂x, and the parameter gradients."""
    cell = cache.cell
    lg = grads.layers[layer]
    prefix = term_prefix(cell, layer, name)
    T = cache.active.shape[0]
    H = lg.dh.shape[2]
    l1 = layer + 1
    gate_names = gate_grad_names(cell)
    for t in range(T, 0, -1):
        m = cache.active[t - 1]
        if not m.any():
            continue
        trace.add(
            f"{prefix}.dL_dh[{t}]",
            term_symbol("∂L/∂h", l1, t),
            "backward",
            _step_rows(lg.dh[t - 1], m),
        )
        if cell == "lstm":
            trace.add(
                f"{prefix}.dL_dc[{t}]",
                term_symbol("∂L/∂c", l1, t),
                "backward",
                _step_rows(lg.dc[t - 1], m),
            )
        for k, gname in enumerate(gate_names):
            value = _step_rows(lg.da[t - 1, :, k * H : (k + 1) * H], m)
            sym = "∂L/∂z" + gname[len("dL_dz") :]
            trace.add(f"{prefix}.{gname}[{t}]", term_symbol(sym, l1, t), "backward", value)
    if cache.initial_given:
        trace.add(f"{prefix}.dL_dh0", term_symbol("∂L/∂h₀", l1), "backward", lg.dh0)
        if cell == "lstm":
            trace.add(f"{prefix}.dL_dc0", term_symbol("∂L/∂c₀", l1), "backward", lg.dc0)
    dx = lg.dx.transpose(1, 0, 2) if cache.batch_first else lg.dx
    trace.add(f"{prefix}.dL_dx", term_symbol("∂L/∂x", l1), "backward", dx)
    for term, base in zip(PARAM_TERMS, PARAM_NAMES, strict=True):
        trace.add(
            f"{prefix}.{term}", term_symbol(PARAM_SYMBOLS[base], l1), "backward", lg.grads[base]
        )




def add_terms(
    trace: StepTrace, cache: SequenceCache, grads: SequenceGrads, name: str | None = None
) -> None:
    """All terms in computation order: forward of layers 1..L, then backward of layers L..1."""
    L = len(cache.layers)
    for layer in range(L):
        add_forward_terms(trace, cache, layer, name)
    for layer in reversed(range(L)):
        add_backward_terms(trace, cache, grads, layer, name)
