"""``--device cpu|cuda`` and ``--tf32``: the checks that run anywhere, and the GPU checks.

The bad-input cases, the TF32 flag handling, the tolerance rows, the report's config and the
optimizers' ``foreach=False`` run on every machine (CI has no GPU: a missing GPU is simulated by
patching ``torch.cuda.is_available``). The tests marked ``needs_cuda`` run every built-in scenario
with the twin on the GPU (``scripts/gpu_check.sh`` runs them on a GPU machine) and skip elsewhere.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from handgrad import harness
from handgrad.cli import main, scenario_parser
from handgrad.contract.spec import SpecError
from handgrad.contract.tolerance import TOLERANCES, Tolerance, tolerance_for
from handgrad.contract.trace import StepTrace
from handgrad.harness import Experiment, Report
from handgrad.scenarios import SCENARIOS
from handgrad.scenarios.common import resolve_device
from handgrad.twin.device import Device, precision, under_precision

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
ALL = list(SCENARIOS)  # xor, mlp, alexnet-mini, parity, echo, deep, multitask, makemore, transformer
FLOAT32 = ["xor", "mlp", "alexnet-mini", "deep", "multitask"]  # the recurrent hand side is float64 only


def build(name: str, *options: str) -> Experiment:
    return SCENARIOS[name].build(scenario_parser(name).parse_args(list(options)))


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine without a usable GPU, whatever this one has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def tf32_flags():
    """Put torch's two TF32 flags back after a test that sets them."""
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def flags() -> tuple[bool, bool]:
    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32


# --- bad input: one line naming the option, exit 2, nothing written --------------------------------

CASES = [
    *[(f"cuda without a GPU: {name}", ["compare", name, "--device", "cuda"], "--device") for name in ALL],
    ("tf32 on cpu", ["compare", "xor", "--tf32"], "--tf32"),
    ("tf32 on cpu, float32", ["compare", "mlp", "--tf32", "--dtype", "float32"], "--tf32"),
    ("tf32 in float64 (the default)", ["compare", "xor", "--device", "cuda", "--tf32"], "--tf32"),
    (
        "tf32 in float64",
        ["compare", "alexnet-mini", "--device", "cuda", "--dtype", "float64", "--tf32"],
        "--tf32",
    ),
    ("unknown device", ["compare", "xor", "--device", "tpu"], "--device"),
    ("gradcheck on cuda without a GPU", ["gradcheck", "xor", "--device", "cuda"], "--device"),
]


@pytest.mark.parametrize(("argv", "named"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_device_options_get_one_line_and_exit_2(argv, named, no_gpu, tmp_path: Path, capsys) -> None:
    outputs = (
        ["--json", str(tmp_path / "r.json"), "--xlsx", str(tmp_path / "r.xlsx")]
        if argv[0] == "compare"
        else []
    )
    assert main([*argv, "--steps", "2", *outputs]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and named in lines[0] and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"device": "cuda"}, "device"),
        ({"device": "cuda", "dtype": "float32"}, "device"),
        ({"tf32": True}, "tf32"),
        ({"tf32": True, "dtype": "float32"}, "tf32"),
        ({"device": "cuda", "tf32": True}, "tf32"),  # float64: the dtype is refused before the GPU is sought
    ],
)
def test_resolve_device_refuses_with_the_field_named(options, field, no_gpu) -> None:
    args = argparse.Namespace(**{"device": "cpu", "tf32": False, "dtype": "float64", **options})
    with pytest.raises(SpecError) as refused:
        resolve_device(args)
    assert refused.value.field == field and "\n" not in str(refused.value)


def test_resolve_device_gives_the_device_name_with_its_tf32_choice() -> None:
    device = resolve_device(argparse.Namespace(device="cpu", tf32=False, dtype="float32"))
    assert device == "cpu" and isinstance(device, str) and device.tf32 is False


def test_a_device_is_a_device_name_that_carries_tf32() -> None:
    device = Device("cuda", tf32=True)
    assert device == "cuda" and device.tf32 and torch.device(device).type == "cuda"
    assert Device("cuda").tf32 is False
    with pytest.raises(SpecError, match="^tf32: "):
        Device("cpu", tf32=True)
    with pytest.raises(SpecError, match="^device: "):
        Device("tpu")


# --- TF32 flags: off on cuda unless asked, put back afterwards (settable without a GPU) -------------


@pytest.mark.parametrize(
    ("start", "tf32"), [((True, True), False), ((False, True), False), ((False, False), True)]
)
def test_precision_sets_both_tf32_flags_for_cuda_and_restores_them(start, tf32, tf32_flags) -> None:
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = start
    with precision(torch.device("cuda"), tf32):
        assert flags() == (tf32, tf32)
    assert flags() == start
    with pytest.raises(RuntimeError), precision("cuda", tf32):  # restored on the way out of an error too
        raise RuntimeError("inside the step")
    assert flags() == start


def test_precision_leaves_the_flags_alone_on_cpu(tf32_flags) -> None:
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = True, True
    with precision("cpu", False):
        assert flags() == (True, True)


@pytest.mark.parametrize("tf32", [False, True])
def test_a_twin_step_runs_under_its_own_precision(tf32, tf32_flags) -> None:
    class Twin:  # what under_precision reads of a twin: device and tf32
        device, seen = torch.device("cuda"), None

        def __init__(self) -> None:
            self.tf32 = tf32

        @under_precision
        def step(self, step: int) -> int:
            self.seen = flags()
            return step

    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = False, True  # torch's defaults
    twin = Twin()
    assert twin.step(3) == 3 and twin.seen == (tf32, tf32)
    assert flags() == (False, True)


# --- the tolerance rows ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "tf32", "row"),
    [
        ("float32", True, "tf32"),
        (torch.float32, True, "tf32"),
        ("float32", False, "float32"),
        ("float64", True, "float64"),  # TF32 rounds float32 operands only
        ("float64", False, "float64"),
    ],
)
def test_tolerance_for_takes_the_tf32_row_for_float32_with_tf32(dtype, tf32, row) -> None:
    assert tolerance_for(dtype, tf32=tf32) == TOLERANCES[row]


def _round_up_one_digit(x: float) -> float:
    exponent = math.floor(math.log10(x))
    return math.ceil(x / 10**exponent) * 10**exponent


def test_tf32_row_is_its_derivation_rounded_up() -> None:
    """manual/harness.md, "Tolerances on a GPU": the numbers follow from u and the built-in nets."""
    u = 2.0**-11  # TF32: 10 explicit mantissa bits, rounding to nearest
    chain, longest = 18, 64  # deep (9 dense layers): 9 forward + 8 backward-through-input + 1 weight product
    chain_alexnet, longest_alexnet = 8, 2048  # conv1's ∂L/∂W sums over N·H·W = 8·16·16
    per_op = 2 * u + longest * 2.0**-24  # operand rounding, then float32 accumulation of n terms
    assert chain_alexnet * (2 * u + longest_alexnet * 2.0**-24) < chain * per_op  # deep is the longest chain
    row = TOLERANCES["tf32"]
    assert row.rtol == _round_up_one_digit(chain * per_op)  # 1.77e-2 -> 2e-2
    assert row.atol == _round_up_one_digit(5 * u * math.sqrt(2 / 3))  # 5σ of one product's error: 2e-3


# --- the report says where the twin ran; torch.optim keeps its single-tensor path -------------------


def test_the_report_config_and_json_name_the_device() -> None:
    experiment = build("xor", "--steps", "2", "--device", "cpu")
    report = harness.run(experiment)
    assert experiment.device == "cpu" and not experiment.tf32 and report.ok
    assert report.config["device"] == "cpu" and "tf32" not in report.config
    assert report.to_json()["config"]["device"] == "cpu"
    json.dumps(report.to_json())


def test_a_hand_only_experiment_is_on_cpu() -> None:
    experiment = Experiment("x", hand=None, twin=None, steps=1)
    assert (
        experiment.device == "cpu"
        and experiment.tf32 is False
        and experiment.tolerance == TOLERANCES["float64"]
    )


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw", "rmsprop", "adagrad"])
def test_every_optimizer_takes_the_single_tensor_path(optimizer) -> None:
    twin = build("xor", "--steps", "1", "--optimizer", optimizer).twin
    assert twin.optimizer.defaults["foreach"] is False
    assert all(group["foreach"] is False for group in twin.optimizer.param_groups)


@pytest.mark.parametrize(
    ("option", "clip"), [("--clip-norm", "clip_grad_norm_"), ("--clip-value", "clip_grad_value_")]
)
def test_clipping_takes_the_single_tensor_path(option, clip, monkeypatch) -> None:
    seen = []
    real = getattr(torch.nn.utils, clip)

    def spy(*args, **kwargs):
        seen.append(kwargs.get("foreach"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, clip, spy)
    report = harness.run(build("xor", "--steps", "2", option, "0.01"))
    assert report.ok and seen == [False, False]


# --- on a GPU ---------------------------------------------------------------------------------------


def _branch_flip(
    hand: StepTrace, twin: StepTrace, term: str, index: tuple[int, ...], tol: Tolerance
) -> str | None:
    """Why a gradient element differs by a whole routed value, not by rounding: the two sides sit on
    opposite branches of a ReLU kink or of a 2×2 max-pool window whose inputs agree within ``tol``.
    None when it is not that."""
    layer, name = term.split(".", 1)

    def close(a: float, b: float, values: np.ndarray) -> bool:
        """Within the row at the size of the term the two values belong to (the harness's rule)."""
        return abs(a - b) <= tol.atol * float(np.max(np.abs(values))) + tol.rtol * abs(b)

    if name == "dL_dz" and f"{layer}.z" in hand:  # ReLU′(z) = [z > 0]
        h, t = float(hand.value(f"{layer}.z")[index]), float(twin.value(f"{layer}.z")[index])
        if (h > 0) != (t > 0) and close(h, t, twin.value(f"{layer}.z")):
            return f"ReLU kink at {layer}.z{list(index)}: hand {h!r}, torch {t!r}"
    if name == "dL_dout" and len(index) == 4:  # the gradient a max-pool routed back to its argmax
        n, c, i, j = index
        window = (n, c, slice(i - i % 2, i - i % 2 + 2), slice(j - j % 2, j - j % 2 + 2))
        h = np.asarray(hand.value(f"{layer}.out"))[window].ravel()
        t = np.asarray(twin.value(f"{layer}.out"))[window].ravel()
        top = np.sort(h)[-2:]
        near_tie = close(float(top[0]), float(top[1]), twin.value(f"{layer}.out"))
        if int(np.argmax(h)) != int(np.argmax(t)) and near_tie:
            return f"max-pool near-tie in {layer}.out at {list(index)}: hand {h.tolist()}, torch {t.tolist()}"
    return None


def run_allowing_branch_flips(experiment: Experiment) -> Report:
    """Run; every term must agree up to the first divergence, which may only be a branch flip.

    In float32 (and much more with TF32) the two sides' pre-activations differ by rounding, so one
    that sits within that distance of a ReLU kink or of a max-pool tie can take the other branch: the
    gradient then routes a whole value elsewhere, a difference no tolerance row bounds. Everything
    before it must agree; what comes after inherits it through the weights and is not judged.
    """
    kept: dict[str, StepTrace] = {}

    def keep_first_failing_step(step, hand, twin, checks) -> None:
        if not kept and not all(check.ok for check in checks):
            kept.update(hand=hand, twin=twin)

    report = harness.run(experiment, observers=[keep_first_failing_step])
    if report.ok:
        return report
    first = report.first
    assert first is not None and report.stopped is None, report.verdict()
    why = _branch_flip(kept["hand"], kept["twin"], first.term, first.index, report.tolerance)
    assert why is not None, report.verdict()
    print(f"{experiment.scenario}: agreed until a branch flip at step {first.step}: {why}")
    return report


@needs_cuda
@pytest.mark.parametrize("name", ALL)
def test_every_scenario_on_cuda_agrees_in_float64(name) -> None:
    report = harness.run(build(name, "--device", "cuda", "--steps", "20"))
    assert report.config["device"] == "cuda" and report.config["tf32"] is False
    assert report.tolerance == TOLERANCES["float64"]
    assert report.ok, report.verdict()


@needs_cuda
@pytest.mark.parametrize("name", FLOAT32)
def test_every_float32_scenario_on_cuda_agrees_without_tf32(name) -> None:
    report = run_allowing_branch_flips(build(name, "--device", "cuda", "--dtype", "float32", "--steps", "20"))
    assert report.tolerance == TOLERANCES["float32"] and report.config["tf32"] is False


@needs_cuda
@pytest.mark.parametrize(
    ("name", "options"), [("alexnet-mini", []), ("mlp", ["--sizes", "4,64,64,64,2"]), ("mlp", [])]
)
def test_tf32_runs_agree_within_the_tf32_row(name, options) -> None:
    experiment = build(name, "--device", "cuda", "--dtype", "float32", "--tf32", "--steps", "20", *options)
    report = run_allowing_branch_flips(experiment)
    assert report.tolerance == TOLERANCES["tf32"] and report.config["tf32"] is True


@needs_cuda
@pytest.mark.parametrize("name", ALL)
def test_the_cuda_twin_computes_what_the_cpu_twin_computes(name) -> None:
    """torch against torch: the twin on the GPU and on the CPU, each training its own weights."""
    cpu = build(name, "--device", "cpu", "--steps", "5").twin
    cuda = build(name, "--device", "cuda", "--steps", "5").twin
    tol = TOLERANCES["float64"]
    for step in range(1, 6):
        on_cpu, on_cuda = cpu.step(step), cuda.step(step)
        assert all(isinstance(term.value, np.ndarray) for term in on_cuda)  # back on the host
        divergence = harness.first_divergence(step, on_cpu, harness.compare_traces(on_cpu, on_cuda, tol), tol)
        assert divergence is None, "cpu twin (as hand) vs cuda twin (as torch): " + divergence.message()


@needs_cuda
@pytest.mark.parametrize("tf32", [False, True])
def test_a_cuda_step_runs_with_the_run_s_tf32_choice_and_restores_the_flags(tf32, tf32_flags) -> None:
    options = ["--dtype", "float32", "--tf32"] if tf32 else []
    twin = build("alexnet-mini", "--device", "cuda", "--steps", "1", *options).twin
    seen = []
    twin.model[0].register_forward_hook(lambda *_: seen.append(flags()))
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = False, True  # torch's defaults
    trace = twin.step(1)
    assert seen == [(tf32, tf32)] and flags() == (False, True)
    assert all(isinstance(term.value, np.ndarray) for term in trace)
