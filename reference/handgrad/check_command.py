"""``handgrad check FILE.py:FACTORY``: check a user's own torch model (:func:`handgrad.check_model`).

FILE.py is imported and FACTORY() called: that runs the user's code, with the user's rights, as
``import`` does; nothing is unpickled. FACTORY returns the module, or (module, inputs, targets).
A module-level ``CUSTOM_LAYERS = {ModuleType: (forward, backward)}`` in FILE.py gives the hand pair
of the user's own layers. Every failure of the user's code (a file that does not exist, one that
raises on import, a factory that raises or returns something else than a module) is one line
naming the field, exit 2.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from handgrad.arguments import ArgumentParser
from handgrad.atomic import check_outputs
from handgrad.contract.spec import SpecError
from handgrad.contract.training import CLASS_LOSSES
from handgrad.harness import Report
from handgrad.scenarios.common import (
    add_training_arguments,
    loss_from_args,
    optimizer_from_args,
    parse_int_list,
    resolve_device,
    schedule_from_args,
)

WARNING = "FILE.py is imported and FACTORY() is called: this runs its code, as python FILE.py would"


def check_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="handgrad check",
        description="Check your own torch model: train it and its hand-derived twin in lock-step and "
        f"compare every term at every step. {WARNING}; check only files you trust. Nothing is unpickled.",
    )
    parser.add_argument(
        "target",
        metavar="FILE.py:FACTORY",
        help="a Python file and a function in it returning the nn.Module, or (module, inputs, targets)",
    )
    add_training_arguments(parser, lr=0.5, steps=1000)
    parser.add_argument("--data", metavar="FILE", help="CSV with a header row (default: the factory's data)")
    parser.add_argument(
        "--targets", metavar="COLS", help="target column names, comma-separated (default: the last columns)"
    )
    parser.add_argument(
        "--input-shape", metavar="C,H,W", help="--data: the shape of one sample (e.g. 1,5,5 for a conv net)"
    )
    parser.add_argument(
        "--weights",
        metavar="FILE",
        help="initial weights: JSON or .npz keyed by the module's state_dict keys (default: its own)",
    )
    parser.add_argument(
        "--head",
        default="many-to-one",
        choices=("many-to-one", "many-to-many"),
        help="a recurrent model's forward: act(head(h_n[-1])) or act(head(output)) (default many-to-one)",
    )
    parser.add_argument("--json", metavar="FILE", help="write the report as JSON (never over an input)")
    parser.add_argument("--xlsx", metavar="FILE", help="write the workbook (never over an input)")
    parser.add_argument("--walkthrough", metavar="STEPS", default="1", help="workbook walkthrough steps")
    parser.add_argument("--quiet", action="store_true", help="print the verdict line only")
    parser.add_argument(
        "--resync", action="store_true", help="copy the hand weights into torch before each step"
    )
    parser.add_argument(
        "--all-terms",
        action="store_true",
        help="print every term's row (default: at most 200, failing terms and largest errors first)",
    )
    return parser


def _target(text: str) -> tuple[Path, str]:
    path, colon, factory = text.rpartition(":")
    if not colon or not path or not factory.isidentifier():
        raise SpecError("target", f"expected FILE.py:FACTORY (e.g. examples/xor_model.py:make), got {text!r}")
    file = Path(path)
    if not file.is_file():
        raise SpecError("file", f"no such file: {file}")
    return file, factory


def _one_line(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".splitlines()
    return text[0][:300] if text else type(error).__name__


def load_factory(text: str) -> tuple[Any, Any]:
    """Import FILE.py (running it) and return (FACTORY(), the file's CUSTOM_LAYERS or None)."""
    file, name = _target(text)
    spec = importlib.util.spec_from_file_location(f"handgrad_user_{file.stem}", file)
    if spec is None or spec.loader is None:
        raise SpecError("file", f"{file} cannot be imported as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as an import would: a dataclass under postponed annotations looks it up
    sys.path.insert(0, str(file.parent.resolve()))  # the file's own imports of its neighbours
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as error:  # noqa: BLE001 (the user's code: any failure is bad input)
        sys.modules.pop(spec.name, None)
        raise SpecError("file", f"importing {file} raised {_one_line(error)}") from None
    finally:
        sys.path.remove(str(file.parent.resolve()))
    factory = getattr(module, name, None)
    if not callable(factory):
        raise SpecError("factory", f"{file} has no function {name!r}")
    try:
        made = factory()
    except (Exception, SystemExit) as error:  # noqa: BLE001
        raise SpecError("factory", f"{name}() raised {_one_line(error)}") from None
    return made, getattr(module, "CUSTOM_LAYERS", None)


def _unpack(made: Any, name: str) -> tuple[Any, Any, Any]:
    import torch

    if isinstance(made, torch.nn.Module):
        return made, None, None
    if isinstance(made, tuple) and len(made) == 3 and isinstance(made[0], torch.nn.Module):
        return made
    got = type(made).__name__ if not isinstance(made, tuple) else f"a tuple of {len(made)}"
    raise SpecError("factory", f"{name}() returned {got}; expected an nn.Module or (module, inputs, targets)")


def _last_width(model: Any, loss: str) -> int:
    """How many target columns --data has by default: 1 for a class loss, else the last Linear's outputs."""
    if loss in CLASS_LOSSES:
        return 1
    widths = [module.out_features for module in model.modules() if type(module).__name__ == "Linear"]
    return widths[-1] if widths else 1


def _data(args: argparse.Namespace, model: Any, inputs: Any, targets: Any) -> tuple[Any, Any]:
    if args.data is None:
        if inputs is None:
            raise SpecError("data", "give --data FILE, or return (module, inputs, targets) from the factory")
        return inputs, targets
    from handgrad.inputs import load_csv

    columns: list[str] | int = args.targets.split(",") if args.targets else _last_width(model, args.loss)
    data = load_csv(args.data, columns)
    x = data.x
    if args.input_shape:
        shape = tuple(parse_int_list("input_shape", args.input_shape))
        if int(np.prod(shape)) != x.shape[1]:
            raise SpecError(
                "input_shape", f"{shape} holds {int(np.prod(shape))} values, a row has {x.shape[1]}"
            )
        x = x.reshape(len(x), *shape)
    return x, data.y


def _weights(path: str, model: Any, dtype: str) -> Any:
    import torch

    from handgrad.inputs import load_weights

    model = model.to(getattr(torch, dtype))  # the command's own instance, from the factory
    state = model.state_dict()
    values = load_weights(path, [(key, tuple(value.shape)) for key, value in state.items()])
    model.load_state_dict(
        {key: torch.as_tensor(value, dtype=state[key].dtype) for key, value in values.items()}
    )
    return model


def _check_memory(model: Any, x: Any, args: argparse.Namespace) -> None:
    """``--max-memory``, estimated as ``compare`` does before anything is built: the parameters 16
    times, a row's input and every layer module's output 24 times per row of a step, and the
    dropout masks (drawn for every step before the run) once per step. The sizes are what a copy of
    the model gives one row in float64; a model whose own forward cannot take one row (the
    recurrent form) is counted by its parameters and inputs."""
    import copy

    import torch

    from handgrad.scenarios.common import check_memory

    x = np.asarray(x)
    if x.ndim < 1 or len(x) == 0:
        return  # build_experiment refuses it, naming the field
    rows = {"batch": len(x), "online": 1}.get(args.mode, min(args.batch_size, len(x)))
    params = float(sum(parameter.numel() for parameter in model.parameters()))
    per_row = {"outputs": 0.0, "dropout": 0.0}

    def count(module: Any, inputs: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor):
            per_row["outputs"] += output[0].numel()
        if isinstance(module, torch.nn.Dropout) and inputs and isinstance(inputs[0], torch.Tensor):
            per_row["dropout"] += inputs[0][0].numel()

    probe = copy.deepcopy(model).double()
    for module in probe.modules():
        if not list(module.children()):
            module.register_forward_hook(count)
    try:
        with torch.no_grad():
            probe(torch.as_tensor(x[:1], dtype=torch.float64))
    except Exception:  # noqa: BLE001 (the user's forward: only the estimate is at stake)
        per_row["outputs"] = per_row["dropout"] = 0.0
    activations = float(rows) * (x[0].size + per_row["outputs"])
    masks = float(args.steps) * rows * per_row["dropout"]
    what = f"{params:,.0f} parameters, {activations:,.0f} activations per step"
    if masks:
        what += f", {masks:,.0f} dropout-mask values drawn before the run"
    check_memory("max_memory", 8 * (16 * params + 24 * activations + masks), what, args)


def run_check(
    argv: Sequence[str], progress: Callable[[str], Callable[[int, int], None]] | None = None
) -> tuple[str, Report, argparse.Namespace, list[str]]:
    """Parse ``handgrad check``'s options, load the user's model, run the check (writing the
    workbook and, by ``--json``, nothing yet: cli.py writes and prints the report as for
    ``compare``). Returns (the run's label, the report, the options, the workbook's notices)."""
    from handgrad import harness
    from handgrad.harness.drift import diagnose, needs_diagnosis
    from handgrad.scenarios.own_model import build_experiment

    args = check_parser().parse_args(list(argv))
    file, name = _target(args.target)
    inputs = {"--weights": args.weights, "--data": args.data, "FILE.py": str(file)}
    check_outputs({"--json": args.json, "--xlsx": args.xlsx}, inputs)
    loss, optimizer, schedule = loss_from_args(args), optimizer_from_args(args), schedule_from_args(args)
    device = resolve_device(args)
    walkthrough = [1]
    if args.xlsx:
        from handgrad.workbook.writer import parse_walkthrough

        walkthrough = parse_walkthrough(args.walkthrough)
    made, custom = load_factory(args.target)
    model, x, y = _unpack(made, name)
    x, y = _data(args, model, x, y)
    _check_memory(model, x, args)
    if args.weights:
        model = _weights(args.weights, model, args.dtype)

    def build() -> harness.Experiment:  # the user's module is deep-copied: each build starts afresh
        return build_experiment(
            model,
            x,
            y,
            loss=loss,
            optimizer=optimizer,
            steps=args.steps,
            seed=args.seed,
            schedule=schedule,
            head=args.head,
            custom_layers=custom,
            dtype=args.dtype,
            device=device,
            name=file.stem,
        )

    notices: list[str] = []
    if args.xlsx:
        from handgrad.workbook.writer import run_with_workbook

        report = run_with_workbook(
            build(), args.xlsx, walkthrough_steps=walkthrough, resync=args.resync, notices=notices
        )
    else:
        report = harness.run(build(), resync=args.resync, progress=progress(file.stem) if progress else None)
    if not args.resync and not (args.quiet and not args.json) and needs_diagnosis(report):
        report.diagnosis = diagnose(build, report).to_json()
    return file.stem, report, args, notices
