"""What every scenario shares: its registry entry and the training options common to all."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from handgrad.harness import Experiment
from handgrad.spec import (
    DTYPES,
    LOSSES,
    MODES,
    ORDERS,
    REDUCTIONS,
    Loss,
    Optimizer,
    Schedule,
    SpecError,
    require_float,
    require_int,
)


@dataclass(frozen=True)
class Scenario:
    """A built-in experiment: ``add_arguments`` declares its options, ``build`` makes the run."""

    name: str
    summary: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    build: Callable[[argparse.Namespace], Experiment]


def parse_int_list(field: str, text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise SpecError(field, f"expected comma-separated integers, got {text!r}") from None


def parse_float_list(field: str, text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise SpecError(field, f"expected comma-separated numbers, got {text!r}") from None


def add_training_arguments(parser: argparse.ArgumentParser, *, lr: float, steps: int) -> None:
    """Options every scenario takes: length, seed, dtype, loss, optimizer, data schedule."""
    parser.add_argument("--steps", type=int, default=steps, help="training steps (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights and order")
    parser.add_argument(
        "--dtype", default="float64", choices=DTYPES, help="dtype of both sides (default float64)"
    )
    parser.add_argument("--lr", type=float, default=lr, help="learning rate η (default %(default)s)")
    parser.add_argument("--loss", default="mse", choices=LOSSES, help="loss (default mse)")
    parser.add_argument(
        "--reduction", default="mean", choices=REDUCTIONS, help="loss reduction (default mean, as torch)"
    )
    parser.add_argument(
        "--half", action="store_true", help="multiply the squared error by ½ (the textbook ½·Σ(ŷ−y)²)"
    )
    parser.add_argument("--optimizer", default="sgd", choices=("sgd",), help="optimizer (default sgd)")
    parser.add_argument(
        "--mode",
        default="online",
        choices=MODES,
        help="online: one sample per step; batch: all rows; minibatch: --batch-size",
    )
    parser.add_argument("--batch-size", type=int, default=2, help="rows per step in minibatch mode")
    parser.add_argument(
        "--order", default="fixed", choices=ORDERS, help="row order per epoch: fixed, or shuffle (seeded)"
    )


def loss_from_args(args: argparse.Namespace) -> Loss:
    return Loss(args.loss, args.reduction, args.half)


def optimizer_from_args(args: argparse.Namespace) -> Optimizer:
    return Optimizer(args.optimizer, require_float("lr", args.lr, positive=True))


def schedule_from_args(args: argparse.Namespace) -> Schedule:
    require_int("steps", args.steps, 1)
    require_int("seed", args.seed, 0)
    return Schedule(args.mode, require_int("batch_size", args.batch_size, 1), args.order, args.seed)
