"""Scenario ``multitask``: a shared trunk with a regression head and a classification head, trained
jointly on L = w₁L₁ + w₂L₂ (``--loss-weights w1,w2``).

Data (seeded from ``--seed + 1``): x uniform in [−1, 1] (``--rows`` × ``--inputs``); head 1's
target y₁ = ½ sin(πx₁ + φ) + x₂x₃ (``--outputs`` columns, phases φ = 0, ½, 1, ...); head 2's class
is the argmax of a fixed random projection of x (``--classes`` classes). ``--loss`` names head 1's loss
(mse by default; l1, smooth_l1 and huber also take); head 2 is cross-entropy on the logits, with
``--class-weight`` and ``--label-smoothing`` if given. ``--reduction`` applies to both.
"""

from __future__ import annotations

import argparse

import numpy as np

from handgrad.contract.multitask import Multitask, param_table
from handgrad.contract.runs import MultitaskRun
from handgrad.contract.spec import ACTIVATIONS, Data, Schedule, SpecError, require_int
from handgrad.contract.training import Optimizer
from handgrad.hand.multitask import HandMultitask, init_params
from handgrad.harness import Experiment
from handgrad.inputs import load_weights
from handgrad.scenarios.common import (
    Scenario,
    add_training_arguments,
    asked_from_args,
    asked_loss,
    loss_from_args,
    optimizer_from_args,
    parse_float_list,
    resolve_device,
    schedule_from_args,
    training_config,
)

CLASS_OPTIONS = ("class_weight", "ignore_index", "label_smoothing")
VALUE_OPTIONS = ("beta", "delta", "pos_weight")


def multitask_data(model: Multitask, rows: int, seed: int) -> Data:
    """Seeded inputs and both heads' targets: ``y`` = [y₁ (outputs columns) | class id]."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, size=(rows, model.in_features))
    x2 = x[:, 1 % model.in_features]
    x3 = x[:, 2 % model.in_features]
    phases = np.arange(model.outputs) * 0.5
    y1 = 0.5 * np.sin(np.pi * x[:, :1] + phases) + (x2 * x3)[:, None]  # rows,outputs
    projection = rng.normal(size=(model.in_features, model.classes))
    classes = np.argmax(x @ projection, axis=1).astype(float)[:, None]  # rows,1
    return Data(x, np.concatenate([y1, classes], axis=1), f"seeded ({seed}), {rows} rows")


def multitask_experiment(
    model: Multitask,
    optimizer: Optimizer,
    data: Data,
    schedule: Schedule,
    *,
    steps: int,
    seed: int,
    dtype: str = "float64",
    params: dict[str, np.ndarray] | None = None,
    device: str = "cpu",
    config: dict[str, object] | None = None,
    with_twin: bool = True,
) -> Experiment:
    """Both sides of a multitask run, from one spec and one set of initial weights
    (``with_twin=False``: the hand side alone, ``twin`` None, no torch imported)."""
    if data.x.shape[1] != model.in_features:
        raise SpecError("data", f"expected {model.in_features} input columns, got {data.x.shape[1]}")
    if data.y.shape[1] != model.outputs + 1:
        raise SpecError(
            "data", f"expected {model.outputs} target columns and a class id, got {data.y.shape[1]}"
        )
    model.loss2.check_targets(data.y[:, model.outputs :], model.classes)
    initial = params if params is not None else init_params(model, seed, "float64")
    initial = {name: np.asarray(value, dtype=dtype) for name, value in initial.items()}
    batches = schedule.batches(data.n, steps)
    hand = HandMultitask(model, optimizer, initial, data.x, data.y, batches, dtype)
    twin = None
    if with_twin:
        from handgrad.twin.multitask import TwinMultitask

        twin = TwinMultitask(model, optimizer, initial, data.x, data.y, batches, dtype, device)
    return Experiment(
        scenario="multitask",
        hand=hand,
        twin=twin,
        steps=steps,
        dtype=dtype,
        config=config or {},
        spec=MultitaskRun(model, optimizer, data, schedule, batches),
        initial_params=initial,
    )


def _arguments(parser: argparse.ArgumentParser) -> None:
    add_training_arguments(parser, lr=0.1, steps=200)
    parser.set_defaults(mode="batch")
    parser.add_argument(
        "--loss-weights", default="1,1", metavar="W1,W2", help="L = w1·L1 + w2·L2 (default %(default)s)"
    )
    parser.add_argument("--hidden", type=int, default=8, help="trunk units (default %(default)s)")
    parser.add_argument("--inputs", type=int, default=3, help="input features (default %(default)s)")
    parser.add_argument("--outputs", type=int, default=1, help="regression outputs of head 1 (default 1)")
    parser.add_argument("--classes", type=int, default=3, help="classes of head 2 (default %(default)s)")
    parser.add_argument("--rows", type=int, default=16, help="rows of seeded data (default %(default)s)")
    parser.add_argument(
        "--activation", default="tanh", choices=ACTIVATIONS, help="trunk activation (default %(default)s)"
    )
    parser.add_argument("--slope", type=float, default=0.01, help="leaky_relu slope (default 0.01)")
    parser.add_argument(
        "--weights", metavar="FILE", help="initial weights: JSON object or .npz keyed by parameter name"
    )


def _head_losses(args: argparse.Namespace) -> tuple[object, object]:
    """Head 1's loss from --loss (and --beta, --delta); head 2's cross-entropy from the class options."""
    given = vars(args)
    head1 = loss_from_args(argparse.Namespace(**{**given, **{name: None for name in CLASS_OPTIONS}}))
    head2_args = {**given, "loss": "cross_entropy", "half": False, **{name: None for name in VALUE_OPTIONS}}
    head2 = loss_from_args(argparse.Namespace(**head2_args))
    return head1, head2


def _build(args: argparse.Namespace, *, with_twin: bool = True) -> Experiment:
    weights = parse_float_list("loss_weights", args.loss_weights)
    loss1, loss2 = _head_losses(args)
    model = Multitask(
        require_int("inputs", args.inputs, 1),
        require_int("hidden", args.hidden, 1),
        require_int("outputs", args.outputs, 1),
        require_int("classes", args.classes, 2),
        args.activation,
        args.slope,
        loss1,  # type: ignore[arg-type]
        loss2,  # type: ignore[arg-type]
        tuple(weights),  # type: ignore[arg-type]
    )
    optimizer = optimizer_from_args(args)
    schedule = schedule_from_args(args)
    data = multitask_data(model, require_int("rows", args.rows, 1), args.seed + 1)
    params = load_weights(args.weights, [(n, s) for n, s, _ in param_table(model)]) if args.weights else None
    config = {
        "scenario": "multitask",
        "inputs": model.in_features,
        "hidden": model.hidden,
        "outputs": model.outputs,
        "classes": model.classes,
        "activation": model.activation,
        "loss_weights": ",".join(f"{w:g}" for w in model.weights),
        "loss1": model.loss1.kind,
        "loss2": model.loss2.kind,
        "reduction": model.loss1.reduction,
        **training_config(args, optimizer, schedule, data.source),
    }
    experiment = multitask_experiment(
        model,
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
    experiment.asked = {
        **asked_from_args(args),
        **_multitask_asked(args),
        **asked_loss(args, "loss1"),
        **asked_loss(args, "loss2", "cross_entropy", half=False),
    }
    return experiment


def _multitask_asked(args: argparse.Namespace) -> dict[str, object]:
    """What the size and activation options ask the trunk and the two heads for."""
    asked: dict[str, object] = {"trunk.in_features": args.inputs, "trunk.out_features": args.hidden}
    asked["trunk.activation"] = args.activation
    if args.activation == "leaky_relu":
        asked["trunk.slope"] = args.slope
    asked.update({"head1.in_features": args.hidden, "head1.out_features": args.outputs})
    asked.update({"head2.in_features": args.hidden, "head2.out_features": args.classes})
    return asked


MULTITASK = Scenario(
    "multitask",
    "a shared trunk with a regression head (mse) and a classification head (cross-entropy), "
    "L = w1·L1 + w2·L2",
    _arguments,
    _build,
)
