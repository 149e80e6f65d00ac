"""Real ``torch.optim`` arithmetic in eager mode, without importing the compiler (``torch._dynamo``).

Why: handgrad only runs torch eagerly, yet ``torch.optim`` imports ``torch._dynamo`` (about 1.5 s,
more than half of the numpy + torch import floor) the first time an optimizer is used, for
nothing but compiler bookkeeping. ``Optimizer.add_param_group`` (called by every constructor),
``zero_grad``, ``state_dict`` and ``load_state_dict`` are wrapped by ``torch._disable_dynamo``,
which imports ``torch._dynamo`` on the first call to build ``torch._dynamo.disable(fn)`` and caches
it as ``fn.__dynamo_disable``; with no compilation in progress that disabled function only calls
``fn``. Every ``step`` goes through ``_use_grad_for_differentiable``, which imports
``torch._dynamo`` to call ``graph_break()`` (a no-op in eager mode) around the body run under
``torch.set_grad_enabled(defaults["differentiable"])``, inside the profiler wrapper that runs the
step pre/post hooks. So: :func:`make_optimizer` builds the optimizer with the cache entry of each
``_disable_dynamo`` method set to the method itself, only while the constructor runs (it is
removed afterwards, so a later ``torch.compile`` in the same process sees torch unchanged);
:func:`zero_grad` calls the undecorated ``zero_grad``; :func:`optimizer_step` does what the two
step wrappers do (profiler range, global and per-optimizer pre hooks, grad mode, the body, the
post hooks, and the ``_opt_called`` flag an LR scheduler's wrapper sets) and calls the optimizer
class's own undecorated ``step``. Every number is still computed by ``torch.optim``'s code: the
arithmetic is bit for bit that of ``optimizer.step()`` (``tests/test_eager.py``). LR schedulers and
``clip_grad_norm_``/``clip_grad_value_`` import nothing from the compiler and are used as they are
(through the helpers below, so that a future torch that changes this has one place to fix). An
optimizer whose ``step`` carries some other decorator is called as torch wraps it, and may import
the compiler.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from itertools import chain
from typing import Any, TypeVar

import torch
from torch.optim import optimizer as _optimizer_module

OptimizerT = TypeVar("OptimizerT", bound=torch.optim.Optimizer)

# The methods of torch.optim.Optimizer that torch wraps with torch._disable_dynamo.
_DISABLED_METHODS = ("add_param_group", "zero_grad", "state_dict", "load_state_dict")
_CACHE = "__dynamo_disable"  # the attribute torch/_compile.py caches torch._dynamo.disable(fn) in
# The code object of _use_grad_for_differentiable's wrapper: how a step wrapped by it is recognised.
_USE_GRAD_CODE = _optimizer_module._use_grad_for_differentiable(lambda: None).__code__


def _undecorated(method: Callable[..., Any]) -> Callable[..., Any]:
    """The function a ``torch._disable_dynamo`` wrapper calls (itself when it is not one)."""
    return getattr(method, "__wrapped__", method)


@contextlib.contextmanager
def eager_only() -> Iterator[None]:
    """While open, the ``_disable_dynamo`` methods of ``Optimizer`` call their body directly.

    Sets ``fn.__dynamo_disable = fn`` where torch has cached nothing yet (with no compilation in
    progress, ``torch._dynamo.disable(fn)`` calls ``fn`` and nothing else) and removes exactly
    those entries on exit.
    """
    marked = []
    for name in _DISABLED_METHODS:
        function = _undecorated(getattr(torch.optim.Optimizer, name))
        if getattr(function, _CACHE, None) is None:
            setattr(function, _CACHE, function)
            marked.append(function)
    try:
        yield
    finally:
        for function in marked:
            if getattr(function, _CACHE, None) is function:
                delattr(function, _CACHE)


def make_optimizer(cls: type[OptimizerT], params: Iterable[Any], **kwargs: Any) -> OptimizerT:
    """``cls(params, **kwargs)``, built without importing ``torch._dynamo``."""
    with eager_only():
        return cls(params, **kwargs)


def zero_grad(optimizer: torch.optim.Optimizer, set_to_none: bool = True) -> None:
    """``optimizer.zero_grad(set_to_none)``: torch's own body, without the compiler wrapper. With
    ``set_to_none`` and no profiler recording, what that body does, ``p.grad = None`` for every
    parameter, without the profiler range around it (most of its ~20 µs)."""
    if set_to_none and not torch.autograd._profiler_enabled():
        for group in optimizer.param_groups:
            for param in group["params"]:
                param.grad = None
        return
    _undecorated(type(optimizer).zero_grad)(optimizer, set_to_none)


def _eager_step(optimizer: torch.optim.Optimizer) -> tuple[Callable[..., Any], bool]:
    """(the step body to call, whether to apply ``_use_grad_for_differentiable``'s grad mode)."""
    step = type(optimizer).step
    if getattr(step, "hooked", False):  # Optimizer.profile_hook_step's wrapper
        step = step.__wrapped__
    inner = getattr(step, "__wrapped__", None)
    if getattr(step, "__code__", None) is _USE_GRAD_CODE and inner is not None:
        return inner, True
    return step, False


def optimizer_step(optimizer: torch.optim.Optimizer, closure: Callable[[], Any] | None = None) -> Any:
    """``optimizer.step(closure)`` as torch runs it in eager mode, without importing the compiler.

    Mirrors ``Optimizer.profile_hook_step`` (profiler range while profiling, pre hooks that may replace the
    arguments, ``_optimizer_step_code``, post hooks) and ``_use_grad_for_differentiable``
    (grad mode = ``defaults["differentiable"]``; its ``graph_break()`` calls do nothing outside
    ``torch.compile``), and sets ``_opt_called`` as an LR scheduler's step wrapper does.
    """
    body, set_grad_mode = _eager_step(optimizer)
    if hasattr(optimizer.step, "_wrapped_by_lr_sched"):  # an LRScheduler patched this instance
        optimizer._opt_called = True  # type: ignore[attr-defined]
    args: tuple[Any, ...] = (optimizer,) if closure is None else (optimizer, closure)
    kwargs: dict[str, Any] = {}
    name = f"Optimizer.step#{type(optimizer).__name__}.step"
    # the range only while a profiler records: entering one costs tens of µs and records nothing
    profiled = torch.autograd._profiler_enabled()
    with torch.autograd.profiler.record_function(name) if profiled else contextlib.nullcontext():
        for pre_hook in chain(
            _optimizer_module._global_optimizer_pre_hooks.values(),
            optimizer._optimizer_step_pre_hooks.values(),
        ):
            result = pre_hook(optimizer, args, kwargs)
            if result is not None:
                if not (isinstance(result, tuple) and len(result) == 2):
                    raise RuntimeError(f"a step pre hook must return None or (args, kwargs), got {result}")
                args, kwargs = result
        if set_grad_mode:
            with torch.set_grad_enabled(bool(optimizer.defaults.get("differentiable", False))):
                out = body(*args, **kwargs)
        else:
            out = body(*args, **kwargs)
        optimizer._optimizer_step_code()
        for post_hook in chain(
            optimizer._optimizer_step_post_hooks.values(),
            _optimizer_module._global_optimizer_post_hooks.values(),
        ):
            post_hook(optimizer, args, kwargs)
    return out


def make_scheduler(cls: type[Any], optimizer: torch.optim.Optimizer, **kwargs: Any) -> Any:
    """``cls(optimizer, **kwargs)`` for a ``torch.optim.lr_scheduler`` class (imports no compiler)."""
    with eager_only():
        return cls(optimizer, **kwargs)


def scheduler_step(scheduler: Any) -> None:
    """``scheduler.step()``: call it after :func:`optimizer_step`, as torch asks."""
    scheduler.step()


def clip_grad_norm_(parameters: Any, max_norm: float, **kwargs: Any) -> torch.Tensor:
    """``torch.nn.utils.clip_grad_norm_``, unchanged (it imports no compiler)."""
    return torch.nn.utils.clip_grad_norm_(parameters, max_norm, **kwargs)


def clip_grad_value_(parameters: Any, clip_value: float, **kwargs: Any) -> None:
    """``torch.nn.utils.clip_grad_value_``, unchanged (it imports no compiler)."""
    torch.nn.utils.clip_grad_value_(parameters, clip_value, **kwargs)
