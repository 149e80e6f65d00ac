"""hand/recurrent.py against the torch twin (nn.RNN / nn.GRU / nn.LSTM + a torch-ops reference),
term by term in float64, through the project's comparison helper (handgrad.harness).

Every case drives backward with random upstream gradients for every output step and for the
final states, uses non-zero biases distinct per gate (and different between b_ih and b_hh), puts
large garbage in the padded positions of x (it must be ignored), and pins one ReLU
pre-activation exactly on the kink (x = 0, h0 = 0, b_ih = −b_hh). Three planted bugs (the GRU
reset gate as in the paper, LSTM biases of i and f swapped, BPTT without the carried ∂L/∂h) are
test-only variants patched in here; each must fail, and the first differing term is named.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch

from handgrad import harness
from handgrad.contract import names
from handgrad.contract.spec import SpecError
from handgrad.contract.trace import StepTrace
from handgrad.hand import clip
from handgrad.hand import recurrent as hr
from handgrad.hand import recurrent_sequence as hs
from handgrad.mutants.recurrent import (
    gru_back_no_carry,
    gru_step_paper_reset,
    lstm_back_no_carry,
    lstm_bias_i_f_swapped,
    rnn_back_no_carry,
)
from handgrad.twin import recurrent as tw

T, N, I, H = 5, 5, 3, 4
RAGGED = np.array([3, 5, 1, 4, 2])  # unsorted; max = T
SHORT = np.array([2, 4, 1, 3, 2])  # max < T: step 5 has no active row
CELLS = ("rnn_tanh", "rnn_relu", "gru", "lstm")
TOL = harness.tolerance_for("float64")


class Case(NamedTuple):
    cell: str
    params: dict[str, np.ndarray]
    x: np.ndarray
    lengths: np.ndarray | None
    h0: np.ndarray | None
    c0: np.ndarray | None
    batch_first: bool
    upstream: tuple[np.ndarray, np.ndarray, np.ndarray | None]


def make_case(
    cell: str,
    num_layers: int = 1,
    batch_first: bool = False,
    lengths: np.ndarray | None = None,
    initial: bool = False,
    seed: int = 0,
) -> Case:
    rng = np.random.default_rng(seed)
    G = len(names.GATES[cell])
    offsets_ih = np.array([0.5, -0.7, 0.3, 0.9])[:G]  # distinct per gate
    offsets_hh = np.array([-0.2, 0.4, -0.6, 0.15])[:G]  # and distinct from b_ih
    params: dict[str, np.ndarray] = {}
    for layer in range(num_layers):
        n_in = I if layer == 0 else H
        params[f"weight_ih_l{layer}"] = rng.normal(0.0, 0.6, (G * H, n_in))
        params[f"weight_hh_l{layer}"] = rng.normal(0.0, 0.6, (G * H, H))
        params[f"bias_ih_l{layer}"] = (offsets_ih[:, None] + rng.normal(0, 0.1, (G, H))).ravel()
        params[f"bias_hh_l{layer}"] = (offsets_hh[:, None] + rng.normal(0, 0.1, (G, H))).ravel()
    # the kink: unit 0 of gate 0, row 0, step 1 of layer 1 has a pre-activation of exactly 0
    params["bias_ih_l0"][0], params["bias_hh_l0"][0] = 0.25, -0.25
    x = rng.normal(0.0, 1.0, (T, N, I))  # T,N,I
    x[0, 0] = 0.0
    if lengths is not None:
        pad = np.arange(T)[:, None] >= lengths[None, :]  # T,N
        x[pad] = rng.normal(0.0, 50.0, (int(pad.sum()), I))  # garbage that must be ignored
    h0 = rng.normal(0.0, 0.8, (num_layers, N, H)) if initial else None
    c0 = rng.normal(0.0, 0.8, (num_layers, N, H)) if initial and cell == "lstm" else None
    if h0 is not None:
        h0[0, 0] = 0.0
    dout = rng.normal(0.0, 1.0, (T, N, H))
    dh_n = rng.normal(0.0, 1.0, (num_layers, N, H))
    dc_n = rng.normal(0.0, 1.0, (num_layers, N, H)) if cell == "lstm" else None
    if batch_first:
        x, dout = x.transpose(1, 0, 2).copy(), dout.transpose(1, 0, 2).copy()
    return Case(cell, params, x, lengths, h0, c0, batch_first, (dout, dh_n, dc_n))


def hand_trace(case: Case) -> StepTrace:
    out, cache = hs.forward(
        case.x,
        case.params,
        cell=case.cell,
        lengths=case.lengths,
        h0=case.h0,
        c0=case.c0,
        batch_first=case.batch_first,
    )
    grads, _ = hs.backward(case.upstream, cache)
    trace = StepTrace(1)
    hs.add_terms(trace, cache, grads)
    return trace


def twin_result(case: Case) -> tw.TwinResult:
    return tw.run(
        case.cell,
        case.params,
        case.x,
        case.upstream,
        lengths=case.lengths,
        h0=case.h0,
        c0=case.c0,
        batch_first=case.batch_first,
    )


def twin_trace(case: Case) -> StepTrace:
    trace = StepTrace(1)
    tw.add_terms(trace, twin_result(case))
    return trace


def first_mismatch(hand: StepTrace, twin: StepTrace) -> str | None:
    """The name of the first term (computation order) where hand and torch disagree."""
    checks = harness.compare_traces(hand, twin, TOL)
    divergence = harness.first_divergence(1, hand, checks, TOL)
    return None if divergence is None else divergence.term


# --- hand vs twin, every term ------------------------------------------------------------------


@pytest.mark.parametrize("initial", [False, True], ids=["zero-h0", "h0"])
@pytest.mark.parametrize("ragged", [False, True], ids=["equal", "ragged"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["time-major", "batch-first"])
@pytest.mark.parametrize("num_layers", [1, 2], ids=["L1", "L2"])
@pytest.mark.parametrize("cell", CELLS)
def test_hand_matches_twin(
    cell: str, num_layers: int, batch_first: bool, ragged: bool, initial: bool
) -> None:
    case = make_case(cell, num_layers, batch_first, RAGGED if ragged else None, initial)
    hand, twin = hand_trace(case), twin_trace(case)
    assert [(t.name, t.value.shape, t.phase, t.symbol) for t in hand] == [
        (t.name, t.value.shape, t.phase, t.symbol) for t in twin
    ]
    harness.assert_traces_match(hand, twin, TOL)


@pytest.mark.parametrize("cell", CELLS)
def test_steps_past_every_length_have_no_terms(cell: str) -> None:
    case = make_case(cell, 2, True, SHORT, True, seed=3)
    hand, twin = hand_trace(case), twin_trace(case)
    harness.assert_traces_match(hand, twin, TOL)
    prefix = names.PREFIX[cell]
    assert f"{prefix}2.h[4]" in hand and f"{prefix}2.h[5]" not in hand
    assert f"{prefix}1.dL_dh[5]" not in hand
    output, _ = hs.forward(
        case.x, case.params, cell=cell, lengths=SHORT, h0=case.h0, c0=case.c0, batch_first=True
    )
    assert np.all(output.output[:, 4] == 0.0)  # N,T,H: step 5 is padding for every row


@pytest.mark.parametrize(
    ("cell", "shape", "num_layers", "lengths"),
    [
        ("lstm", (1, 1, 1, 1), 1, None),  # T, N, I, H all 1
        ("gru", (1, 2, 1, 1), 2, [1, 1]),
        ("rnn_relu", (7, 3, 2, 6), 3, [7, 2, 5]),
        ("lstm", (8, 4, 3, 2), 3, [1, 8, 8, 3]),
        ("gru", (6, 1, 4, 3), 1, [4]),
    ],
)
def test_other_shapes_match_twin(
    cell: str, shape: tuple[int, int, int, int], num_layers: int, lengths: list[int] | None
) -> None:
    steps, batch, n_in, hidden = shape
    rng = np.random.default_rng(11)
    G = len(names.GATES[cell])
    params = {}
    for layer in range(num_layers):
        params[f"weight_ih_l{layer}"] = rng.normal(0, 0.7, (G * hidden, n_in if layer == 0 else hidden))
        params[f"weight_hh_l{layer}"] = rng.normal(0, 0.7, (G * hidden, hidden))
        params[f"bias_ih_l{layer}"] = rng.normal(0, 0.5, G * hidden)
        params[f"bias_hh_l{layer}"] = rng.normal(0, 0.5, G * hidden)
    states = (num_layers, batch, hidden)
    case = Case(
        cell,
        params,
        rng.normal(0, 1, (steps, batch, n_in)),
        None if lengths is None else np.array(lengths),
        rng.normal(0, 1, states),
        rng.normal(0, 1, states) if cell == "lstm" else None,
        False,
        (
            rng.normal(0, 1, (steps, batch, hidden)),
            rng.normal(0, 1, states),
            rng.normal(0, 1, states) if cell == "lstm" else None,
        ),
    )
    harness.assert_traces_match(hand_trace(case), twin_trace(case), TOL)


# --- the term contract: names, order, row rule, sources -----------------------------------------


def test_lstm_term_names_order_and_rows() -> None:
    case = make_case("lstm", 2, False, RAGGED, True)
    hand, twin = hand_trace(case), twin_trace(case)
    names = hand.names()
    assert names[:7] == [
        "lstm1.i[1]",
        "lstm1.f[1]",
        "lstm1.g[1]",
        "lstm1.o[1]",
        "lstm1.c[1]",
        "lstm1.h[1]",
        "lstm1.i[2]",
    ]
    backward = [n for n in names if hand[n].phase == "backward"]
    assert backward[:6] == [
        "lstm2.dL_dh[5]",
        "lstm2.dL_dc[5]",
        "lstm2.dL_dz_i[5]",
        "lstm2.dL_dz_f[5]",
        "lstm2.dL_dz_g[5]",
        "lstm2.dL_dz_o[5]",
    ]
    assert backward[-7:] == [
        "lstm1.dL_dh0",
        "lstm1.dL_dc0",
        "lstm1.dL_dx",
        "lstm1.dL_dW_ih",
        "lstm1.dL_dW_hh",
        "lstm1.dL_db_ih",
        "lstm1.dL_db_hh",
    ]
    for t in range(1, T + 1):  # rows with length >= t, in batch order
        active = np.flatnonzero(RAGGED >= t)
        assert hand[f"lstm1.h[{t}]"].value.shape == (len(active), H)
        np.testing.assert_array_equal(hand[f"lstm1.h[{t}]"].value, hand_cache_h(case)[t][active])
    assert hand["lstm1.dL_dx"].value.shape == (T, N, I)
    sources = {t.name: t.source for t in twin}
    assert {t.source for t in hand} == {"hand"}
    assert sources["lstm2.h[3]"] == "torch.nn"  # the module's output
    assert sources["lstm1.h[3]"] == "torch-ops"  # an inner layer: the module keeps it
    assert sources["lstm1.i[3]"] == sources["lstm1.c[3]"] == sources["lstm1.dL_dz_f[2]"] == "torch-ops"
    assert sources["lstm1.h_n"] == sources["lstm2.c_n"] == "torch.nn"
    assert sources["lstm1.dL_dx"] == sources["lstm1.dL_dh0"] == sources["lstm2.dL_dW_hh"] == "torch.nn"
    assert sources["lstm2.dL_dx"] == "torch-ops"


def hand_cache_h(case: Case) -> np.ndarray:
    _, cache = hs.forward(case.x, case.params, cell=case.cell, lengths=case.lengths, h0=case.h0, c0=case.c0)
    return cache.layers[0].h  # T+1,N,H


def test_padded_positions_get_no_gradient() -> None:
    case = make_case("gru", 2, False, RAGGED, True)
    _, cache = hs.forward(case.x, case.params, cell="gru", lengths=RAGGED, h0=case.h0)
    grads, _ = hs.backward(case.upstream, cache)
    pad = np.arange(T)[:, None] >= RAGGED[None, :]  # T,N
    assert np.all(grads.dx[pad] == 0.0)
    assert np.all(grads.layers[1].da[pad] == 0.0)
    assert np.any(grads.dx[~pad] != 0.0)


def test_relu_kink_gets_zero_gradient() -> None:
    case = make_case("rnn_relu", 1, False, None, True)
    _, cache = hs.forward(case.x, case.params, cell="rnn_relu", h0=case.h0)
    grads, _ = hs.backward(case.upstream, cache)
    assert cache.layers[0].h[1, 0, 0] == 0.0  # relu(0) at row 0, unit 0, step 1
    assert grads.layers[0].dh[0, 0, 0] != 0.0 and grads.layers[0].da[0, 0, 0] == 0.0  # ReLU′(0) = 0
    harness.assert_traces_match(hand_trace(case), twin_trace(case), TOL)


# --- the two torch references check each other ------------------------------------------------


def test_agreement_check_catches_a_disagreement() -> None:
    case = make_case("lstm", 2, False, RAGGED, True)
    result = twin_result(case)
    fused = result.fused._replace(h_n=result.fused.h_n + 1e-7)
    with pytest.raises(tw.ReferenceMismatch, match=r"h_n: .* elements differ"):
        tw.check_agreement(fused, result.ops)
    grads = dict(result.fused.grads, weight_hh_l1=result.fused.grads["weight_hh_l1"] * 1.001)
    with pytest.raises(tw.ReferenceMismatch, match=r"grad weight_hh_l1"):
        tw.check_agreement(result.fused._replace(grads=grads), result.ops)


# --- single cells in the layer style, against torch's cell modules -----------------------------


@pytest.mark.parametrize("cell", CELLS)
def test_cell_matches_torch_cell(cell: str) -> None:
    case = make_case(cell, 1, False, None, True, seed=5)
    p = {k[: -len("_l0")]: v for k, v in case.params.items()}
    x, h, c = case.x[0], case.h0[0], None if case.c0 is None else case.c0[0]
    module = {
        "rnn_tanh": lambda: torch.nn.RNNCell(I, H, nonlinearity="tanh", dtype=torch.float64),
        "rnn_relu": lambda: torch.nn.RNNCell(I, H, nonlinearity="relu", dtype=torch.float64),
        "gru": lambda: torch.nn.GRUCell(I, H, dtype=torch.float64),
        "lstm": lambda: torch.nn.LSTMCell(I, H, dtype=torch.float64),
    }[cell]()
    tw.load_params(module, p)
    xt, ht = (torch.tensor(a, requires_grad=True) for a in (x, h))
    dh = case.upstream[0][0]
    if cell == "lstm":
        ct = torch.tensor(c, requires_grad=True)
        h1, c1 = module(xt, (ht, ct))
        dc = case.upstream[2][0]
        torch.autograd.backward([h1, c1], [torch.tensor(dh), torch.tensor(dc)])
        (h_hand, c_hand), cache = hr.cell_forward(cell, x, (h, c), p)
        (dx, dh_prev, dc_prev), grads = hr.cell_backward((dh, dc), cache)
        harness.assert_values_match("c_hand", c_hand, c1.detach().numpy(), TOL)
        harness.assert_values_match("dc_prev", dc_prev, ct.grad.numpy(), TOL)
    else:
        h1 = module(xt, ht)
        torch.autograd.backward([h1], [torch.tensor(dh)])
        h_hand, cache = hr.cell_forward(cell, x, h, p)
        (dx, dh_prev), grads = hr.cell_backward(dh, cache)
    harness.assert_values_match("h_hand", h_hand, h1.detach().numpy(), TOL)
    harness.assert_values_match("dx", dx, xt.grad.numpy(), TOL)
    harness.assert_values_match("dh_prev", dh_prev, ht.grad.numpy(), TOL)
    for key, param in module.named_parameters():
        harness.assert_values_match(key, grads[key], param.grad.numpy(), TOL)


# --- planted bugs: each must fail, at a named first term ----------------------------------------


@pytest.mark.parametrize(
    ("cell", "target", "variant", "first_bad"),
    [
        ("gru", "_gru_step", gru_step_paper_reset, "gru1.n[1]"),
        ("lstm", "_input_projection", lstm_bias_i_f_swapped, "lstm1.i[1]"),
        ("lstm", "_lstm_step_back", lstm_back_no_carry, "lstm1.dL_dh[4]"),
        ("gru", "_gru_step_back", gru_back_no_carry, "gru1.dL_dh[4]"),
        ("rnn_tanh", "_rnn_step_back", rnn_back_no_carry, "rnn1.dL_dh[4]"),
    ],
    ids=[
        "gru-paper-reset",
        "lstm-bias-i-f-swapped",
        "lstm-bptt-no-carry",
        "gru-bptt-no-carry",
        "rnn-bptt-no-carry",
    ],
)
def test_planted_bug_is_caught(
    monkeypatch: pytest.MonkeyPatch, cell: str, target: str, variant: object, first_bad: str
) -> None:
    case = make_case(cell, 1, False, None, True, seed=7)
    twin = twin_trace(case)
    assert first_mismatch(hand_trace(case), twin) is None  # the shipped module agrees
    monkeypatch.setattr(hr, target, variant)
    buggy = hand_trace(case)
    assert first_mismatch(buggy, twin) == first_bad
    with pytest.raises(AssertionError, match="step 1, " + re.escape(first_bad)):
        harness.assert_traces_match(buggy, twin, TOL)


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (dict(cell="lstm2"), "cell"),
        (dict(lengths=np.array([3, 5, 0, 4, 2])), "lengths"),
        (dict(lengths=np.array([3, 6, 1, 4, 2])), "lengths"),
        (dict(lengths=np.array([3.0, 5.0, 1.0, 4.0, 2.0])), "lengths"),
        (dict(h0=np.zeros((1, N, H))), "c0"),  # lstm: h0 without c0
        (dict(h0=np.zeros((2, N, H)), c0=np.zeros((2, N, H))), "h0"),  # one layer, two states
        (dict(params={"weight_ih_l0": np.zeros((4 * H, I))}), "params"),
    ],
)
def test_bad_input_is_refused(change: dict, field: str) -> None:
    case = make_case("lstm")
    kwargs = dict(cell="lstm", lengths=None, h0=None, c0=None) | change
    params = kwargs.pop("params", case.params)
    with pytest.raises(SpecError) as info:
        hs.forward(case.x, params, **kwargs)
    assert info.value.field == field


def test_wrong_parameter_shape_is_refused() -> None:
    case = make_case("gru", 2)
    params = dict(case.params, weight_hh_l1=np.zeros((3 * H, H + 1)))
    with pytest.raises(SpecError, match=r"weight_hh_l1: expected shape \(12, 4\)"):
        hs.forward(case.x, params, cell="gru")


def test_hand_never_imports_torch() -> None:
    root = Path(hr.__file__).resolve().parents[2]  # reference/
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import handgrad.hand.recurrent, handgrad.hand.recurrent_sequence, handgrad.hand.clip\n"
    )
    env = dict(os.environ, PYTHONPATH=str(root))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


# --- gradient clipping, as torch.nn.utils ------------------------------------------------------


def _torch_grads(grads: dict[str, np.ndarray]) -> list[torch.nn.Parameter]:
    params = []
    for value in grads.values():
        p = torch.nn.Parameter(torch.zeros(value.shape, dtype=torch.float64))
        p.grad = torch.tensor(value)
        params.append(p)
    return params


def _some_grads() -> dict[str, np.ndarray]:
    case = make_case("lstm", 2, False, RAGGED, True)
    _, cache = hs.forward(case.x, case.params, cell="lstm", lengths=RAGGED, h0=case.h0, c0=case.c0)
    return hs.backward(case.upstream, cache)[1]


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, float("inf")])
@pytest.mark.parametrize("how", ["clips", "no-clip", "at-the-norm"])
def test_clip_grad_norm_matches_torch(how: str, norm_type: float) -> None:
    grads = _some_grads()
    norm = clip.total_norm(grads, norm_type)
    max_norm = {"clips": 0.1 * norm, "no-clip": 10.0 * norm, "at-the-norm": norm}[how]
    clipped, total = clip.clip_grad_norm(grads, max_norm, norm_type)
    params = _torch_grads(grads)
    torch_total = torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type)
    harness.assert_values_match("total", total, torch_total.item(), TOL)
    for (key, value), p in zip(clipped.items(), params, strict=True):
        harness.assert_values_match(key, value, p.grad.numpy(), TOL)
    if how == "at-the-norm":  # the 1e-6 in max_norm / (total_norm + 1e-6): still scaled
        coef = clipped["weight_ih_l0"].ravel()[0] / grads["weight_ih_l0"].ravel()[0]
        assert coef < 1.0 and coef == pytest.approx(norm / (norm + 1e-6), rel=1e-12)


def test_clip_grad_value_matches_torch_with_ties() -> None:
    grads = _some_grads()
    value = 0.5
    grads["bias_ih_l0"][:3] = [value, -value, 0.0]  # exactly on the bounds
    clipped = clip.clip_grad_value(grads, value)
    params = _torch_grads(grads)
    torch.nn.utils.clip_grad_value_(params, value)
    for (key, array), p in zip(clipped.items(), params, strict=True):
        np.testing.assert_array_equal(array, p.grad.numpy(), err_msg=key)
    assert max(np.max(np.abs(a)) for a in clipped.values()) == value


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda g: clip.clip_grad_norm(g, -1.0), "max_norm"),
        (lambda g: clip.clip_grad_norm(g, float("nan")), "max_norm"),
        (lambda g: clip.clip_grad_norm(g, 1.0, norm_type=0.0), "norm_type"),
        (lambda g: clip.clip_grad_value(g, -0.5), "clip_value"),
    ],
)
def test_clip_bad_input_is_refused(call: Callable[[dict], object], field: str) -> None:
    with pytest.raises(SpecError) as info:
        call({"w": np.ones(3)})
    assert info.value.field == field
