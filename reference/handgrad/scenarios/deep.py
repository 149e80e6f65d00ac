"""Scenario ``deep``: an MLP of ``--depth`` hidden layers of ``--width`` units, with the per-layer
diagnostics on (gradient norm, saturated or dead fraction, update ratio: ``hand/diagnostics.py``).

It is the dense stack of ``mlp`` (every term compared) plus the ``diagnostic`` terms, on seeded
data: x uniform in [−1, 1] (``--rows`` × ``--inputs``), y = ½ + 0.4·sin(x·v) for a seeded v, a
smooth target in (0.1, 0.9) for the sigmoid output. Full batch by default.

``--init`` draws the weights (biases always U(±1/√fan_in), torch's nn.Linear default):

* ``torch``: U(±1/√fan_in), torch's ``nn.Linear`` default (kaiming_uniform with a = √5);
* ``xavier``: U(±√(6/(fan_in + fan_out))), ``nn.init.xavier_uniform_`` (Glorot & Bengio 2010);
* ``he``: U(±√(6/fan_in)), ``nn.init.kaiming_uniform_(nonlinearity="relu")`` (He et al. 2015);
* ``auto`` (default): the activation's own, he for relu and leaky_relu, xavier for sigmoid, tanh
  and identity.

``--init-gain`` multiplies every weight bound (a large gain drives sigmoid and tanh units into
saturation).
"""

from __future__ import annotations

import argparse

import numpy as np

from handgrad.contract.spec import Data, Network, require_choice, require_float, require_int
from handgrad.contract.stack import param_table
from handgrad.hand.network import init_params
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
    resolve_device,
    schedule_from_args,
    training_config,
)
from handgrad.scenarios.dense import _add_dense_arguments
from handgrad.scenarios.stack import stack_experiment

INITS = ("auto", "torch", "xavier", "he")


def resolve_init(init: str, activation: str) -> str:
    """``auto`` → the init designed for ``activation``."""
    require_choice("init", init, INITS)
    if init != "auto":
        return init
    return "he" if activation in ("relu", "leaky_relu") else "xavier"


def deep_params(network: Network, init: str, seed: int, gain: float = 1.0) -> dict[str, np.ndarray]:
    """Seeded weights from ``init`` (already resolved), biases from torch's default bound."""
    params = init_params(network, seed)  # biases (and torch-init weights) from one seeded draw
    rng = np.random.default_rng([seed, 1])
    for layer_index, layer in enumerate(network.dense_layers, start=1):
        fan_in, fan_out = layer.in_features, layer.out_features
        bound = {
            "torch": 1.0 / np.sqrt(fan_in),
            "xavier": np.sqrt(6.0 / (fan_in + fan_out)),
            "he": np.sqrt(6.0 / fan_in),
        }[init] * gain
        name = f"dense{layer_index}.W" if not layer.fold_bias else f"dense{layer_index}.Wt"
        W = rng.uniform(-bound, bound, size=(fan_out, fan_in))
        if layer.fold_bias:
            params[name] = np.concatenate([W, params[name][:, -1:]], axis=1)
        else:
            params[name] = W
    return params


def deep_data(inputs: int, rows: int, seed: int) -> Data:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, size=(rows, inputs))
    v = rng.normal(size=(inputs, 1))
    return Data(x, 0.5 + 0.4 * np.sin(x @ v), f"seeded ({seed}), {rows} rows")


def _arguments(parser: argparse.ArgumentParser) -> None:
    add_training_arguments(parser, lr=0.5, steps=100)
    parser.set_defaults(mode="batch")
    _add_dense_arguments(parser, hidden_default="sigmoid")
    parser.add_argument("--depth", type=int, default=8, help="hidden layers (default %(default)s)")
    parser.add_argument("--width", type=int, default=64, help="units per hidden layer (default %(default)s)")
    parser.add_argument("--inputs", type=int, default=4, help="input features of the seeded data (default 4)")
    parser.add_argument("--rows", type=int, default=32, help="rows of the seeded data (default %(default)s)")
    parser.add_argument(
        "--init", default="auto", choices=INITS, help="weight init (default auto: he for relu, else xavier)"
    )
    parser.add_argument("--init-gain", type=float, default=1.0, help="multiply the init bound (default 1)")


def build_deep(args: argparse.Namespace, *, with_twin: bool = True) -> Experiment:
    depth = require_int("depth", args.depth, 1)
    width = require_int("width", args.width, 1)
    gain = require_float("init_gain", args.init_gain, positive=True)
    if args.data:
        targets: list[str] | int = args.targets.split(",") if args.targets else 1
        data = load_csv(args.data, targets)
    else:
        data = deep_data(
            require_int("inputs", args.inputs, 1), require_int("rows", args.rows, 1), args.seed + 1
        )
    sizes = [data.x.shape[1], *([width] * depth), data.y.shape[1]]
    network = Network.mlp(
        sizes, args.activation, args.output_activation, slope=args.slope, fold_bias=args.fold_bias
    )
    init = resolve_init(args.init, args.activation)
    if args.weights:
        params = load_weights(args.weights, [(n, s) for n, s, _ in param_table(network)])
    else:
        params = deep_params(network, init, args.seed, gain)
    loss = loss_from_args(args)
    optimizer = optimizer_from_args(args)
    schedule = schedule_from_args(args)
    config = {
        "scenario": "deep",
        "depth": depth,
        "width": width,
        "sizes": ",".join(map(str, sizes)),
        "activation": args.activation,
        "output_activation": args.output_activation,
        "init": args.weights or f"{init} (gain {gain:g})",
        "fold_bias": args.fold_bias,
        **loss_config(loss),
        **training_config(args, optimizer, schedule, data.source),
    }
    experiment = stack_experiment(
        "deep",
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
        diagnostics=True,
        with_twin=with_twin,
    )
    experiment.asked = {**asked_from_args(args), **asked_loss(args)}
    if not args.data:  # the seeded data's columns: --inputs in, one target out
        layers = [args.inputs, *[args.width] * args.depth, 1]
        experiment.asked.update(asked_dense(layers, args.activation, args.output_activation, args.slope))
    return experiment


DEEP = Scenario(
    "deep",
    "an MLP of --depth hidden layers (default 8) with per-layer diagnostics: gradient norms, "
    "saturated/dead units, update ratios",
    _arguments,
    build_deep,
)
