"""Planted bugs of the recurrent cells: the LSTM bias of one gate used for another, BPTT dropping
the carried gradient (each cell), the output gate from c' instead of tanh(c'), the GRU's paper
reset placement instead of torch's."""

from __future__ import annotations

import numpy as np

from handgrad.hand import recurrent as hr
from handgrad.mutants.registry import PARITY, Mutant

_INPUT_PROJECTION = hr._input_projection
_LSTM_BACK, _GRU_BACK, _RNN_BACK = hr._lstm_step_back, hr._gru_step_back, hr._rnn_step_back


def lstm_bias_i_f_swapped(x, W_ih, b_ih, b_hh, cell):  # noqa: ANN001, ANN201
    """Bug: the bias blocks of gates i and f swapped (read as if the order were f, i, g, o)."""
    if cell == "lstm":
        H = b_ih.shape[0] // 4
        b_ih = np.concatenate([b_ih[H : 2 * H], b_ih[:H], b_ih[2 * H :]])
    return _INPUT_PROJECTION(x, W_ih, b_ih, b_hh, cell)


def lstm_back_no_carry(*args):  # noqa: ANN002, ANN201
    """Bug: BPTT drops ∂L/∂h_{t−1} (the hidden state's carried gradient)."""
    da, dc, dh_prev, dc_prev = _LSTM_BACK(*args)
    return da, dc, np.zeros_like(dh_prev), dc_prev


def lstm_back_output_gate_from_c(dh, dc_carried, c, acts, tanh_c, W_hh):  # noqa: ANN001, ANN201
    """Bug: ∂L/∂z_o = ∂L/∂h ⊙ c' ⊙ o(1 − o): c' where tanh(c') belongs."""
    da, dc, dh_prev, dc_prev = _LSTM_BACK(dh, dc_carried, c, acts, tanh_c, W_hh)
    H = c.shape[1]
    o = acts[:, 3 * H :]
    c_new = np.arctanh(tanh_c)
    da = da.copy()
    da[:, 3 * H :] = dh * c_new * o * (1.0 - o)
    return da, dc, da @ W_hh, dc_prev


def gru_back_no_carry(*args):  # noqa: ANN002, ANN201
    """Bug: GRU BPTT drops ∂L/∂h_{t−1}."""
    da, dgh, dh_prev = _GRU_BACK(*args)
    return da, dgh, np.zeros_like(dh_prev)


def gru_step_paper_reset(xp, h, W_hh, b_hn):  # noqa: ANN001, ANN201
    """Bug: Cho et al.'s reset placement, n = tanh(W_in x + b_in + W_hn(r ⊙ h) + b_hn), not torch's."""
    H = h.shape[1]
    hh = h @ W_hh.T  # N,3H
    acts = np.empty_like(hh)
    acts[:, : 2 * H] = 1.0 / (1.0 + np.exp(-(xp[:, : 2 * H] + hh[:, : 2 * H])))
    r, z = acts[:, :H], acts[:, H : 2 * H]
    hh_n = (r * h) @ W_hh[2 * H :].T + b_hn  # N,H
    n = np.tanh(xp[:, 2 * H :] + hh_n)
    acts[:, 2 * H :] = n
    return hr.GRUStep(acts, hh_n, (1.0 - z) * n + z * h)


def rnn_back_no_carry(*args):  # noqa: ANN002, ANN201
    """Bug: Elman RNN BPTT drops ∂L/∂h_{t−1}."""
    da, dh_prev = _RNN_BACK(*args)
    return da, np.zeros_like(dh_prev)


MUTANTS: tuple[Mutant, ...] = (
    # recurrent
    Mutant(
        "lstm-bias-i-f-swapped",
        "recurrent",
        ((hr, "_input_projection", lstm_bias_i_f_swapped),),
        "parity",
        PARITY,
        "lstm1.i[1]",
    ),
    Mutant(
        "lstm-bptt-no-carry",
        "recurrent",
        ((hr, "_lstm_step_back", lstm_back_no_carry),),
        "parity",
        PARITY,
        "lstm1.dL_dh[5]",
    ),
    Mutant(
        "lstm-output-gate-from-c",
        "recurrent",
        ((hr, "_lstm_step_back", lstm_back_output_gate_from_c),),
        "parity",
        PARITY,
        "lstm1.dL_dz_o[6]",
    ),
    Mutant(
        "gru-paper-reset",
        "recurrent",
        ((hr, "_gru_step", gru_step_paper_reset),),
        "parity",
        (*PARITY, "--cell", "gru"),
        "gru1.n[1]",
    ),
    Mutant(
        "gru-bptt-no-carry",
        "recurrent",
        ((hr, "_gru_step_back", gru_back_no_carry),),
        "echo",
        (*PARITY, "--cell", "gru"),
        "gru1.dL_dh[7]",
    ),
    Mutant(
        "rnn-bptt-no-carry",
        "recurrent",
        ((hr, "_rnn_step_back", rnn_back_no_carry),),
        "parity",
        (*PARITY, "--cell", "rnn"),
        "rnn1.dL_dh[5]",
    ),
)
