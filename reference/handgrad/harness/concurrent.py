"""The two sides of a step at the same time: the hand step in a worker thread, the twin's in the caller.

A step's two sides share nothing they write: each keeps its own parameters, optimizer state and
trace (``StepTrace.add`` copies every value), and they only read the data. So they can run at
once and every number is the one the sequential run gives. NumPy's BLAS calls and ufunc loops
over arrays of more than a few hundred elements, and torch's kernels, release the GIL, so a step
of a large model keeps both cores busy; a step of a tiny one (xor: a few µs per operation, most of
it Python) only trades the GIL back and forth, and costs a thread hand-off on top.

``sides`` (the keyword of :func:`handgrad.harness.run`):

* ``sequential``: hand, then twin, in the calling thread;
* ``concurrent``: hand in one worker thread while the twin runs in the caller, then join;
* ``auto`` (the default): sequential where it cannot help — one CPU available to the process
  (``os.sched_getaffinity``), a twin on cuda, or either side's step under
  :data:`MIN_SIDE_SECONDS` — and otherwise whichever of the two was faster, measured on the run's
  first steps: :data:`PROBE_STEPS` steps of each after a warm-up step. The verdict is kept for the
  same pair of sides (a run of the same experiment in blocks, as ``scripts/bench.py`` times it,
  probes once).

While the sides run at once the hand step has one OpenBLAS thread (:func:`set_blas_threads`):
one core each. An exception in either side surfaces with its own traceback once both sides have stopped (the
hand side's first, as the sequential order raises it), so nothing runs on behind the caller.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, TypeVar

import numpy as np

from handgrad.contract.trace import StepTrace


class Side(Protocol):
    """What running a side needs (a :class:`handgrad.harness.lockstep.Side` has it): step k."""

    def step(self, step: int) -> StepTrace: ...


SIDES = ("auto", "sequential", "concurrent")
# Below this a side's step is mostly Python, which one GIL serialises: nothing to overlap. A
# thread hand-off costs ~50 µs.
MIN_SIDE_SECONDS = 1e-3
PROBE_STEPS = 2  # steps timed each way before auto decides (after one warm-up step)

# hand side → (twin side, verdict): auto's measured choice for that pair of sides
_VERDICTS: weakref.WeakKeyDictionary[object, tuple[weakref.ref[object], str]] = weakref.WeakKeyDictionary()


# A comparison with fewer elements than this (both sides of every large term) runs in one thread:
# a hand-off costs ~50 µs, about what 2¹⁶ elements of the comparison take.
SPLIT_ELEMENTS = 1 << 16

Item = TypeVar("Item")
Result = TypeVar("Result")


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, not the machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def overlap_may_pay(hand_seconds: float, twin_seconds: float) -> bool:
    """Whether steps whose sides take these times are worth trying at the same time: the shorter
    side is what overlapping can save, and under :data:`MIN_SIDE_SECONDS` it is mostly Python."""
    return min(hand_seconds, twin_seconds) >= MIN_SIDE_SECONDS


def hand_step(hand: Side, step: int) -> StepTrace:
    """The hand side's step k, with NumPy's floating-point warnings off (errstate is per thread;
    non-finite values are the harness's finding, reported by the comparison)."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return hand.step(step)


class StepRunner:
    """Runs step k of both sides, one after the other or at the same time (module docstring)."""

    def __init__(self, hand: Side, twin: Side, sides: str = "auto", *, device: str = "cpu") -> None:
        if sides not in SIDES:
            raise ValueError(f"sides: expected one of {', '.join(SIDES)}, got {sides!r}")
        self.hand, self.twin = hand, twin
        self.mode = sides
        if sides == "auto":
            self.mode = self._remembered() or (
                "sequential" if device != "cpu" or available_cpus() < 2 else "auto"
            )
        self._pool: ThreadPoolExecutor | None = None
        self._blas_threads: int | None = None  # NumPy's BLAS threads before the first concurrent step
        self._probes: dict[str, list[float]] = {"sequential": [], "concurrent": []}
        self._warm = False

    def step(self, step: int) -> tuple[StepTrace, StepTrace]:
        """(hand trace, twin trace) of step ``step``."""
        if self.mode == "auto":
            return self._probe(step)
        if self.mode == "concurrent":
            return self._concurrent(step)
        return hand_step(self.hand, step), self.twin.step(step)

    def close(self) -> None:
        """Stop the worker thread and give NumPy's BLAS its threads back (no-ops where nothing
        was started)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._restore_blas_threads()

    def _restore_blas_threads(self) -> None:
        if self._blas_threads is not None:
            set_blas_threads(self._blas_threads)
            self._blas_threads = None

    def __enter__(self) -> StepRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _concurrent(self, step: int) -> tuple[StepTrace, StepTrace]:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="handgrad-hand")
        if self._blas_threads is None:
            # one core each: the twin's torch thread (--threads, default 1) and the hand step
            # with one BLAS thread. OpenBLAS's own second thread spins while it waits for work,
            # and on a core the twin needs that costs the hand's products several times over
            # (measured: see manual/harness.md, "Both sides at once"); the values are the same.
            self._blas_threads = set_blas_threads(1)
        hand = self._pool.submit(hand_step, self.hand, step)
        try:
            twin_trace = self.twin.step(step)
        except BaseException:
            hand_error = hand.exception()  # waits: the hand step ends before anything surfaces
            if hand_error is not None:
                raise hand_error from None
            raise
        return hand.result(), twin_trace

    def _probe(self, step: int) -> tuple[StepTrace, StepTrace]:
        """One step while auto has not decided: a warm-up step, then sequential steps timed side
        by side, then (where both sides are long enough to overlap) concurrent ones."""
        if not self._warm:
            self._warm = True
            return hand_step(self.hand, step), self.twin.step(step)
        sequential, concurrent = self._probes["sequential"], self._probes["concurrent"]
        start = time.perf_counter()
        if len(sequential) < PROBE_STEPS:
            hand_trace = hand_step(self.hand, step)
            middle = time.perf_counter()
            twin_trace = self.twin.step(step)
            end = time.perf_counter()
            sequential.append(end - start)
            if not overlap_may_pay(middle - start, end - middle):
                self._decide("sequential")
            return hand_trace, twin_trace
        traces = self._concurrent(step)
        concurrent.append(time.perf_counter() - start)
        if len(concurrent) == PROBE_STEPS:
            self._decide("concurrent" if min(concurrent) < min(sequential) else "sequential")
        return traces

    def _decide(self, mode: str) -> None:
        self.mode = mode
        if mode == "sequential":
            self._restore_blas_threads()
        try:
            _VERDICTS[self.hand] = (weakref.ref(self.twin), mode)
        except TypeError:  # a side that cannot be weakly referenced: each run probes afresh
            pass

    def _remembered(self) -> str | None:
        try:
            twin, mode = _VERDICTS[self.hand]
        except (KeyError, TypeError):  # TypeError: a side that cannot be weakly referenced
            return None
        return mode if twin() is self.twin else None


def split_map(
    function: Callable[[Item], Result], items: Sequence[Item], weights: Sequence[int]
) -> list[Result]:
    """``[function(item) for item in items]``; with two CPUs and at least :data:`SPLIT_ELEMENTS` of
    weight, the items in two runs of about equal weight, the first in a worker thread while the
    caller takes the second. ``function`` must touch nothing another call writes (the batches of
    :mod:`handgrad.harness.compare` each make their own arrays). An error is raised once both runs
    have stopped, the first run's first."""
    total = sum(weights)
    if len(items) < 2 or total < SPLIT_ELEMENTS or available_cpus() < 2:
        return [function(item) for item in items]
    cut, running = 1, weights[0]
    while cut < len(items) - 1 and 2 * (running + weights[cut]) <= total:
        running += weights[cut]
        cut += 1
    first = _worker().submit(lambda: [function(item) for item in items[:cut]])
    try:
        rest = [function(item) for item in items[cut:]]
    except BaseException:
        error = first.exception()  # waits
        if error is not None:
            raise error from None
        raise
    return first.result() + rest


def set_blas_threads(threads: int) -> int | None:
    """Set the thread count of the OpenBLAS that NumPy loaded; return the count before, or None
    (and change nothing) where NumPy's BLAS is not an OpenBLAS this can find. OpenBLAS splits a
    product's output among its threads, each element summed whole by one thread, so the count
    changes no value (tests/test_lockstep_sides.py compares every term of every scenario)."""
    api = _openblas()
    if api is None:
        return None
    get, put = api
    before = int(get())
    if before != threads:
        put(threads)
    return before


_OPENBLAS: list[tuple[Callable[[], int], Callable[[int], None]] | None] = []


def _openblas() -> tuple[Callable[[], int], Callable[[int], None]] | None:
    """(get, set) of the loaded OpenBLAS's thread count, looked up once: the library is found
    among the process's mapped files (Linux), its functions by the names OpenBLAS builds use."""
    if _OPENBLAS:
        return _OPENBLAS[0]
    found = None
    try:
        with open("/proc/self/maps") as maps:
            paths = sorted({line.split()[-1] for line in maps if "openblas" in line.lower() and "/" in line})
    except OSError:
        paths = []
    for path in paths:
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("scipy_openblas", "openblas"):
            for suffix in ("64_", ""):
                get = getattr(library, f"{prefix}_get_num_threads{suffix}", None)
                put = getattr(library, f"{prefix}_set_num_threads{suffix}", None)
                if get is not None and put is not None and found is None:
                    get.restype, put.argtypes, put.restype = ctypes.c_int, [ctypes.c_int], None
                    found = (get, put)
    _OPENBLAS.append(found)
    return found


_WORKERS: dict[int, ThreadPoolExecutor] = {}  # by process id: a forked child starts its own
_WORKERS_LOCK = threading.Lock()


def _worker() -> ThreadPoolExecutor:
    """This process's one worker thread for :func:`split_map`, started on first use."""
    pid = os.getpid()
    with _WORKERS_LOCK:
        if pid not in _WORKERS:
            _WORKERS.clear()  # a parent's executor: its thread is not in this process
            _WORKERS[pid] = ThreadPoolExecutor(max_workers=1, thread_name_prefix="handgrad-compare")
        return _WORKERS[pid]
