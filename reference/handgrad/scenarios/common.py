"""What every scenario shares: its registry entry and the training options common to all."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from handgrad.arguments import DEFAULT_MAX_MEMORY_GIB, SIZE_LIMITS
from handgrad.contract.spec import DTYPES, MODES, ORDERS, Schedule, SpecError, require_float, require_int
from handgrad.contract.training import (
    LOSSES,
    LR_SCHEDULES,
    OPTIMIZER_DEFAULTS,
    OPTIMIZERS,
    REDUCTIONS,
    Clip,
    Loss,
    LRSchedule,
    Optimizer,
)
from handgrad.harness import Experiment


class Builder(Protocol):
    """Makes a scenario's run from its parsed options. ``with_twin=False`` builds the hand side
    alone (``Experiment.twin`` is None) and imports no torch: the twin modules are imported inside
    the builder, only when it builds a twin."""

    def __call__(self, args: argparse.Namespace, *, with_twin: bool = True) -> Experiment: ...


@dataclass(frozen=True)
class Scenario:
    """A built-in experiment: ``add_arguments`` declares its options, ``build`` makes the run."""

    name: str
    summary: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    build: Builder

    def build_hand(self, args: argparse.Namespace) -> Experiment:
        """The hand side alone, with no torch imported (``handgrad gradcheck``); ``twin`` is None."""
        return self.build(args, with_twin=False)


# bytes a recurrent run holds for each time step of each layer beyond its arrays' values, measured
# at length 10,000, one step: parity 88 KiB, echo 104 KiB, echo writing its workbook 214 KiB (the
# Trace's rows of the step); rounded up, as the estimate is generous on purpose
TIME_STEP_BYTES = 256 * 2**10


def estimate_memory(args: argparse.Namespace) -> tuple[float, str, str]:
    """A generous upper estimate, from the options alone, of the bytes a run holds at once:
    (bytes, the option that drives it, what was counted). Parameters count 16 times (both sides'
    weights, gradients, optimizer state, next values, trace copies), activations 24 times,
    dropout masks, drawn for every step before the run, once per step, and a recurrent run's
    records of every time step (:data:`TIME_STEP_BYTES` each)."""
    get = lambda name, default=0: getattr(args, name, default) or default  # noqa: E731
    rows_per_step = {"online": 1, "batch": None, "minibatch": get("batch_size", 1)}.get(get("mode", "online"))
    params = activations = masks = overheads = 0.0
    driver = "sizes"
    if isinstance(get("sizes", None), str):  # mlp
        sizes = parse_int_list("sizes", args.sizes)
        params = sum(a * b + b for a, b in zip(sizes, sizes[1:], strict=False))
        activations = 64.0 * sum(sizes)
    elif get("depth"):  # deep
        width, depth, inputs, rows = get("width", 64), get("depth", 8), get("inputs", 4), get("rows", 32)
        params = inputs * width + (depth - 1) * width * width + width * 2
        activations = float(rows) * width * (depth + 1)
        driver = "depth"
    elif get("image_size"):  # alexnet-mini
        size, samples, hidden = get("image_size"), get("samples", 32), get("hidden", 32)
        channels = parse_int_list("channels", str(get("channels", "4,8")))
        features = channels[-1] * max(1, size // 4) ** 2
        params = features * hidden + sum(c * 9 * 16 for c in channels) + hidden * 2
        activations = float(samples) * size * size * (sum(channels) + 1) * 2
        per_step = samples if rows_per_step is None else rows_per_step
        masks = float(get("steps", 1)) * per_step * (features + hidden) if get("dropout", 0) else 0.0
        driver = "image_size"
    elif get("length"):  # parity, echo
        hidden, layers, length = get("hidden", 3), get("layers", 1), get("length")
        sequences = get("sequences", 8)
        params = layers * 4.0 * hidden * (2 * hidden + 2)
        activations = float(sequences) * length * hidden * layers * 8
        # every time step adds terms of its own (about 12 per layer many-to-one, 25 many-to-many),
        # each an array and its records on both sides, in the comparison and on the Trace, and
        # nodes of torch's graph
        overheads = float(length) * layers * TIME_STEP_BYTES
        driver = "length"
    elif get("heads"):  # transformer
        E, F, context, batch = get("n_embd", 16), get("mlp", 64), get("context", 8), get("batch_size", 8)
        params = 27 * E * 2 + context * E + get("layers", 1) * (4 * E * E + 2 * E * F + F + 5 * E)
        activations = float(batch) * context * (get("layers", 1) * (8 * E + 2 * F + context) + 2 * E + 54)
        driver = "n_embd"
    elif get("n_embd"):  # makemore
        hidden, embd, block, batch = (
            get("hidden", 64),
            get("n_embd", 10),
            get("block_size", 3),
            get("batch_size", 32),
        )
        params = 27 * embd + block * embd * hidden + hidden * 2 + hidden * 27 + 27
        activations = float(batch) * (2 * block * embd + 3 * hidden + 27) * 2
        driver = "hidden"
    elif get("classes"):  # multitask
        hidden, rows = get("hidden", 8), get("rows", 16)
        params = get("inputs", 3) * hidden + hidden * (get("outputs", 1) + get("classes", 3) + 1)
        activations = float(rows) * (hidden + get("outputs", 1) + get("classes", 3)) * 2
        driver = "hidden"
    elif get("hidden"):  # xor
        params = 4.0 * get("hidden") + 1
        activations = 4.0 * (get("hidden") + 3)
        driver = "hidden"
    estimate = 8 * (16 * params + 24 * activations + masks) + overheads
    what = f"{params:,.0f} parameters, {activations:,.0f} activations per step"
    if overheads:
        what += f", {overheads / 2**20:,.0f} MiB of per-time-step records"
    if masks:
        what += f", {masks:,.0f} dropout-mask values drawn before the run"
        driver = "steps" if masks * 8 > estimate / 2 else driver
    return estimate, driver, what


def check_memory(field: str, estimate: float, what: str, args: argparse.Namespace | None = None) -> None:
    """Refuse a run whose estimated memory passes ``--max-memory`` (default 4 GiB), before any
    array of it is allocated: one line naming ``field``, the estimate and the limit."""
    limit_gib = float(getattr(args, "max_memory", None) or DEFAULT_MAX_MEMORY_GIB)
    if estimate > limit_gib * 2**30:
        raise SpecError(
            field,
            f"this run would need about {estimate / 2**30:,.1f} GiB ({what}); the limit is "
            f"{limit_gib:g} GiB (--max-memory GIB to raise it)",
        )


def parse_int_list(field: str, text: str, limit: int | None = None) -> list[int]:
    parts = text.split(",")
    if any(not part.strip().lstrip("+-").isdigit() for part in parts):
        raise SpecError(field, f"expected comma-separated integers, got {text!r}")
    values = [int(part) for part in parts]
    limit = SIZE_LIMITS.get(field, limit)
    if limit is not None and any(value > limit for value in values):
        raise SpecError(field, f"expected values of at most {limit:,}, got {text!r}")
    return values


def parse_float_list(field: str, text: str) -> list[float]:
    from handgrad.inputs import parse_number

    if not text.strip():
        raise SpecError(field, "expected comma-separated numbers, got an empty value")
    return [parse_number(field, part) for part in text.split(",")]


def parse_optional_floats(field: str, text: str | None) -> tuple[float, ...] | None:
    return None if text is None else tuple(parse_float_list(field, text))


def add_training_arguments(parser: argparse.ArgumentParser, *, lr: float, steps: int) -> None:
    """Options every scenario takes: length, seed, dtype, device, loss, optimizer, lr schedule,
    gradient clipping, data schedule. An optimizer option left out takes torch's default for that
    optimizer; one given to an optimizer that has no such option is refused (exit 2, naming it).
    ``--device``/``--tf32`` are checked by :func:`resolve_device`, which every build calls."""
    from handgrad.twin.device import DEVICES  # no torch: twin/device.py imports it only on cuda

    parser.add_argument(
        "--steps", type=int, default=steps, help="training steps (default %(default)s; at most 10¹²)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the initial weights and order (0 to 2⁶³ − 1; default 0)"
    )
    parser.add_argument(
        "--max-memory",
        type=float,
        metavar="GIB",
        default=DEFAULT_MAX_MEMORY_GIB,
        help="refuse a run whose estimated memory passes this many GiB (default %(default)s)",
    )
    parser.add_argument(
        "--dtype", default="float64", choices=DTYPES, help="dtype of both sides (default float64)"
    )
    parser.add_argument("--lr", type=float, default=lr, help="learning rate η (default %(default)s)")

    device = parser.add_argument_group("device (where the torch twin runs; the hand side is NumPy, CPU)")
    device.add_argument(
        "--device", default="cpu", choices=DEVICES, help="cpu (default) or cuda (CUDA torch and a GPU)"
    )
    device.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch's intra-op threads during each twin step (default 1: the built-in models are small, "
        "where one thread is fastest; more, up to the CPUs, can help a large model of your own)",
    )
    device.add_argument(
        "--tf32",
        action="store_true",
        help="cuda, float32: allow TF32 in matmuls and convolutions, compared with the tf32 tolerance row "
        "(default off: on cuda a float32 run is full float32)",
    )

    losses = parser.add_argument_group("loss (torch's module of the same name)")
    losses.add_argument("--loss", default="mse", choices=LOSSES, help="loss (default mse)")
    losses.add_argument(
        "--reduction",
        default="mean",
        choices=REDUCTIONS,
        help="loss reduction (default mean, as torch; none trains on the sum of the per-element losses)",
    )
    losses.add_argument(
        "--half", action="store_true", help="multiply the squared error by ½ (the textbook ½·Σ(ŷ−y)²)"
    )
    losses.add_argument("--beta", type=float, help="smooth_l1: β, the quadratic zone |d| < β (default 1)")
    losses.add_argument("--delta", type=float, help="huber: δ, the quadratic zone |d| < δ (default 1)")
    losses.add_argument(
        "--pos-weight", metavar="W[,W...]", help="bce_logits: positive-class weight, one or one per output"
    )
    losses.add_argument(
        "--class-weight", metavar="W,W,...", help="cross_entropy, nll: one weight per class (torch's weight)"
    )
    losses.add_argument(
        "--ignore-index", type=int, help="cross_entropy, nll: class id whose rows are left out (default -100)"
    )
    losses.add_argument("--label-smoothing", type=float, help="cross_entropy: ε in [0, 1] (default 0)")

    optim = parser.add_argument_group("optimizer (torch.optim; unset options take torch's defaults)")
    optim.add_argument("--optimizer", default="sgd", choices=OPTIMIZERS, help="optimizer (default sgd)")
    optim.add_argument("--momentum", type=float, help="sgd, rmsprop: momentum μ (default 0)")
    optim.add_argument("--dampening", type=float, help="sgd: dampening τ (default 0)")
    optim.add_argument("--nesterov", action="store_true", help="sgd: Nesterov momentum (needs --momentum)")
    optim.add_argument("--weight-decay", type=float, help="L2 weight decay λ (default 0; adamw 0.01)")
    optim.add_argument("--maximize", action="store_true", help="ascend the loss (torch's maximize)")
    optim.add_argument("--betas", metavar="B1,B2", help="adam, adamw: β₁,β₂ in [0, 1) (default 0.9,0.999)")
    optim.add_argument("--eps", type=float, help="adam, adamw, rmsprop: 1e-8; adagrad: 1e-10")
    optim.add_argument("--amsgrad", action="store_true", help="adam, adamw: keep max v (AMSGrad)")
    optim.add_argument("--alpha", type=float, help="rmsprop: smoothing α in [0, 1] (default 0.99)")
    optim.add_argument("--centered", action="store_true", help="rmsprop: subtract the mean gradient")
    optim.add_argument("--lr-decay", type=float, help="adagrad: lr decay (default 0)")
    optim.add_argument(
        "--initial-accumulator-value", type=float, help="adagrad: starting value of the sum G (default 0)"
    )

    schedule = parser.add_argument_group("learning-rate schedule (stepped after every optimizer step)")
    schedule.add_argument(
        "--schedule",
        default="none",
        choices=LR_SCHEDULES,
        help="step: StepLR, exponential: ExponentialLR, cosine: CosineAnnealingLR (default none)",
    )
    schedule.add_argument("--step-size", type=int, default=1, help="step: decay every k steps (default 1)")
    schedule.add_argument("--gamma", type=float, default=0.1, help="step, exponential: factor γ (0.1)")
    schedule.add_argument("--t-max", type=int, help="cosine: T_max in steps (default --steps)")
    schedule.add_argument("--eta-min", type=float, default=0.0, help="cosine: η_min (default 0)")

    clip = parser.add_argument_group("gradient clipping (between backward and the update)")
    clip.add_argument("--clip-norm", type=float, metavar="MAX", help="clip_grad_norm_: total norm ≤ MAX")
    clip.add_argument("--norm-type", type=float, default=2.0, help="clip-norm: p of the norm (inf allowed)")
    clip.add_argument("--clip-value", type=float, metavar="V", help="clip_grad_value_: each element to ±V")

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


def resolve_device(args: argparse.Namespace) -> str:
    """Where the twin runs, from ``--device`` and ``--tf32``, checked before anything is built or
    written: ``--tf32`` needs ``--device cuda`` and ``--dtype float32``, and cuda needs
    ``torch.cuda.is_available()``. The result is the device name carrying the TF32 choice
    (:class:`handgrad.twin.device.Device`), passed as ``device=`` to the experiment builders.
    torch is imported only to look for a GPU."""
    from handgrad.twin.device import Device, cuda_unavailable

    name = getattr(args, "device", "cpu")
    tf32 = bool(getattr(args, "tf32", False))
    if tf32 and name != "cuda":
        raise SpecError("tf32", f"--tf32 needs --device cuda (TF32 is a CUDA tensor-core format), not {name}")
    dtype = getattr(args, "dtype", "float64")
    if tf32 and dtype != "float32":
        raise SpecError("tf32", f"--tf32 needs --dtype float32 (TF32 rounds float32 operands), not {dtype}")
    if name == "cuda":
        reason = cuda_unavailable()
        if reason is not None:
            raise SpecError("device", f"--device cuda: {reason}; use --device cpu")
    threads = getattr(args, "threads", None)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if isinstance(threads, int) and threads > cpus:
        raise SpecError("threads", f"--threads {threads}: this machine gives the process {cpus} CPUs")
    return Device(name, tf32=tf32, threads=threads)


def loss_from_args(args: argparse.Namespace) -> Loss:
    """The Loss of the options; a loss option left out keeps its default."""
    given: dict[str, object] = {}
    for name in ("beta", "delta", "ignore_index", "label_smoothing"):
        if getattr(args, name, None) is not None:
            given[name] = getattr(args, name)
    pos_weight = parse_optional_floats("pos_weight", getattr(args, "pos_weight", None))
    weight = parse_optional_floats("class_weight", getattr(args, "class_weight", None))
    if pos_weight is not None:
        given["pos_weight"] = pos_weight
    if weight is not None:
        given["weight"] = weight
    try:
        return Loss(args.loss, args.reduction, args.half, **given)
    except SpecError as error:  # the field as the command line spells it
        raise SpecError(_LOSS_FIELDS.get(error.field, error.field), error.message) from None


_LOSS_FIELDS = {"weight": "class_weight"}
_OPTIMIZER_OPTIONS = (
    "momentum",
    "dampening",
    "nesterov",
    "weight_decay",
    "maximize",
    "betas",
    "eps",
    "amsgrad",
    "alpha",
    "centered",
    "lr_decay",
    "initial_accumulator_value",
)


def optimizer_from_args(args: argparse.Namespace) -> Optimizer:
    """The Optimizer of the options with its schedule and clipping; an option the chosen optimizer
    does not take is refused, naming it."""
    options: dict[str, object] = {}
    for name in _OPTIMIZER_OPTIONS:
        value = getattr(args, name, None)
        if value is None or value is False:  # not given (a flag left off is torch's default, False)
            continue
        options[name] = tuple(parse_float_list("betas", value)) if name == "betas" else value
    schedule = None
    if getattr(args, "schedule", "none") != "none":
        t_max = args.t_max if args.t_max is not None else args.steps
        schedule = LRSchedule(args.schedule, args.step_size, args.gamma, t_max, args.eta_min)
    clip = None
    if getattr(args, "clip_norm", None) is not None or getattr(args, "clip_value", None) is not None:
        clip = Clip(args.clip_norm, args.norm_type, args.clip_value)
    return Optimizer(
        args.optimizer, require_float("lr", args.lr, positive=True), options, schedule=schedule, clip=clip
    )


def schedule_from_args(args: argparse.Namespace) -> Schedule:
    require_int("steps", args.steps, 1)
    require_int("seed", args.seed, 0)
    return Schedule(args.mode, require_int("batch_size", args.batch_size, 1), args.order, args.seed)


def loss_config(loss: Loss) -> dict[str, object]:
    """The loss and every option that differs from torch's default, for the report's config."""
    config: dict[str, object] = {"loss": loss.kind, "reduction": loss.reduction, "half": loss.half}
    defaults = Loss(loss.kind)
    for name in ("beta", "delta", "pos_weight", "weight", "ignore_index", "label_smoothing"):
        value = getattr(loss, name)
        if value != getattr(defaults, name):
            config[f"loss.{name}"] = ",".join(map(str, value)) if isinstance(value, tuple) else value
    return config


def training_config(
    args: argparse.Namespace, optimizer: Optimizer, schedule: Schedule, data_source: str
) -> dict[str, object]:
    """What every run shares in the report's config (and so the JSON and the workbook's Summary):
    the optimizer with every option, its lr schedule and clipping, the data schedule, seed, steps,
    dtype, the weights' and the data's source. Enough, with the scenario's own keys, to
    repeat the run."""
    config: dict[str, object] = {
        "optimizer": optimizer.kind,
        "lr": optimizer.lr,
        **{f"optimizer.{key}": value for key, value in sorted(optimizer.options.items())},
        "schedule": repr(optimizer.schedule) if optimizer.schedule else "none",
        "clip": repr(optimizer.clip) if optimizer.clip else "none",
        "mode": schedule.mode,
        "batch_size": schedule.batch_size,
        "order": schedule.order,
        "seed": args.seed,
        "steps": args.steps,
        "dtype": args.dtype,
        "weights": args.weights or f"seeded ({args.seed})",
        "data": data_source,
    }
    return config


# --- what the command line asks torch for (the configuration block's "asked for" column) ---------


def asked_from_args(args: argparse.Namespace) -> dict[str, object]:
    """What the training options ask torch for, read from the parsed options themselves and not
    from the spec built from them (:func:`optimizer_from_args`, :func:`loss_from_args`): an option
    lost while the spec is built then shows as asked ≠ what torch ran with. An option left out is
    torch's default for it (:data:`handgrad.contract.spec.OPTIMIZER_DEFAULTS`, ``Loss.DEFAULTS``). The keys
    are the configuration's (``handgrad.harness.configuration``)."""
    asked: dict[str, object] = {"dtype": args.dtype, "device": args.device}
    asked.update({"optimizer": args.optimizer, "optimizer.lr": args.lr})
    for name, default in OPTIMIZER_DEFAULTS[args.optimizer].items():
        value = getattr(args, name, None)
        if value is None or value is False:
            value = default
        asked[f"optimizer.{name}"] = parse_float_list(name, value) if isinstance(value, str) else value
    asked["schedule"] = args.schedule
    if args.schedule in ("step", "exponential"):
        asked.update({"schedule.step_size": args.step_size} if args.schedule == "step" else {})
        asked["schedule.gamma"] = args.gamma
    elif args.schedule == "cosine":
        asked["schedule.t_max"] = args.t_max if args.t_max is not None else args.steps
        asked["schedule.eta_min"] = args.eta_min
    if args.clip_norm is not None:
        asked.update({"clip": "norm", "clip.max_norm": args.clip_norm, "clip.norm_type": args.norm_type})
    elif args.clip_value is not None:
        asked.update({"clip": "value", "clip.value": args.clip_value})
    else:
        asked["clip"] = "none"
    return asked


_LOSS_ARGUMENTS = {"weight": "class_weight"}  # the spec's name -> the option's


def asked_loss(
    args: argparse.Namespace, prefix: str = "loss", kind: str | None = None, half: bool | None = None
) -> dict[str, object]:
    """What the loss options ask torch's loss module for: kind (``--loss`` unless given), reduction,
    ½, and each option the kind's module holds, as given or torch's default."""
    kind = kind or args.loss
    asked: dict[str, object] = {
        prefix: kind,
        f"{prefix}.reduction": args.reduction,
        f"{prefix}.half": args.half if half is None else half,
    }
    for name, owners in Loss.OWNERS.items():
        if name == "half" or kind not in owners:
            continue
        option = _LOSS_ARGUMENTS.get(name, name)
        value = getattr(args, option, None)
        if isinstance(value, str):  # a list of weights
            value = parse_float_list(option, value)
        asked[f"{prefix}.{name}"] = Loss.DEFAULTS[name] if value is None else value
    return asked


def asked_dense(sizes: list[int], activation: str, output_activation: str, slope: float) -> dict[str, object]:
    """A dense stack as ``--sizes``/``--hidden`` and the activation options ask for it."""
    asked: dict[str, object] = {}
    for k, (n_in, n_out) in enumerate(zip(sizes, sizes[1:], strict=False), start=1):
        kind = output_activation if k == len(sizes) - 1 else activation
        asked.update({f"dense{k}.in_features": n_in, f"dense{k}.out_features": n_out})
        asked[f"dense{k}.activation"] = kind
        if kind == "leaky_relu":
            asked[f"dense{k}.slope"] = slope
    return asked
