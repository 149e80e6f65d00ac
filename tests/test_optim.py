"""Optimizers, learning-rate schedules and gradient clipping: hand vs torch.optim, every term.

Each optimizer × its options trains the XOR net and a small MLP for 200 steps in float64; every
term of every step (forward, loss, backward, update, and the optimizer's state: buffers, step
count, lr in force) must agree within the float64 tolerance.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from handgrad import cli, harness
from handgrad.contract.names import state_keys
from handgrad.contract.spec import Data, Network, Schedule, SpecError
from handgrad.contract.training import Clip, Loss, LRSchedule, Optimizer
from handgrad.hand import optim
from handgrad.harness import compare_values, tolerance_for
from handgrad.scenarios.dense import XOR_X, XOR_Y
from handgrad.scenarios.stack import stack_experiment

STEPS = 200
TOL = tolerance_for("float64")

_rng = np.random.default_rng(7)
MLP_DATA = Data(_rng.uniform(-1, 1, size=(8, 3)), _rng.uniform(0.1, 0.9, size=(8, 2)), "seeded, 8 rows")
NETS = {
    # (network, data, data schedule, lr scale): XOR online as the seed's; an MLP in minibatches
    "xor": (Network.mlp([2, 3, 1]), Data(XOR_X, XOR_Y), Schedule("online"), 1.0),
    "mlp": (
        Network.mlp([3, 4, 3, 2], activation="tanh", output_activation="identity"),
        MLP_DATA,
        Schedule("minibatch", batch_size=4),
        0.2,
    ),
}
LR = {"sgd": 0.5, "adam": 0.05, "adamw": 0.05, "rmsprop": 0.01, "adagrad": 0.1}


def experiment(
    net: str, optimizer: Optimizer, steps: int = STEPS, loss: Loss | None = None, dtype: str = "float64"
):
    network, data, schedule, _ = NETS[net]
    return stack_experiment(
        net, network, loss or Loss(), optimizer, data, schedule, steps=steps, seed=3, dtype=dtype
    )


def _sgd_cases() -> list[tuple[str, dict]]:
    """momentum 0, 0.9 × dampening 0, 0.5 × nesterov off, on × weight decay 0, 0.01, less what
    torch refuses (nesterov without momentum or with dampening) and the dampening runs without
    momentum, where it does nothing (one is kept to show it)."""
    cases = []
    for momentum in (0.0, 0.9):
        for dampening in (0.0, 0.5):
            for nesterov in (False, True):
                for weight_decay in (0.0, 0.01):
                    if nesterov and (momentum == 0 or dampening != 0):
                        continue
                    if momentum == 0 and dampening != 0 and weight_decay == 0:
                        continue
                    options = dict(momentum=momentum, dampening=dampening, nesterov=nesterov)
                    cases.append(("sgd", {**options, "weight_decay": weight_decay}))
    return cases


CASES = (
    _sgd_cases()
    + [("adam", dict(amsgrad=a, weight_decay=w)) for a in (False, True) for w in (0.0, 0.01)]
    + [("adam", dict(betas=(0.5, 0.9), eps=1e-6))]
    + [("adamw", dict(amsgrad=a, weight_decay=w)) for a in (False, True) for w in (0.0, 0.01)]
    + [
        ("rmsprop", dict(centered=c, momentum=m, weight_decay=w))
        for c in (False, True)
        for m in (0.0, 0.9)
        for w in (0.0, 0.01)
    ]
    + [("rmsprop", dict(alpha=0.9, eps=1e-6))]
    + [
        ("adagrad", dict(lr_decay=d, weight_decay=w, initial_accumulator_value=a))
        for d, w, a in ((0.0, 0.0, 0.0), (0.01, 0.0, 0.1), (0.0, 0.01, 0.1), (0.01, 0.01, 0.0))
    ]
)


def _case_id(case: tuple[str, dict]) -> str:
    kind, options = case
    return kind + "".join(f"-{k}={v}" for k, v in options.items())


def _expected_state_terms(spec: Optimizer, network: Network) -> list[str]:
    from handgrad.contract.stack import param_table

    names = [name for name, _, _ in param_table(network)]
    terms = [f"{spec.kind}.{key}.{name}" for key, _ in state_keys(spec) for name in names]
    return terms + [f"{spec.kind}.{key}" for key in (["lr"] if spec.kind == "sgd" else ["step", "lr"])]


@pytest.mark.parametrize("net", list(NETS))
@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_optimizer_matches_torch_every_term(net: str, case: tuple[str, dict]) -> None:
    kind, options = case
    spec = Optimizer(kind, LR[kind] * NETS[net][3], options)
    report = harness.run(experiment(net, spec))
    assert report.ok, report.verdict()
    assert report.steps_run == STEPS
    state_terms = _expected_state_terms(spec, NETS[net][0])
    missing = [name for name in state_terms if name not in report.terms]
    assert not missing, f"state terms not compared: {missing}"
    assert all(report.terms[name].phase == "state" for name in state_terms)
    # the state moved: its buffers are not all zero (a state term stuck at 0 on both sides proves nothing)
    for name in state_terms:
        if name.endswith(".lr"):
            continue
        assert report.terms[name].scale > 0, f"{name} stayed 0 over {STEPS} steps"


# maximize ascends the loss: on the MLP's unbounded squared error that runs off to saturated tanh
# units, where 1 − a² cancels and any last-bit difference grows (a conditioning fact, not a bug);
# XOR's sigmoid output keeps the ascent bounded.
MAXIMIZE = [
    (kind, {"maximize": True, **extra})
    for kind, extra in (
        ("sgd", {"momentum": 0.9}),
        ("adam", {}),
        ("adamw", {}),
        ("rmsprop", {"centered": True}),
        ("adagrad", {}),
    )
]


@pytest.mark.parametrize("case", MAXIMIZE, ids=[_case_id(c) for c in MAXIMIZE])
def test_maximize_matches_torch_every_term(case: tuple[str, dict]) -> None:
    kind, options = case
    report = harness.run(experiment("xor", Optimizer(kind, LR[kind], options)))
    assert report.ok, report.verdict()
    first, last = (sum(hand for hand, _ in report.loss_history[s]) for s in (slice(0, 4), slice(-4, None)))
    assert last > first, f"maximize should ascend the loss over the 4 rows: {first} -> {last}"


def test_adam_float32_uses_the_float32_row() -> None:
    report = harness.run(
        experiment("mlp", Optimizer("adam", 0.01, {"amsgrad": True}), steps=50, dtype="float32")
    )
    assert report.ok, report.verdict()
    assert report.tolerance == tolerance_for("float32")


# --- learning-rate schedules --------------------------------------------------------------------


SCHEDULES = [
    LRSchedule("step", step_size=7, gamma=0.5),
    LRSchedule("step", step_size=1, gamma=0.9),
    LRSchedule("exponential", gamma=0.97),
    LRSchedule("cosine", t_max=30, eta_min=0.01),  # 200 steps run through several periods
    LRSchedule("cosine", t_max=200),
    LRSchedule("cosine", t_max=1, eta_min=0.2),  # the denominator 1 + cos(π(e−1)/T) is 0 every other step
]


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: f"{s.kind}-{s.step_size}-{s.gamma}-{s.t_max}")
def test_schedule_lr_sequence_matches_torch_scheduler(schedule: LRSchedule) -> None:
    import torch

    spec = Optimizer("sgd", 0.5, schedule=schedule)
    param = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    optimizer = torch.optim.SGD([param], lr=spec.lr)
    from handgrad.twin.optim import build_scheduler

    scheduler = build_scheduler(spec, optimizer)
    state = {"step": 0, "lr": spec.lr}
    hand, torch_lrs = [], []
    for _ in range(400):
        optimizer.step()
        scheduler.step()
        state = optim.schedule_step(spec, {**state, "step": state["step"] + 1})
        hand.append(state["lr"])
        torch_lrs.append(optimizer.param_groups[0]["lr"])
    check = compare_values("lr", np.array(hand), np.array(torch_lrs), TOL)
    assert check.ok, (
        f"lr differs first at scheduler step {check.worst_index}: {check.hand_value} vs {check.torch_value}"
    )
    assert len(set(hand)) > 1, "the schedule never moved the lr"


def test_cosine_recursion_equals_the_closed_form() -> None:
    spec = Optimizer("sgd", 0.5, schedule=LRSchedule("cosine", t_max=40, eta_min=0.05))
    lr = spec.lr
    for epoch in range(1, 120):
        lr = optim.next_lr(spec, lr, epoch)
        closed = 0.05 + 0.5 * (0.5 - 0.05) * (1 + math.cos(math.pi * epoch / 40))
        assert abs(lr - closed) < 1e-12, (epoch, lr, closed)


@pytest.mark.parametrize("kind", ["sgd", "adam", "adagrad"])
@pytest.mark.parametrize("schedule", SCHEDULES[::2], ids=lambda s: s.kind)
def test_schedule_in_training_every_term(kind: str, schedule: LRSchedule) -> None:
    spec = Optimizer(kind, LR[kind], {"momentum": 0.9} if kind == "sgd" else {}, schedule=schedule)
    report = harness.run(experiment("xor", spec, steps=60))
    assert report.ok, report.verdict()
    assert report.terms[f"{kind}.lr"].max_abs == 0.0  # Python floats on both sides, same operations


# --- gradient clipping --------------------------------------------------------------------------


CLIPS = [
    Clip(max_norm=0.05),
    Clip(max_norm=0.02, norm_type=float("inf")),
    Clip(max_norm=0.1, norm_type=1.0),
    Clip(value=0.01),
]


@pytest.mark.parametrize("net", list(NETS))
@pytest.mark.parametrize(
    "clip", CLIPS, ids=lambda c: f"norm{c.max_norm}-p{c.norm_type}" if c.max_norm else f"value{c.value}"
)
def test_clipping_every_term(net: str, clip: Clip) -> None:
    spec = Optimizer("adam" if clip.value else "sgd", LR["adam" if clip.value else "sgd"], clip=clip)
    clipped_steps = []

    def observe(step, hand, twin, checks) -> None:  # did the clip change a gradient at this step?
        for term in hand:
            if term.name.startswith("clip.grad."):
                stage, short = term.name[len("clip.grad.") :].split(".")
                clipped_steps.append(not np.array_equal(term.value, hand.value(f"{stage}.dL_d{short}")))

    report = harness.run(experiment(net, spec, steps=100), observers=[observe])
    assert report.ok, report.verdict()
    assert any(clipped_steps), "the clip never bit: the test would prove nothing"
    grads = [name for name in report.terms if name.startswith("clip.grad.")]
    assert len(grads) == len(NETS[net][0].dense_layers) * 2
    assert ("clip.total_norm" in report.terms) == (clip.max_norm is not None)


# --- bad hyper-parameters: one line naming the field, exit code 2 ---------------------------------


@pytest.mark.parametrize(
    ("kind", "options", "field"),
    [
        ("adam", {"betas": (1.0, 0.999)}, "betas"),
        ("adam", {"betas": (0.9, -0.1)}, "betas"),
        ("adamw", {"betas": (0.9,)}, "betas"),
        ("adam", {"eps": -1e-8}, "eps"),
        ("rmsprop", {"eps": -1.0}, "eps"),
        ("sgd", {"momentum": 0.9, "nesterov": True, "dampening": 0.5}, "dampening"),
        ("sgd", {"nesterov": True}, "momentum"),
        ("sgd", {"momentum": -0.1}, "momentum"),
        ("sgd", {"weight_decay": -0.01}, "weight_decay"),
        ("adam", {"momentum": 0.9}, "momentum"),
        ("sgd", {"amsgrad": True}, "amsgrad"),
        ("rmsprop", {"alpha": 1.5}, "alpha"),
        ("adagrad", {"lr_decay": -1.0}, "lr_decay"),
        ("adagrad", {"initial_accumulator_value": -1.0}, "initial_accumulator_value"),
        ("adam", {"amsgrad": "yes"}, "amsgrad"),
    ],
)
def test_bad_hyper_parameters_name_their_field(kind: str, options: dict, field: str) -> None:
    with pytest.raises(SpecError) as error:
        Optimizer(kind, 0.1, options)
    assert error.value.field == field


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: LRSchedule("warmup"), "schedule"),
        (lambda: LRSchedule("step", step_size=0), "step_size"),
        (lambda: LRSchedule("exponential", gamma=0.0), "gamma"),
        (lambda: LRSchedule("cosine", t_max=0), "t_max"),
        (lambda: Clip(), "clip_norm"),
        (lambda: Clip(max_norm=1.0, value=1.0), "clip_norm"),
        (lambda: Clip(max_norm=-1.0), "clip_norm"),
        (lambda: Clip(value=0.0), "clip_value"),
        (lambda: Clip(max_norm=1.0, norm_type=0.0), "norm_type"),
    ],
)
def test_bad_schedule_and_clip_name_their_field(make, field: str) -> None:
    with pytest.raises(SpecError) as error:
        make()
    assert error.value.field == field


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["--optimizer", "adam", "--betas", "0.9,1.0"], "betas"),
        (["--optimizer", "adam", "--betas=-0.1,0.999"], "betas"),
        (["--optimizer", "adam", "--eps=-1e-8"], "eps"),
        (["--momentum", "0.9", "--nesterov", "--dampening", "0.5"], "dampening"),
        (["--schedule", "warmup"], "--schedule"),
        (["--optimizer", "lbfgs"], "--optimizer"),
        (["--optimizer", "adam", "--momentum", "0.9"], "momentum"),
        (["--clip-norm", "1", "--clip-value", "1"], "clip_norm"),
        (["--schedule", "cosine", "--t-max", "0"], "t_max"),
    ],
)
def test_cli_bad_hyper_parameter_one_line_exit_2(argv: list[str], field: str, capsys) -> None:
    code = cli.main(["compare", "xor", "--steps", "2", *argv])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"handgrad: error: {field}:"), err


def test_cli_optimizer_options_reach_torch() -> None:
    from torch.optim.lr_scheduler import StepLR

    from handgrad.scenarios import SCENARIOS

    argv = [
        "--steps",
        "20",
        "--optimizer",
        "rmsprop",
        "--lr",
        "0.01",
        "--momentum",
        "0.9",
        "--centered",
        "--alpha",
        "0.9",
        "--weight-decay",
        "0.01",
        "--schedule",
        "step",
        "--step-size",
        "5",
        "--gamma",
        "0.5",
        "--clip-norm",
        "0.05",
    ]
    built = SCENARIOS["xor"].build(cli.scenario_parser("xor").parse_args(argv))
    group = built.twin.optimizer.param_groups[0]
    assert (group["momentum"], group["centered"], group["alpha"], group["weight_decay"]) == (
        0.9,
        True,
        0.9,
        0.01,
    )
    assert isinstance(built.twin.scheduler, StepLR) and built.twin.scheduler.step_size == 5
    assert built.hand.optimizer.clip == Clip(max_norm=0.05)
    report = harness.run(built)
    assert report.ok, report.verdict()
    assert "clip.total_norm" in report.terms and "rmsprop.grad_avg.dense1.W" in report.terms
