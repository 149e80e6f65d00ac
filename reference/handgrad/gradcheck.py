r"""``handgrad gradcheck``: the hand pass checked by finite differences, with no torch involved.

For training step k of a hand side (``HandNetwork``, ``HandRecurrent``, ``HandMultitask``) at its
current parameters, :func:`gradcheck_problem` returns ``(loss, point, gradients)`` for
:func:`handgrad.oracle.check_gradients`:

* ``point``: every parameter by its full name (``dense1.W``) and the step's input batch as
  ``input.x``;
* ``loss(point)``: L of step k's batch at those parameters and that input — the hand side's own
  forward and loss, run on a shallow copy so that the side itself is left untouched;
* ``gradients``: the hand side's analytic ∂L/∂θ (the ``<layer>.dL_d<param>`` terms of step k)
  and ∂L/∂x (``input.dL_dx``, or the first recurrent layer's ``dL_dx``).

The oracle then compares each by central differences (element by element up to 64 elements,
along 6 seeded random directions above; h = 6e-6·max(1, |θ|), the float64 cube-root balance of
truncation and rounding error; tolerance 1e-7 + 1e-5·|g|: see :mod:`handgrad.oracle`).
``--at-step k`` trains k − 1 steps by hand first, then checks step k.

This module imports no torch, and neither does ``handgrad gradcheck``: it builds the scenario's
hand side alone (:meth:`handgrad.scenarios.common.Scenario.build_hand`). Where the scenario has
dropout (``alexnet-mini``), that build draws the keep masks with NumPy, not torch's generator: other
masks than ``handgrad compare`` uses, which the check does not need (it needs fixed masks, and
says so in its output).

:class:`CompareOracle` is the third column of ``handgrad compare --gradcheck``: the same check run
inside a lock-step comparison, on the hand side as the compare run trains it.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
from collections.abc import Callable
from typing import Any

import numpy as np

from handgrad.contract.runs import StackRun
from handgrad.contract.spec import SpecError
from handgrad.oracle import FD_ATOL, FD_RTOL, OracleCheck, check_gradients

INPUT = "input.x"
# Scenarios whose input sits, by design, where L is not differentiable in x: the check of ∂L/∂x is
# left out there (with this reason printed) rather than reported as a mismatch.
NON_DIFFERENTIABLE_INPUT = {
    "alexnet-mini": "the bars images put max-pool windows on exact ties (tested on purpose), where "
    "L has no derivative in x; the parameters are still checked",
}


def _grad_term(name: str) -> str:
    layer, short = name.split(".", 1)
    return f"{layer}.dL_d{short}"


def _input_of(hand: Any, step: int) -> tuple[np.ndarray, Callable[[Any, np.ndarray], None], str] | None:
    """(x of step k's batch, how to put a changed x into a copy of the side, its gradient's term)."""
    rows = np.asarray(hand.batches[step - 1])
    if len(np.unique(rows)) != len(rows):  # a row twice in one batch: x is not one variable per row
        return None
    if hasattr(hand, "x"):

        def put(side: Any, x: np.ndarray) -> None:
            side.x = side.x.copy()
            side.x[rows] = x

        return np.array(hand.x[rows], dtype=np.float64), put, "input.dL_dx"
    data = getattr(hand, "data", None)
    if data is not None and hasattr(data, "x"):

        def put_sequence(side: Any, x: np.ndarray) -> None:
            full = np.array(side.data.x, dtype=np.float64)
            full[rows] = x
            side.data = dataclasses.replace(side.data, x=full)

        first = next(iter(hand.params())).split(".", 1)[0]
        return np.array(data.x[rows], dtype=np.float64), put_sequence, f"{first}.dL_dx"
    return None


def gradcheck_problem(
    hand: Any, step: int = 1, *, with_input: bool = True
) -> tuple[Callable[[dict[str, np.ndarray]], float], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``(loss, point, gradients)`` of training step ``step`` at the side's current parameters."""
    names = list(hand.params())
    taken = _input_of(hand, step) if with_input else None

    def trace_at(point: dict[str, np.ndarray]) -> Any:
        side = copy.copy(hand)  # shallow: step() rebinds its attributes, never writes into arrays
        side.diagnostics = False
        side.load_params({name: point[name] for name in names})
        if taken is not None and INPUT in point:
            taken[1](side, point[INPUT])
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return side.step(step)

    point = {name: np.array(value, dtype=np.float64) for name, value in hand.params().items()}
    if taken is not None:
        point[INPUT] = taken[0]
    trace = trace_at(point)
    gradients = {name: np.array(trace.value(_grad_term(name)), dtype=np.float64) for name in names}
    if taken is not None and taken[2] in trace:
        dx = np.array(trace.value(taken[2]), dtype=np.float64)
        model = getattr(hand, "model", None)
        if dx.ndim == 3 and not getattr(model, "batch_first", True):  # time-major (T,N,I) -> (N,T,I)
            dx = dx.transpose(1, 0, 2)
        gradients[INPUT] = dx
    else:
        point.pop(INPUT, None)

    def loss(at: dict[str, np.ndarray]) -> float:
        return float(trace_at(at).value("loss.L"))

    return loss, point, gradients


def gradcheck_side(hand: Any, step: int = 1, *, seed: int = 0, with_input: bool = True) -> list[OracleCheck]:
    """Train ``step − 1`` steps by hand, then check step ``step`` by finite differences."""
    for earlier in range(1, step):
        hand.step(earlier)
    loss, point, gradients = gradcheck_problem(hand, step, with_input=with_input)
    return check_gradients(loss, point, gradients, seed=seed)


MAX_AT_STEP = 1_000_000  # the steps before the checked one are trained by hand first


def gradcheck_parser(name: str) -> Any:
    from handgrad.arguments import ArgumentParser
    from handgrad.scenarios import SCENARIOS

    parser = ArgumentParser(
        prog=f"handgrad gradcheck {name}",
        description=f"finite-difference check of the hand pass of {name} (no torch in the check)",
    )
    SCENARIOS[name].add_arguments(parser)
    parser.set_defaults(steps=1)
    for action in parser._actions:  # --steps does nothing here: --at-step says which step
        if "--steps" in action.option_strings:
            action.help = argparse.SUPPRESS
    parser.add_argument(
        "--at-step", type=int, default=1, help=f"check training step K (default 1; at most {MAX_AT_STEP:,})"
    )
    parser.add_argument("--no-input", action="store_true", help="check the parameters only, not ∂L/∂x")
    parser.add_argument(
        "--fd-seed", type=int, default=0, help="seed of the random directions (≥ 0; default 0)"
    )
    parser.add_argument("--json", metavar="FILE", help="write the checks as JSON (default: none)")
    return parser


def check_scenario(name: str, args: Any) -> tuple[bool, str, dict[str, object], list[str]]:
    """Run the finite-difference check of scenario ``name``: (ok, verdict, JSON document, lines)."""
    from handgrad.contract.spec import require_int
    from handgrad.scenarios import SCENARIOS
    from handgrad.scenarios.common import check_memory, estimate_memory

    at = require_int("at_step", args.at_step, 1)
    if at > MAX_AT_STEP:
        raise SpecError("at_step", f"expected at most {MAX_AT_STEP:,}, got {at:,}")
    require_int("fd_seed", args.fd_seed, 0)
    if args.fd_seed > 2**63 - 1:
        raise SpecError("fd_seed", f"expected at most 2⁶³ − 1, got {args.fd_seed}")
    args.steps = at
    if getattr(args, "dtype", "float64") != "float64":
        raise SpecError("dtype", "gradcheck runs in float64 only (the oracle's step size assumes it)")
    estimate, field, what = estimate_memory(args)
    check_memory(field, estimate, what, args)
    experiment = SCENARIOS[name].build_hand(args)  # imports no torch
    reason = NON_DIFFERENTIABLE_INPUT.get(name)
    with_input = not args.no_input and reason is None
    checks = gradcheck_side(experiment.hand, at, seed=args.fd_seed, with_input=with_input)
    lines = [("ok   " if check.ok else "FAIL ") + check.message() for check in checks]
    if reason is not None and not args.no_input:
        lines.append(f"input.x not checked: {reason}")
    if isinstance(experiment.spec, StackRun) and experiment.spec.masks:
        lines.append(f"dropout masks: {experiment.config.get('dropout_masks', 'drawn with NumPy')}")
    failing = [check for check in checks if not check.ok]
    verdict = (
        f"all {len(checks)} gradients agree with central finite differences at step {at}"
        if not failing
        else f"MISMATCH: {len(failing)} of {len(checks)} gradients disagree with finite differences; "
        f"first: {failing[0].message()}"
    )
    document = {
        "scenario": name,
        "ok": not failing,
        "verdict": verdict,
        "at_step": at,
        "checks": [_check_json(check) for check in checks],
    }
    return not failing, verdict, document, lines


def _json_bytes(document: object) -> bytes:
    return (json.dumps(document, indent=2, allow_nan=False) + "\n").encode()


def _check_json(check: OracleCheck) -> dict[str, object]:
    return {
        "term": check.name,
        "method": check.method,
        "ok": check.ok,
        "max_abs": _number(check.max_abs),
        "mismatched": check.mismatched,
        "message": check.message(),
    }


def command(name: str, argv: list[str]) -> int:
    """``handgrad gradcheck SCENARIO [options]``: exit 0 when every gradient agrees, 1 otherwise."""
    from handgrad.atomic import atomic_write_bytes, check_outputs

    args = gradcheck_parser(name).parse_args(argv)
    inputs = {"--weights": getattr(args, "weights", None), "--data": getattr(args, "data", None)}
    check_outputs({"--json": args.json}, inputs)
    ok, verdict, document, lines = check_scenario(name, args)
    for line in lines:
        print(line)
    if args.json:
        atomic_write_bytes(args.json, _json_bytes(document), "json")
    print(f"{name} gradcheck: {verdict}")
    return 0 if ok else 1


def command_all(argv: list[str]) -> int:
    """``handgrad gradcheck all [--json FILE]``: every scenario at its defaults, step 1."""
    from handgrad.arguments import all_parser
    from handgrad.atomic import atomic_write_bytes, check_outputs
    from handgrad.harness import all_document
    from handgrad.scenarios import SCENARIOS

    args = all_parser("gradcheck").parse_args(argv)
    check_outputs({"--json": args.json})
    results = []
    for name in SCENARIOS:
        ok, verdict, document, _ = check_scenario(name, gradcheck_parser(name).parse_args([]))
        print(f"{name} gradcheck: {verdict}", flush=True)
        results.append((name, ok, document))
    summary = all_document(results)
    if args.json:
        atomic_write_bytes(args.json, _json_bytes(summary), "json")
    print(f"all: {summary['verdict']}")
    return 0 if summary["ok"] else 1


# --- the third column of ``handgrad compare --gradcheck`` ----------------------------------------


def _number(value: float) -> float | str:
    return value if np.isfinite(value) else str(value)


@dataclasses.dataclass(frozen=True)
class FDResult:
    """One gradient term of one training step checked by finite differences in a compare run.

    ``term`` is the report's name of the gradient (``dense1.dL_dW``, ``input.dL_dx``); ``check`` the
    oracle's finding, ``max_abs`` being max |hand − FD| (for a large tensor, over the directional
    derivatives: |⟨g, d⟩ − FD along d|)."""

    step: int
    term: str
    check: OracleCheck

    @property
    def ok(self) -> bool:
        return self.check.ok

    def message(self) -> str:
        return f"step {self.step}, {self.term}: {self.check.message()}"

    def to_json(self) -> dict[str, object]:
        check = self.check
        return {
            "step": self.step,
            "term": self.term,
            "checked": check.name,
            "method": check.method,
            "ok": check.ok,
            "max_abs": _number(check.max_abs),
            "mismatched": check.mismatched,
            "total": check.total,
            "worst_index": list(check.worst_index),
            "analytic": _number(check.analytic),
            "finite_difference": _number(check.numeric),
            "tolerance": {"atol": FD_ATOL, "rtol": FD_RTOL},
            "message": self.message(),
        }


def parse_steps(text: str) -> list[int]:
    """``--gradcheck 1,50`` → [1, 50]: the steps a compare run checks by finite differences."""
    try:
        steps = [int(part) for part in text.split(",")]
    except ValueError:
        raise SpecError("gradcheck", f"expected comma-separated step numbers, got {text!r}") from None
    low = [step for step in steps if step < 1]
    if low:
        raise SpecError("gradcheck", f"expected steps ≥ 1, got {low[0]}")
    return sorted(set(steps))


class CompareOracle:
    """The FD column of ``handgrad compare --gradcheck``: checks the hand side's gradients of the
    chosen steps, each at the parameters its step starts from, without disturbing the run.

    Step 1 is checked by :meth:`before_run`, before the harness starts; step k > 1 by
    :meth:`observe` at the end of step k − 1 (the harness calls observers once both sides took the
    step, so the hand side then holds the parameters step k starts from). The check runs the hand
    pass on shallow copies (:func:`gradcheck_problem`): the compare run's own hand side takes no
    extra step and keeps its parameters and optimizer state.
    """

    def __init__(self, experiment: Any, steps: list[int], *, seed: int = 0) -> None:
        if experiment.dtype != "float64":
            raise SpecError("gradcheck", "needs --dtype float64 (the oracle's step size assumes it)")
        late = [step for step in steps if step > experiment.steps]
        if late:
            raise SpecError("gradcheck", f"step {late[0]} is past the last step ({experiment.steps})")
        self.hand = experiment.hand
        self.steps = sorted(set(steps))
        self.seed = seed
        self.input_reason = NON_DIFFERENTIABLE_INPUT.get(experiment.scenario)
        self.checked: list[FDResult] = []

    def check(self, step: int) -> None:
        with_input = self.input_reason is None
        loss, point, gradients = gradcheck_problem(self.hand, step, with_input=with_input)
        terms = {name: _grad_term(name) for name in point if name != INPUT}
        if INPUT in point:
            taken = _input_of(self.hand, step)
            assert taken is not None
            terms[INPUT] = taken[2]
        for found in check_gradients(loss, point, gradients, seed=self.seed):
            self.checked.append(FDResult(step, terms[found.name], found))

    def before_run(self) -> None:
        if 1 in self.steps:
            self.check(1)

    def observe(self, step: int, hand: Any, twin: Any, checks: Any) -> None:
        """A harness observer: after step k, check step k + 1 if asked."""
        if step + 1 in self.steps:
            self.check(step + 1)

    def results(self, steps_run: int) -> list[FDResult]:
        """The checks of the steps the run took (a run stopped early leaves later ones out)."""
        return [result for result in self.checked if result.step <= steps_run]
