"""twin/eager.py: torch.optim's own arithmetic, bit for bit, without importing torch._dynamo.

The import check runs in a fresh interpreter (this process may already hold torch._dynamo);
it drives every optimizer with an LR scheduler and both clip functions, and also checks the
premise: the plain torch.optim calls do import the compiler. The arithmetic check runs the
plain calls and the helpers side by side on identical float64 parameters and gradients for
several steps and asserts the parameters and every state tensor are bitwise equal.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

import handgrad
from handgrad.twin import eager

# (name, optimizer class, its keyword arguments, scheduler class, its keyword arguments): several
# non-default options, so every branch of a step runs, and each scheduler the twin builds.
StepLR = torch.optim.lr_scheduler.StepLR
ExponentialLR = torch.optim.lr_scheduler.ExponentialLR
CosineAnnealingLR = torch.optim.lr_scheduler.CosineAnnealingLR
CASES = [
    ("sgd", torch.optim.SGD, {"lr": 0.1}, StepLR, {"step_size": 2, "gamma": 0.5}),
    (
        "sgd_momentum",
        torch.optim.SGD,
        {"lr": 0.1, "momentum": 0.9, "dampening": 0.1, "weight_decay": 0.01},
        ExponentialLR,
        {"gamma": 0.9},
    ),
    (
        "sgd_nesterov",
        torch.optim.SGD,
        {"lr": 0.1, "momentum": 0.9, "nesterov": True},
        StepLR,
        {"step_size": 2},
    ),
    (
        "adam",
        torch.optim.Adam,
        {"lr": 0.01, "betas": (0.8, 0.9), "weight_decay": 0.01},
        CosineAnnealingLR,
        {"T_max": 4, "eta_min": 0.001},
    ),
    ("adam_amsgrad", torch.optim.Adam, {"lr": 0.01, "amsgrad": True}, StepLR, {"step_size": 3, "gamma": 0.1}),
    ("adamw", torch.optim.AdamW, {"lr": 0.01, "weight_decay": 0.1}, ExponentialLR, {"gamma": 0.8}),
    (
        "rmsprop",
        torch.optim.RMSprop,
        {"lr": 0.01, "momentum": 0.5, "centered": True},
        CosineAnnealingLR,
        {"T_max": 3},
    ),
    (
        "adagrad",
        torch.optim.Adagrad,
        {"lr": 0.1, "lr_decay": 0.01, "initial_accumulator_value": 0.1},
        StepLR,
        {"step_size": 2, "gamma": 0.5},
    ),
]
IDS = [case[0] for case in CASES]
STEPS = 6

IMPORT_CHECK = textwrap.dedent(
    """
    import json, sys
    import torch
    from handgrad.twin import eager

    cases = {CASES}
    result = {{}}
    for name, cls_name, kwargs, scheduler_name, scheduler_kwargs in cases:
        cls = getattr(torch.optim, cls_name)
        scheduler = getattr(torch.optim.lr_scheduler, scheduler_name)
        w = torch.nn.Parameter(torch.linspace(-1, 1, 12, dtype=torch.float64).reshape(3, 4))
        opt = eager.make_optimizer(cls, [w], **kwargs)
        sched = eager.make_scheduler(scheduler, opt, **scheduler_kwargs)
        for _ in range(3):
            eager.zero_grad(opt)
            (w ** 3).sum().backward()
            eager.clip_grad_norm_([w], 1.0)
            eager.clip_grad_value_([w], 0.05)
            eager.optimizer_step(opt)
            eager.scheduler_step(sched)
        result[name] = "torch._dynamo" in sys.modules
    w = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    torch.optim.SGD([w], lr=0.1)
    result["plain torch.optim.SGD (premise)"] = "torch._dynamo" in sys.modules
    print(json.dumps(result))
    """
)


@pytest.fixture(scope="module")
def dynamo_imported() -> dict[str, bool]:
    """Run every case in one fresh interpreter; name -> whether torch._dynamo was loaded after it."""
    cases = [
        (name, cls.__name__, kwargs, sched.__name__, sched_kwargs)
        for name, cls, kwargs, sched, sched_kwargs in CASES
    ]
    reference = str(Path(handgrad.__file__).resolve().parents[1])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [reference, os.environ.get("PYTHONPATH")])),
    }
    completed = subprocess.run(
        [sys.executable, "-c", IMPORT_CHECK.format(CASES=repr(cases))],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", IDS)
def test_helpers_never_import_the_compiler(dynamo_imported: dict[str, bool], name: str) -> None:
    assert dynamo_imported[name] is False, f"{name}: torch._dynamo was imported"


def test_plain_torch_optim_imports_the_compiler(dynamo_imported: dict[str, bool]) -> None:
    """The premise of eager.py; if a torch upgrade stops this, the helpers can go."""
    assert dynamo_imported["plain torch.optim.SGD (premise)"] is True


def _start(seed: int) -> torch.nn.Parameter:
    generator = torch.Generator().manual_seed(seed)
    return torch.nn.Parameter(torch.randn(4, 5, generator=generator, dtype=torch.float64))


def _backward(weight: torch.nn.Parameter, bias: torch.nn.Parameter, upstream: torch.Tensor) -> None:
    """A loss with a random upstream gradient (never ones), through a kink at exactly 0."""
    x = torch.linspace(-1, 1, 15, dtype=torch.float64).reshape(3, 5)
    x[0, :] = 0.0  # rows of zeros put relu exactly on its kink for the bias-only units
    z = torch.relu(x @ weight.T + bias)  # 3,4
    (z * upstream).sum().backward()


@pytest.mark.parametrize("name, cls, kwargs, scheduler, scheduler_kwargs", CASES, ids=IDS)
def test_bit_for_bit_with_plain_step(
    name: str, cls: type, kwargs: dict, scheduler: type, scheduler_kwargs: dict
) -> None:
    torch.manual_seed(0)
    plain_w, plain_b = _start(1), torch.nn.Parameter(torch.tensor([0.3, -0.2, 0.0, 0.7], dtype=torch.float64))
    eager_w, eager_b = (torch.nn.Parameter(p.detach().clone()) for p in (plain_w, plain_b))
    plain = cls([plain_w, plain_b], **kwargs)
    helped = eager.make_optimizer(cls, [eager_w, eager_b], **kwargs)
    plain_sched = scheduler(plain, **scheduler_kwargs)
    helped_sched = eager.make_scheduler(scheduler, helped, **scheduler_kwargs)
    generator = torch.Generator().manual_seed(2)
    for step in range(1, STEPS + 1):
        upstream = torch.randn(3, 4, generator=generator, dtype=torch.float64)
        plain.zero_grad()
        _backward(plain_w, plain_b, upstream)
        torch.nn.utils.clip_grad_norm_([plain_w, plain_b], 2.0)
        torch.nn.utils.clip_grad_value_([plain_w, plain_b], 0.5)
        plain.step()
        plain_sched.step()

        eager.zero_grad(helped)
        _backward(eager_w, eager_b, upstream)
        eager.clip_grad_norm_([eager_w, eager_b], 2.0)
        eager.clip_grad_value_([eager_w, eager_b], 0.5)
        eager.optimizer_step(helped)
        eager.scheduler_step(helped_sched)

        for label, a, b in [("weight", plain_w, eager_w), ("bias", plain_b, eager_b)]:
            assert torch.equal(a, b), f"{name} step {step}: {label} differs: max |Δ| {(a - b).abs().max()}"
            for key, value in plain.state[a].items():
                other = helped.state[b][key]
                assert torch.equal(torch.as_tensor(value), torch.as_tensor(other)), (
                    f"{name} step {step}: state {key} of {label} differs"
                )
        assert plain.param_groups[0]["lr"] == helped.param_groups[0]["lr"], f"{name} step {step}: lr"
    assert plain_w.grad is not None and not torch.equal(plain_w, _start(1)), "the run must have moved"


def test_scheduler_sees_the_step_and_warns_nothing() -> None:
    """StepLR warns 'lr_scheduler.step() before optimizer.step()' unless _opt_called is set."""
    w = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt = eager.make_optimizer(torch.optim.SGD, [w], lr=0.1)
    sched = eager.make_scheduler(torch.optim.lr_scheduler.StepLR, opt, step_size=1, gamma=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (w * torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)).sum().backward()
        eager.optimizer_step(opt)
        eager.scheduler_step(sched)
    assert opt._opt_called is True
    assert opt.param_groups[0]["lr"] == 0.05
    assert torch.equal(w.detach(), torch.tensor([0.9, 1.2, 0.7], dtype=torch.float64))


def test_step_hooks_run_in_torch_order() -> None:
    """Global pre, optimizer pre, body, optimizer post, global post: as Optimizer.profile_hook_step."""
    w = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    opt = eager.make_optimizer(torch.optim.SGD, [w], lr=1.0)
    w.grad = torch.tensor([1.0, -1.0], dtype=torch.float64)
    calls: list[str] = []
    handles = [
        register_optimizer_step_pre_hook(lambda o, a, k: calls.append("global pre")),
        opt.register_step_pre_hook(lambda o, a, k: calls.append(f"pre w={w.tolist()}")),
        opt.register_step_post_hook(lambda o, a, k: calls.append(f"post w={w.tolist()}")),
        register_optimizer_step_post_hook(lambda o, a, k: calls.append("global post")),
    ]
    try:
        eager.optimizer_step(opt)
    finally:
        for handle in handles:
            handle.remove()
    assert calls == ["global pre", "pre w=[0.0, 0.0]", "post w=[-1.0, 1.0]", "global post"]


def test_step_runs_without_grad_and_restores_grad_mode() -> None:
    w = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    opt = eager.make_optimizer(torch.optim.SGD, [w], lr=0.5)
    w.grad = torch.tensor([2.0, -4.0], dtype=torch.float64)
    eager.optimizer_step(opt)
    assert torch.is_grad_enabled()
    assert w.grad_fn is None and torch.equal(w.detach(), torch.tensor([0.0, 3.0], dtype=torch.float64))


@pytest.mark.parametrize("set_to_none", [True, False])
def test_zero_grad(set_to_none: bool) -> None:
    w = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    opt = eager.make_optimizer(torch.optim.Adam, [w], lr=0.5)
    w.grad = torch.tensor([2.0, -4.0], dtype=torch.float64)
    eager.zero_grad(opt, set_to_none=set_to_none)
    assert (w.grad is None) if set_to_none else torch.equal(w.grad, torch.zeros(2, dtype=torch.float64))


def test_marks_are_removed_after_construction() -> None:
    """eager_only leaves torch as it found it, so a later torch.compile sees its own wrappers."""
    functions = [getattr(torch.optim.Optimizer, name).__wrapped__ for name in eager._DISABLED_METHODS]
    before = [getattr(function, eager._CACHE, None) for function in functions]
    eager.make_optimizer(torch.optim.SGD, [torch.nn.Parameter(torch.ones(1))], lr=0.1)
    assert [getattr(function, eager._CACHE, None) for function in functions] == before
    with eager.eager_only():
        assert all(getattr(function, eager._CACHE, None) is not None for function in functions)


def test_profiler_ranges_are_recorded_while_a_profiler_runs() -> None:
    """Outside a profiler the helpers skip the (empty) ranges; inside one they record torch's."""
    w = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    opt = eager.make_optimizer(torch.optim.SGD, [w], lr=0.5)
    with torch.autograd.profiler.profile() as prof:
        w.grad = torch.tensor([2.0, -4.0], dtype=torch.float64)
        eager.optimizer_step(opt)
        eager.zero_grad(opt)
    names = {event.name for event in prof.function_events}
    assert "Optimizer.step#SGD.step" in names
    assert "Optimizer.zero_grad#SGD.zero_grad" in names
    assert w.grad is None and torch.equal(w.detach(), torch.tensor([0.0, 3.0], dtype=torch.float64))
