"""A captured term keeps the value it had when its step emitted it: later steps update parameters,
optimizer state, BatchNorm buffers and gradients in place (torch and NumPy alike), and a trace that
held views of them would silently change under the observers (the workbook's Trace sheet) and under
any comparison made later. Guards every change that trades a copy for a view (issue 19)."""

from __future__ import annotations

import numpy as np
import pytest

from handgrad.cli import scenario_parser
from handgrad.scenarios import SCENARIOS


@pytest.mark.parametrize("name", ["xor", "alexnet-mini", "parity", "multitask"])
def test_a_step_trace_is_not_changed_by_the_steps_after_it(name: str) -> None:
    experiment = SCENARIOS[name].build(scenario_parser(name).parse_args(["--steps", "4"]))
    first = [experiment.hand.step(1), experiment.twin.step(1)]
    kept = [{term.name: term.value.copy() for term in trace} for trace in first]
    for step in (2, 3, 4):
        experiment.hand.step(step)
        experiment.twin.step(step)
    for trace, values in zip(first, kept, strict=True):
        changed = [
            term.name for term in trace if not np.array_equal(term.value, values[term.name], equal_nan=True)
        ]
        assert changed == []
    # the run moved on: every side's parameters after step 4 differ from the ones step 1 emitted
    for side, trace in zip((experiment.hand, experiment.twin), first, strict=True):
        params = side.params()
        emitted = {t.name.removesuffix("_next"): t.value for t in trace if t.name.endswith("_next")}
        assert emitted and any(not np.array_equal(params[n], v) for n, v in emitted.items() if n in params)
