"""The outcome of a run: per-term figures over the steps, the first divergence, the verdict, JSON."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from handgrad.contract.tolerance import Tolerance
from handgrad.harness.compare import Divergence, TermCheck
from handgrad.harness.configuration import OptionCheck


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
        # max(a, b) spelled ``b if b > a else a`` (what max does, NaN included), without the calls:
        # a step of the LSTM bench updates ~600 terms
        elem_rel, norm_rel = check.elem_rel, check.norm_rel
        largest = norm_rel if norm_rel > elem_rel else elem_rel  # check.largest_rel
        if (
            largest > (self.norm_rel if self.norm_rel > self.elem_rel else self.elem_rel)
            or self.worst_step == 0
        ):
            self.worst_step = step
        if check.max_abs > self.max_abs:
            self.max_abs = check.max_abs
        if elem_rel > self.elem_rel:
            self.elem_rel = elem_rel
        if norm_rel > self.norm_rel:
            self.norm_rel = norm_rel
        if check.scale > self.scale:
            self.scale = check.scale
        if not check.ok:
            self.failing_steps += 1


LOSS_HISTORY_STEPS = 100_000
PREDICTION_ROWS = 16  # the final predictions are printed for data sets of at most this many rows


@dataclass
class Predictions:
    """ŷ of every row of the data at the last step's parameters, by each side (the forward pass
    alone), beside the inputs and targets: whether the network learned the task."""

    x: np.ndarray  # N,in
    y: np.ndarray  # N,out
    hand: np.ndarray  # N,out
    torch: np.ndarray  # N,out

    @property
    def worst_miss(self) -> float:
        """max |ŷ(hand) − y| over every row and output."""
        return float(np.max(np.abs(self.hand - self.y)))

    def rows(self) -> list[tuple[str, str, str, str, str]]:
        """(x, target, ŷ hand, ŷ torch, |ŷ − y|) per row, as the console and the Summary print them."""

        def text(values: np.ndarray, fmt: str = "g") -> str:
            return ", ".join(format(float(v), fmt) for v in np.ravel(values))

        return [
            (
                text(self.x[i]),
                text(self.y[i]),
                text(self.hand[i], ".6f"),
                text(self.torch[i], ".6f"),
                text(np.abs(self.hand[i] - self.y[i]), ".3f"),
            )
            for i in range(len(self.x))
        ]

    def table(self) -> str:
        """The console's final-predictions table."""
        header = ("x", "target", "ŷ (hand)", "ŷ (torch)", "|ŷ − target|")
        rows = [header, *self.rows()]
        widths = [max(len(row[col]) for row in rows) for col in range(len(header))]
        lines = [
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows
        ]
        return "\n".join(line.rstrip() for line in lines)


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
    # (hand, torch) loss of the first LOSS_HISTORY_STEPS steps (the live Training sheet's rows
    # come from here); a longer run keeps its memory flat and the Trace/charts have the rest
    loss_history: list[tuple[float, float]] = field(default_factory=list)
    final_params: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    # the finite-difference column (``compare --gradcheck``): handgrad.gradcheck.FDResult per
    # gradient term and step checked; None when not asked
    oracle: list[Any] | None = None
    # asked for vs what torch ran with, option by option (harness/configuration.py); None when the
    # twin reads no configuration back
    configuration: list[OptionCheck] | None = None
    predictions: Predictions | None = None  # small data sets only: see PREDICTION_ROWS
    # drift or an error (harness/drift.py): the steps up to the first divergence rerun with resync;
    # None when there was nothing to diagnose
    diagnosis: dict[str, object] | None = None

    @property
    def ok(self) -> bool:
        return (
            self.first is None
            and self.stopped is None
            and self.steps_run == self.steps_requested
            and not self.oracle_failures
            and not self.configuration_failures
        )

    @property
    def configuration_failures(self) -> list[OptionCheck]:
        return [check for check in self.configuration or () if not check.ok]

    def configuration_finding(self) -> str:
        """``configuration: optimizer.momentum asked 0.9, torch ran with 0.0`` (and how many more)."""
        failures = self.configuration_failures
        more = f" (and {len(failures) - 1} more options)" if len(failures) > 1 else ""
        return f"configuration: {failures[0].message()}{more}"

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
        if self.first is None and self.configuration_failures:  # the terms agree on the wrong run
            text = f"MISMATCH: {self.configuration_finding()}"
            return text + (f" Also {fd_count}; first: step {fd[0].step}, {fd[0].term}." if fd else "")
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
        if self.configuration_failures:
            text += f" Also {self.configuration_finding()}."
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
            "configuration": None
            if self.configuration is None
            else [_jsonable_check(check) for check in self.configuration],
            "versions": self.versions,
            "oracle": None
            if self.oracle is None
            else {"ok": not self.oracle_failures, "checks": [result.to_json() for result in self.oracle]},
            "diagnosis": self.diagnosis,
        }


def _jsonable_check(check: OptionCheck) -> dict[str, object]:
    """An option's row; a non-finite number (``--norm-type inf``) as its string, as JSON has none."""

    def finite(value: object) -> object:
        if isinstance(value, list):
            return [finite(item) for item in value]
        return str(value) if isinstance(value, float) and not math.isfinite(value) else value

    return {key: finite(_jsonable(value)) for key, value in check.to_json().items()}


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

    from handgrad.version import __version__

    result = {"handgrad": __version__, "numpy": np.__version__, "python": sys.version.split()[0]}
    for package in ("torch", "openpyxl"):
        try:
            result[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            result[package] = "missing"
    return result


def all_document(results: list[tuple[str, bool, dict[str, object]]]) -> dict[str, object]:
    """The CI mode's JSON: ``{"ok", "verdict", "scenarios": [{"scenario", "ok", ...report}]}``."""
    failing = [name for name, ok, _ in results if not ok]
    verdict = (
        f"all {len(results)} scenarios agree"
        if not failing
        else f"MISMATCH in {len(failing)} of {len(results)} scenarios: {', '.join(failing)}"
    )
    return {"ok": not failing, "verdict": verdict, "scenarios": [report for _, _, report in results]}
