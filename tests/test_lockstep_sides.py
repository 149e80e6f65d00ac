"""The two sides of a step run one after the other or at the same time (harness/concurrent.py):
the same numbers either way, a side's error surfaces with its own traceback, and ``auto`` keeps
steps too small to overlap sequential."""

from __future__ import annotations

import threading
import traceback

import numpy as np
import pytest

from handgrad import harness
from handgrad.cli import scenario_parser
from handgrad.contract.trace import StepTrace
from handgrad.harness import concurrent
from handgrad.scenarios import SCENARIOS

CASES = {
    "xor": ["--steps", "30"],
    "deep": ["--steps", "4"],  # a dense stack
    "parity": ["--steps", "3"],  # a recurrent net
    "echo": ["--steps", "3"],
    "mlp": ["--steps", "6", "--order", "shuffle"],
    "alexnet-mini": ["--steps", "6"],  # shuffled minibatches, into the second epoch
    "xor-shuffled": ["--steps", "40", "--order", "shuffle"],
    "transformer": ["--steps", "2"],
    "makemore": ["--steps", "3"],
    "multitask": ["--steps", "3"],
    "xor-diverging": ["--steps", "200", "--lr", "1e4", "--activation", "relu"]
    + ["--output-activation", "identity"],
}


def recorded_run(case: str, sides: str) -> tuple[harness.Report, list[tuple[int, StepTrace, StepTrace]]]:
    scenario = case.split("-")[0] if case.startswith("xor") else case
    experiment = SCENARIOS[scenario].build(scenario_parser(scenario).parse_args(CASES[case]))
    steps: list[tuple[int, StepTrace, StepTrace]] = []

    def keep(step: int, hand: StepTrace, torch: StepTrace, checks: object) -> None:
        steps.append((step, hand, torch))

    report = harness.run(experiment, sides=sides, observers=[keep])
    return report, steps


def same_arrays(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k], equal_nan=True) for k in a)


@pytest.mark.parametrize("case", list(CASES))
def test_concurrent_sides_give_the_sequential_numbers_bit_for_bit(case: str) -> None:
    sequential, sequential_steps = recorded_run(case, "sequential")
    overlapped, overlapped_steps = recorded_run(case, "concurrent")
    assert len(sequential_steps) == len(overlapped_steps) == sequential.steps_run == overlapped.steps_run
    for (step, hand, torch), (step2, hand2, torch2) in zip(sequential_steps, overlapped_steps, strict=True):
        assert step == step2 and hand.names() == hand2.names() and torch.names() == torch2.names()
        for one, two in ((hand, hand2), (torch, torch2)):
            for term, other in zip(one, two, strict=True):
                assert np.array_equal(term.value, other.value, equal_nan=True), (step, term.name)
    assert sequential.terms == overlapped.terms  # every figure of every term, as floats
    assert sequential.first == overlapped.first and sequential.stopped == overlapped.stopped
    assert sequential.loss_history == overlapped.loss_history
    for side in ("hand", "torch"):
        assert same_arrays(sequential.final_params[side], overlapped.final_params[side])
    if case == "xor-diverging":
        assert sequential.stopped is not None  # the early stop is reached the same way


class FailingHand:
    """A hand side whose step raises at step ``at``; the twin side is a real one."""

    def __init__(self, hand: harness.Side, at: int) -> None:
        self.hand, self.at = hand, at

    def step(self, step: int) -> StepTrace:
        if step == self.at:
            raise_from_the_hand_side(step)
        return self.hand.step(step)

    def params(self) -> dict[str, np.ndarray]:
        return self.hand.params()

    def load_params(self, params: dict[str, np.ndarray]) -> None:
        self.hand.load_params(params)


def raise_from_the_hand_side(step: int) -> None:
    raise ZeroDivisionError(f"hand step {step}")


@pytest.mark.parametrize("sides", ["sequential", "concurrent", "auto"])
def test_an_error_in_the_hand_step_surfaces_with_its_traceback(sides: str) -> None:
    experiment = SCENARIOS["xor"].build(scenario_parser("xor").parse_args(["--steps", "5"]))
    experiment.hand = FailingHand(experiment.hand, at=3)
    with pytest.raises(ZeroDivisionError, match="hand step 3") as raised:
        harness.run(experiment, sides=sides)
    frames = [frame.name for frame in traceback.extract_tb(raised.value.__traceback__)]
    assert frames[-1] == "raise_from_the_hand_side" and "step" in frames


def test_an_error_in_the_twin_step_surfaces_once_the_hand_step_is_done() -> None:
    experiment = SCENARIOS["xor"].build(scenario_parser("xor").parse_args(["--steps", "5"]))
    twin_step, hand_step = experiment.twin.step, experiment.hand.step
    hand_done: list[int] = []

    def hand(step: int) -> StepTrace:
        trace = hand_step(step)
        hand_done.append(step)
        return trace

    def twin(step: int) -> StepTrace:
        if step == 2:
            raise RuntimeError("twin step 2")
        return twin_step(step)

    experiment.hand.step, experiment.twin.step = hand, twin
    with pytest.raises(RuntimeError, match="twin step 2"):
        harness.run(experiment, sides="concurrent")
    assert hand_done == [1, 2]  # nothing runs on behind the caller


def test_concurrent_runs_the_hand_step_in_a_worker_and_the_twin_in_the_caller() -> None:
    experiment = SCENARIOS["xor"].build(scenario_parser("xor").parse_args(["--steps", "3"]))
    threads: dict[str, set[str]] = {"hand": set(), "twin": set()}
    for side, name in ((experiment.hand, "hand"), (experiment.twin, "twin")):
        side.step = _recording(side.step, threads[name])
    harness.run(experiment, sides="concurrent")
    assert threads["twin"] == {threading.main_thread().name}
    assert len(threads["hand"]) == 1 and threads["hand"] != threads["twin"]


def _recording(step, seen: set[str]):  # noqa: ANN001, ANN202
    def recorded(k: int) -> StepTrace:
        seen.add(threading.current_thread().name)
        return step(k)

    return recorded


class TinySide:
    """A side whose step is a few microseconds: one scalar term."""

    def step(self, step: int) -> StepTrace:
        trace = StepTrace(step)
        trace.add("loss.L", "L", "loss", float(step))
        return trace

    def params(self) -> dict[str, np.ndarray]:
        return {}

    def load_params(self, params: dict[str, np.ndarray]) -> None:
        pass


def test_auto_keeps_tiny_steps_sequential() -> None:
    hand, twin = TinySide(), TinySide()
    threads: set[str] = set()
    hand.step = _recording(hand.step, threads)  # type: ignore[method-assign]
    with concurrent.StepRunner(hand, twin, "auto") as runner:
        for step in range(1, 20):
            runner.step(step)
        assert runner.mode == "sequential"
    assert threads == {threading.main_thread().name}


@pytest.mark.parametrize(
    ("hand", "twin", "pays"),
    [(1e-4, 5e-4, False), (5e-3, 2e-4, False), (2e-3, 4e-3, True)]
    + [(concurrent.MIN_SIDE_SECONDS, concurrent.MIN_SIDE_SECONDS, True)],
)
def test_overlap_is_tried_only_when_both_sides_are_long_enough(hand: float, twin: float, pays: bool) -> None:
    assert concurrent.overlap_may_pay(hand, twin) is pays


def test_auto_is_sequential_without_a_second_cpu_or_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    assert concurrent.StepRunner(TinySide(), TinySide(), "auto", device="cuda").mode == "sequential"
    monkeypatch.setattr(concurrent, "available_cpus", lambda: 1)
    assert concurrent.StepRunner(TinySide(), TinySide(), "auto").mode == "sequential"


def test_an_unknown_sides_value_is_refused() -> None:
    with pytest.raises(ValueError, match="sides"):
        concurrent.StepRunner(TinySide(), TinySide(), "parallel")


def test_the_fast_term_check_is_the_constructors() -> None:
    from handgrad.harness.compare import TermCheck, _finite_check

    fields = ("dense1.z", 1e-17, 2e-12, 3e-13, 1, 6, (0, 2), 0.5, 0.25, 1e-10)
    fast, made = _finite_check(*fields, 0.75), TermCheck(*fields, scale=0.75)
    assert fast == made and vars(fast) == vars(made) and repr(fast) == repr(made)


def test_a_shuffled_schedule_gives_each_side_the_same_rows_when_they_ask_at_once() -> None:
    """Both sides read one ``Batches`` (contract/spec.py), whose epoch orders are drawn lazily from
    one generator: two threads asking for a new epoch at once must not both draw."""
    import sys

    from handgrad.contract.spec import Schedule

    schedule = Schedule("minibatch", batch_size=2, order="shuffle", seed=3)
    expected = list(schedule.batches(6, 600))  # asked for one at a time
    shared = schedule.batches(6, 600)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # thread switches between any two bytecodes, as on a busy machine
    try:
        for step in range(0, 600, 3):  # a new epoch every third step
            barrier, seen = threading.Barrier(4), []

            def ask(step: int = step, barrier: threading.Barrier = barrier, seen: list = seen) -> None:  # noqa: ANN001
                barrier.wait()
                seen.append(shared[step])

            workers = [threading.Thread(target=ask) for _ in range(4)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
            assert all(np.array_equal(rows, expected[step]) for rows in seen), step
    finally:
        sys.setswitchinterval(interval)


@pytest.mark.skipif(concurrent.set_blas_threads(2) is None, reason="NumPy's BLAS is not an OpenBLAS")
def test_the_hand_step_has_one_blas_thread_while_the_twin_runs_and_the_count_comes_back() -> None:
    experiment = SCENARIOS["xor"].build(scenario_parser("xor").parse_args(["--steps", "3"]))
    seen: list[int | None] = []
    step = experiment.hand.step

    def hand(k: int) -> StepTrace:
        seen.append(concurrent.set_blas_threads(1))  # the count the step found
        return step(k)

    experiment.hand.step = hand
    concurrent.set_blas_threads(2)
    harness.run(experiment, sides="concurrent")
    assert seen == [1, 1, 1] and concurrent.set_blas_threads(2) == 2


def test_split_map_keeps_the_order_and_uses_a_second_thread_for_heavy_items() -> None:
    threads: list[str] = []

    def square(item: int) -> int:
        threads.append(threading.current_thread().name)
        return item * item

    weights = [concurrent.SPLIT_ELEMENTS // 4] * 8
    assert concurrent.split_map(square, list(range(8)), weights) == [k * k for k in range(8)]
    if concurrent.available_cpus() >= 2:
        assert len(set(threads)) == 2 and threading.main_thread().name in threads
    threads.clear()
    assert concurrent.split_map(square, [3, 4], [1, 1]) == [9, 16]  # light: the caller alone
    assert set(threads) == {threading.main_thread().name}


@pytest.mark.parametrize("failing", [0, 7])  # in the worker's run, in the caller's
def test_split_map_raises_an_items_error_with_its_traceback(failing: int) -> None:
    def check(item: int) -> int:
        if item == failing:
            raise_from_the_hand_side(item)
        return item

    with pytest.raises(ZeroDivisionError, match=f"hand step {failing}") as raised:
        concurrent.split_map(check, list(range(8)), [concurrent.SPLIT_ELEMENTS] * 8)
    assert traceback.extract_tb(raised.value.__traceback__)[-1].name == "raise_from_the_hand_side"
