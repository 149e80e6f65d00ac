"""The layer slips planted in the whole makemore run, each caught at the first term of the scenario
it touches."""

from __future__ import annotations

from handgrad.hand import activations, embedding
from handgrad.hand import normalization as nm
from handgrad.mutants.layers import (
    batchnorm_forward_running_var_biased,
    batchnorm_forward_unbiased_var,
    embedding_backward_overwrites,
)
from handgrad.mutants.registry import Mutant
from handgrad.mutants.stack import derivative_tanh_from_z

ARGV = ("--steps", "2", "--hidden", "8", "--batch-size", "8")
MUTANTS: tuple[Mutant, ...] = (
    Mutant(
        "makemore-bn-unbiased-var", "makemore",
        ((nm, "batchnorm_forward", batchnorm_forward_unbiased_var),), "makemore", ARGV, "bn.hpreact",
    ),
    Mutant(
        "makemore-bn-running-var-biased", "makemore",
        ((nm, "batchnorm_forward", batchnorm_forward_running_var_biased),), "makemore", ARGV,
        "bn.running_var",
    ),
    Mutant(
        "makemore-embedding-grad-overwritten", "makemore",
        ((embedding, "backward", embedding_backward_overwrites),), "makemore", ARGV, "emb.dL_dC",
    ),
    Mutant(
        "makemore-tanh-derivative-from-z", "makemore",
        ((activations, "derivative", derivative_tanh_from_z),), "makemore", ARGV, "bn.dL_dhpreact",
    ),
)  # fmt: skip
