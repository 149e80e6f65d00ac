"""Lock-step training of the hand side and the torch twin, and the one comparison helper.

Each side keeps its own parameters (no re-syncing unless asked), so an error made at step k shows
at step k and everything after. Every term of every step is compared by the rule in
:mod:`handgrad.tolerance`: element-wise ``|hand − torch| ≤ atol·max|torch| + rtol·|torch|`` and
normwise ``‖hand − torch‖₂ ≤ rtol·‖torch‖₂``, subnormals flushed to zero, from one dtype-keyed
table. Non-finite values are their own finding, never compared.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from handgrad.tolerance import (  # noqa: F401 (TOLERANCES, tolerance_for re-exported)
    TOLERANCES,
    RecentScale,
    Tolerance,
    norm,
    relative,
    tolerance_for,
)
from handgrad.trace import StepTrace, Term


@dataclass(frozen=True)
class TermCheck:
    """The comparison of one term at one step.

    ``elem_rel``: the largest element-wise relative error ``|Δᵢ| / ((atol/rtol)·max|t| + |tᵢ|)``;
    ``norm_rel``: ``‖Δ‖₂ / ‖t‖₂``. The term agrees when both are ≤ rtol and every side is finite.
    ``worst_index`` is the element shown in messages (the largest ``elem_rel``); ``scale`` is the
    term's largest |torch| at this step.
    """

    name: str
    max_abs: float
    elem_rel: float
    norm_rel: float
    mismatched: int
    total: int
    worst_index: tuple[int, ...]
    hand_value: float
    torch_value: float
    rtol: float
    non_finite: str | None = None  # "hand", "torch" or "both" when a side is not finite
    shape_error: str | None = None
    scale: float = 0.0

    @property
    def ok(self) -> bool:
        return (
            self.mismatched == 0
            and self.norm_rel <= self.rtol
            and self.non_finite is None
            and self.shape_error is None
        )

    @property
    def largest_rel(self) -> float:
        """The larger of the two figures, the one that decides."""
        return max(self.elem_rel, self.norm_rel)


def compare_values(
    name: str,
    hand: np.ndarray,
    torch: np.ndarray,
    tol: Tolerance,
    *,
    scale: float = 0.0,
    norm_scale: float = 0.0,
) -> TermCheck:
    """Compare two arrays of one term; the single helper every check in handgrad goes through.

    ``scale``, ``norm_scale``: the term's largest |torch| and ‖torch‖₂ over recent steps
    (:class:`handgrad.tolerance.RecentScale`; :func:`compare_traces` passes them during a run);
    alone, a term is measured against its own size."""
    hand = np.asarray(hand, dtype=np.float64)
    torch = np.asarray(torch, dtype=np.float64)
    if hand.shape != torch.shape:
        return TermCheck(
            name,
            math.inf,
            math.inf,
            math.inf,
            max(hand.size, torch.size),
            max(hand.size, 1),
            (),
            math.nan,
            math.nan,
            tol.rtol,
            shape_error=f"shape {hand.shape} (hand) vs {torch.shape} (torch)",
        )
    if hand.size == 0:
        return TermCheck(name, 0.0, 0.0, 0.0, 0, 0, (), math.nan, math.nan, tol.rtol)
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
            math.inf,
            int(bad.sum()),
            hand.size,
            index,
            float(hand[index]),
            float(torch[index]),
            tol.rtol,
            non_finite=side,
        )
    measure = tol.measure(hand, torch, scale=scale, norm_scale=norm_scale)
    mismatched = int(np.count_nonzero(measure.errors > tol.rtol))
    flat = int(np.argmax(measure.errors))
    index = tuple(int(i) for i in np.unravel_index(flat, hand.shape))
    return TermCheck(
        name,
        float(measure.diff.max()),
        float(measure.errors[flat]),
        measure.norm_rel,
        mismatched,
        hand.size,
        index,
        float(hand.reshape(-1)[flat]),
        float(torch.reshape(-1)[flat]),
        tol.rtol,
        scale=measure.scale,
    )


@dataclass
class TermStats:
    """One term over all the steps run: the largest of each figure over the steps.

    ``elem_rel`` and ``norm_rel`` are the per-step figures of :class:`TermCheck` (each step's term
    measured against its own size), maximised over the run; ``worst_step`` is where the deciding
    figure peaked.
    """

    name: str
    symbol: str
    phase: str
    hand_source: str
    torch_source: str
    shape: tuple[int, ...]
    max_abs: float = 0.0
    elem_rel: float = 0.0
    norm_rel: float = 0.0
    scale: float = 0.0
    worst_step: int = 0
    failing_steps: int = 0

    @property
    def max_rel(self) -> float:
        """The larger of the two figures, as the rule decides (both are compared with rtol)."""
        return max(self.elem_rel, self.norm_rel)

    def update(self, step: int, check: TermCheck) -> None:
        if check.largest_rel > self.max_rel or self.worst_step == 0:
            self.worst_step = step
        self.max_abs = max(self.max_abs, check.max_abs)
        self.elem_rel = max(self.elem_rel, check.elem_rel)
        self.norm_rel = max(self.norm_rel, check.norm_rel)
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
    norm_rel: float
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
        if self.non_finite == "both":
            head = f"both diverged at step {self.step} ({self.term})"
            return f"{head}: hand {self.hand!r}, torch {self.torch!r} at index {list(self.index)}"
        if self.non_finite:
            head = f"non-finite at step {self.step} in {self.term} ({self.non_finite})"
            return f"{head}: hand {self.hand!r}, torch {self.torch!r} at index {list(self.index)}"
        if self.mismatched:
            text = (
                f"{where}: {self.mismatched} / {self.total} elements differ; greatest at index "
                f"{list(self.index)}: hand {self.hand!r}, torch {self.torch!r}, |Δ| "
                f"{self.abs_error:.3e}, rel {self.rel_error:.3e} (element-wise), "
                f"{self.norm_rel:.3e} (normwise); tolerance {self.tolerance.describe()}."
            )
            zero = "torch" if self.torch == 0 else "hand" if self.hand == 0 else None
            if zero is not None:
                other = "hand" if zero == "torch" else "torch"
                text += (
                    f" {zero.capitalize()} is exactly 0 there and {other} is not (only values below the "
                    f"smallest normal, {self.tolerance.tiny:.1e}, count as 0)."
                )
        else:  # every element within its bound, the term as a whole is not
            text = (
                f"{where}: normwise rel error ‖hand − torch‖/‖torch‖ = {self.norm_rel:.3e} > rtol "
                f"{self.tolerance.rtol:.0e} over {self.total} elements (each element within its own "
                f"bound; largest element-wise rel {self.rel_error:.3e} at index {list(self.index)})."
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
            rel_error=check.elem_rel,
            norm_rel=check.norm_rel,
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


def compare_traces(
    hand: StepTrace, torch: StepTrace, tol: Tolerance, recent: RecentScale | None = None
) -> list[TermCheck]:
    """Compare every term of one step, in the hand side's order.

    ``recent``: the run's memory of each term's size (:class:`RecentScale`), updated here; without
    it each term is measured against its own size at this step."""
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
    count = len(hand_values)
    small = [
        i
        for i, (h, t) in enumerate(zip(hand_values, torch_values, strict=True))
        if 0 < h.size <= BATCHED_TERM_LIMIT and h.shape == t.shape
    ]
    small_set = set(small)
    # This step's size of every term (max|t| and ‖t‖₂ of torch's finite, flushed values): small
    # terms in one numpy pass, large ones alone.
    peaks, norms = np.zeros(count), np.zeros(count)
    if small:
        sizes = np.array([hand_values[i].size for i in small])
        starts = np.cumsum([0, *sizes[:-1]])
        flat_hand = np.concatenate([hand_values[i].reshape(-1) for i in small])
        flat_torch = np.concatenate([torch_values[i].reshape(-1) for i in small])
        with np.errstate(invalid="ignore", over="ignore"):
            finite = np.logical_and.reduceat(np.isfinite(flat_hand - flat_torch), starts)
            flat_hand, flat_torch = tol.flush(flat_hand), tol.flush(flat_torch)
            diff = np.abs(flat_hand - flat_torch)
            small_magnitude = np.abs(flat_torch)
            small_magnitude[~np.isfinite(small_magnitude)] = 0.0
            small_peaks = np.maximum.reduceat(small_magnitude, starts)
            max_abs = np.maximum.reduceat(diff, starts)
            # normwise, each term scaled by its own largest value (no overflow, no underflow)
            unit = np.maximum(max_abs, small_peaks)
            unit[~(unit > 0) | ~np.isfinite(unit)] = 1.0
            units = np.repeat(unit, sizes)
            diff_norm = unit * np.sqrt(np.add.reduceat(np.square(diff / units), starts))
            small_norms = unit * np.sqrt(np.add.reduceat(np.square(small_magnitude / units), starts))
        peaks[small] = small_peaks
        norms[small] = small_norms
    for i in range(count):
        if i not in small_set and hand_values[i].shape == torch_values[i].shape:
            magnitude = np.abs(tol.flush(torch_values[i]))
            magnitude[~np.isfinite(magnitude)] = 0.0
            peaks[i], norms[i] = float(magnitude.max(initial=0.0)), norm(magnitude)
    scales, norm_scales = recent.update(peaks, norms) if recent is not None else (peaks, norms)
    checks: list[TermCheck | None] = [None] * count
    if small:
        with np.errstate(invalid="ignore"):
            errors = tol.element_errors(diff, small_magnitude, np.repeat(scales[small], sizes))
        elem_rel = np.maximum.reduceat(errors, starts)
        for position, i in enumerate(small):
            norm_rel = relative(float(diff_norm[position]), float(norm_scales[i]))
            if not finite[position] or elem_rel[position] > tol.rtol or norm_rel > tol.rtol:
                continue  # compared alone below, with its worst element located
            # an agreeing term: its worst element is not located (no message shows it)
            checks[i] = TermCheck(
                hand.terms[i].name,
                float(max_abs[position]),
                float(elem_rel[position]),
                norm_rel,
                0,
                int(sizes[position]),
                (),
                math.nan,
                math.nan,
                tol.rtol,
                scale=float(scales[i]),
            )
    return [
        check
        if check is not None
        else compare_values(
            term.name,
            hand_values[i],
            torch_values[i],
            tol,
            scale=float(scales[i]),
            norm_scale=float(norm_scales[i]),
        )
        for i, (term, check) in enumerate(zip(hand.terms, checks, strict=True))
    ]


def assert_values_match(name: str, hand: np.ndarray, torch: np.ndarray, tol: Tolerance) -> None:
    """pytest helper for one array: AssertionError with the divergence message unless it agrees."""
    check = compare_values(name, hand, torch, tol)
    if not check.ok:
        trace = StepTrace(1)
        trace.add(name, name, "forward", np.asarray(hand, dtype=np.float64))
        raise AssertionError(first_divergence(1, trace, [check], tol).message())  # type: ignore[union-attr]


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
        """The largest figure of any term, element-wise or normwise (both are judged against rtol)."""
        return max((stats.max_rel for stats in self.terms.values()), default=0.0)

    def figures(self) -> str:
        """The largest element-wise and normwise rel errors over every term, and the rtol they meet."""
        elem = max((stats.elem_rel for stats in self.terms.values()), default=0.0)
        normwise = max((stats.norm_rel for stats in self.terms.values()), default=0.0)
        rtol = self.tolerance.rtol
        return f"largest rel error {elem:.1e} element-wise, {normwise:.1e} normwise (rtol {rtol:.0e})"

    def verdict(self) -> str:
        fd = self.oracle_failures
        fd_count = f"{len(fd)} of {len(self.oracle or ())} gradient checks disagree with finite differences"
        if self.ok:
            text = f"all {len(self.terms)} terms agree at every one of {self.steps_run} steps; "
            text += self.figures()
            if self.oracle is not None:
                text += f"; finite differences agree on all {len(self.oracle)} gradient checks"
            return text
        if self.first is None and fd:  # torch agrees; the finite differences do not
            return f"MISMATCH: {fd_count}; first: {fd[0].message()}"
        assert self.first is not None
        if self.first.non_finite == "both":
            text = self.first.message()
        elif self.first.non_finite:
            text = f"MISMATCH: {self.first.message()}"
        else:
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
                "norm_rel": number(d.norm_rel),
                "mismatched": d.mismatched,
                "total": d.total,
                "tolerance": _tolerance_json(d.tolerance),
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
            "tolerance": _tolerance_json(self.tolerance),
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
                    "elem_rel": number(s.elem_rel),
                    "norm_rel": number(s.norm_rel),
                    "scale": number(s.scale),
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


def _tolerance_json(tol: Tolerance) -> dict[str, object]:
    return {
        "rule": "per element |h-t| <= atol*max|t| + rtol*|t|; per term ||h-t|| <= rtol*||t||",
        "atol": tol.atol,
        "rtol": tol.rtol,
        "tiny": tol.tiny,
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
    recent = RecentScale()
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
