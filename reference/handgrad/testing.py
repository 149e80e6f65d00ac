"""pytest helpers: ``assert_matches_torch`` for a layer written by hand.

    from handgrad.testing import assert_matches_torch

    def test_my_dense():
        assert_matches_torch(my_forward, my_backward, torch.nn.Linear(3, 2), x, params={...},
                             param_names={"W": "weight", "b": "bias"})

It raises ``AssertionError`` with the full mismatch message of :func:`handgrad.check_layer`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from handgrad.layercheck import LayerReport, check_layer


def assert_matches_torch(
    forward: Callable[..., Any],
    backward: Callable[..., Any],
    torch_module: Any,
    inputs: np.ndarray | Sequence[np.ndarray],
    params: Mapping[str, np.ndarray] | None = None,
    **options: Any,
) -> LayerReport:
    """:func:`handgrad.check_layer` with ``raise_on_mismatch=True``; returns the report when it agrees."""
    return check_layer(forward, backward, torch_module, inputs, params, raise_on_mismatch=True, **options)
