"""Planted bugs: proof that the checks bite.

Each mutant swaps one shipped hand function for a broken copy defined in this package (the
shipped code is never edited), runs a small experiment (or a layer test case), and states the term
where the bug must first show. One module per family — stack (Linear, activations, losses),
optimizers, conv, recurrent, multitask, layers (norms, embedding, attention, GELU), makemore and transformer
(the layer slips inside those runs) — and :mod:`~handgrad.mutants.registry` for the records and
their runner. ``scripts/mutants.py`` prints the tally; ``tests/test_mutants.py`` asserts every one
is caught at its expected first term. Tests import planted bugs from here and never redefine them.

The package imports no torch itself (the hand side of a mutant is pure NumPy); building an
experiment imports the twin, and ``Scenario.build_hand`` (:mod:`handgrad.scenarios.common`)
builds the hand side alone, torch-free, for the finite-difference oracle.
"""

from __future__ import annotations

from handgrad.mutants import conv, layers, makemore, multitask, optimizers, recurrent, stack, transformer
from handgrad.mutants.conv import pooled_stack
from handgrad.mutants.registry import LayerMutant, Mutant, Outcome, Patch, run_all, run_mutant
from handgrad.mutants.stack import normed_stack

MUTANTS: tuple[Mutant, ...] = (
    *stack.MUTANTS,
    *optimizers.MUTANTS,
    *conv.MUTANTS,
    *recurrent.MUTANTS,
    *multitask.MUTANTS,
)
"""The harness mutants of the shipped families, each run through a scenario."""

LAYER_MUTANTS: tuple[LayerMutant, ...] = layers.MUTANTS
"""The layer slips, each caught by a case of the layer tests."""

SCENARIO_MUTANTS: tuple[Mutant, ...] = (
    *makemore.MUTANTS,
    *transformer.MUTANTS,
    *conv.POOL_STACK_MUTANTS,
    *stack.NORM_STACK_MUTANTS,
)
"""The layer slips planted in whole runs: makemore, the transformer, small stacks."""

__all__ = [
    "LAYER_MUTANTS",
    "MUTANTS",
    "SCENARIO_MUTANTS",
    "LayerMutant",
    "Mutant",
    "Outcome",
    "Patch",
    "normed_stack",
    "pooled_stack",
    "run_all",
    "run_mutant",
]
