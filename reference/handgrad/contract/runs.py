"""What a run trains, typed by family: the spec the Experiment carries to the harness's
configuration check and to the workbook (which reads it, never the sides).

One dataclass per family; :data:`RunSpec` is their union, so a reader tells the family with
``isinstance`` and reads fields by name (no dict keys that differ by family)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from handgrad.contract.spec import Data, Network, Schedule
from handgrad.contract.training import Loss, Optimizer

if TYPE_CHECKING:  # the family's model specs: a run loads only its own family's modules
    from handgrad.contract.makemore import Makemore
    from handgrad.contract.multitask import Multitask
    from handgrad.contract.recurrent import RecurrentModel
    from handgrad.contract.transformer import Transformer


@dataclass(frozen=True)
class StackRun:
    """A layer stack (dense, conv, norms, a user's layers): xor, mlp, deep, alexnet-mini, check."""

    network: Network
    loss: Loss
    optimizer: Optimizer
    data: Data
    schedule: Schedule
    batches: Sequence[np.ndarray]
    masks: Mapping[str, list[np.ndarray]] = field(default_factory=dict)  # dropout keep masks


@dataclass(frozen=True)
class RecurrentRun:
    """An RNN/GRU/LSTM through time with a dense head: parity, echo."""

    model: RecurrentModel
    loss: Loss
    optimizer: Optimizer
    data: Data
    schedule: Schedule
    batches: Sequence[np.ndarray]
    h0: np.ndarray | None = None
    c0: np.ndarray | None = None


@dataclass(frozen=True)
class MultitaskRun:
    """A shared trunk with two heads, L = w₁·L₁ + w₂·L₂."""

    model: Multitask
    optimizer: Optimizer
    data: Data
    schedule: Schedule
    batches: Sequence[np.ndarray]


@dataclass(frozen=True)
class MakemoreRun:
    """makemore part 4: embedding, linear, BatchNorm1d, tanh, linear, cross-entropy."""

    model: Makemore
    optimizer: Optimizer
    schedule: Schedule
    batches: Sequence[np.ndarray]


@dataclass(frozen=True)
class TransformerRun:
    """Pre-LN transformer blocks predicting the next character."""

    model: Transformer
    optimizer: Optimizer
    schedule: Schedule
    batches: Sequence[np.ndarray]


RunSpec = StackRun | RecurrentRun | MultitaskRun | MakemoreRun | TransformerRun
