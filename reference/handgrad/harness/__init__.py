"""The harness: lock-step training of two sides, the one comparison, and the report.

* :mod:`handgrad.harness.compare`: :func:`compare_values`, :func:`compare_traces` (the one
  comparison helper) and :func:`first_divergence`;
* :mod:`handgrad.harness.report`: :class:`Report`, per-term :class:`TermStats`, the verdict and JSON;
* :mod:`handgrad.harness.lockstep`: :class:`Experiment`, the :class:`Side` protocol and :func:`run`.

The names below are the harness's public API; import them from here.
"""

from handgrad.contract.tolerance import TOLERANCES, Tolerance, tolerance_for
from handgrad.harness.compare import (
    BATCHED_TERM_LIMIT,
    Divergence,
    TermCheck,
    TermContractError,
    assert_traces_match,
    assert_values_match,
    compare_traces,
    compare_values,
    first_divergence,
)
from handgrad.harness.lockstep import Experiment, Side, StepObserver, run
from handgrad.harness.report import Report, TermStats, all_document, versions

__all__ = [
    "BATCHED_TERM_LIMIT",
    "TOLERANCES",
    "Divergence",
    "Experiment",
    "Report",
    "Side",
    "StepObserver",
    "TermCheck",
    "TermContractError",
    "TermStats",
    "Tolerance",
    "all_document",
    "assert_traces_match",
    "assert_values_match",
    "compare_traces",
    "compare_values",
    "first_divergence",
    "run",
    "tolerance_for",
    "versions",
]
