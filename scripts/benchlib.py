"""The measuring kit of scripts/bench.py: a row of output, the registry of rows, and the timers
(steps of two sides interleaved in blocks, commands interleaved in repeats)."""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

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
    threads: int = 1  # torch's intra-op threads, the twin's and the plain torch step's
    blas_threads: int | None = None  # NumPy's OpenBLAS threads, the hand side's (None: not found)


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
