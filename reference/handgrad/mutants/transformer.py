"""The attention slips planted in the transformer run, each caught at its first term."""

from __future__ import annotations

from handgrad.hand import attention
from handgrad.mutants.layers import (
    causal_mask_leaks_one,
    residual_backward_drops_skip,
    sdpa_forward_without_scale,
)
from handgrad.mutants.registry import Mutant

ARGV = ("--steps", "2", "--n-embd", "8", "--mlp", "8", "--context", "5", "--batch-size", "3")
MUTANTS: tuple[Mutant, ...] = (
    Mutant(
        "transformer-attention-without-scale", "transformer",
        ((attention, "sdpa_forward", sdpa_forward_without_scale),), "transformer", ARGV,
        "block1.attn.weights",
    ),
    Mutant(
        "transformer-mask-leaks-one", "transformer",
        ((attention, "causal_mask", causal_mask_leaks_one),), "transformer", ARGV, "block1.attn.weights",
    ),
    Mutant(
        "transformer-residual-grad-dropped", "transformer",
        ((attention, "residual_backward", residual_backward_drops_skip),), "transformer", ARGV,
        "block1.dL_dx1",
    ),
)  # fmt: skip
