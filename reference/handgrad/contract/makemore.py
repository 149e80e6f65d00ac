"""The makemore family's model spec: a character-level MLP with BatchNorm (Karpathy's makemore
part 4, "becoming a backprop ninja"), the shipped names, the parameter table and the batches.

    emb = C[Xb] → embcat → hprebn = embcat W1ᵀ → BatchNorm1d → hpreact → h = tanh
    → logits = h W2ᵀ + b2 → cross-entropy

Weights are stored in torch's layout (``W1`` is (hidden, block·n_embd), as ``nn.Linear.weight``).
The Linear before BatchNorm has no bias (``bias=False``): BatchNorm subtracts the batch mean, so
∂L/∂b1 is zero in exact arithmetic and both sides return only rounding noise (~1e-17) for it,
which no tolerance can compare (manual/makemore.md).
The derivations are in handgrad.hand.makemore and manual/makemore.md. No torch here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import overload

import numpy as np

from handgrad.contract.spec import SpecError, require_float, require_int

VOCAB = ".abcdefghijklmnopqrstuvwxyz"  # '.' (index 0) starts and ends every name
# terms the hand side computes but torch's fused modules do not expose (nn.BatchNorm1d computes
# μ, σ², x̂ inside one kernel; F.cross_entropy its log-softmax): the hand side keeps them in
# ``HandMakemore.internals`` (not compared, so not in the trace; manual/makemore.md)
HAND_ONLY = ("bnmean", "bnvar", "bnraw", "logprobs", "probs", "dL_dlogprobs", "dL_dbnraw")


@dataclass(frozen=True)
class Makemore:
    """Sizes of the MLP and the BatchNorm1d options (torch's defaults)."""

    vocab: int = len(VOCAB)
    block_size: int = 3
    n_embd: int = 10
    hidden: int = 64
    batch_size: int = 32
    eps: float = 1e-5
    momentum: float = 0.1

    def __post_init__(self) -> None:
        require_int("vocab", self.vocab, 2)
        require_int("block_size", self.block_size, 1)
        require_int("n_embd", self.n_embd, 1)
        require_int("hidden", self.hidden, 1)
        require_int("batch_size", self.batch_size, 1)
        if self.batch_size < 2:
            raise SpecError(
                "batch_size",
                f"BatchNorm1d in training mode needs more than 1 value per channel, got a batch of "
                f"{self.batch_size} (torch raises 'Expected more than 1 value per channel when training')",
            )
        require_float("eps", self.eps)
        momentum = require_float("momentum", self.momentum, non_negative=True)
        if momentum > 1:
            raise SpecError("momentum", f"expected a number in [0, 1], got {momentum!r}")

    @property
    def fan_in(self) -> int:
        """Columns of embcat: block_size · n_embd."""
        return self.block_size * self.n_embd


def param_table(model: Makemore) -> list[tuple[str, tuple[int, ...], str]]:
    """Every parameter as (name, shape, symbol), in the twin's ``parameters()`` order."""
    return [
        ("emb.C", (model.vocab, model.n_embd), "C"),
        ("hidden.W1", (model.hidden, model.fan_in), "W1"),
        ("bn.gamma", (model.hidden,), "γ"),
        ("bn.beta", (model.hidden,), "β"),
        ("output.W2", (model.vocab, model.hidden), "W2"),
        ("output.b2", (model.vocab,), "b2"),
    ]


# BatchNorm1d's buffers, traced as state terms: (term, symbol)
BUFFERS = (
    ("bn.running_mean", "μ̂"),
    ("bn.running_var", "σ̂²"),
    ("bn.num_batches_tracked", "t"),
)


def load_names() -> list[str]:
    """The shipped names (reference/handgrad/data/names.txt, made by scripts/make_names.py)."""
    text = resources.files("handgrad.data").joinpath("names.txt").read_text(encoding="ascii")
    return [line.strip() for line in text.splitlines() if line.strip()]


def build_dataset(names: Sequence[str], block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """X (n, block_size) of context indices and Y (n,) of the next character's index: every
    position of every name, the context padded with '.' (0) at the start, '.' as the last target."""
    index = {ch: i for i, ch in enumerate(VOCAB)}
    X: list[list[int]] = []
    Y: list[int] = []
    for name in names:
        context = [0] * block_size
        for ch in name + ".":
            if ch not in index:
                raise SpecError("names", f"character {ch!r} in {name!r} is not in '.' + a–z")
            X.append(context)
            Y.append(index[ch])
            context = context[1:] + [index[ch]]
    return np.array(X, dtype=np.int64), np.array(Y, dtype=np.int64)


class DrawnBatches(Sequence[np.ndarray]):
    """The rows of step k (``batches[k − 1]``): ``batch_size`` rows drawn with replacement by
    ``default_rng([seed, k])``, the same on both sides, any step asked in any order."""

    def __init__(self, n_rows: int, batch_size: int, steps: int, seed: int) -> None:
        self.n_rows, self.batch_size, self.steps, self.seed = n_rows, batch_size, steps, seed

    def __len__(self) -> int:
        return self.steps

    @overload
    def __getitem__(self, index: int) -> np.ndarray: ...

    @overload
    def __getitem__(self, index: slice) -> list[np.ndarray]: ...

    def __getitem__(self, index: int | slice) -> np.ndarray | list[np.ndarray]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.steps))]
        i = int(index) + self.steps if index < 0 else int(index)
        if not 0 <= i < self.steps:
            raise IndexError(f"step {int(index) + 1} of {self.steps}")
        rng = np.random.default_rng([self.seed, i + 1])
        return rng.integers(0, self.n_rows, size=self.batch_size)
