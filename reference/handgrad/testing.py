"""pytest helpers: ``assert_matches_torch`` for a layer written by hand, ``assert_model_matches_torch``
for a whole model of one's own (with one's own hand layers inside it: ``custom_layers``).

    from handgrad.testing import assert_matches_torch

    def test_my_dense():
        assert_matches_torch(my_forward, my_backward, torch.nn.Linear(3, 2), x, params={...},
                             param_names={"W": "weight", "b": "bias"})

    def test_my_model():
        assert_model_matches_torch(make_model(), x, y, steps=20, optimizer="adam", lr=0.01)

Each raises ``AssertionError`` with the full mismatch message: :func:`handgrad.check_layer`'s, or
the first divergence of :func:`handgrad.check_model`'s run.
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


def assert_model_matches_torch(model: Any, inputs: Any, targets: Any, **options: Any) -> Any:
    """:func:`handgrad.check_model`; raises ``AssertionError`` naming the first divergence (step,
    term, element, both values, the tolerance, the term before it) or what stopped the run, and
    returns the :class:`~handgrad.harness.Report` when every term agrees at every step."""
    from handgrad.modelcheck import check_model

    report = check_model(model, inputs, targets, **options)
    if not report.ok:
        stopped = f" (stopped early: {report.stopped})" if report.stopped else ""
        raise AssertionError(f"{report.scenario}: {report.verdict()}{stopped}")
    return report
