"""Lock-step training of the hand side and the torch twin, and the one comparison helper.

Each side keeps its own parameters (no re-syncing unless asked), so an error made at step k shows
at step k and everything after. Every term of every step is compared element-wise with

    |hand − torch| ≤ atol + rtol·|torch|

from a dtype-keyed table (atol and rtol always together). Non-finite values are their own finding,
never compared.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from handgrad.tolerance import TOLERANCES, Tolerance, tolerance_for  # noqa: F401 (re-exported)
from handgrad.trace import StepTrace, Term


@dataclass(frozen=True)
class TermCheck:
    """The comparison of one term at one step.

    ``max_rel`` is normwise, ``max|Δ| / max|torch|`` over the term's elements (``scale`` is that
    max|torch|): an element-wise ratio is unbounded where a value near zero comes out of
    cancellation, and says nothing there (the tolerance check itself is element-wise).
    ``element_rel`` is |Δ|/|torch| at ``worst_index``, the element shown in messages.
    """

    name: str
    max_abs: float
    max_rel: float
    mismatched: int
    total: int
    worst_index: tuple[int, ...]
    hand_value: float
    torch_value: float
    non_finite: str | None = None  # "hand", "torch" or "both" when a side is not finite
    shape_error: str | None = None
    element_rel: float = math.inf
    scale: float = 0.0

    @property
    def ok(self) -> bool:
        return self.mismatched == 0 and self.non_finite is None and self.shape_error is None


def compare_values(name: str, hand: np.ndarray, torch: np.ndarray, tol: Tolerance) -> TermCheck:
    """Compare two arrays of one term; the single helper every check in handgrad goes through."""
    hand = np.asarray(hand, dtype=np.float64)
    torch = np.asarray(torch, dtype=np.float64)
    if hand.shape != torch.shape:
        return TermCheck(
            name,
            math.inf,
            math.inf,
            max(hand.size, torch.size),
            max(hand.size, 1),
            (),
            math.nan,
            math.nan,
            shape_error=f"shape {hand.shape} (hand) vs {torch.shape} (torch)",
        )
    if hand.size == 0:
        return TermCheck(name, 0.0, 0.0, 0, 0, (), math.nan, math.nan)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(hand - torch)  # finite exactly when both sides are finite
    if not np.isfinite(diff).all():
        hand_finite, torch_finite = bool(np.isfinite(hand).all()), bool(np.isfinite(torch).all())
        if hand_finite and torch_finite:  # both finite but the difference overflowed
            bad = ~np.isfinite(diff)
            side = None
        else:
            bad = ~np.isfinite(hand) | ~np.isfinite(torch)
            side = "both" if not (hand_finite or torch_finite) else ("torch" if hand_finite else "hand")
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        return TermCheck(
            name,
            math.inf,
            math.inf,
            int(bad.sum()),
            hand.size,
            index,
            float(hand[index]),
            float(torch[index]),
            non_finite=side,
        )
    diff = diff.reshape(-1)
    magnitude = np.abs(torch.reshape(-1))
    excess = _excess(diff, magnitude, tol)
    mismatched = int(np.count_nonzero(excess > 0))
    flat = int(np.argmax(excess)) if mismatched else int(np.argmax(diff))
    index = tuple(int(i) for i in np.unravel_index(flat, hand.shape))
    max_abs = float(diff.max())
    return TermCheck(
        name,
        max_abs,
        _ratio(max_abs, float(magnitude.max())),
        mismatched,
        hand.size,
        index,
        float(hand.reshape(-1)[flat]),
        float(torch.reshape(-1)[flat]),
        element_rel=_ratio(float(diff[flat]), float(magnitude[flat])),
        scale=float(magnitude.max()),
    )


def _excess(diff: np.ndarray, magnitude: np.ndarray, tol: Tolerance) -> np.ndarray:
    """How far each |hand − torch| is above atol + rtol·|torch|: an element fails where > 0."""
    return diff - (tol.atol + tol.rtol * magnitude)


def _ratio(difference: float, magnitude: float) -> float:
    if difference == 0:
        return 0.0
    return difference / magnitude if magnitude > 0 else math.inf


@dataclass
class TermStats:
    """One term over all the steps run.

    ``max_rel`` is the normwise relative error of the term's whole trajectory,
    ``max over steps of max|Δ|`` / ``max over steps of max|torch|``: a bias that crosses zero
    at some step keeps the scale it has over the run instead of dividing by ~0 there.
    """

    name: str
    symbol: str
    phase: str
    hand_source: str
    torch_source: str
    shape: tuple[int, ...]
    max_abs: float = 0.0
    scale: float = 0.0
    worst_step: int = 0
    failing_steps: int = 0

    @property
    def max_rel(self) -> float:
        return _ratio(self.max_abs, self.scale)

    def update(self, step: int, check: TermCheck) -> None:
        if check.max_abs > self.max_abs or self.worst_step == 0:
            self.worst_step = step
        self.max_abs = max(self.max_abs, check.max_abs)
        self.scale = max(self.scale, check.scale)
        if not check.ok:
            self.failing_steps += 1


@dataclass(frozen=True)
class Divergence:
    """Where the two sides first disagree, with everything a reader needs to start looking."""

    step: int
    term: str
    symbol: str
    phase: str
    index: tuple[int, ...]
    hand: float
    torch: float
    abs_error: float
    rel_error: float
    mismatched: int
    total: int
    tolerance: Tolerance
    previous_term: str | None
    previous_max_abs: float | None
    non_finite: str | None = None
    shape_error: str | None = None

    @property
    def layer(self) -> str:
        return self.term.split(".", 1)[0]

    def message(self) -> str:
        where = f"step {self.step}, {self.term} ({self.symbol}, {self.phase})"
        if self.shape_error:
            return f"{where}: {self.shape_error}"
        if self.non_finite:
            head = f"non-finite at step {self.step} in {self.term} ({self.non_finite})"
            return f"{head}: hand {self.hand!r}, torch {self.torch!r} at index {list(self.index)}"
        text = (
            f"{where}: {self.mismatched} / {self.total} elements differ; greatest at index "
            f"{list(self.index)}: hand {self.hand!r}, torch {self.torch!r}, |Δ| "
            f"{self.abs_error:.3e}, rel {self.rel_error:.3e}; tolerance {self.tolerance.describe()}."
        )
        if self.previous_term is None:
            return text + " It is the first term of the step."
        verdict = "agreed" if self.previous_max_abs is not None else "also differed"
        detail = f" (max |Δ| {self.previous_max_abs:.1e})" if self.previous_max_abs is not None else ""
        return text + f" The term before, {self.previous_term}, {verdict}{detail}."


def first_divergence(
    step: int,
    hand: StepTrace,
    checks: Sequence[TermCheck],
    tol: Tolerance,
) -> Divergence | None:
    """The first failing term of a step, in computation order, with the term just before it."""
    for position, check in enumerate(checks):
        if check.ok:
            continue
        term = hand[check.name]
        previous = checks[position - 1] if position else None
        return Divergence(
            step=step,
            term=check.name,
            symbol=term.symbol,
            phase=term.phase,
            index=check.worst_index,
            hand=check.hand_value,
            torch=check.torch_value,
            abs_error=check.max_abs,
            rel_error=check.element_rel,
            mismatched=check.mismatched,
            total=check.total,
            tolerance=tol,
            previous_term=previous.name if previous else None,
            previous_max_abs=(previous.max_abs if previous is not None and previous.ok else None),
            non_finite=check.non_finite,
            shape_error=check.shape_error,
        )
    return None


class TermContractError(RuntimeError):
    """The two sides emitted different term names: a bug in handgrad itself, not a mismatch."""


BATCHED_TERM_LIMIT = 64  # terms up to this many elements are compared together in one pass


def compare_traces(hand: StepTrace, torch: StepTrace, tol: Tolerance) -> list[TermCheck]:
    """Compare every term of one step, in the hand side's order."""
    hand_names, torch_names = hand.names(), torch.names()
    if hand_names != torch_names:
        only_hand = [n for n in hand_names if n not in torch]
        only_torch = [n for n in torch_names if n not in hand]
        raise TermContractError(
            f"step {hand.step}: term lists differ (hand only: {only_hand}, torch only: "
            f"{only_torch}; or the order differs)"
        )
    hand_values = [np.asarray(term.value, dtype=np.float64) for term in hand]
    torch_values = [np.asarray(term.value, dtype=np.float64) for term in torch]
    checks: list[TermCheck | None] = [None] * len(hand_values)
    # Small terms share one numpy pass (the same element-wise rule as compare_values); a large
    # term, or one that fails, is compared alone, which for large arrays is also the faster way.
    small = [
        i
        for i, (h, t) in enumerate(zip(hand_values, torch_values, strict=True))
        if 0 < h.size <= BATCHED_TERM_LIMIT and h.shape == t.shape
    ]
    if small:
        sizes = [hand_values[i].size for i in small]
        flat_hand = np.concatenate([hand_values[i].reshape(-1) for i in small])
        flat_torch = np.concatenate([torch_values[i].reshape(-1) for i in small])
        with np.errstate(invalid="ignore", over="ignore"):
            diff = np.abs(flat_hand - flat_torch)
        starts = np.cumsum([0, *sizes[:-1]])
        magnitude = np.abs(flat_torch)
        max_abs = np.maximum.reduceat(diff, starts)
        scale = np.maximum.reduceat(magnitude, starts)
        failing = np.add.reduceat(_excess(diff, magnitude, tol) > 0, starts) | ~np.isfinite(max_abs)
        for position, i in enumerate(small):
            if failing[position]:
                continue
            # an agreeing term: its worst element is not located (no message shows it)
            abs_error, magnitude_max = float(max_abs[position]), float(scale[position])
            checks[i] = TermCheck(
                hand.terms[i].name,
                abs_error,
                _ratio(abs_error, magnitude_max),
                0,
                sizes[position],
                (),
                math.nan,
                math.nan,
                element_rel=0.0,
                scale=magnitude_max,
            )
    return [
        check if check is not None else compare_values(term.name, hand_values[i], torch_values[i], tol)
        for i, (term, check) in enumerate(zip(hand.terms, checks, strict=True))
    ]


def assert_traces_match(hand: StepTrace, torch: StepTrace, tol: Tolerance | None = None) -> None:
    """pytest helper: raise AssertionError with the full divergence message on any mismatch."""
    tol = tol or tolerance_for(str(hand.terms[0].value.dtype) if hand.terms else "float64")
    checks = compare_traces(hand, torch, tol)
    divergence = first_divergence(hand.step, hand, checks, tol)
    if divergence is not None:
        raise AssertionError(divergence.message())


class Side(Protocol):
    """What the harness needs of each side: run step k (1-based), report its terms."""

    def step(self, step: int) -> StepTrace: ...

    def params(self) -> dict[str, np.ndarray]: ...

    def load_params(self, params: dict[str, np.ndarray]) -> None: ...


@dataclass
class Experiment:
    """A runnable comparison: the two sides plus what the report and the workbook print."""

    scenario: str
    hand: Any
    twin: Any
    steps: int
    dtype: str = "float64"
    config: dict[str, object] = field(default_factory=dict)
    spec: Any = None  # the family's spec (network, loss, optimizer, data, batches), for the workbook
    initial_params: dict[str, np.ndarray] = field(default_factory=dict)

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


@dataclass
class Report:
    """The outcome of a run: per-term maxima over steps, the first divergence and the verdict."""

    scenario: str
    config: dict[str, object]
    dtype: str
    tolerance: Tolerance
    steps_requested: int
    steps_run: int = 0
    terms: dict[str, TermStats] = field(default_factory=dict)
    first: Divergence | None = None
    stopped: str | None = None  # why the run ended early (non-finite values)
    seconds: float = 0.0
    loss_history: list[tuple[float, float]] = field(default_factory=list)
    final_params: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    # the finite-difference column (``compare --gradcheck``): handgrad.gradcheck.FDResult per
    # gradient term and step checked; None when not asked
    oracle: list[Any] | None = None

    @property
    def ok(self) -> bool:
        return (
            self.first is None
            and self.stopped is None
            and self.steps_run == self.steps_requested
            and not self.oracle_failures
        )

    @property
    def oracle_failures(self) -> list[Any]:
        return [result for result in self.oracle or () if not result.ok]

    @property
    def largest_rel(self) -> float:
        return max((stats.max_rel for stats in self.terms.values()), default=0.0)

    def verdict(self) -> str:
        fd = self.oracle_failures
        fd_count = f"{len(fd)} of {len(self.oracle or ())} gradient checks disagree with finite differences"
        if self.ok:
            text = (
                f"all {len(self.terms)} terms agree at every one of {self.steps_run} steps; "
                f"largest rel error {self.largest_rel:.1e}"
            )
            if self.oracle is not None:
                text += f"; finite differences agree on all {len(self.oracle)} gradient checks"
            return text
        if self.first is None and fd:  # torch agrees; the finite differences do not
            return f"MISMATCH: {fd_count}; first: {fd[0].message()}"
        assert self.first is not None
        failing = sum(1 for stats in self.terms.values() if stats.failing_steps)
        text = f"MISMATCH: {failing} of {len(self.terms)} terms disagree; first: {self.first.message()}"
        if fd:
            text += f" Also {fd_count}; first: step {fd[0].step}, {fd[0].term}."
        return text

    def to_json(self) -> dict[str, object]:
        def number(value: float) -> float | str:
            return value if math.isfinite(value) else str(value)

        first = None
        if self.first is not None:
            d = self.first
            first = {
                "step": d.step,
                "term": d.term,
                "layer": d.layer,
                "symbol": d.symbol,
                "phase": d.phase,
                "index": list(d.index),
                "hand": number(d.hand),
                "torch": number(d.torch),
                "abs_error": number(d.abs_error),
                "rel_error": number(d.rel_error),
                "mismatched": d.mismatched,
                "total": d.total,
                "tolerance": {"atol": d.tolerance.atol, "rtol": d.tolerance.rtol},
                "previous_term": d.previous_term,
                "non_finite": d.non_finite,
                "message": d.message(),
            }
        return {
            "scenario": self.scenario,
            "ok": self.ok,
            "verdict": self.verdict(),
            "config": {key: _jsonable(value) for key, value in self.config.items()},
            "dtype": self.dtype,
            "tolerance": {"atol": self.tolerance.atol, "rtol": self.tolerance.rtol},
            "steps_requested": self.steps_requested,
            "steps_run": self.steps_run,
            "stopped": self.stopped,
            "first_divergence": first,
            "terms": [
                {
                    "name": s.name,
                    "symbol": s.symbol,
                    "phase": s.phase,
                    "hand_source": s.hand_source,
                    "torch_source": s.torch_source,
                    "shape": list(s.shape),
                    "max_abs": number(s.max_abs),
                    "max_rel": number(s.max_rel),
                    "worst_step": s.worst_step,
                    "failing_steps": s.failing_steps,
                }
                for s in self.terms.values()
            ],
            "versions": self.versions,
            "oracle": None
            if self.oracle is None
            else {"ok": not self.oracle_failures, "checks": [result.to_json() for result in self.oracle]},
        }


def _jsonable(value: object) -> object:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def versions() -> dict[str, str]:
    import importlib.metadata

    import handgrad

    result = {"handgrad": handgrad.__version__, "numpy": np.__version__, "python": sys.version.split()[0]}
    for package in ("torch", "openpyxl"):
        try:
            result[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            result[package] = "missing"
    return result


StepObserver = Callable[[int, StepTrace, StepTrace, list[TermCheck]], None]


def run(
    experiment: Experiment,
    *,
    tolerance: Tolerance | None = None,
    resync: bool = False,
    observers: Iterable[StepObserver] = (),
    progress: Callable[[int, int], None] | None = None,
) -> Report:
    """Train both sides for ``experiment.steps`` steps in lock-step, comparing every term.

    ``resync`` copies the hand side's parameters into the twin before each step, so a mismatch
    cannot carry over and each step is judged on its own. ``observers`` see every step's two
    traces and checks (the workbook's Trace sheet streams from here).
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
    )
    start = time.perf_counter()
    for step in range(1, experiment.steps + 1):
        if resync and step > 1:
            experiment.twin.load_params(experiment.hand.params())
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # reported below
            hand_trace = experiment.hand.step(step)
        twin_trace = experiment.twin.step(step)
        checks = compare_traces(hand_trace, twin_trace, tol)
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
        if "loss.L" in hand_trace:
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
    report.seconds = time.perf_counter() - start
    report.final_params = {"hand": experiment.hand.params(), "torch": experiment.twin.params()}
    return report
