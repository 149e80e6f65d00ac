r"""Recurrent layers by hand over a whole sequence: the multi-layer unrolling of the step cores in
:mod:`handgrad.hand.recurrent` (forward over t = 1..T, backpropagation through time over
t = T..1), ragged batches and the terms. Pure NumPy; never imports torch.

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
    GATES,
    PARAM_NAMES,
    PARAM_SYMBOLS,
    PARAM_TERMS,
    gate_grad_names,
    term_prefix,
    term_symbol,
)
from handgrad.contract.recurrent import num_layers_of
from handgrad.contract.spec import SpecError
from handgrad.contract.trace import StepTrace

# The step cores are looked up on their module at each call (cells._lstm_step ...), so a planted
# bug swapped in there (handgrad.mutants.recurrent) reaches this loop.
from handgrad.hand import recurrent as cells

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
            raise SpecError(f"params.{base}_l{layer}", f"expected shape {shape}, got {out[base].shape}")
    return out


def _initial(value: np.ndarray | None, name: str, L: int, N: int, H: int) -> np.ndarray:
    if value is None:
        return np.zeros((L, N, H))
    array = np.asarray(value, dtype=np.float64)
    if array.shape != (L, N, H):
        raise SpecError(name, f"expected shape {(L, N, H)} (num_layers, batch, hidden), got {array.shape}")
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
    cells.check_cell(cell)
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
    xp = cells._input_projection(x, p["weight_ih"], p["bias_ih"], p["bias_hh"], cell)  # T,N,G·H
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
            st = cells._lstm_step(xp[t], h_prev, cs[t], W_hh)
            new_h, new_c, act = st.h, st.c, st.acts
        elif cell == "gru":
            st = cells._gru_step(xp[t], h_prev, W_hh, b_hn)
            new_h, act = st.h, st.acts
        else:
            st = cells._rnn_step(xp[t], h_prev, W_hh, relu)
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
            da_t, dc, dh_prev, dc_prev = cells._lstm_step_back(
                dh, dc_carry, lc.c[t], lc.acts[t], lc.tanh_c[t], W_hh
            )
            dgh_t = da_t
        elif cell == "gru":
            da_t, dgh_t, dh_prev = cells._gru_step_back(dh, lc.h[t], lc.acts[t], lc.hh_n[t], W_hh)
        else:
            da_t, dh_prev = cells._rnn_step_back(dh, lc.h[t + 1], W_hh, relu)
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
        "weight_hh": dgh2.T @ lc.h[:T].reshape(T * N, H),  # G·H,H  ∂L/∂W_hh = Σ_t ∂L/∂(W_hh h)_tᵀ h_{t-1}
        "bias_ih": da2.sum(axis=0),  # G·H   ∂L/∂b_ih = Σ_t Σ_rows ∂L/∂z_t
        "bias_hh": dgh2.sum(axis=0),  # G·H   ∂L/∂b_hh = Σ_t Σ_rows ∂L/∂(W_hh h)_t
    }
    dx = (da2 @ W_ih).reshape(T, N, I)  # T,N,I  ∂L/∂x_t = W_ihᵀ ∂L/∂z_t (0 at padded positions)
    return LayerGrads(dhs, dcs, da, dgh, dx, dh_carry, dc_carry, grads)


# --- terms -------------------------------------------------------------------------------------


def _step_rows(full: np.ndarray, active_t: np.ndarray) -> np.ndarray:
    """The rows active at step t, ascending batch order (n_t,...): a boolean index, so always a
    new array, which the trace keeps uncopied (``copy=False`` below)."""
    return full[active_t]  # n_t,...


def add_forward_terms(trace: StepTrace, cache: SequenceCache, layer: int, name: str | None = None) -> None:
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
            trace.add(f"{prefix}.{g}[{t}]", term_symbol(g, layer + 1, t), "forward", value, copy=False)
        if cell == "lstm":
            trace.add(
                f"{prefix}.c[{t}]",
                term_symbol("c", layer + 1, t),
                "forward",
                _step_rows(lc.c[t], m),
                copy=False,
            )
        h_t = _step_rows(lc.h[t], m)
        trace.add(f"{prefix}.h[{t}]", term_symbol("h", layer + 1, t), "forward", h_t, copy=False)
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
            copy=False,
        )
        if cell == "lstm":
            trace.add(
                f"{prefix}.dL_dc[{t}]",
                term_symbol("∂L/∂c", l1, t),
                "backward",
                _step_rows(lg.dc[t - 1], m),
                copy=False,
            )
        for k, gname in enumerate(gate_names):
            value = _step_rows(lg.da[t - 1, :, k * H : (k + 1) * H], m)
            sym = "∂L/∂z" + gname[len("dL_dz") :]
            trace.add(f"{prefix}.{gname}[{t}]", term_symbol(sym, l1, t), "backward", value, copy=False)
    if cache.initial_given:
        trace.add(f"{prefix}.dL_dh0", term_symbol("∂L/∂h₀", l1), "backward", lg.dh0)
        if cell == "lstm":
            trace.add(f"{prefix}.dL_dc0", term_symbol("∂L/∂c₀", l1), "backward", lg.dc0)
    dx = lg.dx.transpose(1, 0, 2) if cache.batch_first else lg.dx
    trace.add(f"{prefix}.dL_dx", term_symbol("∂L/∂x", l1), "backward", dx)
    for term, base in zip(PARAM_TERMS, PARAM_NAMES, strict=True):
        trace.add(f"{prefix}.{term}", term_symbol(PARAM_SYMBOLS[base], l1), "backward", lg.grads[base])


def add_terms(trace: StepTrace, cache: SequenceCache, grads: SequenceGrads, name: str | None = None) -> None:
    """All terms in computation order: forward of layers 1..L, then backward of layers L..1."""
    L = len(cache.layers)
    for layer in range(L):
        add_forward_terms(trace, cache, layer, name)
    for layer in reversed(range(L)):
        add_backward_terms(trace, cache, grads, layer, name)
