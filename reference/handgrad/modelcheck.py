"""Check your own model: :func:`check_model` runs a user's ``torch.nn.Module`` against its hand
twin (built by :mod:`handgrad.scenarios.own_model`) through the one harness, and writes the
workbook and the JSON report when asked, as ``handgrad compare`` does. The model-sized sibling of
:mod:`handgrad.layercheck`; manual/your-own-model.md is its page.
"""

from __future__ import annotations

import json as json_module
from pathlib import Path
from typing import Any

from handgrad import harness
from handgrad.atomic import atomic_write_bytes, check_outputs
from handgrad.harness import Report
from handgrad.scenarios.own_model import build_experiment


def check_model(
    model: Any,
    inputs: Any,
    targets: Any,
    *,
    xlsx: str | Path | None = None,
    json: str | Path | None = None,
    walkthrough: str = "1",
    **options: Any,
) -> Report:
    """Train the user's ``model`` and its hand-derived twin in lock-step and compare every term.

    ``model``: an ``nn.Sequential`` (nested too) of the supported modules
    (:data:`handgrad.scenarios.own_model.SUPPORTED`), or a module whose children are
    (rnn, head[, activation]) with ``head="many-to-one"`` or ``"many-to-many"`` (inputs
    (sequences, length, inputs) in that order whatever ``batch_first``);
    its current weights are the run's initial weights; it is never changed. ``inputs``,
    ``targets``: arrays (or tensors), one row per sample. Options (with their defaults): ``loss``
    ``"mse"`` (a name or a :class:`~handgrad.contract.training.Loss`), ``optimizer`` ``"sgd"`` (a name or an
    :class:`~handgrad.contract.training.Optimizer`), ``lr`` 0.5, ``optimizer_options`` (torch's names),
    ``steps`` 1000, ``mode`` ``"online"`` / ``"batch"`` / ``"minibatch"`` with ``batch_size``,
    ``seed`` 0 (the dropout masks), ``custom_layers`` ``{ModuleType: (forward, backward)}``,
    ``dtype`` ``"float64"``. ``xlsx`` / ``json``: write the workbook / the JSON report (atomically).
    Returns the :class:`~handgrad.harness.Report`: ``ok``, ``verdict()``, ``first`` (the first
    divergence), ``terms``.
    """
    outputs = {"xlsx": None if xlsx is None else str(xlsx), "json": None if json is None else str(json)}
    check_outputs(outputs)
    experiment = build_experiment(model, inputs, targets, **options)
    if xlsx is None:
        report = harness.run(experiment)
    else:
        from handgrad.workbook.writer import parse_walkthrough, run_with_workbook  # openpyxl: when asked

        report = run_with_workbook(experiment, xlsx, walkthrough_steps=parse_walkthrough(walkthrough))
    if json is not None:
        text = json_module.dumps(report.to_json(), indent=2, allow_nan=False) + "\n"
        atomic_write_bytes(json, text.encode(), "json")
    return report
