"""handgrad's performance figures, each measured against its reference in the same run.

One benchmark per row: a small function registered with :func:`benchmark` that measures, and
returns a :class:`Row` (name, the measured figures, the ratio, the target). Rows print as they
finish, one line each, ending in PASS or FAIL. To add a row, write another function::

    @benchmark("lstm_step", "hand / torch step time, LSTM ..., float64")
    def lstm_step() -> Row:
        return step_ratio("lstm_step", "lstm", [...], 1.5, warmup=3, per_block=20, blocks=7)

(``step_ratio`` builds the scenario as the command line does and times ``hand.step`` against
``twin.step``; ``time_steps`` and ``time_commands`` are the lower-level timers; ``Row.of``
formats durations, ``Row(...)`` takes any figures, ``higher_is_better=True`` for rates.)

Usage: ``python scripts/bench.py`` (all rows), ``--only NAME`` (one row, may repeat), ``--list``,
``--repeats N`` (runs per command, default 3). The exit status is 1 when any row is over its
target (``--strict``, kept for old command lines, is now the default).

Timings are wall clock. A step ratio takes the fastest block of each side from blocks
interleaved in one run, and a command ratio the fastest of interleaved runs, so load that comes
and goes on a shared machine falls on both sides alike. OPENBLAS_CORETYPE and the thread counts
are printed in the header: they change the NumPy side's speed, so compare figures only under the
same header (run once more with ``OPENBLAS_CORETYPE=...`` set to report both).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from benchlib import (  # noqa: E402 (scripts/ is on the path when this runs as a script)
    BENCHMARKS,
    OPTIONS,
    Row,
    benchmark,
    steps_needed,
    time_commands,
    time_steps,
)


def build(scenario: str, argv: Sequence[str]):  # noqa: ANN201 (an Experiment)
    """A scenario's experiment, built as ``handgrad compare SCENARIO ARGV`` builds it."""
    from handgrad.cli import scenario_parser
    from handgrad.scenarios import SCENARIOS

    argv = [*argv, "--threads", str(OPTIONS.threads)]
    return SCENARIOS[scenario].build(scenario_parser(scenario).parse_args(argv))


def step_ratio(name: str, scenario: str, argv: Sequence[str], target: float, **timing: int) -> Row:
    """hand step / torch step (``HandNetwork.step`` / ``TwinNetwork.step``: every term emitted)."""
    experiment = build(scenario, [*argv, "--steps", str(steps_needed(**timing))])
    seconds = time_steps({"hand": experiment.hand.step, "torch": experiment.twin.step}, **timing)
    return Row.of(name, seconds, seconds["hand"] / seconds["torch"], target)


# --- the rows -------------------------------------------------------------------------------


@benchmark("xor_step", "hand / torch step time, xor 2-3-1 online (one row per step), float64")
def xor_step() -> Row:
    return step_ratio("xor_step", "xor", ["--mode", "online"], 0.5, warmup=20, per_block=25, blocks=40)


@benchmark("mlp_step", "hand / torch step time, MLP 784-256-10, minibatch 64, float64")
def mlp_step() -> Row:
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(128, 784))
    y = rng.uniform(0.1, 0.9, size=(128, 10))
    header = ",".join([f"x{i}" for i in range(784)] + [f"y{i}" for i in range(10)])
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "mlp.csv"
        np.savetxt(data, np.hstack([x, y]), delimiter=",", header=header, comments="", fmt="%.17g")
        argv = ["--sizes", "784,256,10", "--data", str(data), "--mode", "minibatch", "--batch-size", "64"]
        return step_ratio("mlp_step", "mlp", [*argv, "--lr", "0.01"], 1.0, warmup=3, per_block=1, blocks=40)


# torch alone training xor as `compare xor` does (2-3-1 sigmoid, squared error, online SGD, 1,000
# steps, float64, one thread): what any lock-step against torch must spend besides its own work.
# The SGD update is written out (p ← p − η·∂L/∂p, torch.optim.SGD's arithmetic): constructing a
# torch.optim optimizer imports torch._dynamo (~1.5 s), which handgrad avoids (twin/eager.py)
PLAIN_TORCH_XOR = """
import numpy, torch
torch.set_num_threads(1)
torch.manual_seed(0)
model = torch.nn.Sequential(
    torch.nn.Linear(2, 3), torch.nn.Sigmoid(), torch.nn.Linear(3, 1), torch.nn.Sigmoid()
).double()
x = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
y = torch.tensor([[0.0], [1.0], [1.0], [0.0]], dtype=torch.float64)
params = list(model.parameters())
loss_module = torch.nn.MSELoss()
for step in range(1000):
    row = step % 4
    for p in params:
        p.grad = None
    loss_module(model(x[row : row + 1]), y[row : row + 1]).backward()
    with torch.no_grad():
        for p in params:
            p.add_(p.grad, alpha=-0.5)
"""


@benchmark("compare_xor", "`handgrad compare xor --steps 1000` / `python -c 'import numpy, torch'`, wall")
def compare_xor() -> Row:
    """Also timed, not in the ratio: ``torch_only``, the same 1,000 xor steps trained by torch
    alone after the same imports (:data:`PLAIN_TORCH_XOR`), the floor of any lock-step run."""
    seconds = time_commands(
        {
            "compare": [sys.executable, "-m", "handgrad", "compare", "xor", "--steps", "1000", "--quiet"],
            "floor": [sys.executable, "-c", "import numpy, torch"],
            "torch_only": [sys.executable, "-c", PLAIN_TORCH_XOR],
        },
        repeats=OPTIONS.repeats,
    )
    figures = Row.of("compare_xor", seconds, 0.0, 0.0).figures
    figures += f"  torch_only/floor {seconds['torch_only'] / seconds['floor']:.2f}"
    return Row("compare_xor", figures, seconds["compare"] / seconds["floor"], 1.3)


@benchmark("conv_step", "hand / torch step time, Conv2d 3→16 3×3 pad 1 on 8×3×32×32, fwd+bwd, float64")
def conv_step() -> Row:
    """A network of the conv alone (Conv2d(3, 16, 3, padding=1) → Flatten, mse, plain SGD, the
    whole batch every step): ``HandNetwork.step`` / ``TwinNetwork.step``, every term emitted."""
    from handgrad.contract.conv_layers import Conv2d, Flatten
    from handgrad.contract.spec import Data, Network, Schedule
    from handgrad.contract.training import Loss, Optimizer
    from handgrad.scenarios.stack import stack_experiment

    timing = {"warmup": 3, "per_block": 10, "blocks": 7}
    rng = np.random.default_rng(0)
    network = Network((Conv2d(3, 16, 3, padding=1), Flatten()), (3, 32, 32))
    data = Data(rng.standard_normal((8, 3, 32, 32)), rng.standard_normal((8, 16 * 32 * 32)))
    experiment = stack_experiment(
        "conv", network, Loss("mse"), Optimizer("sgd", 0.01), data, Schedule("batch"),
        steps=steps_needed(**timing), seed=0,
    )  # fmt: skip
    seconds = time_steps({"hand": experiment.hand.step, "torch": experiment.twin.step}, **timing)
    return Row.of("conv_step", seconds, seconds["hand"] / seconds["torch"], 1.0)


@benchmark("lstm_step", "hand / torch step time, LSTM input 32, hidden 64, length 50, batch 16, float64")
def lstm_step() -> Row:
    """One LSTM layer and a many-to-one Dense head, mse, plain SGD, the whole batch every step:
    ``HandRecurrent.step`` / ``TwinRecurrent.step``, every term emitted (the twin's step includes
    its torch-ops reference for the gate terms and the check against the fused ``nn.LSTM``)."""
    from handgrad.contract.recurrent import RecurrentModel, SequenceData
    from handgrad.contract.spec import Schedule
    from handgrad.contract.training import Loss, Optimizer
    from handgrad.scenarios.recurrent import recurrent_experiment

    timing = {"warmup": 2, "per_block": 5, "blocks": 5}
    rng = np.random.default_rng(0)
    n, t, i, h = 16, 50, 32, 64
    model = RecurrentModel("lstm", i, h, 1, 1, "many-to-one", "sigmoid", batch_first=True)
    x, y = rng.standard_normal((n, t, i)), rng.uniform(0.1, 0.9, (n, 1))
    data = SequenceData(x, y, np.full(n, t), packed=False)
    experiment = recurrent_experiment(
        "lstm", model, Loss("mse"), Optimizer("sgd", 0.1), data, Schedule("batch"),
        steps=steps_needed(**timing), seed=0,
    )  # fmt: skip
    seconds = time_steps({"hand": experiment.hand.step, "torch": experiment.twin.step}, **timing)
    return Row.of("lstm_step", seconds, seconds["hand"] / seconds["torch"], 1.0)


@benchmark(
    "transformer_step",
    "hand / torch step time, one pre-LN transformer block (E 16, 2 heads, context 8), AdamW, float64",
)
def transformer_step() -> Row:
    """The transformer scenario at its defaults: token and position embeddings, one pre-LN block
    (LayerNorm, nn.MultiheadAttention with a causal mask, LayerNorm, GELU MLP, residuals), a
    LayerNorm and the Linear head, cross-entropy, AdamW: ``HandTransformer.step`` /
    ``TwinTransformer.step``, every term emitted (the attention weights of every head included)."""
    return step_ratio(
        "transformer_step", "transformer", ["--layers", "1"], 1.5, warmup=2, per_block=5, blocks=7
    )


# --- lock-step overhead: the whole comparison against a plain torch training step ----------------


def plain_torch_step(model, loss_module, optimizer_spec, x, y) -> Callable[[int], object]:  # noqa: ANN001
    """A plain torch training step of ``model`` (a copy: the run's twin is left alone): forward,
    loss, backward, optimizer step; no hooks, no retain_grad, nothing read back."""
    from handgrad.twin import optim

    optimizer = optim.build(optimizer_spec, list(model.parameters()))

    def step(_: int) -> object:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_module(model(x), y)
        loss.backward()
        optimizer.step()
        return loss

    return step


def lockstep_ratio(name: str, experiment, plain: Callable[[int], object], per_block: int, blocks: int) -> Row:  # noqa: ANN001
    """Seconds per step of :func:`handgrad.harness.run` (hand + twin + compare + term stats, its
    own clock: ``Report.seconds`` covers the step loop only) / a plain torch step; blocks of the
    two alternate, the fastest block of each counts. The figures also show where the fastest
    lock-step block spent its time: the hand step, the twin step (torch with every term captured)
    and the comparison (``compare_traces``), each per step."""
    import dataclasses

    from handgrad.harness import lockstep, run

    block = dataclasses.replace(experiment, steps=per_block)
    run(dataclasses.replace(experiment, steps=2))  # warm-up
    for k in range(2):
        plain(k)
    spent = dict.fromkeys(("hand", "twin", "compare"), 0.0)
    timed = {
        "hand": experiment.hand.step,
        "twin": experiment.twin.step,
        "compare": lockstep.compare_traces,
    }

    def timer(part: str) -> Callable[..., object]:
        call = timed[part]

        def measured(*args: object, **kwargs: object) -> object:
            start = time.perf_counter()
            try:
                return call(*args, **kwargs)
            finally:
                spent[part] += time.perf_counter() - start

        return measured

    # instance attributes shadow the sides' methods; the harness looks compare_traces up in its module
    experiment.hand.step, experiment.twin.step = timer("hand"), timer("twin")
    lockstep.compare_traces = timer("compare")
    best = {"lockstep": math.inf, "torch": math.inf}
    parts: dict[str, float] = {}
    try:
        for _ in range(blocks):
            spent.update(dict.fromkeys(spent, 0.0))
            report = run(block)
            per_step = report.seconds / report.steps_run
            if per_step < best["lockstep"]:
                best["lockstep"] = per_step
                parts = {part: seconds / report.steps_run for part, seconds in spent.items()}
            start = time.perf_counter()
            for k in range(per_block):
                plain(k)
            best["torch"] = min(best["torch"], (time.perf_counter() - start) / per_block)
    finally:
        del experiment.hand.step, experiment.twin.step
        lockstep.compare_traces = timed["compare"]
    return Row.of(name, {**best, **parts}, best["lockstep"] / best["torch"], LOCKSTEP_TARGET)


LOCKSTEP_TARGET = 2.0  # issue 19: the check costs at most twice the training it checks


def network_lockstep(name: str, experiment, per_block: int, blocks: int) -> Row:  # noqa: ANN001
    import copy

    twin = experiment.twin
    rows = __import__("torch").as_tensor(twin.batches[0])
    plain = plain_torch_step(
        copy.deepcopy(twin.model), twin.loss_module, twin.optimizer_spec, twin.x[rows], twin.y[rows]
    )
    return lockstep_ratio(name, experiment, plain, per_block, blocks)


@benchmark("xor_lockstep", "lock-step run per step (hand+twin+compare+trace) / plain torch step, xor online")
def xor_lockstep() -> Row:
    experiment = build("xor", ["--mode", "online", "--steps", "400"])
    return network_lockstep("xor_lockstep", experiment, per_block=200, blocks=5)


@benchmark("mlp_lockstep", "lock-step run per step / plain torch step, MLP 784-256-10, minibatch 64")
def mlp_lockstep() -> Row:
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(128, 784))
    y = rng.uniform(0.1, 0.9, size=(128, 10))
    header = ",".join([f"x{i}" for i in range(784)] + [f"y{i}" for i in range(10)])
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "mlp.csv"
        np.savetxt(data, np.hstack([x, y]), delimiter=",", header=header, comments="", fmt="%.17g")
        argv = ["--sizes", "784,256,10", "--data", str(data), "--mode", "minibatch", "--batch-size", "64"]
        experiment = build("mlp", [*argv, "--lr", "0.01", "--steps", "40"])
        return network_lockstep("mlp_lockstep", experiment, per_block=10, blocks=5)


@benchmark("conv_lockstep", "lock-step run per step / plain torch step, Conv2d 3→16 3×3 on 8×3×32×32")
def conv_lockstep() -> Row:
    from handgrad.contract.conv_layers import Conv2d, Flatten
    from handgrad.contract.spec import Data, Network, Schedule
    from handgrad.contract.training import Loss, Optimizer
    from handgrad.scenarios.stack import stack_experiment

    rng = np.random.default_rng(0)
    network = Network((Conv2d(3, 16, 3, padding=1), Flatten()), (3, 32, 32))
    data = Data(rng.standard_normal((8, 3, 32, 32)), rng.standard_normal((8, 16 * 32 * 32)))
    experiment = stack_experiment(
        "conv", network, Loss("mse"), Optimizer("sgd", 0.01), data, Schedule("batch"), steps=10, seed=0
    )
    return network_lockstep("conv_lockstep", experiment, per_block=5, blocks=5)


@benchmark("lstm_lockstep", "lock-step run per step / plain torch step, LSTM 32→64, length 50, batch 16")
def lstm_lockstep() -> Row:
    import copy

    import torch

    from handgrad.contract.recurrent import RecurrentModel, SequenceData
    from handgrad.contract.spec import Schedule
    from handgrad.contract.training import Loss, Optimizer
    from handgrad.scenarios.recurrent import recurrent_experiment

    rng = np.random.default_rng(0)
    n, t, i, h = 16, 50, 32, 64
    model = RecurrentModel("lstm", i, h, 1, 1, "many-to-one", "sigmoid", batch_first=True)
    x, y = rng.standard_normal((n, t, i)), rng.uniform(0.1, 0.9, (n, 1))
    data = SequenceData(x, y, np.full(n, t), packed=False)
    experiment = recurrent_experiment(
        "lstm", model, Loss("mse"), Optimizer("sgd", 0.1), data, Schedule("batch"), steps=10, seed=0
    )
    twin = experiment.twin
    net = copy.deepcopy(twin.net)

    def forward(inputs: torch.Tensor) -> torch.Tensor:
        _, (h_n, _) = net.rnn(inputs)
        return net.activation(net.head(h_n[-1]))

    forward.parameters = net.parameters  # type: ignore[attr-defined]
    tx = torch.as_tensor(x, dtype=twin.dtype)
    plain = plain_torch_step(
        forward, twin.loss_module, twin.optimizer_spec, tx, torch.as_tensor(y, dtype=twin.dtype)
    )
    return lockstep_ratio("lstm_lockstep", experiment, plain, per_block=5, blocks=5)


# --- workbook writing -----------------------------------------------------------------------------


@benchmark(
    "xlsx_cells", "cells/s of the project's writer (SheetData + save) / a bare openpyxl write-only loop"
)
def xlsx_cells() -> Row:
    """The same 20,000 rows × 10 float cells, each written to a file: the project's streamed writer
    (``workbook.xlsx``: ``SheetData.add_cells`` then ``save``) against openpyxl's write-only
    ``append`` loop, the floor. Rates are cells per second, the fastest of 3 interleaved runs."""
    from openpyxl import Workbook

    from handgrad.workbook.package import save
    from handgrad.workbook.xlsx import SheetData

    rows, cols = 20_000, 10
    values = np.random.default_rng(0).standard_normal((rows, cols)).tolist()

    def project(path: Path) -> None:
        book = Workbook(write_only=True)
        sheet = book.create_sheet("Trace")
        data = SheetData()
        try:
            for r, row in enumerate(values, start=1):
                data.add_cells(r, {c: (v, 0, False) for c, v in enumerate(row, start=1)})
            save(book, path, {sheet: data})
        finally:
            data.close()

    def floor(path: Path) -> None:
        book = Workbook(write_only=True)
        sheet = book.create_sheet("Trace")
        for row in values:
            sheet.append(row)
        book.save(path)

    best = {"project": math.inf, "floor": math.inf}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(3):
            for label, write in (("project", project), ("floor", floor)):
                start = time.perf_counter()
                write(Path(folder) / f"{label}.xlsx")
                best[label] = min(best[label], time.perf_counter() - start)
    rate = {label: rows * cols / seconds for label, seconds in best.items()}
    figures = f"project {rate['project']:,.0f}/s  floor {rate['floor']:,.0f}/s"
    return Row("xlsx_cells", figures, rate["project"] / rate["floor"], 0.7, higher_is_better=True)


@benchmark("xor_xlsx", "`handgrad compare xor --steps 1000 --xlsx F` / the same run without --xlsx, wall")
def xor_xlsx() -> Row:
    base = [sys.executable, "-m", "handgrad", "compare", "xor", "--steps", "1000", "--quiet"]
    with tempfile.TemporaryDirectory() as folder:
        seconds = time_commands(
            {"xlsx": [*base, "--xlsx", str(Path(folder) / "xor.xlsx")], "plain": base},
            repeats=OPTIONS.repeats,
        )
    return Row.of("xor_xlsx", seconds, seconds["xlsx"] / seconds["plain"], 1.5)


@benchmark("compare_all", "`handgrad compare all`, wall seconds (target ≤ 8 s)")
def compare_all() -> Row:
    seconds = time_commands({"all": [sys.executable, "-m", "handgrad", "compare", "all"]}, repeats=1)
    return Row.of("compare_all", seconds, seconds["all"], 8.0)


@benchmark("compare_all_j2", "`handgrad compare all --jobs 2`, wall seconds (target ≤ 8 s)")
def compare_all_jobs() -> Row:
    command = [sys.executable, "-m", "handgrad", "compare", "all", "--jobs", "2"]
    seconds = time_commands({"all": command}, repeats=1)
    return Row.of("compare_all_j2", seconds, seconds["all"], 8.0)


# --- the workbook's own cells ---------------------------------------------------------------


def workbook_cells_of(path: Path) -> dict[str, dict[tuple[int, int], object]]:
    """Every cell of every sheet of a written workbook: a number, a text or a formula ("=...")."""
    from openpyxl import load_workbook

    book = load_workbook(path, read_only=True)
    sheets = {}
    for sheet in book.worksheets:
        cells: dict[tuple[int, int], object] = {}
        for row in sheet.iter_rows():
            for cell in row:
                value = getattr(cell, "value", None)
                if value is None:
                    continue
                text = getattr(value, "text", None)  # an array formula: its text
                cells[(cell.row, cell.column)] = text if text is not None else value
        sheets[sheet.title] = cells
    book.close()
    return sheets


@benchmark(
    "workbook_cells",
    "cells/s writing xor's default workbook's cells (Grid, write_grid, save) / a bare openpyxl "
    "write-only loop of the same cells",
)
def workbook_cells() -> Row:
    """The numbers, texts and formulas of ``compare xor --xlsx`` (every sheet, Trace included),
    read back once, then written two ways: the project's writer (a :class:`Grid` per sheet,
    ``write_grid``, ``Book.save``: streamed rows, shared strings, references left out) against
    openpyxl's write-only ``append`` of the same rows, the floor. Styles are left out of both.
    Rates are cells per second, the fastest of ``--repeats`` interleaved runs."""
    from openpyxl import Workbook

    from handgrad import cli
    from handgrad.workbook.grid import Grid
    from handgrad.workbook.writer import Book, write_grid

    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "xor.xlsx"
        with contextlib.redirect_stdout(io.StringIO()):
            status = cli.main(["compare", "xor", "--quiet", "--xlsx", str(source)])
        if status != cli.EXIT_OK:
            raise RuntimeError("compare xor --xlsx failed")
        sheets = workbook_cells_of(source)
    count = sum(len(cells) for cells in sheets.values())

    def project(path: Path) -> None:
        titles = list(sheets)
        book = Book(titles[0])
        try:
            for number, title in enumerate(titles):
                grid = Grid(title)
                for (row, col), value in sheets[title].items():
                    if isinstance(value, str) and not value.startswith("="):
                        grid.text(row, col, value)
                    else:
                        grid.set(row, col, value)
                write_grid(book, grid, book.first if number == 0 else None)
            book.save(path)
        finally:
            book.close()

    lines = {}  # the floor's rows, laid out beforehand (the floor is only the writing)
    for title, cells in sheets.items():
        by_row: dict[int, dict[int, object]] = {}
        for (row, col), value in cells.items():
            by_row.setdefault(row, {})[col] = value
        last = max(by_row, default=0)
        lines[title] = [
            [by_row[r].get(c) for c in range(1, max(by_row[r]) + 1)] if r in by_row else []
            for r in range(1, last + 1)
        ]

    def floor(path: Path) -> None:
        book = Workbook(write_only=True)
        for title, rows in lines.items():
            sheet = book.create_sheet(title)
            for row in rows:
                sheet.append(row)
        book.save(path)

    best = {"project": math.inf, "floor": math.inf}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(OPTIONS.repeats):
            for label, write in (("project", project), ("floor", floor)):
                start = time.perf_counter()
                write(Path(folder) / f"{label}.xlsx")
                best[label] = min(best[label], time.perf_counter() - start)
    rate = {label: count / seconds for label, seconds in best.items()}
    figures = f"{count:,} cells: project {rate['project']:,.0f}/s  floor {rate['floor']:,.0f}/s"
    return Row("workbook_cells", figures, rate["project"] / rate["floor"], 0.7, higher_is_better=True)


# the workbook at every scenario's defaults: size, --xlsx / plain, LibreOffice's open (wb_* rows)
import bench_workbooks  # noqa: E402, F401 (registers its rows here, after the rows above)

# --- the command line -----------------------------------------------------------------------


def header() -> str:
    import torch

    blas = "not found" if OPTIONS.blas_threads is None else OPTIONS.blas_threads
    threads = f"torch threads {torch.get_num_threads()}, numpy OpenBLAS threads {blas}, cpus {os.cpu_count()}"
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
    parser.add_argument(  # kept for old command lines: the exit code always reflects the rows
        "--strict", action="store_true", help="(default) exit 1 when a row is over its target"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs of each command in command rows (default 3)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch's intra-op threads for every torch side measured in this process, the twin's and the "
        "plain torch step's alike (default 1, handgrad's default --threads; command rows run the default)",
    )
    parser.add_argument(
        "--blas-threads",
        type=int,
        help="threads of NumPy's OpenBLAS for the hand side measured in this process (default: --threads, "
        "the same as torch's: OpenBLAS's own default, a thread per CPU, spins on a busy machine)",
    )
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    OPTIONS.threads = args.threads
    from handgrad.harness.allocator import keep_freed_memory

    keep_freed_memory()  # as the command line does for its process (both sides of every row alike)
    import torch

    torch.set_num_threads(args.threads)
    from handgrad.harness.concurrent import set_blas_threads

    blas = args.threads if args.blas_threads is None else args.blas_threads
    if blas < 1:
        parser.error("--blas-threads must be at least 1")
    OPTIONS.blas_threads = blas if set_blas_threads(blas) is not None else None
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
