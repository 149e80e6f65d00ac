"""The torch-ops reference LSTM/GRU/RNN reads its input's time steps through one ``unbind``.

A ``select`` per step (``inp[t]``) gives a backward that fills a T·N·I zero tensor for every step:
T² time and memory, which made a two-layer LSTM of length 5,000 peak at 4.2 GB (1.1 GB with
``unbind``). The graph is read, not timed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from handgrad.twin import recurrent as tw


def _graph_nodes(tensor: torch.Tensor) -> list[str]:
    seen, names, stack = set(), [], [tensor.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.append(type(node).__name__)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return names


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
@pytest.mark.parametrize("lengths", [[5, 5, 5], [5, 2, 4]], ids=["equal", "ragged"])
def test_the_input_is_read_by_one_unbind(cell: str, lengths: list[int]) -> None:
    T, N, I, H = 5, 3, 2, 4
    gates = {"lstm": 4, "gru": 3, "rnn_tanh": 1}[cell]
    rng = np.random.default_rng(0)

    def leaf(*shape: int) -> torch.Tensor:
        return torch.tensor(rng.standard_normal(shape), dtype=torch.float64, requires_grad=True)

    params = {"weight_ih": leaf(gates * H, I), "weight_hh": leaf(gates * H, H)}
    params |= {"bias_ih": leaf(gates * H), "bias_hh": leaf(gates * H)}
    inp = leaf(T, N, I)
    h = torch.zeros(N, H, dtype=torch.float64)
    c = torch.zeros(N, H, dtype=torch.float64) if cell == "lstm" else None
    active = torch.as_tensor(np.arange(T)[:, None] < np.array(lengths)[None, :])
    _, output = tw._ops_layer(cell, inp, params, h, c, active)
    nodes = _graph_nodes(output)
    assert nodes.count("UnbindBackward0") == 1
    assert "SelectBackward0" not in nodes
    output.sum().backward()
    assert inp.grad is not None and inp.grad.shape == (T, N, I)
