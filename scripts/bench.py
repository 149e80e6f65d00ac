"""handgrad's performance figures, each measured against its reference in the same run.

One benchmark per row: a small function registered with :func:`benchmark` that measures, and
returns a :class:`Row` (name, the measured figures, the ratio, the target). Rows print as they
finish, one line each, ending in PASS or FAIL (the exit status is 1 when any row FAILs or
errors). To add a row, write another function::

    @benchmark("lstm_step", "hand / torch step time, LSTM ..., float64")
    def lstm_step() -> Row:
        return step_ratio("lstm_step", "lstm", [...], 1.5, warmup=3, per_block=20, blocks=7)

(``step_ratio`` builds the scenario as the command line does and times ``hand.step`` against
``twin.step``; ``time_steps`` and ``time_commands`` are the lower-level timers; ``Row.of``
formats durations, ``Row(...)`` takes any figures, ``higher_is_better=True`` for rates.)

Usage: ``python scripts/bench.py`` (all rows), ``--only NAME`` (one row, may repeat), ``--list``,
``--repeats N`` (runs per command, default 3).

Timings are wall clock. A step ratio takes the fastest block of each side from blocks
interleaved in one run, and a command ratio the fastest of interleaved runs, so load that comes
and goes on a shared machine falls on both sides alike. OPENBLAS_CORETYPE and the thread counts
are printed in the header: they change the NumPy side's speed, so compare figures only under the
same header (run once more with ``OPENBLAS_CORETYPE=...`` set to report both).
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("handgrad") is None:  # a checkout without `pip install -e`
    sys.path.insert(0, str(ROOT / "reference"))


@dataclass(frozen=True)
class Row:
    """One line of output. ``ratio`` passes when ≤ ``target`` (or ≥ with ``higher_is_better``)."""

    name: str
    figures: str
    ratio: float
    target: float
    higher_is_better: bool = False

    @classmethod
    def of(cls, name: str, seconds: dict[str, float], ratio: float, target: float) -> Row:
        """A row whose figures are durations, printed in a readable unit."""
        figures = "  ".join(f"{label} {_duration(value)}" for label, value in seconds.items())
        return cls(name, figures, ratio, target)

    @property
    def passed(self) -> bool:
        if not math.isfinite(self.ratio):
            return False
        return self.ratio >= self.target if self.higher_is_better else self.ratio <= self.target

    def line(self) -> str:
        sign = "≥" if self.higher_is_better else "≤"
        verdict = "PASS" if self.passed else "FAIL"
        return (
            f"{self.name:<14} {self.figures:<42} ratio {self.ratio:6.3f}  target {sign} "
            f"{self.target:<5g} {verdict}"
        )


@dataclass(frozen=True)
class Benchmark:
    name: str
    summary: str
    run: Callable[[], Row]


BENCHMARKS: dict[str, Benchmark] = {}


@dataclass
class Options:
    repeats: int = 3  # runs of each command in a command row (the fastest counts)


OPTIONS = Options()


def benchmark(name: str, summary: str) -> Callable[[Callable[[], Row]], Callable[[], Row]]:
    """Register a row; rows run in the order they are registered."""

    def register(function: Callable[[], Row]) -> Callable[[], Row]:
        if name in BENCHMARKS:
            raise ValueError(f"benchmark {name!r} registered twice")
        BENCHMARKS[name] = Benchmark(name, summary, function)
        return function

    return register


def _duration(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.0f} µs"


# --- measuring ------------------------------------------------------------------------------


def time_steps(
    sides: dict[str, Callable[[int], object]], *, warmup: int, per_block: int, blocks: int
) -> dict[str, float]:
    """Seconds per call of each side, the fastest of ``blocks`` blocks of ``per_block`` calls.

    Each side is called with step numbers 1, 2, 3, ... (its own count, the same for every side);
    blocks of the sides alternate, so each side sees the same machine.
    """
    step = 1
    for _ in range(warmup):
        for call in sides.values():
            call(step)
        step += 1
    best = dict.fromkeys(sides, math.inf)
    for _ in range(blocks):
        for label, call in sides.items():
            start = time.perf_counter()
            for k in range(step, step + per_block):
                call(k)
            best[label] = min(best[label], (time.perf_counter() - start) / per_block)
        step += per_block
    return best


def steps_needed(*, warmup: int, per_block: int, blocks: int) -> int:
    return warmup + per_block * blocks + 1


def time_commands(commands: dict[str, Sequence[str]], *, repeats: int) -> dict[str, float]:
    """Wall seconds of each command (fastest of ``repeats``, the commands interleaved)."""
    import handgrad

    env = dict(os.environ)  # the subprocess imports the same handgrad as this process
    source = str(Path(handgrad.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [source, env.get("PYTHONPATH")]))
    best = dict.fromkeys(commands, math.inf)
    for _ in range(repeats):
        for label, command in commands.items():
            start = time.perf_counter()
            completed = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
            elapsed = time.perf_counter() - start
            if completed.returncode != 0:
                raise RuntimeError(
                    f"{label}: {' '.join(command)} exited {completed.returncode}\n{completed.stderr}"
                )
            best[label] = min(best[label], elapsed)
    return best


def build(scenario: str, argv: Sequence[str]):  # noqa: ANN201 (an Experiment)
    """A scenario's experiment, built as ``handgrad compare SCENARIO ARGV`` builds it."""
    from handgrad.cli import scenario_parser
    from handgrad.scenarios import SCENARIOS

    return SCENARIOS[scenario].build(scenario_parser(scenario).parse_args(list(argv)))


def step_ratio(name: str, scenario: str, argv: Sequence[str], target: float, **timing: int) -> Row:
    """hand step / torch step (``HandNetwork.step`` / ``TwinNetwork.step``: every term emitted)."""
    experiment = build(scenario, [*argv, "--steps", str(steps_needed(**timing))])
    seconds = time_steps({"hand": experiment.hand.step, "torch": experiment.twin.step}, **timing)
    return Row.of(name, seconds, seconds["hand"] / seconds["torch"], target)


# --- the rows -------------------------------------------------------------------------------


@benchmark("xor_step", "hand / torch step time, xor 2-3-1 online (one row per step), float64")
def xor_step() -> Row:
    return step_ratio("xor_step", "xor", ["--mode", "online"], 0.5, warmup=20, per_block=25, blocks=40)


def mlp_argv(folder: str) -> list[str]:
    """The MLP rows' options: 784-256-10 on 128 seeded rows, minibatch 64, lr 0.01 (data in ``folder``)."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(128, 784))
    y = rng.uniform(0.1, 0.9, size=(128, 10))
    header = ",".join([f"x{i}" for i in range(784)] + [f"y{i}" for i in range(10)])
    data = Path(folder) / "mlp.csv"
    np.savetxt(data, np.hstack([x, y]), delimiter=",", header=header, comments="", fmt="%.17g")
    return [
        "--sizes",
        "784,256,10",
        "--data",
        str(data),
        "--mode",
        "minibatch",
        "--batch-size",
        "64",
        "--lr",
        "0.01",
    ]


@benchmark("mlp_step", "hand / torch step time, MLP 784-256-10, minibatch 64, float64")
def mlp_step() -> Row:
    with tempfile.TemporaryDirectory() as folder:
        return step_ratio("mlp_step", "mlp", mlp_argv(folder), 1.0, warmup=3, per_block=1, blocks=40)


@benchmark("compare_xor", "`handgrad compare xor --steps 1000` / `python -c 'import numpy, torch'`, wall")
def compare_xor() -> Row:
    seconds = time_commands(
        {
            "compare": [sys.executable, "-m", "handgrad", "compare", "xor", "--steps", "1000", "--quiet"],
            "floor": [sys.executable, "-c", "import numpy, torch"],
        },
        repeats=OPTIONS.repeats,
    )
    return Row.of("compare_xor", seconds, seconds["compare"] / seconds["floor"], 1.3)


def conv_experiment(steps: int):  # noqa: ANN201 (an Experiment)
    """A network of the conv alone (Conv2d(3, 16, 3, padding=1) → Flatten) on 8×3×32×32, mse,
    plain SGD, the whole batch every step."""
    from handgrad.scenarios.stack import stack_experiment
    from handgrad.spec import Conv2d, Data, Flatten, Loss, Network, Optimizer, Schedule

    rng = np.random.default_rng(0)
    network = Network((Conv2d(3, 16, 3, padding=1), Flatten()), (3, 32, 32))
    data = Data(rng.standard_normal((8, 3, 32, 32)), rng.standard_normal((8, 16 * 32 * 32)))
    return stack_experiment(
        "conv", network, Loss("mse"), Optimizer("sgd", 0.01), data, Schedule("batch"), steps=steps, seed=0
    )


def lstm_experiment(steps: int):  # noqa: ANN201 (an Experiment)
    """One LSTM layer (input 32, hidden 64, length 50, batch 16) and a many-to-one Dense head,
    mse, plain SGD, the whole batch every step."""
    from handgrad.contract.recurrent import RecurrentModel, SequenceData
    from handgrad.scenarios.recurrent import recurrent_experiment
    from handgrad.spec import Loss, Optimizer, Schedule

    rng = np.random.default_rng(0)
    n, t, i, h = 16, 50, 32, 64
    model = RecurrentModel("lstm", i, h, 1, 1, "many-to-one", "sigmoid", batch_first=True)
    x, y = rng.standard_normal((n, t, i)), rng.uniform(0.1, 0.9, (n, 1))
    data = SequenceData(x, y, np.full(n, t), packed=False)
    return recurrent_experiment(
        "lstm", model, Loss("mse"), Optimizer("sgd", 0.1), data, Schedule("batch"), steps=steps, seed=0
    )


@benchmark("conv_step", "hand / torch step time, Conv2d 3→16 3×3 pad 1 on 8×3×32×32, fwd+bwd, float64")
def conv_step() -> Row:
    """``HandNetwork.step`` / ``TwinNetwork.step`` of :func:`conv_experiment`, every term emitted."""
    timing = {"warmup": 3, "per_block": 10, "blocks": 7}
    experiment = conv_experiment(steps_needed(**timing))
    seconds = time_steps({"hand": experiment.hand.step, "torch": experiment.twin.step}, **timing)
    return Row.of("conv_step", seconds, seconds["hand"] / seconds["torch"], 1.0)


@benchmark("lstm_step", "hand / torch step time, LSTM input 32, hidden 64, length 50, batch 16, float64")
def lstm_step() -> Row:
    """``HandRecurrent.step`` / ``TwinRecurrent.step`` of :func:`lstm_experiment`, every term
    emitted (the twin's step includes its torch-ops reference for the gate terms and the check
    against the fused ``nn.LSTM``)."""
    timing = {"warmup": 2, "per_block": 5, "blocks": 5}
    experiment = lstm_experiment(steps_needed(**timing))
    seconds = time_steps({"hand": experiment.hand.step, "torch": experiment.twin.step}, **timing)
    return Row.of("lstm_step", seconds, seconds["hand"] / seconds["torch"], 1.0)


# --- lock-step overhead: the whole comparison against a plain torch training step ---------------


def plain_network_step(twin) -> Callable[[int], object]:  # noqa: ANN001 (a TwinNetwork)
    """A plain torch training step of the twin's own ``nn.Sequential``, loss and optimizer: forward,
    backward, ``optimizer.step()``; no retain_grad, no trace, no copy to NumPy."""
    import torch

    model, loss, optimizer, x, y = twin.model, twin.loss_module, twin.optimizer, twin.x, twin.y
    rows = [torch.as_tensor(batch) for batch in twin.batches]

    def step(k: int) -> object:
        optimizer.zero_grad()
        batch = rows[k - 1]
        loss(model(x[batch]), y[batch]).backward()
        optimizer.step()
        return None

    return step


def plain_lstm_step(twin) -> Callable[[int], object]:  # noqa: ANN001 (a TwinRecurrent, many-to-one)
    """A plain torch training step of the twin's ``nn.LSTM`` + ``nn.Linear`` head, loss, optimizer."""
    import torch

    net, loss, optimizer = twin.net, twin.loss_module, twin.optimizer
    x = torch.as_tensor(twin.data.x, dtype=twin.dtype)
    y = torch.as_tensor(twin.data.y, dtype=twin.dtype)
    rows = [torch.as_tensor(batch) for batch in twin.batches]

    def step(k: int) -> object:
        optimizer.zero_grad()
        batch = rows[k - 1]
        _, (h_n, _) = net.rnn(x[batch])
        loss(net.activation(net.head(h_n[-1])), y[batch]).backward()
        optimizer.step()
        return None

    return step


def lockstep_ratio(
    name: str, make: Callable[[int], object], plain: Callable[[object], Callable[[int], object]], steps: int
) -> Row:
    """Seconds per step of ``harness.run`` (hand + twin + compare + trace, every term) over a
    plain torch step of the same model; each side on a fresh experiment of ``steps`` steps, the
    fastest of ``OPTIONS.repeats`` interleaved runs."""
    from handgrad import harness

    best = {"lock-step": math.inf, "torch": math.inf}
    for _ in range(OPTIONS.repeats):
        experiment = make(steps)
        start = time.perf_counter()
        report = harness.run(experiment)
        best["lock-step"] = min(best["lock-step"], (time.perf_counter() - start) / steps)
        if report.steps_run != steps:
            raise RuntimeError(f"{name}: the run stopped at step {report.steps_run}: {report.stopped}")
        step = plain(make(steps).twin)
        step(1)  # warm-up, as the run's first step
        start = time.perf_counter()
        for k in range(1, steps + 1):
            step(k)
        best["torch"] = min(best["torch"], (time.perf_counter() - start) / steps)
    return Row.of(name, best, best["lock-step"] / best["torch"], 2.0)


@benchmark("xor_lockstep", "harness.run step / plain torch step, xor 2-3-1 online, 500 steps")
def xor_lockstep() -> Row:
    return lockstep_ratio(
        "xor_lockstep", lambda n: build("xor", ["--steps", str(n)]), plain_network_step, 500
    )


@benchmark("mlp_lockstep", "harness.run step / plain torch step, MLP 784-256-10 minibatch 64, 40 steps")
def mlp_lockstep() -> Row:
    with tempfile.TemporaryDirectory() as folder:
        argv = mlp_argv(folder)
        return lockstep_ratio(
            "mlp_lockstep", lambda n: build("mlp", [*argv, "--steps", str(n)]), plain_network_step, 40
        )


@benchmark("lstm_lockstep", "harness.run step / plain torch step, the lstm_step model, 10 steps")
def lstm_lockstep() -> Row:
    return lockstep_ratio("lstm_lockstep", lstm_experiment, plain_lstm_step, 10)


@benchmark("conv_lockstep", "harness.run step / plain torch step, the conv_step model, 20 steps")
def conv_lockstep() -> Row:
    return lockstep_ratio("conv_lockstep", conv_experiment, plain_network_step, 20)


# --- end to end -------------------------------------------------------------------------------


@benchmark("compare_all", "`handgrad compare all` wall seconds (the ratio is the seconds)")
def compare_all() -> Row:
    seconds = time_commands(
        {"compare all": [sys.executable, "-m", "handgrad", "compare", "all"]}, repeats=OPTIONS.repeats
    )
    return Row.of("compare_all", seconds, seconds["compare all"], 8.0)


@benchmark("xor_xlsx", "`compare xor --steps 1000 --xlsx FILE` / the same run without --xlsx, wall")
def xor_xlsx() -> Row:
    with tempfile.TemporaryDirectory() as folder:
        run = [sys.executable, "-m", "handgrad", "compare", "xor", "--steps", "1000", "--quiet"]
        seconds = time_commands(
            {"xlsx": [*run, "--xlsx", str(Path(folder) / "xor.xlsx")], "plain": run},
            repeats=OPTIONS.repeats,
        )
    return Row.of("xor_xlsx", seconds, seconds["xlsx"] / seconds["plain"], 1.5)


# --- the command line -----------------------------------------------------------------------


def header() -> str:
    import torch

    threads = f"torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}"
    coretype = os.environ.get("OPENBLAS_CORETYPE") or "unset"
    openblas = os.environ.get("OPENBLAS_NUM_THREADS") or "unset"
    # With no .pyc written, every run compiles handgrad's sources again (≈0.1 s of the end-to-end
    # figure); `python -m compileall reference` once removes that.
    bytecode = "no .pyc written" if sys.dont_write_bytecode else ".pyc cached"
    load = f"load {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    return (
        f"# python {sys.version.split()[0]}, numpy {np.__version__}, torch {torch.__version__}; {threads}; "
        f"OPENBLAS_CORETYPE {coretype}, OPENBLAS_NUM_THREADS {openblas}; {bytecode}; {load}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="handgrad's performance figures, measured in one run")
    parser.add_argument("--only", action="append", metavar="NAME", help="run only this row (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the rows and exit")
    parser.add_argument(
        "--strict", action="store_true", help="kept for old scripts: bench always exits 1 on a FAIL"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs of each command in command rows (default 3)"
    )
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    OPTIONS.repeats = args.repeats
    if args.list:
        for bench in BENCHMARKS.values():
            print(f"{bench.name:<14} {bench.summary}")
        return 0
    unknown = [name for name in args.only or [] if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown row {', '.join(unknown)}; expected one of {', '.join(BENCHMARKS)}")
    chosen = [BENCHMARKS[name] for name in args.only] if args.only else list(BENCHMARKS.values())
    print(header(), flush=True)
    over = 0
    for bench in chosen:
        try:
            row = bench.run()
        except Exception as error:  # one broken row must not hide the others
            over += 1
            print(f"{bench.name:<14} error: {type(error).__name__}: {error}", flush=True)
            continue
        over += not row.passed
        print(row.line(), flush=True)
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
