"""Recurrent scenarios: ``parity`` and ``echo``, each with ``--cell rnn|rnn-relu|gru|lstm``.

``parity`` is the seed's XOR carried through time: a sequence of bits, the target is the XOR of
all of them (many-to-one), or with ``--head many-to-many`` the running XOR after every step.
``echo`` repeats its input ``--delay k`` steps later (many-to-many): y_t = x_{t−k}, 0 for t ≤ k.

The data is a padded batch plus lengths: ``--lengths equal`` (every sequence ``--length`` long,
no packing), ``ragged`` (seeded lengths in 1..T; the twin packs them, the hand side masks) or a
list such as ``3,6,2,5`` (one per sequence). The padded positions of x hold 0.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import numpy as np

from handgrad.contract.recurrent import (
    CELL_NAMES,
    HEADS,
    RecurrentModel,
    SequenceData,
    check_lengths,
    param_table,
)
from handgrad.contract.runs import RecurrentRun
from handgrad.contract.spec import ACTIVATIONS, Schedule, SpecError, require_choice, require_int
from handgrad.contract.training import Loss, Optimizer
from handgrad.hand.recurrent_model import HandRecurrent, init_params
from handgrad.harness import Experiment
from handgrad.inputs import load_weights
from handgrad.scenarios.common import (
    Scenario,
    add_training_arguments,
    asked_from_args,
    asked_loss,
    loss_config,
    loss_from_args,
    optimizer_from_args,
    parse_int_list,
    resolve_device,
    schedule_from_args,
    training_config,
)

INITIAL_STATES = ("zero", "random")


def recurrent_experiment(
    scenario: str,
    model: RecurrentModel,
    loss: Loss,
    optimizer: Optimizer,
    data: SequenceData,
    schedule: Schedule,
    *,
    steps: int,
    seed: int,
    dtype: str = "float64",
    params: dict[str, np.ndarray] | None = None,
    h0: np.ndarray | None = None,
    c0: np.ndarray | None = None,
    device: str = "cpu",
    config: dict[str, object] | None = None,
    with_twin: bool = True,
    net: Any = None,
) -> Experiment:
    """Both sides of a recurrent model, built from one spec and one set of initial weights
    (``with_twin=False``: the hand side alone, ``twin`` None, no torch imported).

    ``h0`` / ``c0``: one initial state per sequence, (num_layers, sequences, hidden), or None for
    zeros (then torch has no tensor to report ∂L/∂h0 on, and neither side emits it).
    ``net``: the twin runs these modules (``rnn``, ``head``, ``activation``: a user's own, copied by
    :mod:`handgrad.scenarios.own_model`) instead of building them from the spec.
    """
    if dtype != "float64":
        raise SpecError("dtype", "the recurrent hand side computes in float64 only")
    require_int("steps", steps, 1)
    initial = params if params is not None else init_params(model, seed)
    initial = {name: np.array(initial[name], dtype=np.float64) for name, _, _ in param_table(model)}
    states = (model.num_layers, data.n, model.hidden_size)
    for name, state in (("h0", h0), ("c0", c0)):
        if state is not None and np.shape(state) != states:
            raise SpecError(
                name, f"expected shape {states} (layers, sequences, hidden), got {np.shape(state)}"
            )
    if (c0 is not None) != (model.cell == "lstm" and h0 is not None):
        raise SpecError("c0", "the lstm takes h0 and c0 together; other cells take no c0")
    batches = schedule.batches(data.n, steps)
    sides = dict(h0=h0, c0=c0)
    hand = HandRecurrent(model, loss, optimizer, initial, data, batches, **sides)
    twin = None
    if with_twin:
        from handgrad.twin.recurrent_model import TwinRecurrent

        twin = TwinRecurrent(
            model, loss, optimizer, initial, data, batches, **sides, dtype=dtype, device=device, net=net
        )
    return Experiment(
        scenario=scenario,
        hand=hand,
        twin=twin,
        steps=steps,
        dtype=dtype,
        config=config or {},
        spec=RecurrentRun(model, loss, optimizer, data, schedule, batches, h0, c0),
        initial_params=initial,
    )


# --- data ----------------------------------------------------------------------------------------


def sequence_lengths(
    text: str, sequences: int, steps: int, rng: np.random.Generator
) -> tuple[np.ndarray, bool]:
    """(lengths, packed) from ``--lengths``: equal, ragged (seeded, in 1..T) or a list."""
    if text == "equal":
        return np.full(sequences, steps, dtype=np.int64), False
    if text == "ragged":
        lengths = rng.integers(1, steps + 1, size=sequences)
        lengths[rng.integers(sequences)] = steps  # one sequence uses the whole padded length
        return lengths.astype(np.int64), True
    return check_lengths(np.array(parse_int_list("lengths", text)), sequences, steps), True


def _bits(rng: np.random.Generator, lengths: np.ndarray, steps: int) -> np.ndarray:
    """(S, T, 1) random bits, 0 at padded positions."""
    bits = rng.integers(0, 2, size=(len(lengths), steps)).astype(np.float64)
    bits[np.arange(steps)[None, :] >= lengths[:, None]] = 0.0
    return bits[:, :, None]


def parity_data(
    sequences: int, steps: int, lengths: np.ndarray, packed: bool, head: str, seed: int
) -> SequenceData:
    """Bits; the target is their XOR over each sequence's own length (or after every step)."""
    rng = np.random.default_rng(seed)
    x = _bits(rng, lengths, steps)
    running = np.cumsum(x[:, :, 0], axis=1) % 2  # S,T   XOR of the bits so far
    if head == "many-to-one":
        y = running[np.arange(sequences), lengths - 1][:, None]  # S,1
    else:
        y = np.where(np.arange(steps)[None, :] < lengths[:, None], running, 0.0)[:, :, None]  # S,T,1
    return SequenceData(x, y, lengths, packed, f"random bits (seed {seed}), XOR target")


def echo_data(
    sequences: int, steps: int, lengths: np.ndarray, packed: bool, delay: int, seed: int
) -> SequenceData:
    """Bits; the target at step t is the input at step t − delay (0 for t ≤ delay)."""
    rng = np.random.default_rng(seed)
    x = _bits(rng, lengths, steps)
    y = np.zeros_like(x)
    y[:, delay:] = x[:, : steps - delay]
    return SequenceData(x, y, lengths, packed, f"random bits (seed {seed}), echoed {delay} steps later")


# --- command line --------------------------------------------------------------------------------


def _add_recurrent_arguments(
    parser: argparse.ArgumentParser, *, hidden: int, length: int, heads: bool
) -> None:
    parser.add_argument(
        "--cell", default="lstm", choices=tuple(CELL_NAMES), help="recurrent cell (default lstm)"
    )
    parser.add_argument("--hidden", type=int, default=hidden, help="hidden size H (default %(default)s)")
    parser.add_argument("--layers", type=int, default=1, help="stacked recurrent layers (default 1)")
    parser.add_argument("--batch-first", action="store_true", help="x as (N, T, I), as torch's batch_first")
    parser.add_argument("--length", type=int, default=length, help="padded length T (default %(default)s)")
    parser.add_argument("--sequences", type=int, default=8, help="sequences in the data set (default 8)")
    parser.add_argument(
        "--lengths",
        default="equal",
        help="equal (all T), ragged (seeded, unsorted; packed) or one length per sequence: 3,6,2,...",
    )
    parser.add_argument(
        "--h0", default="zero", help="initial state: zero (torch's default) or random (one per sequence)"
    )
    if heads:
        parser.add_argument(
            "--head", default="many-to-one", help="many-to-one (last state → Dense) or many-to-many"
        )
    parser.add_argument(
        "--output-activation", default="sigmoid", choices=ACTIVATIONS, help="after the head (default sigmoid)"
    )
    parser.add_argument(
        "--weights", metavar="FILE", help="initial weights: JSON object or .npz keyed by parameter name"
    )
    parser.set_defaults(mode="batch")


def _build(
    name: str,
    args: argparse.Namespace,
    head: str,
    make_data: Callable[..., SequenceData],
    with_twin: bool = True,
) -> Experiment:
    require_choice("head", head, HEADS)
    require_choice("h0", args.h0, INITIAL_STATES)
    steps_t = require_int("length", args.length, 1)
    sequences = require_int("sequences", args.sequences, 1)
    model = RecurrentModel(
        args.cell,
        1,
        args.hidden,
        args.layers,
        1,
        head,
        args.output_activation,
        args.batch_first,
    )
    rng = np.random.default_rng(args.seed + 1)
    lengths, packed = sequence_lengths(args.lengths, sequences, steps_t, rng)
    data = make_data(sequences, steps_t, lengths, packed, args.seed + 1)
    loss = loss_from_args(args)
    optimizer = optimizer_from_args(args)
    schedule = schedule_from_args(args)
    h0 = c0 = None
    if args.h0 == "random":
        states = (model.num_layers, sequences, model.hidden_size)
        h0 = rng.normal(0.0, 0.5, states)
        c0 = rng.normal(0.0, 0.5, states) if model.cell == "lstm" else None
    table = param_table(model)
    params = load_weights(args.weights, [(n, s) for n, s, _ in table]) if args.weights else None
    config = {
        "scenario": name,
        "cell": args.cell,
        "hidden": model.hidden_size,
        "layers": model.num_layers,
        "head": head,
        "batch_first": model.batch_first,
        "length": steps_t,
        "sequences": sequences,
        "lengths": args.lengths if args.lengths in ("equal", "ragged") else "given",
        "lengths_values": ",".join(map(str, lengths.tolist())),
        "packed": packed,
        "h0": args.h0,
        "output_activation": model.output_activation,
        **loss_config(loss),
        **training_config(args, optimizer, schedule, data.source),
    }
    experiment = recurrent_experiment(
        name,
        model,
        loss,
        optimizer,
        data,
        schedule,
        steps=args.steps,
        seed=args.seed,
        dtype=args.dtype,
        params=params,
        h0=h0,
        c0=c0,
        device=resolve_device(args),
        config=config,
        with_twin=with_twin,
    )
    experiment.asked = {**asked_from_args(args), **asked_loss(args), **_recurrent_asked(args)}
    return experiment


def _recurrent_asked(args: argparse.Namespace) -> dict[str, object]:
    """What the recurrent options ask the fused module and the head for."""
    cell = CELL_NAMES[args.cell]
    asked: dict[str, object] = {
        "rnn.cell": cell,
        "rnn.hidden_size": args.hidden,
        "rnn.num_layers": args.layers,
        "rnn.batch_first": args.batch_first,
    }
    if cell.startswith("rnn_"):
        asked["rnn.nonlinearity"] = cell[4:]
    asked.update({"dense1.in_features": args.hidden, "dense1.activation": args.output_activation})
    return asked


def _parity_arguments(parser: argparse.ArgumentParser) -> None:
    add_training_arguments(parser, lr=0.5, steps=200)
    _add_recurrent_arguments(parser, hidden=3, length=6, heads=True)


def _parity_build(args: argparse.Namespace, *, with_twin: bool = True) -> Experiment:
    def make(sequences: int, steps: int, lengths: np.ndarray, packed: bool, seed: int) -> SequenceData:
        return parity_data(sequences, steps, lengths, packed, args.head, seed)

    return _build("parity", args, args.head, make, with_twin)


def _echo_arguments(parser: argparse.ArgumentParser) -> None:
    add_training_arguments(parser, lr=0.5, steps=200)
    _add_recurrent_arguments(parser, hidden=4, length=8, heads=False)
    parser.add_argument("--delay", type=int, default=2, help="echo the input k steps later (default 2)")


def _echo_build(args: argparse.Namespace, *, with_twin: bool = True) -> Experiment:
    require_int("length", args.length, 1)
    delay = require_int("delay", args.delay, 0)
    if delay >= args.length:
        raise SpecError("delay", f"expected a delay below the padded length {args.length}, got {delay}")

    def make(sequences: int, steps: int, lengths: np.ndarray, packed: bool, seed: int) -> SequenceData:
        return echo_data(sequences, steps, lengths, packed, delay, seed)

    return _build("echo", args, "many-to-many", make, with_twin)


PARITY = Scenario(
    "parity",
    "XOR of a variable-length bit sequence (the seed's XOR through time), many-to-one; --cell rnn|gru|lstm",
    _parity_arguments,
    _parity_build,
)
ECHO = Scenario(
    "echo",
    "echo the input bits --delay k steps later, many-to-many; --cell rnn|gru|lstm",
    _echo_arguments,
    _echo_build,
)
