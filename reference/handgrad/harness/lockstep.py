"""Lock-step training of the hand side and the torch twin.

Each side keeps its own parameters (no re-syncing unless asked), so an error made at step k shows
at step k and everything after. Every step's two traces go through the one comparison
(:mod:`handgrad.harness.compare`); the run's figures accumulate in a :class:`Report`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from handgrad.contract.runs import RunSpec
from handgrad.contract.tolerance import RecentScale, Tolerance, tolerance_for
from handgrad.contract.trace import StepTrace, Term
from handgrad.harness.compare import TermCheck, compare_traces, first_divergence
from handgrad.harness.concurrent import StepRunner
from handgrad.harness.configuration import experiment_configuration
from handgrad.harness.report import (
    LOSS_HISTORY_STEPS,
    PREDICTION_ROWS,
    Predictions,
    Report,
    TermStats,
    versions,
)


class Side(Protocol):
    """What the harness needs of each side: run step k (1-based), report its terms."""

    def step(self, step: int) -> StepTrace: ...

    def params(self) -> dict[str, np.ndarray]: ...

    def load_params(self, params: dict[str, np.ndarray]) -> None: ...


@dataclass
class Experiment:
    """A runnable comparison: the two sides plus what the report and the workbook print."""

    scenario: str
    hand: Side
    twin: Side | None  # None: a hand-only run (gradcheck)
    steps: int
    dtype: str = "float64"
    config: dict[str, object] = field(default_factory=dict)
    spec: RunSpec | None = None  # what trains, typed by family: the configuration check and workbook read it
    initial_params: dict[str, np.ndarray] = field(default_factory=dict)
    # options as the command line gave them, in the configuration's keys (over what the spec asks:
    # harness/configuration.py); compared with the configuration torch reports it ran with
    asked: dict[str, object] = field(default_factory=dict)

    @property
    def device(self) -> str:
        """Where the twin runs, ``cpu`` or ``cuda`` (``cpu`` for a hand-only experiment)."""
        device = getattr(self.twin, "device", "cpu")
        return str(getattr(device, "type", device))

    @property
    def tf32(self) -> bool:
        """The twin's float32 matmuls and convolutions may use TF32 (``--tf32``, cuda only)."""
        return bool(getattr(self.twin, "tf32", False))

    @property
    def tolerance(self) -> Tolerance:
        """The row this run is compared with: the dtype's, or ``tf32`` for float32 with TF32."""
        return tolerance_for(self.dtype, tf32=self.tf32)

    def run_config(self) -> dict[str, object]:
        """``config`` and where the twin ran: ``device``, and ``tf32`` on cuda (report, JSON, Summary)."""
        placement: dict[str, object] = {"device": self.device}
        if self.device == "cuda":
            placement["tf32"] = self.tf32
        return {**self.config, **placement}


StepObserver = Callable[[int, StepTrace, StepTrace, list[TermCheck]], None]


def run(
    experiment: Experiment,
    *,
    tolerance: Tolerance | None = None,
    resync: bool = False,
    observers: Iterable[StepObserver] = (),
    progress: Callable[[int, int], None] | None = None,
    sides: str = "auto",
) -> Report:
    """Train both sides for ``experiment.steps`` steps in lock-step, comparing every term.

    ``resync`` copies the hand side's parameters into the twin before each step, so a mismatch
    cannot carry over and each step is judged on its own. ``observers`` see every step's two
    traces and checks (the workbook's Trace sheet streams from here). ``sides``: ``sequential``,
    ``concurrent`` (the hand step in a worker thread while the twin steps) or ``auto``
    (:mod:`handgrad.harness.concurrent`); the numbers are the same either way.
    """
    tol = tolerance or experiment.tolerance
    observers = list(observers)
    report = Report(
        experiment.scenario,
        experiment.run_config(),
        experiment.dtype,
        tol,
        experiment.steps,
        versions=versions(),
        configuration=experiment_configuration(experiment),
    )
    start = time.perf_counter()
    with StepRunner(experiment.hand, experiment.twin, sides, device=experiment.device) as sides_of:
        _steps(experiment, sides_of, report, tol, resync, observers, progress)
    report.seconds = time.perf_counter() - start
    report.final_params = {"hand": experiment.hand.params(), "torch": experiment.twin.params()}
    report.predictions = final_predictions(experiment)
    return report


def _steps(
    experiment: Experiment,
    sides: StepRunner,
    report: Report,
    tol: Tolerance,
    resync: bool,
    observers: list[StepObserver],
    progress: Callable[[int, int], None] | None,
) -> None:
    """The step loop of :func:`run`: both sides, the comparison, the figures, until the last step
    or the first non-finite value."""
    recent = RecentScale()
    for step in range(1, experiment.steps + 1):
        if resync and step > 1:
            experiment.twin.load_params(experiment.hand.params())
        hand_trace, twin_trace = sides.step(step)  # NumPy's warnings off in the hand step: reported below
        checks = compare_traces(hand_trace, twin_trace, tol, recent)
        for check in checks:
            stats = report.terms.get(check.name)
            if stats is None:
                term: Term = hand_trace[check.name]
                stats = report.terms[check.name] = TermStats(
                    term.name,
                    term.symbol,
                    term.phase,
                    term.source,
                    twin_trace[check.name].source,
                    term.value.shape,
                )
            stats.update(step, check)
        if "loss.L" in hand_trace and step <= LOSS_HISTORY_STEPS:
            report.loss_history.append((float(hand_trace.value("loss.L")), float(twin_trace.value("loss.L"))))
        for observer in observers:
            observer(step, hand_trace, twin_trace, checks)
        report.steps_run = step
        if report.first is None:
            report.first = first_divergence(step, hand_trace, checks, tol)
        non_finite = [check for check in checks if check.non_finite]
        if non_finite:
            report.stopped = f"non-finite at step {step} in {non_finite[0].name} ({non_finite[0].non_finite})"
            break
        if progress is not None:
            progress(step, experiment.steps)


def final_predictions(experiment: Experiment) -> Predictions | None:
    """Each side's ŷ for every row of the data at its last parameters, for a data set of vectors
    of at most :data:`PREDICTION_ROWS` rows whose sides can predict (the layer stacks); else None."""
    data = getattr(experiment.spec, "data", None)  # makemore and transformer carry their data in the model
    hand_predict = getattr(experiment.hand, "predict", None)
    twin_predict = getattr(experiment.twin, "predict", None)
    if data is None or hand_predict is None or twin_predict is None:
        return None
    if data.n > PREDICTION_ROWS or np.ndim(data.x) != 2:
        return None
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        hand = np.asarray(hand_predict(), dtype=np.float64)
    if hand.shape != np.shape(data.y):  # class ids against K outputs: no row-by-row miss to show
        return None
    return Predictions(
        np.asarray(data.x), np.asarray(data.y), hand, np.asarray(twin_predict(), dtype=np.float64)
    )
