"""The torch side of the recurrent layers: two references and the check that ties them.

(a) ``torch.nn``: the fused modules ``nn.RNN`` / ``nn.GRU`` / ``nn.LSTM``, fed a packed batch
    (``pack_padded_sequence(enforce_sorted=False)`` / ``pad_packed_sequence``) when lengths are
    given. They report what they expose: the output at every step, h_n (and c_n), every parameter
    gradient (``.grad``), ∂L/∂x and ∂L/∂h0, ∂L/∂c0 (``.grad`` of the input leaves).
(b) ``torch-ops``: the same cells written with elementary torch operations (``@``, ``sigmoid``,
    ``tanh``, ``where``) on ``requires_grad`` tensors, differentiated by autograd;
    ``retain_grad()`` on every gate pre-activation and every state gives the per-step gate values
    and gradients the fused modules keep to themselves.
(c) ``check_agreement``: run every time, (b) must agree with (a) on everything (a) exposes, or a
    :class:`ReferenceMismatch` names what differs.

Every term records its source: ``torch.nn`` when the fused module exposes it, else
``torch-ops``. Names, order, shapes and the ragged-batch row rule are the hand side's
(``handgrad.hand.recurrent_sequence``): a per-step term holds the rows active at that step
(``lengths >= t``) in ascending batch order; a step with no active row has no term.
Nothing here is computed by hand: values are torch's tensors, only sliced and transposed.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from handgrad.contract.names import CELLS, GATES, PARAM_NAMES, PARAM_SYMBOLS, PARAM_TERMS, PREFIX, term_symbol
from handgrad.contract.recurrent import num_layers_of
from handgrad.contract.spec import SpecError
from handgrad.contract.tolerance import Tolerance, tolerance_for
from handgrad.contract.trace import StepTrace

SOURCE_NN = "torch.nn"
SOURCE_OPS = "torch-ops"


class ReferenceMismatch(AssertionError):
    """The torch-ops reference disagrees with the fused torch.nn module."""


class FusedResult(NamedTuple):
    """What the fused module computed, as numpy, in the caller's layouts."""

    output: np.ndarray  # T,N,H (N,T,H if batch_first)
    h_n: np.ndarray  # L,N,H
    c_n: np.ndarray | None  # L,N,H
    grads: dict[str, np.ndarray]  # weight_ih_l0, ... (torch's names)
    dx: np.ndarray  # like x
    dh0: np.ndarray | None  # L,N,H   only when h0 was given
    dc0: np.ndarray | None  # L,N,H


class OpsLayer(NamedTuple):
    """One layer of the torch-ops reference: the tensors themselves (read after backward)."""

    inp: torch.Tensor  # T,N,I   layer input (retain_grad above layer 1), time-major
    pre: dict[str, list[torch.Tensor]]  # gate pre-activations per step (retain_grad; lstm: see pre_all)
    acts: dict[str, list[torch.Tensor]]  # gate values per step
    h: list[torch.Tensor]  # h_t per step (retain_grad), carried past a row's length
    c: list[torch.Tensor] | None  # c_t per step (retain_grad), lstm
    params: dict[str, torch.Tensor]  # leaves: weight_ih, weight_hh, bias_ih, bias_hh
    # lstm: the pre-activation of all four gates per step, N,4·H (retain_grad); pre[g][t] is its
    # chunk g, whose gradient is the chunk of this one's (chunk's backward concatenates)
    pre_all: list[torch.Tensor] | None = None


class OpsResult(NamedTuple):
    output: torch.Tensor  # like the fused output
    h_n: torch.Tensor  # L,N,H
    c_n: torch.Tensor | None
    x: torch.Tensor  # leaf
    h0: torch.Tensor | None  # leaf
    c0: torch.Tensor | None  # leaf
    layers: tuple[OpsLayer, ...]


class TwinResult(NamedTuple):
    cell: str
    lengths: np.ndarray  # N
    active: np.ndarray  # T,N bool
    batch_first: bool
    initial_given: bool
    fused: FusedResult
    ops: OpsResult


def build_module(
    cell: str,
    input_size: int,
    hidden_size: int,
    num_layers: int,
    batch_first: bool = False,
    dtype: torch.dtype = torch.float64,
) -> nn.RNNBase:
    """The fused torch module for ``cell`` (two biases, as torch always has)."""
    kwargs = dict(num_layers=num_layers, bias=True, batch_first=batch_first, dtype=dtype)
    if cell in ("rnn_tanh", "rnn_relu"):
        return nn.RNN(input_size, hidden_size, nonlinearity=cell[4:], **kwargs)
    if cell == "gru":
        return nn.GRU(input_size, hidden_size, **kwargs)
    if cell == "lstm":
        return nn.LSTM(input_size, hidden_size, **kwargs)
    raise SpecError("cell", f"expected one of {', '.join(CELLS)}; got {cell!r}")


def load_params(module: nn.Module, params: Mapping[str, np.ndarray]) -> None:
    """Copy numpy arrays into the module's parameters by torch's names (shapes must match)."""
    own = dict(module.named_parameters())
    missing = sorted(set(own) - set(params))
    if missing:
        raise SpecError("params", f"missing {', '.join(missing)}")
    with torch.no_grad():
        for key, parameter in own.items():
            value = torch.as_tensor(np.asarray(params[key]), dtype=parameter.dtype)
            if value.shape != parameter.shape:
                raise SpecError(
                    f"params.{key}",
                    f"expected shape {tuple(parameter.shape)}, got {tuple(value.shape)}",
                )
            parameter.copy_(value)


def backward_from(tensors: list[torch.Tensor], upstream: list[torch.Tensor]) -> None:
    """Backpropagate ``upstream[i]`` into ``tensors[i]``: ``torch.autograd.backward(tensors,
    upstream)``, written as the backward of the scalar Σᵢ Σ(tensorsᵢ ⊙ upstreamᵢ), whose gradient
    at tensorsᵢ is upstreamᵢ exactly (MulBackward: 1·upstreamᵢ). Given explicit grad tensors,
    torch's backward imports torch.fx's symbolic shapes and sympy to check their shapes: ~1 s once
    per process, a quarter of `compare parity`."""
    total = sum((tensor * grad).sum() for tensor, grad in zip(tensors, upstream, strict=True))
    torch.autograd.backward(total)  # type: ignore[arg-type]


def _upstream(
    upstream: tuple[np.ndarray, np.ndarray | None, np.ndarray | None],
    shapes: tuple,
    dtype: torch.dtype,
    device: torch.device | str = "cpu",
) -> list[torch.Tensor]:
    out = []
    for value, shape in zip(upstream, shapes, strict=False):
        if shape is None:
            continue
        out.append(
            torch.zeros(shape, dtype=dtype, device=device)
            if value is None
            else torch.as_tensor(value, dtype=dtype, device=device)
        )
    return out


def run_fused(
    cell: str,
    params: Mapping[str, np.ndarray],
    x: np.ndarray,
    upstream: tuple[np.ndarray, np.ndarray | None, np.ndarray | None],
    *,
    lengths: np.ndarray | None = None,
    h0: np.ndarray | None = None,
    c0: np.ndarray | None = None,
    batch_first: bool = False,
    dtype: torch.dtype = torch.float64,
) -> FusedResult:
    """Forward and backward through the fused module.

    ``upstream`` = (∂L/∂output, ∂L/∂h_n, ∂L/∂c_n) in the module's layouts; None means zeros.
    """
    L = num_layers_of(params)
    H = np.asarray(params["weight_hh_l0"]).shape[1]
    module = build_module(cell, x.shape[2], H, L, batch_first, dtype)
    load_params(module, params)
    xt = torch.tensor(x, dtype=dtype, requires_grad=True)
    T = x.shape[1] if batch_first else x.shape[0]
    h0t = None if h0 is None else torch.tensor(h0, dtype=dtype, requires_grad=True)
    c0t = None if c0 is None else torch.tensor(c0, dtype=dtype, requires_grad=True)
    hx = None if h0t is None else ((h0t, c0t) if cell == "lstm" else h0t)
    if lengths is None:
        output, state = module(xt, hx)
    else:
        packed = pack_padded_sequence(
            xt,
            torch.as_tensor(lengths, dtype=torch.int64),
            batch_first=batch_first,
            enforce_sorted=False,
        )
        packed_out, state = module(packed, hx)
        output, _ = pad_packed_sequence(packed_out, batch_first=batch_first, total_length=T)
    h_n, c_n = state if cell == "lstm" else (state, None)
    tensors = [output, h_n] + ([c_n] if c_n is not None else [])
    shapes = (tuple(output.shape), tuple(h_n.shape), None if c_n is None else tuple(c_n.shape))
    backward_from(tensors, _upstream(upstream, shapes, dtype))
    grads = {key: p.grad.detach().numpy().copy() for key, p in module.named_parameters()}
    return FusedResult(
        output.detach().numpy().copy(),
        h_n.detach().numpy().copy(),
        None if c_n is None else c_n.detach().numpy().copy(),
        grads,
        xt.grad.numpy().copy(),
        None if h0t is None else h0t.grad.numpy().copy(),
        None if c0t is None else c0t.grad.numpy().copy(),
    )


def _retain(tensor: torch.Tensor) -> torch.Tensor:
    tensor.retain_grad()
    return tensor


def _ops_layer(
    cell: str,
    inp: torch.Tensor,
    params: dict[str, torch.Tensor],
    h: torch.Tensor,
    c: torch.Tensor | None,
    active: torch.Tensor,
    full: np.ndarray | None = None,
) -> tuple[OpsLayer, torch.Tensor]:
    """One layer from elementary ops; returns the layer and its output (T,N,H, 0 when padded).

    ``full[t]``: every row is active at step t (default: read from ``active``). The input's steps
    are taken by one ``unbind`` (one backward node that stacks the step gradients), not a
    ``select`` per step, whose backward fills a T·N·I zero tensor each: T² time and memory (a
    two-layer LSTM of length 5,000 peaked at 4.2 GB that way, 1.1 GB this way). Each step's
    gradient reaches the input's ``.grad`` (a term above layer 1) unchanged either way: the same
    doubles, with nothing added to them. The transposed weights are views taken once (their
    gradient sums reach only ∂L/∂W, which the check compares with torch.nn's and the terms take
    from torch.nn)."""
    W_ih, W_hh, b_ih, b_hh = (params[k] for k in PARAM_NAMES)
    W_ih_T, W_hh_T = W_ih.T, W_hh.T
    gates = GATES[cell] if cell in ("gru", "lstm") else ("a",)
    pre: dict[str, list[torch.Tensor]] = {g: [] for g in gates}
    acts: dict[str, list[torch.Tensor]] = {g: [] for g in gates}
    hs: list[torch.Tensor] = []
    cs: list[torch.Tensor] | None = [] if cell == "lstm" else None
    pre_all: list[torch.Tensor] | None = [] if cell == "lstm" else None
    outputs: list[torch.Tensor] = []
    if full is None:
        full = active.all(dim=1).cpu().numpy()
    steps = inp.unbind(0)
    for t in range(inp.shape[0]):
        every = bool(full[t])
        m = None if every else active[t][:, None]  # N,1
        gi = steps[t] @ W_ih_T + b_ih  # N,G·H
        gh = h @ W_hh_T + b_hh  # N,G·H
        if cell == "lstm":
            a = _retain(gi + gh)  # N,4·H
            a_i, a_f, a_g, a_o = a.chunk(4, dim=1)
            i, f, g, o = torch.sigmoid(a_i), torch.sigmoid(a_f), torch.tanh(a_g), torch.sigmoid(a_o)
            c_new = f * c + i * g
            c = _retain(c_new if every else torch.where(m, c_new, c))
            h_new = o * torch.tanh(c)
            for name, a_gate, v in zip(gates, (a_i, a_f, a_g, a_o), (i, f, g, o), strict=True):
                pre[name].append(a_gate)
                acts[name].append(v)
            pre_all.append(a)
            cs.append(c)
        elif cell == "gru":
            gi_r, gi_z, gi_n = gi.chunk(3, dim=1)
            gh_r, gh_z, gh_n = gh.chunk(3, dim=1)
            a_r = _retain(gi_r + gh_r)
            a_z = _retain(gi_z + gh_z)
            r, z = torch.sigmoid(a_r), torch.sigmoid(a_z)
            a_n = _retain(gi_n + r * gh_n)  # torch's placement: r ⊙ (W_hn h + b_hn)
            n = torch.tanh(a_n)
            h_new = (1 - z) * n + z * h
            for name, a_gate, v in zip(gates, (a_r, a_z, a_n), (r, z, n), strict=True):
                pre[name].append(a_gate)
                acts[name].append(v)
        else:
            a = _retain(gi + gh)
            h_new = torch.relu(a) if cell == "rnn_relu" else torch.tanh(a)
            pre["a"].append(a)
            acts["a"].append(h_new)
        h = _retain(h_new if every else torch.where(m, h_new, h))
        hs.append(h)
        outputs.append(h if every else torch.where(m, h, torch.zeros_like(h)))
    return OpsLayer(inp, pre, acts, hs, cs, params, pre_all), torch.stack(outputs)


def run_ops(
    cell: str,
    params: Mapping[str, np.ndarray],
    x: np.ndarray,
    upstream: tuple[np.ndarray, np.ndarray | None, np.ndarray | None],
    *,
    lengths: np.ndarray | None = None,
    h0: np.ndarray | None = None,
    c0: np.ndarray | None = None,
    batch_first: bool = False,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> OpsResult:
    """The torch-ops reference: forward and backward, every gate and state retained; its tensors
    live on ``device`` (the fused module's), the numpy inputs are copied there."""
    L = num_layers_of(params)

    def leaf(array: np.ndarray) -> torch.Tensor:
        return torch.tensor(np.asarray(array), dtype=dtype, device=device, requires_grad=True)

    xt = leaf(x)
    inp = xt.transpose(0, 1) if batch_first else xt  # T,N,I
    T, N = inp.shape[0], inp.shape[1]
    H = np.asarray(params["weight_hh_l0"]).shape[1]
    lens = np.full(N, T) if lengths is None else np.asarray(lengths)
    active_host = np.arange(T)[:, None] < lens[None, :]  # T,N
    active = torch.as_tensor(active_host, device=device)
    full = active_host.all(axis=1)  # T
    h0t = None if h0 is None else leaf(h0)
    c0t = None if c0 is None else leaf(c0)
    layers = []
    finals_h, finals_c = [], []
    for layer in range(L):
        p = {k: leaf(params[f"{k}_l{layer}"]) for k in PARAM_NAMES}
        h = torch.zeros(N, H, dtype=dtype, device=device) if h0t is None else h0t[layer]
        c = None
        if cell == "lstm":
            c = torch.zeros(N, H, dtype=dtype, device=device) if c0t is None else c0t[layer]
        if layer > 0:
            inp = _retain(inp)
        ops_layer, inp = _ops_layer(cell, inp, p, h, c, active, full)
        layers.append(ops_layer)
        finals_h.append(ops_layer.h[-1])
        if cell == "lstm":
            finals_c.append(ops_layer.c[-1])
    output = inp.transpose(0, 1) if batch_first else inp
    h_n = torch.stack(finals_h)
    c_n = torch.stack(finals_c) if cell == "lstm" else None
    tensors = [output, h_n] + ([c_n] if c_n is not None else [])
    shapes = (tuple(output.shape), tuple(h_n.shape), None if c_n is None else tuple(c_n.shape))
    backward_from(tensors, _upstream(upstream, shapes, dtype, device))
    return OpsResult(output, h_n, c_n, xt, h0t, c0t, tuple(layers))


def _np(tensor: torch.Tensor) -> np.ndarray:
    """A tensor (or its ``.grad``) as host NumPy, from whatever device it lives on."""
    return tensor.detach().cpu().numpy()


def check_agreement(
    fused: FusedResult,
    ops: OpsResult,
    dtype: torch.dtype = torch.float64,
    tolerance: Tolerance | None = None,
) -> None:
    """Raise :class:`ReferenceMismatch` unless torch-ops matches torch.nn on all it exposes.

    ``tolerance``: the row to use (default: the dtype's; the ``tf32`` row when both ran in TF32)."""
    tol = tolerance or tolerance_for(dtype)  # the project's one table (same dtype, different op order)
    pairs: list[tuple[str, np.ndarray | None, np.ndarray | None]] = [
        ("output", fused.output, _np(ops.output)),
        ("h_n", fused.h_n, _np(ops.h_n)),
        ("c_n", fused.c_n, None if ops.c_n is None else _np(ops.c_n)),
        ("dL_dx", fused.dx, _np(ops.x.grad)),
        ("dL_dh0", fused.dh0, None if ops.h0 is None else _np(ops.h0.grad)),
        ("dL_dc0", fused.dc0, None if ops.c0 is None else _np(ops.c0.grad)),
    ]
    for layer, ol in enumerate(ops.layers):
        for base in PARAM_NAMES:
            key = f"{base}_l{layer}"
            pairs.append((f"grad {key}", fused.grads[key], _np(ol.params[base].grad)))
    problems = []
    for name, want, got in pairs:
        if want is None and got is None:
            continue
        if want is None or got is None or want.shape != got.shape:
            problems.append(f"{name}: torch.nn {_shape(want)} vs torch-ops {_shape(got)}")
            continue
        if not (np.all(np.isfinite(got)) and np.all(np.isfinite(want))):
            problems.append(f"{name}: non-finite values (torch.nn {_shape(want)}, torch-ops {_shape(got)})")
            continue
        measure = tol.measure(got, want)  # the project's one rule, torch.nn as the reference
        bad = measure.errors > tol.rtol
        if bad.any() or measure.norm_rel > tol.rtol:
            index = np.unravel_index(int(np.argmax(measure.errors)), want.shape)
            problems.append(
                f"{name}: {int(bad.sum())}/{bad.size} elements differ, normwise rel "
                f"{measure.norm_rel:.1e}; worst at {index}: torch.nn {want[index]!r} vs torch-ops "
                f"{got[index]!r} ({tol.describe()})"
            )
    if problems:
        raise ReferenceMismatch(
            "the torch-ops reference disagrees with the fused torch.nn module:\n  " + "\n  ".join(problems)
        )


def _shape(value: np.ndarray | None) -> str:
    return "missing" if value is None else str(tuple(value.shape))


def run(
    cell: str,
    params: Mapping[str, np.ndarray],
    x: np.ndarray,
    upstream: tuple[np.ndarray, np.ndarray | None, np.ndarray | None],
    *,
    lengths: np.ndarray | None = None,
    h0: np.ndarray | None = None,
    c0: np.ndarray | None = None,
    batch_first: bool = False,
    dtype: torch.dtype = torch.float64,
) -> TwinResult:
    """Both references on the same input and upstream gradients, then their agreement check."""
    if cell not in CELLS:
        raise SpecError("cell", f"expected one of {', '.join(CELLS)}; got {cell!r}")
    x = np.asarray(x, dtype=np.float64)
    kwargs = dict(lengths=lengths, h0=h0, c0=c0, batch_first=batch_first, dtype=dtype)
    fused = run_fused(cell, params, x, upstream, **kwargs)
    ops = run_ops(cell, params, x, upstream, **kwargs)
    check_agreement(fused, ops, dtype)
    T, N = (x.shape[1], x.shape[0]) if batch_first else (x.shape[0], x.shape[1])
    lens = np.full(N, T, dtype=np.int64) if lengths is None else np.asarray(lengths, dtype=np.int64)
    active = np.arange(T)[:, None] < lens[None, :]
    return TwinResult(cell, lens, active, batch_first, h0 is not None, fused, ops)


# --- terms (same names, order, shapes and row rule as handgrad.hand.recurrent_sequence) -----------------


def _stacked(tensors: list[torch.Tensor]) -> np.ndarray:
    """The per-step tensors (or their ``.grad``) of one layer stacked, T,N,..., on the host: one
    copy of torch's numbers in place of a host view per step."""
    with torch.no_grad():
        return torch.stack(tensors).numpy(force=True)


def _rows(array: np.ndarray, m: np.ndarray, every: bool) -> np.ndarray:
    """``array[m]``: the rows active at a step, in batch order, as a new C-ordered array; with
    every row active a C-ordered ``array`` is those rows already (no copy)."""
    return array if every and array.flags.c_contiguous else array[m]


@functools.lru_cache(maxsize=64)
def _step_names(cell: str, prefix: str, l1: int, T: int) -> tuple[list, list]:
    """(forward, backward) term (name, symbol) pairs of each step t = 1..T of one layer, keyed by
    what they say: forward[t - 1] = (gates…, c, h), backward[t - 1] = (∂L/∂h, ∂L/∂c, ∂L/∂z_gate…),
    the pieces a cell does not have left out. Worked out once per run's shape, not per step."""
    gates = GATES[cell] if cell in ("gru", "lstm") else ()
    forward, backward = [], []
    for t in range(1, T + 1):
        names = [(f"{prefix}.{g}[{t}]", term_symbol(g, l1, t)) for g in gates]
        if cell == "lstm":
            names.append((f"{prefix}.c[{t}]", term_symbol("c", l1, t)))
        names.append((f"{prefix}.h[{t}]", term_symbol("h", l1, t)))
        forward.append(names)
        names = [(f"{prefix}.dL_dh[{t}]", term_symbol("∂L/∂h", l1, t))]
        if cell == "lstm":
            names.append((f"{prefix}.dL_dc[{t}]", term_symbol("∂L/∂c", l1, t)))
        for g in gates or ("a",):
            term, sym = ("dL_dz", "∂L/∂z") if g == "a" else (f"dL_dz_{g}", f"∂L/∂z_{g}")
            names.append((f"{prefix}.{term}[{t}]", term_symbol(sym, l1, t)))
        backward.append(names)
    return forward, backward


def add_forward_terms(trace: StepTrace, result: TwinResult, layer: int, name: str | None = None) -> None:
    """Per step: gates (torch-ops), c (torch-ops), h (torch.nn on the top layer); then h_n, c_n.

    The per-step values are views of this step's own arrays (stacked here, or the fused output,
    which nothing writes to later): into the trace uncopied."""
    cell = result.cell
    ol = result.ops.layers[layer]
    prefix = f"{name or PREFIX[cell]}{layer + 1}"
    l1 = layer + 1
    top = layer == len(result.ops.layers) - 1
    T = result.active.shape[0]
    forward, _ = _step_names(cell, prefix, l1, T)
    values = [_stacked(ol.acts[g]) for g in GATES[cell]] if cell in ("gru", "lstm") else []
    if cell == "lstm":
        values.append(_stacked(ol.c))
    output = result.fused.output.transpose(1, 0, 2) if result.batch_first else result.fused.output
    values.append(output if top else _stacked(ol.h))
    sources = [SOURCE_OPS] * (len(values) - 1) + [SOURCE_NN if top else SOURCE_OPS]
    full, used = result.active.all(axis=1), result.active.any(axis=1)
    add = trace.add
    for t in range(1, T + 1):
        if not used[t - 1]:
            continue
        m, every = result.active[t - 1], bool(full[t - 1])
        for (term, symbol), value, source in zip(forward[t - 1], values, sources, strict=True):
            add(term, symbol, "forward", _rows(value[t - 1], m, every), source, copy=False)
    add(f"{prefix}.h_n", term_symbol("h_n", l1), "forward", result.fused.h_n[layer], SOURCE_NN)
    if cell == "lstm":
        add(f"{prefix}.c_n", term_symbol("c_n", l1), "forward", result.fused.c_n[layer], SOURCE_NN)


def add_backward_terms(trace: StepTrace, result: TwinResult, layer: int, name: str | None = None) -> None:
    """Per step t = T..1: ∂L/∂h, ∂L/∂c, ∂L/∂z_gate (torch-ops); then ∂L/∂h0, ∂L/∂c0 (torch.nn,
    if given), ∂L/∂x (torch.nn for layer 1, torch-ops above), parameter gradients (torch.nn).

    The per-step gradients are the retained ``.grad`` clones of this step, stacked: into the trace
    uncopied. An LSTM's ∂L/∂z of each gate is its chunk of the retained gradient of all four."""
    cell = result.cell
    ol = result.ops.layers[layer]
    prefix = f"{name or PREFIX[cell]}{layer + 1}"
    l1 = layer + 1
    T = result.active.shape[0]
    _, backward = _step_names(cell, prefix, l1, T)
    values = [_stacked([h.grad for h in ol.h])]
    if cell == "lstm":
        values.append(_stacked([c.grad for c in ol.c]))
        every_gate = _stacked([a.grad for a in ol.pre_all])  # T,N,4·H
        N, H = every_gate.shape[1], every_gate.shape[2] // 4
        by_gate = np.ascontiguousarray(every_gate.reshape(T, N, 4, H).transpose(2, 0, 1, 3))  # 4,T,N,H
        values.extend(by_gate)
    else:
        gates = GATES[cell] if cell == "gru" else ("a",)
        values.extend(_stacked([a.grad for a in ol.pre[g]]) for g in gates)
    full, used = result.active.all(axis=1), result.active.any(axis=1)
    add = trace.add
    for t in range(T, 0, -1):
        if not used[t - 1]:
            continue
        m, every = result.active[t - 1], bool(full[t - 1])
        for (term, symbol), value in zip(backward[t - 1], values, strict=True):
            add(term, symbol, "backward", _rows(value[t - 1], m, every), SOURCE_OPS, copy=False)
    if result.initial_given:
        trace.add(
            f"{prefix}.dL_dh0",
            term_symbol("∂L/∂h₀", l1),
            "backward",
            result.fused.dh0[layer],
            SOURCE_NN,
        )
        if cell == "lstm":
            trace.add(
                f"{prefix}.dL_dc0",
                term_symbol("∂L/∂c₀", l1),
                "backward",
                result.fused.dc0[layer],
                SOURCE_NN,
            )
    if layer == 0:
        trace.add(f"{prefix}.dL_dx", term_symbol("∂L/∂x", l1), "backward", result.fused.dx, SOURCE_NN)
    else:
        dx = _np(ol.inp.grad)  # T,N,I
        trace.add(
            f"{prefix}.dL_dx",
            term_symbol("∂L/∂x", l1),
            "backward",
            dx.transpose(1, 0, 2) if result.batch_first else dx,
            SOURCE_OPS,
        )
    for term, base in zip(PARAM_TERMS, PARAM_NAMES, strict=True):
        sym = PARAM_SYMBOLS[base]
        trace.add(
            f"{prefix}.{term}",
            term_symbol(sym, l1),
            "backward",
            result.fused.grads[f"{base}_l{layer}"],
            SOURCE_NN,
        )


def add_terms(trace: StepTrace, result: TwinResult, name: str | None = None) -> None:
    """All terms in the hand side's order: forward of layers 1..L, then backward of layers L..1."""
    L = len(result.ops.layers)
    for layer in range(L):
        add_forward_terms(trace, result, layer, name)
    for layer in reversed(range(L)):
        add_backward_terms(trace, result, layer, name)
