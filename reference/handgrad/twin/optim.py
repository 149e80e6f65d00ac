"""The real ``torch.optim`` optimizer, scheduler and gradient clipping for a spec, and their
scalar state read back.

Every optimizer and clip is called with ``foreach=False``: torch's per-parameter ("for-loop",
``_single_tensor_*``) implementation, which :mod:`handgrad.hand.optim` follows line by line and
which torch's optimizers already take on CPU. On CUDA torch would default to the ``foreach``
kernels (the same update regrouped into multi-tensor launches); pinning the for-loop keeps the twin
on one code path on every device (manual/conventions.md, "Devices").

Per-parameter state (``momentum_buffer``, ``exp_avg``, ...) is read by the twin network straight
from ``optimizer.state[param][key]`` for the keys :func:`handgrad.contract.spec.state_keys` names;
the step count from ``optimizer.state[param]["step"]``, the lr in force from
``optimizer.param_groups[0]["lr"]``. Nothing here recomputes a term.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import torch

from handgrad.contract.names import state_keys
from handgrad.contract.trace import StepTrace
from handgrad.contract.training import Optimizer
from handgrad.twin import eager


def build(spec: Optimizer, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    o = spec.options
    if spec.kind == "sgd":
        return eager.make_optimizer(
            torch.optim.SGD,
            params,
            lr=spec.lr,
            momentum=o["momentum"],
            dampening=o["dampening"],
            weight_decay=o["weight_decay"],
            nesterov=o["nesterov"],
            maximize=o["maximize"],
            foreach=False,  # the single-tensor path on every device (see the module docstring)
        )
    if spec.kind in ("adam", "adamw"):
        cls = torch.optim.Adam if spec.kind == "adam" else torch.optim.AdamW
        return eager.make_optimizer(
            cls,
            params,
            lr=spec.lr,
            betas=tuple(o["betas"]),
            eps=o["eps"],
            weight_decay=o["weight_decay"],
            amsgrad=o["amsgrad"],
            maximize=o["maximize"],
            foreach=False,  # the single-tensor path on every device (see the module docstring)
        )
    if spec.kind == "rmsprop":
        return eager.make_optimizer(
            torch.optim.RMSprop,
            params,
            lr=spec.lr,
            alpha=o["alpha"],
            eps=o["eps"],
            weight_decay=o["weight_decay"],
            momentum=o["momentum"],
            centered=o["centered"],
            maximize=o["maximize"],
            foreach=False,  # the single-tensor path on every device (see the module docstring)
        )
    if spec.kind == "adagrad":
        return eager.make_optimizer(
            torch.optim.Adagrad,
            params,
            lr=spec.lr,
            lr_decay=o["lr_decay"],
            weight_decay=o["weight_decay"],
            initial_accumulator_value=o["initial_accumulator_value"],
            eps=o["eps"],
            maximize=o["maximize"],
            foreach=False,  # the single-tensor path on every device (see the module docstring)
        )
    raise ValueError(f"unknown optimizer {spec.kind!r}")


def step(optimizer: torch.optim.Optimizer) -> None:
    """``optimizer.step()``, torch's own arithmetic, without importing the compiler (see eager.py)."""
    eager.optimizer_step(optimizer)


def zero_grad(optimizer: torch.optim.Optimizer) -> None:
    """``optimizer.zero_grad(set_to_none=True)``, without importing the compiler."""
    eager.zero_grad(optimizer, set_to_none=True)


def build_scheduler(
    spec: Optimizer, optimizer: torch.optim.Optimizer
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """torch's scheduler for ``spec.schedule`` (None for no schedule); step it after ``optimizer.step()``."""
    schedule = spec.schedule
    if schedule is None or schedule.kind == "none":
        return None
    from torch.optim import lr_scheduler

    if schedule.kind == "step":
        return eager.make_scheduler(
            lr_scheduler.StepLR, optimizer, step_size=schedule.step_size, gamma=schedule.gamma
        )
    if schedule.kind == "exponential":
        return eager.make_scheduler(lr_scheduler.ExponentialLR, optimizer, gamma=schedule.gamma)
    if schedule.kind == "cosine":
        return eager.make_scheduler(
            lr_scheduler.CosineAnnealingLR, optimizer, T_max=schedule.t_max, eta_min=schedule.eta_min
        )
    raise ValueError(f"unknown schedule {schedule.kind!r}")


def clip_call(spec: Optimizer) -> tuple[Callable[..., object], dict[str, object]] | None:
    """The ``torch.nn.utils`` function the twin clips with and its arguments (None: no clipping);
    :func:`clip_gradients` makes this very call, and the run's configuration reports it."""
    clip = spec.clip
    if clip is None:
        return None
    if clip.max_norm is not None:
        return torch.nn.utils.clip_grad_norm_, {"max_norm": clip.max_norm, "norm_type": clip.norm_type}
    return torch.nn.utils.clip_grad_value_, {"clip_value": clip.value}


def clip_gradients(spec: Optimizer, params: list[torch.nn.Parameter]) -> torch.Tensor | None:
    """Clip the ``.grad`` of ``params`` in place as the spec says; returns the total norm that
    ``clip_grad_norm_`` returned (None for clip-by-value or no clipping)."""
    call = clip_call(spec)
    if call is None:
        return None
    function, arguments = call
    result = function(params, **arguments, foreach=False)
    return result if function is torch.nn.utils.clip_grad_norm_ else None


def scalar_state(spec: Optimizer, optimizer: torch.optim.Optimizer) -> list[tuple[str, str, np.ndarray]]:
    """Scalars of the optimizer (step count, lr in force) as (key, symbol, value), in the hand
    side's order (:func:`handgrad.hand.optim.scalar_state`).

    torch keeps ``step`` per parameter (a float tensor in each ``optimizer.state[p]``); they move
    together, so the first parameter's is shown. SGD keeps none.
    """
    scalars: list[tuple[str, str, np.ndarray]] = []
    if spec.kind != "sgd":
        first = optimizer.param_groups[0]["params"][0]
        step = optimizer.state[first]["step"]
        scalars.append(("step", "t", np.asarray(step.detach().cpu().numpy(), dtype=np.float64)))
    scalars.append(("lr", "η", np.asarray(float(optimizer.param_groups[0]["lr"]))))
    return scalars


# --- the step tail: one copy for every family ------------------------------------------------------

Reader = Callable[[Callable[[torch.nn.Parameter], torch.Tensor]], dict[str, np.ndarray]]
"""``read(pick)``: every parameter of the twin by its hand name, as ``pick(parameter)`` on the host
(``pick`` = the parameter, its ``.grad``, an ``optimizer.state`` entry); a family maps torch's
parameters to hand names its own way (a folded W̃ is two tensors)."""

CLIP_SOURCE = "torch.nn.utils"
OPTIM_SOURCE = "torch.optim"


def copied(
    parameters: list[torch.nn.Parameter], pick: Callable[[torch.nn.Parameter], torch.Tensor]
) -> Callable[[torch.nn.Parameter], torch.Tensor]:
    """``pick``, answered from host copies of ``pick(param)`` for every parameter, taken now with
    one ``torch.cat`` per dtype and device and one transfer to the host (rather than a transfer
    per tensor); for tensors off the host. A parameter ``pick`` has nothing for (a ``KeyError``:
    no optimizer state) is left out; the reader then fails on it as it would on the original."""
    picked: dict[int, torch.Tensor] = {}
    for param in parameters:
        try:
            picked[id(param)] = pick(param).detach()
        except KeyError:
            continue
    groups: dict[tuple[torch.dtype, torch.device], list[int]] = {}
    copies: dict[int, torch.Tensor] = {}
    for key, tensor in picked.items():
        if tensor.is_contiguous():
            groups.setdefault((tensor.dtype, tensor.device), []).append(key)
        else:  # its own copy to the host, its strides kept (the layout StepTrace.add's copy keeps)
            copies[key] = tensor.to("cpu", copy=True)
    for keys in groups.values():
        tensors = [picked[key] for key in keys]
        flat = torch.cat([tensor.reshape(-1) for tensor in tensors]).cpu()
        for key, tensor, piece in zip(keys, tensors, flat.split([t.numel() for t in tensors]), strict=True):
            copies[key] = piece.view(tensor.shape)
    return lambda param: copies[id(param)]


def clip_and_trace(
    trace: StepTrace,
    spec: Optimizer,
    parameters: list[torch.nn.Parameter],
    read: Reader,
    symbols: Mapping[str, str],
) -> None:
    """``clip_grad_norm_`` / ``clip_grad_value_`` on ``.grad`` between backward and the step, with
    the hand side's terms (handgrad.hand.optim.clip_and_trace): ``clip.total_norm`` ‖g‖, what
    ``clip_grad_norm_`` returned, and ``clip.grad.<param>`` ĝ[θ] in the order of ``symbols``."""
    if spec.clip is None:
        return
    total_norm = clip_gradients(spec, parameters)
    if total_norm is not None:
        norm = total_norm.numpy(force=True)
        trace.add("clip.total_norm", "‖g‖", "update", norm, CLIP_SOURCE, copy=False)
    grads = read(lambda param: param.grad)  # written by nothing after the clip: no copy
    for name in symbols:
        trace.add(f"clip.grad.{name}", f"ĝ[{symbols[name]}]", "update", grads[name], CLIP_SOURCE, copy=False)


def step_and_trace(
    trace: StepTrace,
    spec: Optimizer,
    optimizer: torch.optim.Optimizer,
    scheduler: object | None,
    read: Reader,
    symbols: Mapping[str, str],
    source: str,
) -> None:
    """``optimizer.step()`` and what follows it, as the hand side traces it
    (handgrad.hand.optim.step_and_trace): ``<param>_next`` θ′, the per-parameter state
    ``<kind>.<key>.<param>`` read from ``optimizer.state``, the scalars (t, η) from torch's
    records, then ``scheduler.step()`` sets the next step's η."""
    step(optimizer)
    # torch updates the parameters and the state in place: on the host the trace copies its views
    # of them; off the host, optim.copied brings them over in one transfer, copies already
    parameters = [param for group in optimizer.param_groups for param in group["params"]]
    on_host = not parameters or parameters[0].is_cpu

    def taken(pick: Callable[[torch.nn.Parameter], torch.Tensor]) -> dict[str, np.ndarray]:
        return read(pick if on_host else copied(parameters, pick))

    for name, value in taken(lambda param: param).items():
        trace.add(f"{name}_next", f"{symbols[name]}′", "update", value, source, copy=on_host)
    for key, symbol in state_keys(spec):
        for name, value in taken(lambda param, key=key: optimizer.state[param][key]).items():
            name_of = f"{spec.kind}.{key}.{name}"
            trace.add(name_of, f"{symbol}[{symbols[name]}]", "state", value, OPTIM_SOURCE, copy=on_host)
    for key, symbol, value in scalar_state(spec, optimizer):
        trace.add(f"{spec.kind}.{key}", symbol, "state", value, OPTIM_SOURCE)  # t: torch's += 1 in place
    if scheduler is not None:
        scheduler.step()  # after optimizer.step(), as torch asks: the lr of the next step
