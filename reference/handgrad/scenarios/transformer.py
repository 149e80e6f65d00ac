"""Scenario ``transformer``: a character-level model of one or two pre-LN transformer blocks
(``--layers``) predicting the next character of the shipped names written as one text
(``.name.name.…``), context 8 (``--context``), ``--heads`` heads, AdamW by default.

Data: every window of ``--context`` characters of the text, the target the window shifted by
one; each step draws ``--batch-size`` windows (8) with replacement from
``default_rng([--seed + 2, step])``, the same on both sides. The loss is cross-entropy over every
position with torch's defaults; the loss options and ``--mode``/``--order`` do not apply and are
refused when given.
"""

from __future__ import annotations

import argparse

import numpy as np

from handgrad.contract.makemore import DrawnBatches, load_names
from handgrad.contract.runs import TransformerRun
from handgrad.contract.spec import Schedule, SpecError, require_int
from handgrad.contract.training import Optimizer
from handgrad.contract.transformer import Transformer, build_sequences, param_table
from handgrad.hand.transformer import HandTransformer, init_params
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
from handgrad.scenarios.makemore import NOT_APPLICABLE


def transformer_experiment(
    model: Transformer,
    optimizer: Optimizer,
    *,
    steps: int,
    seed: int,
    batch_size: int = 8,
    dtype: str = "float64",
    params: dict[str, np.ndarray] | None = None,
    device: str = "cpu",
    config: dict[str, object] | None = None,
    with_twin: bool = True,
) -> Experiment:
    """Both sides of a transformer run (``with_twin=False``: the hand side alone, no torch)."""
    X, Y = build_sequences(load_names(), model.context)
    initial = params if params is not None else init_params(model, seed, "float64")
    initial = {name: np.asarray(value, dtype=dtype) for name, value in initial.items()}
    batches = DrawnBatches(len(X), batch_size, steps, seed + 2)
    hand = HandTransformer(model, optimizer, initial, X, Y, batches, dtype)
    twin = None
    if with_twin:
        from handgrad.twin.transformer import TwinTransformer

        twin = TwinTransformer(model, optimizer, initial, X, Y, batches, dtype, device)
    return Experiment(
        scenario="transformer",
        hand=hand,
        twin=twin,
        steps=steps,
        dtype=dtype,
        config=config or {},
        spec=TransformerRun(model, optimizer, Schedule("minibatch", batch_size, "fixed", seed), batches),
        initial_params=initial,
    )


def _arguments(parser: argparse.ArgumentParser) -> None:
    add_training_arguments(parser, lr=0.003, steps=200)
    parser.set_defaults(mode="minibatch", batch_size=8, loss="cross_entropy", optimizer="adamw")
    parser.add_argument("--layers", type=int, default=1, help="pre-LN blocks (default %(default)s)")
    parser.add_argument("--context", type=int, default=8, help="characters per window (default %(default)s)")
    parser.add_argument("--n-embd", type=int, default=16, help="model width E (default %(default)s)")
    parser.add_argument("--heads", type=int, default=2, help="attention heads (default %(default)s)")
    parser.add_argument("--mlp", type=int, default=64, help="MLP width (default %(default)s)")
    parser.add_argument(
        "--approximate", default="none", choices=("none", "tanh"), help="nn.GELU's form (default none)"
    )
    parser.add_argument(
        "--weights", metavar="FILE", help="initial weights: JSON object or .npz keyed by parameter name"
    )


def _build(args: argparse.Namespace, *, with_twin: bool = True) -> Experiment:
    for name, default in NOT_APPLICABLE:
        value = getattr(args, name, default)
        if value != default:
            raise SpecError(
                name,
                f"transformer trains on cross_entropy (torch's defaults) with --batch-size windows "
                f"drawn per step; --{name.replace('_', '-')} does not apply (got {value!r})",
            )
    model = Transformer(
        context=require_int("context", args.context, 1),
        n_embd=require_int("n_embd", args.n_embd, 1),
        heads=require_int("heads", args.heads, 1),
        mlp=require_int("mlp", args.mlp, 1),
        layers=require_int("layers", args.layers, 1),
        approximate=args.approximate,
    )
    batch_size = require_int("batch_size", args.batch_size, 1)
    require_int("steps", args.steps, 1)
    require_int("seed", args.seed, 0)
    optimizer = optimizer_from_args(args)
    params = load_weights(args.weights, [(n, s) for n, s, _ in param_table(model)]) if args.weights else None
    schedule = Schedule("minibatch", batch_size, "fixed", args.seed)
    config = {
        "scenario": "transformer",
        "layers": model.layers,
        "context": model.context,
        "n_embd": model.n_embd,
        "heads": model.heads,
        "mlp": model.mlp,
        "approximate": model.approximate,
        "loss": "cross_entropy",
        **training_config(args, optimizer, schedule, "names.txt as one text, windows drawn per step"),
    }
    experiment = transformer_experiment(
        model,
        optimizer,
        steps=args.steps,
        seed=args.seed,
        batch_size=batch_size,
        dtype=args.dtype,
        params=params,
        device=resolve_device(args),
        config=config,
        with_twin=with_twin,
    )
    experiment.asked = {
        **asked_from_args(args),
        "tok.embedding_dim": model.n_embd,
        "pos.num_embeddings": model.context,
        "attn.num_heads": model.heads,
        "attn.batch_first": True,
        "fc1.out_features": model.mlp,
        "gelu.approximate": model.approximate,
        "layers": model.layers,
    }
    return experiment


TRANSFORMER = Scenario(
    "transformer",
    "pre-LN transformer blocks (LayerNorm, causal MultiheadAttention, GELU MLP, residuals) predicting "
    "the next character, AdamW",
    _arguments,
    _build,
)
