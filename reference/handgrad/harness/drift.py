"""Drift or an error: what a mismatch is, found by running the steps up to it again with ``--resync``.

Each side keeps its own weights, so the two trajectories differ by rounding from step 1 on. Where
the training amplifies differences (a large learning rate, a wide layer, a long run), that
difference grows until a term passes rtol, at a step where nothing is computed wrongly:
``xor --hidden 30`` crosses 1e-10 at step 53 and reaches 1e-2 by step 1,000. A wrong derivation
instead disagrees at the step where it is made, whatever weights the step starts from.

:func:`diagnose` tells the two apart: a fresh copy of the run, steps 1 to the first divergence,
with torch restarted from the hand side's weights before every step (``--resync``). Every step
agreeing there means the mismatch was drift; a disagreement there is an error made at that step.
The verdict and the exit code stay those of the lock-step run: the trajectories did disagree.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from handgrad.harness.lockstep import Experiment, run
from handgrad.harness.report import Report


@dataclass(frozen=True)
class Diagnosis:
    """The rerun of steps 1 … ``step`` (the lock-step run's first divergence) with ``--resync``."""

    step: int
    resync: Report

    @property
    def drift(self) -> bool:
        return self.resync.first is None and self.resync.stopped is None

    def line(self) -> str:
        """One sentence for the console, after the term table."""
        rerun = (
            f"steps 1-{self.step} run again with torch restarted from the hand side's weights before each "
            "(--resync)"
        )
        if self.drift:
            return (
                f"diagnosis: drift, not an error: {rerun}: {self.resync.verdict()}. The mismatch at step "
                f"{self.step} is rounding grown through the training; run with --resync to check each "
                "step on its own"
            )
        return f"diagnosis: an error, not drift: {rerun}: {self.resync.verdict()}"

    def to_json(self) -> dict[str, object]:
        return {
            "kind": "drift" if self.drift else "error",
            "steps_rerun": self.resync.steps_run,
            "resync_verdict": self.resync.verdict(),
            "message": self.line(),
        }


def needs_diagnosis(report: Report) -> bool:
    """A mismatch of finite values: a non-finite value stops the run and is its own finding."""
    first = report.first
    return first is not None and first.non_finite is None and report.stopped is None


def diagnose(build: Callable[[], Experiment], report: Report) -> Diagnosis:
    """Rerun a fresh ``build()`` of the same run up to ``report``'s first divergence, resynced."""
    step = report.first.step
    experiment = dataclasses.replace(build(), steps=step)
    return Diagnosis(step, run(experiment, tolerance=report.tolerance, resync=True))
