"""Convolution scenarios: ``alexnet-mini``, AlexNet's pattern at toy size on synthetic bar images.

    conv → relu → LRN → maxpool → conv → relu → LRN → maxpool → flatten → dense → relu → dropout
    → dense → softmax cross-entropy

The task is generated here: 1×16×16 binary images, each holding one bar two pixels thick,
horizontal (class 0) or vertical (class 1), at a seeded position and extent. The pixels are
exactly 0 or 1, so the flat background gives every conv the same value over whole regions and
the max-pools see **exact ties** in most windows: the tie rule is exercised at every step.

Both sides come from :func:`handgrad.scenarios.stack.stack_experiment`, which also draws the
dropout masks (data, like each step's rows: from torch's generator under the run's seed, or with
NumPy in a hand-only build).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence

import numpy as np

from handgrad.contract.conv_layers import Conv2d, Dropout, Flatten, LocalResponseNorm, MaxPool2d
from handgrad.contract.spec import Activation, Data, Dense, Network, SpecError, require_float, require_int
from handgrad.contract.stack import param_table
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
from handgrad.scenarios.stack import stack_experiment

# --- data ----------------------------------------------------------------------------------------


def bars(n: int, size: int, seed: int, thickness: int = 2) -> Data:
    """``n`` binary 1×size×size images of one bar: horizontal (class 0) or vertical (class 1).

    Classes alternate (balanced); the bar's offset across and its extent along (at least half the
    image) are drawn from ``numpy.random.default_rng(seed)``. ``y`` holds the class index as one
    float column, the layout cross-entropy targets use here.
    """
    n = require_int("samples", n, 2)
    size = require_int("image_size", size, thickness + 1)
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 1, size, size))  # N,1,H,W
    y = np.zeros((n, 1))  # N,1
    for i in range(n):
        label = i % 2
        offset = int(rng.integers(0, size - thickness + 1))
        length = int(rng.integers((size + 1) // 2, size + 1))
        start = int(rng.integers(0, size - length + 1))
        across, along = slice(offset, offset + thickness), slice(start, start + length)
        if label == 0:
            x[i, 0, across, along] = 1.0  # rows offset.. : a horizontal bar
        else:
            x[i, 0, along, across] = 1.0  # columns offset.. : a vertical bar
        y[i, 0] = label
    return Data(x, y, f"bars: {n} seeded ({seed}) 1×{size}×{size} images, horizontal 0 / vertical 1")


# --- alexnet-mini --------------------------------------------------------------------------------


class _StackBuilder:
    """Builds a layer stack one layer at a time, naming any bad value by its stage:
    ``conv1.kernel_size: ...`` rather than ``layers[0].kernel_size``."""

    def __init__(self, input_shape: tuple[int, ...]) -> None:
        self.input_shape = input_shape
        self.shape = input_shape
        self.layers: list[object] = []
        self.counts: dict[str, int] = {}
        self.owner = "input"

    def add(self, make: Callable[[], object], prefix: str | None) -> None:
        """``prefix`` is the layer kind's stage prefix (None for an activation: its owner's name)."""
        if prefix is not None:
            self.counts[prefix] = self.counts.get(prefix, 0) + 1
            self.owner = f"{prefix}{self.counts[prefix]}"
        try:
            layer = make()
            self.shape = layer.output_shape(self.shape)  # type: ignore[attr-defined]
        except SpecError as error:
            raise SpecError(f"{self.owner}.{error.field}", error.message) from None
        self.layers.append(layer)

    def network(self) -> Network:
        return Network(tuple(self.layers), self.input_shape)


def _per_conv(field: str, text: str) -> list[int]:
    """``"3"`` → both convs 3; ``"3,5"`` → conv1 3, conv2 5. The layers validate the values, so an
    error names the stage: ``conv2.groups: ...``."""
    values = parse_int_list(field, text)
    if len(values) not in (1, 2):
        raise SpecError(field, f"expected one value or two (conv1,conv2), got {text!r}")
    return values * 2 if len(values) == 1 else values


def alexnet_mini_network(
    *,
    image_size: int = 16,
    channels: Sequence[int] = (4, 8),
    kernel: Sequence[int] = (3, 3),
    stride: Sequence[int] = (1, 1),
    padding: Sequence[int] = (1, 1),
    dilation: Sequence[int] = (1, 1),
    groups: Sequence[int] = (1, 1),
    lrn: tuple[int, float, float, float] = (3, 0.5, 0.75, 2.0),
    hidden: int = 32,
    dropout: float = 0.5,
    classes: int = 2,
) -> Network:
    """AlexNet's pattern at toy size; ``lrn`` is (size, α, β, k)."""
    builder = _StackBuilder((1, require_int("image_size", image_size, 1), image_size))
    c_in = 1
    for i in range(2):
        builder.add(
            lambda i=i, c_in=c_in: Conv2d(
                c_in, channels[i], kernel[i], stride[i], padding[i], dilation[i], groups[i]
            ),
            "conv",
        )
        builder.add(lambda: Activation("relu"), None)
        builder.add(lambda: LocalResponseNorm(*lrn), "lrn")
        builder.add(lambda: MaxPool2d(2), "pool")
        c_in = channels[i]
    builder.add(Flatten, "flatten")
    builder.add(lambda: Dense(math.prod(builder.shape), hidden), "dense")
    builder.add(lambda: Activation("relu"), None)
    builder.add(lambda: Dropout(dropout), "dropout")
    builder.add(lambda: Dense(hidden, classes), "dense")
    return builder.network()


CROSS_ENTROPY = "cross_entropy"


def _alexnet_arguments(parser: argparse.ArgumentParser) -> None:
    add_training_arguments(parser, lr=0.5, steps=100)
    parser.set_defaults(loss=CROSS_ENTROPY, mode="minibatch", batch_size=8, order="shuffle")
    parser.add_argument("--samples", type=int, default=32, help="synthetic images (default 32)")
    parser.add_argument("--image-size", type=int, default=16, help="image side in pixels (default 16)")
    parser.add_argument("--channels", default="4,8", help="output channels of conv1,conv2 (default 4,8)")
    for name, default, what in (
        ("kernel", "3", "kernel size"),
        ("stride", "1", "stride"),
        ("padding", "1", "zero padding"),
        ("dilation", "1", "dilation"),
        ("groups", "1", "groups"),
    ):
        parser.add_argument(f"--{name}", default=default, help=f"conv {what}: one value or conv1,conv2")
    parser.add_argument("--lrn-size", type=int, default=3, help="LRN window n in channels (default 3)")
    parser.add_argument("--lrn-alpha", type=float, default=0.5, help="LRN α (torch divides it by n)")
    parser.add_argument("--lrn-beta", type=float, default=0.75, help="LRN β (default 0.75, AlexNet's)")
    parser.add_argument("--lrn-k", type=float, default=2.0, help="LRN k (default 2, AlexNet's)")
    parser.add_argument("--hidden", type=int, default=32, help="units of the first dense layer")
    parser.add_argument("--dropout", type=float, default=0.5, help="dropout probability p (default 0.5)")
    parser.add_argument(
        "--weights", metavar="FILE", help="initial weights: JSON object or .npz keyed by parameter name"
    )


def _alexnet_build(args: argparse.Namespace, *, with_twin: bool = True) -> Experiment:
    network = alexnet_mini_network(
        image_size=args.image_size,
        channels=_per_conv("channels", args.channels),
        kernel=_per_conv("kernel", args.kernel),
        stride=_per_conv("stride", args.stride),
        padding=_per_conv("padding", args.padding),
        dilation=_per_conv("dilation", args.dilation),
        groups=_per_conv("groups", args.groups),
        lrn=(
            args.lrn_size,
            require_float("lrn_alpha", args.lrn_alpha),
            require_float("lrn_beta", args.lrn_beta),
            require_float("lrn_k", args.lrn_k),
        ),
        hidden=require_int("hidden", args.hidden, 1),
        dropout=args.dropout,
    )
    data = bars(args.samples, args.image_size, args.seed + 1)
    params = (
        load_weights(args.weights, [(n, s) for n, s, _ in param_table(network)]) if args.weights else None
    )
    loss = loss_from_args(args)
    optimizer = optimizer_from_args(args)
    schedule = schedule_from_args(args)
    config = {
        "scenario": "alexnet-mini",
        "network": " → ".join(f"{type(layer).__name__}" for layer in network.layers),
        "channels": args.channels,
        "kernel": args.kernel,
        "stride": args.stride,
        "padding": args.padding,
        "dilation": args.dilation,
        "groups": args.groups,
        "lrn": f"n={args.lrn_size} α={args.lrn_alpha} β={args.lrn_beta} k={args.lrn_k}",
        "hidden": args.hidden,
        "dropout": args.dropout,
        **loss_config(loss),
        **training_config(args, optimizer, schedule, data.source),
        "dropout_masks": f"torch.Generator seeded {args.seed}, bernoulli_(1 − p) per step",
    }
    experiment = stack_experiment(
        "alexnet-mini",
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
    experiment.asked = {**asked_from_args(args), **asked_loss(args), **_alexnet_asked(args)}
    return experiment


def _alexnet_asked(args: argparse.Namespace) -> dict[str, object]:
    """What the layer options ask the conv, LRN, dense and dropout modules for."""
    channels = _per_conv("channels", args.channels)
    asked: dict[str, object] = {"conv2.in_channels": channels[0]}
    for option, field in (
        ("kernel", "kernel_size"),
        ("stride", "stride"),
        ("padding", "padding"),
        ("dilation", "dilation"),
    ):
        for i, value in enumerate(_per_conv(option, getattr(args, option)), start=1):
            asked[f"conv{i}.{field}"] = [value, value]
    for i, (out, groups) in enumerate(zip(channels, _per_conv("groups", args.groups), strict=True), start=1):
        asked.update({f"conv{i}.out_channels": out, f"conv{i}.groups": groups})
    for i in (1, 2):
        asked.update({f"lrn{i}.size": args.lrn_size, f"lrn{i}.alpha": args.lrn_alpha})
        asked.update({f"lrn{i}.beta": args.lrn_beta, f"lrn{i}.k": args.lrn_k})
    asked.update({"dense1.out_features": args.hidden, "dense2.in_features": args.hidden})
    asked["dropout1.p"] = args.dropout
    return asked


ALEXNET_MINI = Scenario(
    "alexnet-mini",
    "AlexNet's conv/LRN/maxpool/dropout pattern at toy size on seeded bar images, cross-entropy",
    _alexnet_arguments,
    _alexnet_build,
)
