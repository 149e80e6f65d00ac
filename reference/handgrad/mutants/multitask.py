"""Planted bugs of the multitask family: the trunk that feeds two heads must receive both heads'
gradients (w₁∂L₁/∂a + w₂∂L₂/∂a, the loss weights already inside each)."""

from __future__ import annotations

from handgrad.hand import multitask as hm
from handgrad.mutants.registry import Mutant


def join_heads_first_only(dL1_da, dL2_da):  # noqa: ANN001, ANN201
    """Bug: ∂L/∂a⁽trunk⁾ = w₁∂L₁/∂a only: the second head's gradient never reaches the trunk."""
    return dL1_da


MUTANTS: tuple[Mutant, ...] = (
    Mutant(
        "multitask-trunk-drops-head-2",
        "multitask",
        ((hm, "join_heads", join_heads_first_only),),
        "multitask",
        ("--steps", "1"),
        "trunk.dL_da",
    ),
)
