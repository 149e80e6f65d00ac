"""The planted-bug records and their runner.

A :class:`Mutant` swaps one shipped hand function for a broken copy (the shipped code is never
edited), runs a small experiment through the harness, and states the term where the bug must
first show; a :class:`LayerMutant` names the layer test case (tests/test_normalization_layers.py,
tests/test_attention_layers.py) that must catch it instead. The broken copies live in one module
per family beside this one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

Patch = tuple[Any, str, Any]  # (module or dict, attribute or key, replacement)


class _Planting:
    """What every planted bug does with its ``patches`` (``id`` names it when a broken copy has no
    docstring)."""

    id: str
    patches: tuple[Patch, ...]

    @property
    def bug(self) -> str:
        doc = (self.patches[0][2].__doc__ or "").strip()
        return doc.splitlines()[0] if doc else self.id

    @contextlib.contextmanager
    def planted(self) -> Iterator[None]:
        """Swap the broken copies in for the length of the block, then put the shipped code back."""
        saved = []
        try:
            for target, name, replacement in self.patches:
                if isinstance(target, dict):
                    saved.append((target, name, target[name]))
                    target[name] = replacement
                else:
                    saved.append((target, name, getattr(target, name)))
                    setattr(target, name, replacement)
            yield
        finally:
            for target, name, original in reversed(saved):
                if isinstance(target, dict):
                    target[name] = original
                else:
                    setattr(target, name, original)


@dataclass(frozen=True)
class Mutant(_Planting):
    """One planted bug: what it swaps, the run that must catch it, and where it must first show."""

    id: str
    family: str
    patches: tuple[Patch, ...]
    scenario: str
    argv: tuple[str, ...]
    expected_term: str
    expected_step: int = 1
    build: Callable[[], Any] | None = field(default=None, compare=False)  # a custom experiment

    def experiment(self) -> Any:
        if self.build is not None:
            return self.build()
        from handgrad.cli import scenario_parser
        from handgrad.scenarios import SCENARIOS

        args = scenario_parser(self.scenario).parse_args(list(self.argv))
        return SCENARIOS[self.scenario].build(args)


@dataclass(frozen=True)
class LayerMutant(_Planting):
    """One planted bug: what it swaps, the layer case that must catch it, and its first term."""

    id: str
    family: str
    patches: tuple[Patch, ...]
    case: str
    expected_term: str
    expected_step: int = 1


# the arguments of the small runs the harness mutants use
XOR = ("--steps", "2", "--mode", "batch")
MLP_SQUARE = ("--steps", "2", "--sizes", "3,3,3", "--mode", "batch")
ALEX = ("--steps", "1", "--samples", "8")
PARITY = ("--steps", "1")


@dataclass(frozen=True)
class Outcome:
    """What the harness said about one mutant."""

    mutant: Mutant
    caught: bool
    step: int | None
    term: str | None
    message: str

    @property
    def as_expected(self) -> bool:
        return self.caught and (self.step, self.term) == (
            self.mutant.expected_step,
            self.mutant.expected_term,
        )


def run_mutant(mutant: Mutant) -> Outcome:
    """Plant the bug, run its experiment through the harness, and report where it was caught."""
    from handgrad import harness

    with mutant.planted():
        report = harness.run(mutant.experiment())
    first = report.first
    if first is None:
        return Outcome(mutant, not report.ok, None, None, report.verdict())
    return Outcome(mutant, True, first.step, first.term, first.message())


def run_all(mutants: Sequence[Mutant]) -> list[Outcome]:
    return [run_mutant(mutant) for mutant in mutants]
