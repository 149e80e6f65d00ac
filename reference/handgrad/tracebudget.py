"""Which steps the Trace sheet keeps: ``--trace-steps all|N|first:last|every:K|auto``.

The harness compares every term of every step whatever the Trace keeps; the Trace is what a
person can open. ``auto`` (the default) keeps every step while the rows fit
:data:`TRACE_ROW_BUDGET` (about 3 MB of workbook), else as many steps as fit: the first ones, the
last ones and an even sample between. Every choice also keeps the steps the live sheets are
checked against (the Walkthrough's, the Training sheet's first rows: ``scripts/recalc.py`` reads
the hand side's numbers from the Trace), the first step where a term disagrees with its two
neighbours, and the last step run when the run stopped early.

Steps stream: a step is written when it runs, or one step later (the step before a first
divergence is held until the next step shows whether it is needed), so memory stays flat.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from handgrad.contract.spec import SpecError

TRACE_ROW_BUDGET = 120_000  # Trace rows of the automatic default
OVERSIZE_MB = 10  # a Trace the budget could not hold is said in words from this size on
TRACE_ROW_BYTES = 27  # a Trace row's bytes once zipped, about (echo's 912,300 rows: a 25.6 MB file)
HELP = (
    "steps the Trace sheet keeps: all, N (N steps: first, last and an even sample), FIRST:LAST "
    f"(a range) or every:K; default auto: every step while the rows fit {TRACE_ROW_BUDGET:,}, "
    "else N steps that do. Every step is compared either way; the first divergence and its "
    "neighbours are always kept"
)


@dataclass(frozen=True)
class TraceSteps:
    """A parsed ``--trace-steps``: ``kind`` is auto, all, count, range or every."""

    kind: str
    a: int = 0
    b: int = 0

    @property
    def text(self) -> str:
        return {
            "auto": "auto",
            "all": "all",
            "count": f"{self.a}",
            "range": f"{self.a}:{self.b}",
            "every": f"every:{self.a}",
        }[self.kind]


def parse_trace_steps(text: str | None) -> TraceSteps:
    """``None``/``auto``, ``all``, ``N``, ``first:last`` or ``every:K`` (SpecError naming the field)."""
    value = "auto" if text is None else str(text).strip().lower()
    if value in ("auto", "all"):
        return TraceSteps(value)
    expected = f"expected all, auto, N, FIRST:LAST or every:K, got {text!r}"
    try:
        if value.startswith("every:"):
            k = int(value[6:])
            if k < 1:
                raise SpecError("trace_steps", f"every:K needs K >= 1, got {k}")
            return TraceSteps("every", k)
        if ":" in value:
            first, last = (int(part) for part in value.split(":"))
            if first < 1 or last < first:
                raise SpecError("trace_steps", f"FIRST:LAST needs 1 <= FIRST <= LAST, got {text!r}")
            return TraceSteps("range", first, last)
        n = int(value)
    except ValueError:
        raise SpecError("trace_steps", expected) from None
    if n < 1:
        raise SpecError("trace_steps", f"N counts steps from 1, got {n}")
    return TraceSteps("count", n)


def spread(count: int, steps: int) -> set[int]:
    """``count`` of steps 1..steps: the first quarter, the last quarter, the rest evenly between."""
    if count >= steps:
        return set(range(1, steps + 1))
    head = max(1, count // 4)
    tail = min(count - head, max(1, count // 4)) if count > 1 else 0
    chosen = set(range(1, head + 1)) | set(range(steps - tail + 1, steps + 1))
    middle = count - head - tail
    if middle > 0:
        chosen |= {int(k) for k in np.linspace(head + 1, steps - tail, middle + 2)[1:-1].round()}
    return chosen


@dataclass
class TraceBudget:
    """Decides step by step what the Trace keeps; :meth:`admit` returns the steps to write now."""

    choice: TraceSteps
    steps: int  # steps the run asks for
    required: set[int] = field(default_factory=set)  # the live sheets' steps (and Training's prefix)
    budget_rows: int = TRACE_ROW_BUDGET
    planned: set[int] | None = None  # auto/count: chosen at step 1, when a step's rows are known
    rows_per_step: int = 0
    kept: list[int] = field(default_factory=list)
    divergence: int | None = None
    _pending: tuple[int, Any] | None = None

    def require(self, steps: Iterable[int]) -> None:
        self.required.update(steps)

    def _plan(self, rows: int) -> None:
        self.rows_per_step = rows
        if self.choice.kind == "auto":  # the live sheets' steps count against the budget too
            fits = self.budget_rows // max(rows, 1)
            count = max(1, fits)
            while True:  # the largest plan that fits with the required steps it does not hold
                planned = spread(count, self.steps)
                over = len(planned | self.required) - fits
                if over <= 0 or count == 1:
                    break
                count = max(1, count - over)
            self.planned = planned
        elif self.choice.kind == "count":
            self.planned = spread(self.choice.a, self.steps)

    def wanted(self, step: int) -> bool:
        kind = self.choice.kind
        if step in self.required or kind == "all":
            return True
        if self.divergence is not None and step <= self.divergence + 1:
            return True
        if kind == "range":
            return self.choice.a <= step <= self.choice.b
        if kind == "every":
            return (step - 1) % self.choice.a == 0 or step == self.steps
        return self.planned is not None and step in self.planned

    def admit(self, step: int, rows: int, failing: bool, item: Any) -> list[tuple[int, Any]]:
        """Step ``step`` ran (``rows`` Trace rows; ``failing``: a term disagrees): the (step, item)
        pairs to write now, in step order."""
        if step == 1 or self.planned is None and self.choice.kind in ("auto", "count"):
            self._plan(rows)
        out: list[tuple[int, Any]] = []
        if failing and self.divergence is None:
            self.divergence = step
            if self._pending is not None and self._pending[0] == step - 1:
                out.append(self._pending)
        self._pending = None
        if self.wanted(step):
            out.append((step, item))
        else:
            self._pending = (step, item)
        self.kept.extend(k for k, _ in out)
        return out

    def finish(self) -> list[tuple[int, Any]]:
        """The last step run, when it was not kept yet and the run stopped early (it ends there),
        or the steps were named (a range, every K-th): the automatic plan already holds the last
        step wherever two steps fit the budget."""
        keep = self._pending is not None and (
            self._pending[0] < self.steps or self.choice.kind not in ("auto", "count")
        )
        out = [self._pending] if keep else []
        self._pending = None
        self.kept.extend(k for k, _ in out)
        return out

    def prefix(self) -> int:
        """How many steps 1, 2, ... the Trace keeps without a gap."""
        n = 0
        for k in sorted(self.kept):
            if k != n + 1:
                break
            n = k
        return n

    def describe(self, steps_run: int) -> str:
        """One sentence: which steps the Trace holds and why (console, Summary, Read me)."""
        kept = len(self.kept)
        if kept >= steps_run:
            return f"The Trace keeps every one of the {steps_run:,} steps run.{self._oversize(kept)}"
        how = {
            "auto": f"the automatic budget of {self.budget_rows:,} rows ({self.rows_per_step:,} rows a step)",
            "count": f"--trace-steps {self.choice.text}",
            "range": f"--trace-steps {self.choice.text}",
            "every": f"--trace-steps {self.choice.text}",
        }[self.choice.kind]
        extra = []
        if self.divergence is not None:
            extra.append(f"the first divergence (step {self.divergence}) and its neighbours")
        if self.required:
            extra.append("the steps the live sheets show")
        also = f", with {' and '.join(extra)}" if extra else ""
        return (
            f"The Trace keeps {kept:,} of the {steps_run:,} steps run ({_ranges(sorted(self.kept))}) "
            f"by {how}{also}; every step was compared. --trace-steps all keeps every step."
            f"{self._oversize(kept)}"
        )

    def _oversize(self, kept: int) -> str:
        """A warning when the automatic budget could not hold and the Trace is large: the steps it
        must keep (one step of a long sequence or a wide layer; the live sheets' steps; the first
        divergence and its neighbours) are over the budget, so the Trace is as large as they are."""
        rows = self.rows_per_step * kept
        megabytes = rows * TRACE_ROW_BYTES / 1e6
        if self.choice.kind != "auto" or rows <= self.budget_rows or megabytes < OVERSIZE_MB:
            return ""
        walkthroughs = len(self.required) > 1
        remedy = "fewer --walkthrough steps or a smaller run give" if walkthroughs else "a smaller run gives"
        if kept == 1:
            what = f"One step is {self.rows_per_step:,} rows"
        else:
            why = ["the first divergence and its neighbours"] if self.divergence is not None else []
            why += ["the steps the live sheets show"] if walkthroughs else []
            because = f" ({' and '.join(why)})" if why else ""
            what = f"The {kept:,} steps it must keep{because} are {rows:,} rows"
        return (
            f" {what}, over the automatic budget of {self.budget_rows:,}: the Trace alone is about "
            f"{megabytes:,.0f} MB ({remedy} a smaller workbook)."
        )


def _ranges(steps: list[int], most: int = 6) -> str:
    """``1-4, 50, 97-100`` (at most ``most`` pieces, then …)."""
    pieces: list[str] = []
    start = prev = None
    for k in [*steps, None]:
        if k is not None and prev is not None and k == prev + 1:
            prev = k
            continue
        if start is not None:
            pieces.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = k
    if len(pieces) > most:
        return ", ".join(pieces[: most - 1]) + f", … {pieces[-1]}"
    return ", ".join(pieces)
