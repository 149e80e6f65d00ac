"""Terms and step traces: the contract between the hand side, the twin, the harness and the workbook.

A :class:`Term` is one named quantity of one training step (``dense1.z``, ``loss.L``,
``dense1.dL_dW``, ``sgd.momentum_buffer.dense1.W``). Both sides emit the same names in the same
order; the name is the join key everywhere (report, JSON, workbook, manual).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

PHASES = ("forward", "loss", "backward", "update", "state", "diagnostic")


class Reduction(NamedTuple):
    """A term written as ``np.einsum(subscripts, *operands)`` of other terms of the same step."""

    subscripts: str
    operands: tuple[str, ...]


@dataclass(frozen=True)
class Term:
    """One named value of one step.

    ``name`` is ``<layer>.<term>`` (ASCII, stable); ``symbol`` is how the manual and the workbook
    print it; ``phase`` is one of :data:`PHASES`; ``value`` is an ndarray in torch's layout;
    ``source`` says which reference produced it (``hand``, ``torch.nn``, ``torch-ops``, ...).
    ``summands``: for a term that is a sum of products of other terms of the step, that sum as
    a :class:`Reduction` (a bias gradient ``dense2.dL_db = Σᵢ dense2.dL_dz[i, :]``, a weight
    gradient ``dense2.dL_dW = Σᵢ dense2.dL_dz[i, :]ᵀ·dense1.a[i, :]``); its rounding is bounded by
    the sizes of the summands, not of the sum (:func:`handgrad.contract.tolerance.summand_scale`).
    Names from the contract, never values.
    """

    name: str
    symbol: str
    phase: str
    value: np.ndarray
    source: str = "hand"
    summands: Reduction | None = None

    def __init__(
        self,
        name: str,
        symbol: str,
        phase: str,
        value: np.ndarray,
        source: str = "hand",
        summands: Reduction | None = None,
    ) -> None:
        # the generated __init__ of a frozen dataclass, without its object.__setattr__ per field
        # (half the cost of a term: a step of the LSTM bench adds ~600)
        fields = self.__dict__
        fields["name"] = name
        fields["symbol"] = symbol
        fields["phase"] = phase
        fields["value"] = value
        fields["source"] = source
        fields["summands"] = summands

    @property
    def layer(self) -> str:
        return self.name.split(".", 1)[0]


@dataclass
class StepTrace:
    """The ordered terms of one step, as one side computed them."""

    step: int
    terms: list[Term] = field(default_factory=list)
    _index: dict[str, int] = field(default_factory=dict, repr=False)

    def add(
        self,
        name: str,
        symbol: str,
        phase: str,
        value: object,
        source: str = "hand",
        *,
        summands: Reduction | None = None,
        copy: bool = True,
    ) -> np.ndarray:
        """Append a term (a copy of ``value`` as an ndarray) and return the stored array.

        ``copy=False``: the caller's word that nothing writes to ``value`` later (the twin's tensors
        made fresh by this step; the hand side's arrays, which its functions make new and never
        write into, but not what a user's own layer returns or is given); a C- or F-contiguous
        ndarray is then kept as it is, which is what the copy would hold (the copy keeps the order
        of a contiguous array), any other value copied.
        """
        if name in self._index:
            raise ValueError(f"term {name!r} added twice at step {self.step}")
        if copy or type(value) is not np.ndarray:
            array = np.array(value, copy=True)
        else:
            flags = value.flags
            array = value if flags.c_contiguous or flags.f_contiguous else np.array(value, copy=True)
        self._index[name] = len(self.terms)
        self.terms.append(Term(name, symbol, phase, array, source, summands))
        return array

    def __getitem__(self, name: str) -> Term:
        return self.terms[self._index[name]]

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def __iter__(self) -> Iterator[Term]:
        return iter(self.terms)

    def __len__(self) -> int:
        return len(self.terms)

    def names(self) -> list[str]:
        return [term.name for term in self.terms]

    def value(self, name: str) -> np.ndarray:
        return self[name].value
