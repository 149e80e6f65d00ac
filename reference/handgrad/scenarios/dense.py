"""Dense-network scenarios: ``mlp`` (any stack, your data and weights) and ``xor`` (its preset).

``xor`` is the seed's network: 2 inputs, 3 hidden units, 1 sigmoid output, squared error, one
point of the XOR truth table per step (online) by default, the whole table with ``--mode batch``.
"""

from __future__ import annotations

import argparse

import numpy as np

from handgrad.contract.spec import ACTIVATIONS, Data, Network, SpecError
from handgrad.contract.stack import param_table
from handgrad.harness import Experiment
from handgrad.inputs import load_csv, load_weights
from handgrad.scenarios.common import (
    Scenario,
    add_training_arguments,
    asked_dense,
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
from handgrad.scenarios.stack import stack_experiment

XOR_X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
XOR_Y = np.array([[0.0], [1.0], [1.0], [0.0]])


def _add_dense_arguments(parser: argparse.ArgumentParser, *, hidden_default: str) -> None:
    parser.add_argument(
        "--activation",
        default=hidden_default,
        choices=ACTIVATIONS,
        help="hidden activation (default %(default)s)",
    )
    parser.add_argument(
        "--output-activation",
        default="sigmoid",
        choices=ACTIVATIONS,
        help="output activation (default %(default)s)",
    )
    parser.add_argument("--slope", type=float, default=0.01, help="leaky_relu slope (default 0.01)")
    parser.add_argument(
        "--fold-bias",
        action="store_true",
        help="fold each bias into its weight matrix: W̃ = [W | b], input [x; 1]",
    )
    parser.add_argument(
        "--weights", metavar="FILE", help="initial weights: JSON object or .npz keyed by parameter name"
    )
    parser.add_argument("--data", metavar="FILE", help="CSV with a header row")
    parser.add_argument(
        "--targets", metavar="COLS", help="target column names, comma-separated (default: the last columns)"
    )


def _build(
    name: str, args: argparse.Namespace, sizes: list[int], default_data: Data | None, with_twin: bool = True
) -> Experiment:
    network = Network.mlp(
        sizes, args.activation, args.output_activation, slope=args.slope, fold_bias=args.fold_bias
    )
    if args.data:
        targets: list[str] | int = args.targets.split(",") if args.targets else sizes[-1]
        data = load_csv(args.data, targets)
    elif default_data is not None:
        data = default_data
    else:
        raise SpecError("data", f"scenario {name} needs --data FILE")
    params = (
        load_weights(args.weights, [(n, s) for n, s, _ in param_table(network)]) if args.weights else None
    )
    loss = loss_from_args(args)
    optimizer = optimizer_from_args(args)
    schedule = schedule_from_args(args)
    config = {
        "scenario": name,
        "sizes": ",".join(map(str, sizes)),
        "activation": args.activation,
        "output_activation": args.output_activation,
        "fold_bias": args.fold_bias,
        **loss_config(loss),
        **training_config(args, optimizer, schedule, data.source),
    }
    return stack_experiment(
        name,
        network,
        loss,
        optimizer,
        data,
        schedule,
        steps=args.steps,
        seed=args.seed,
        dtype=args.dtype,
        params=params,
        device=resolve_device(args),
        config=config,
        with_twin=with_twin,
    )


def _xor_arguments(parser: argparse.ArgumentParser) -> None:
    add_training_arguments(parser, lr=2.0, steps=1000)
    _add_dense_arguments(parser, hidden_default="sigmoid")
    parser.add_argument("--hidden", type=int, default=3, help="hidden units (default 3)")


def asked(args: argparse.Namespace, sizes: list[int]) -> dict[str, object]:
    """What the options of a dense scenario ask torch for (the configuration's "asked for")."""
    dense = asked_dense(sizes, args.activation, args.output_activation, args.slope)
    return {**asked_from_args(args), **asked_loss(args), **dense}


def _xor_build(args: argparse.Namespace, *, with_twin: bool = True) -> Experiment:
    experiment = _build("xor", args, [2, args.hidden, 1], Data(XOR_X, XOR_Y, "XOR truth table"), with_twin)
    experiment.asked = asked(args, [2, args.hidden, 1])
    return experiment


def _mlp_arguments(parser: argparse.ArgumentParser) -> None:
    add_training_arguments(parser, lr=0.1, steps=200)
    _add_dense_arguments(parser, hidden_default="relu")
    parser.add_argument("--sizes", default="2,2,2", help="layer sizes in,hidden...,out (default 2,2,2)")


def _mlp_build(args: argparse.Namespace, *, with_twin: bool = True) -> Experiment:
    sizes = parse_int_list("sizes", args.sizes)
    default = None
    if args.data is None:
        rng = np.random.default_rng(args.seed + 1)
        x = rng.uniform(-1, 1, size=(8, sizes[0]))
        y = rng.uniform(0.1, 0.9, size=(8, sizes[-1]))
        default = Data(x, y, f"seeded uniform ({args.seed + 1}), 8 rows")
    experiment = _build("mlp", args, sizes, default, with_twin)
    experiment.asked = asked(args, parse_int_list("sizes", args.sizes))
    return experiment


XOR = Scenario(
    "xor",
    "the seed's 2-3-1 network on the XOR truth table, squared error, online SGD",
    _xor_arguments,
    _xor_build,
)
MLP = Scenario(
    "mlp",
    "any dense stack (--sizes 2,2,2) on your data and weights or a seeded set",
    _mlp_arguments,
    _mlp_build,
)
