"""Scenario ``makemore``: the character-level MLP of makemore part 4 ("becoming a backprop ninja")
on the names shipped with handgrad: embedding → linear (no bias) → BatchNorm1d (training mode) → tanh →
linear → cross-entropy, every intermediate of the exercise traced.

Data: every (3-character context, next character) pair of reference/handgrad/data/names.txt
(300 made-up names, scripts/make_names.py); each step draws ``--batch-size`` rows (32) with
replacement from ``default_rng([--seed + 2, step])``, the same rows on both sides. The loss is
cross-entropy with torch's defaults; the loss options and ``--mode``/``--order`` do not apply and
are refused when given.
"""

from __future__ import annotations

import argparse

import numpy as np

from handgrad.contract.makemore import DrawnBatches, Makemore, build_dataset, load_names, param_table
from handgrad.contract.runs import MakemoreRun
from handgrad.contract.spec import Schedule, SpecError, require_int
from handgrad.contract.training import Optimizer
from handgrad.hand.makemore import HandMakemore, init_params
from handgrad.harness import Experiment
from handgrad.inputs import load_weights
from handgrad.scenarios.common import (
    Scenario,
    add_training_arguments,
    asked_from_args,
    optimizer_from_args,
    resolve_device,
    training_config,
)

# options of add_training_arguments that the makemore model has no use for: (option, its default)
NOT_APPLICABLE = (
    ("loss", "cross_entropy"),
    ("reduction", "mean"),
    ("half", False),
    ("beta", None),
    ("delta", None),
    ("pos_weight", None),
    ("class_weight", None),
    ("ignore_index", None),
    ("label_smoothing", None),
    ("mode", "minibatch"),
    ("order", "fixed"),
)


def makemore_experiment(
    model: Makemore,
    optimizer: Optimizer,
    *,
    steps: int,
    seed: int,
    dtype: str = "float64",
    params: dict[str, np.ndarray] | None = None,
    device: str = "cpu",
    config: dict[str, object] | None = None,
    names: list[str] | None = None,
    with_twin: bool = True,
) -> Experiment:
    """Both sides of a makemore run, from one spec and one set of initial weights
    (``with_twin=False``: the hand side alone, ``twin`` None, no torch imported)."""
    X, Y = build_dataset(load_names() if names is None else names, model.block_size)
    initial = params if params is not None else init_params(model, seed, "float64")
    initial = {name: np.asarray(value, dtype=dtype) for name, value in initial.items()}
    batches = DrawnBatches(len(X), model.batch_size, steps, seed + 2)
    hand = HandMakemore(model, optimizer, initial, X, Y, batches, dtype)
    twin = None
    if with_twin:
        from handgrad.twin.makemore import TwinMakemore

        twin = TwinMakemore(model, optimizer, initial, X, Y, batches, dtype, device)
    return Experiment(
        scenario="makemore",
        hand=hand,
        twin=twin,
        steps=steps,
        dtype=dtype,
        config=config or {},
        spec=MakemoreRun(model, optimizer, Schedule("minibatch", model.batch_size, "fixed", seed), batches),
        initial_params=initial,
    )


def _arguments(parser: argparse.ArgumentParser) -> None:
    add_training_arguments(parser, lr=0.1, steps=200)
    parser.set_defaults(mode="minibatch", batch_size=32, loss="cross_entropy")
    parser.add_argument(
        "--hidden", type=int, default=64, help="BatchNorm'd hidden units (default %(default)s)"
    )
    parser.add_argument("--n-embd", type=int, default=10, help="embedding dimension (default %(default)s)")
    parser.add_argument("--block-size", type=int, default=3, help="context characters (default %(default)s)")
    parser.add_argument(
        "--weights", metavar="FILE", help="initial weights: JSON object or .npz keyed by parameter name"
    )


def _refuse_not_applicable(args: argparse.Namespace) -> None:
    for name, default in NOT_APPLICABLE:
        value = getattr(args, name, default)
        if value != default:
            raise SpecError(
                name,
                f"makemore trains on cross_entropy (torch's defaults) with --batch-size rows drawn "
                f"per step; --{name.replace('_', '-')} does not apply (got {value!r})",
            )


def _build(args: argparse.Namespace, *, with_twin: bool = True) -> Experiment:
    _refuse_not_applicable(args)
    model = Makemore(
        block_size=require_int("block_size", args.block_size, 1),
        n_embd=require_int("n_embd", args.n_embd, 1),
        hidden=require_int("hidden", args.hidden, 1),
        batch_size=require_int("batch_size", args.batch_size, 1),
    )
    require_int("steps", args.steps, 1)
    require_int("seed", args.seed, 0)
    optimizer = optimizer_from_args(args)
    params = load_weights(args.weights, [(n, s) for n, s, _ in param_table(model)]) if args.weights else None
    schedule = Schedule("minibatch", model.batch_size, "fixed", args.seed)
    config = {
        "scenario": "makemore",
        "block_size": model.block_size,
        "n_embd": model.n_embd,
        "hidden": model.hidden,
        "loss": "cross_entropy",
        **training_config(args, optimizer, schedule, "names.txt (300 names), rows drawn per step"),
    }
    experiment = makemore_experiment(
        model,
        optimizer,
        steps=args.steps,
        seed=args.seed,
        dtype=args.dtype,
        params=params,
        device=resolve_device(args),
        config=config,
        with_twin=with_twin,
    )
    experiment.asked = {**asked_from_args(args), **makemore_asked(model)}
    return experiment


def makemore_asked(model: Makemore) -> dict[str, object]:
    """What the size options ask each torch module for (keys of TwinMakemore.configuration)."""
    return {
        "emb.num_embeddings": model.vocab,
        "emb.embedding_dim": model.n_embd,
        "hidden.in_features": model.fan_in,
        "hidden.out_features": model.hidden,
        "hidden.bias": False,
        "bn.num_features": model.hidden,
        "bn.eps": model.eps,
        "bn.momentum": model.momentum,
        "bn.training": True,
        "act.activation": "tanh",
        "output.in_features": model.hidden,
        "output.out_features": model.vocab,
        "output.bias": True,
    }


MAKEMORE = Scenario(
    "makemore",
    "makemore part 4: embedding → linear → BatchNorm1d → tanh → linear → cross-entropy on shipped names",
    _arguments,
    _build,
)
