"""The command line: ``handgrad compare SCENARIO [options]``, ``handgrad list``.

Exit codes: 0 every term agrees, 1 a mismatch (or non-finite values), 2 bad input (one line on
stderr naming the field; nothing written), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from handgrad import harness
from handgrad.atomic import atomic_write_bytes, check_output_path
from handgrad.harness import Report
from handgrad.scenarios import SCENARIOS
from handgrad.spec import SpecError, require_int

EXIT_OK, EXIT_MISMATCH, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad option as one SpecError line instead of usage + exit."""

    def error(self, message: str) -> None:  # type: ignore[override]
        field = "arguments"
        if message.startswith("argument "):
            field, _, message = message[len("argument ") :].partition(": ")
        raise SpecError(field, message)


def _common_output_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", metavar="FILE", help="write the report as JSON")
    parser.add_argument(
        "--resync", action="store_true", help="copy the hand weights into torch before each step"
    )
    parser.add_argument("--quiet", action="store_true", help="print the verdict line only")
    parser.add_argument("--xlsx", metavar="FILE", help="write the workbook (live formulas, every term)")
    parser.add_argument(
        "--walkthrough",
        metavar="STEPS",
        default="1",
        help="steps the workbook shows as live formulas, e.g. 1,50,1000 (default 1)",
    )
    parser.add_argument(
        "--live-steps",
        metavar="N",
        type=int,
        default=1000,
        help="steps of the Training sheet written as live formulas (default 1000)",
    )
    parser.add_argument(
        "--gradcheck",
        metavar="STEPS",
        nargs="?",
        const="1",
        help="also check the hand gradients by central finite differences at these steps "
        "(alone: step 1; e.g. 1,50): the FD column, hand vs finite differences",
    )


def scenario_parser(name: str) -> ArgumentParser:
    scenario = SCENARIOS[name]
    parser = ArgumentParser(prog=f"handgrad compare {name}", description=scenario.summary)
    scenario.add_arguments(parser)
    _common_output_arguments(parser)
    return parser


def _format_table(report: Report) -> str:
    """One row per term: max |hand − torch| over the run, and with ``--gradcheck`` the FD column:
    max |hand − finite differences| over the steps checked, ok or FAIL by the oracle's tolerance."""
    width = max((len(name) for name in report.terms), default=4)
    fd: dict[str, tuple[bool, float]] = {}
    for result in report.oracle or ():
        ok, worst = fd.get(result.term, (True, 0.0))
        fd[result.term] = (ok and result.ok, max(worst, result.check.max_abs))
    oks = {
        name: "ok" if not stats.failing_steps else f"FAIL ({stats.failing_steps} steps)"
        for name, stats in report.terms.items()
    }
    ok_width = max(map(len, oks.values()), default=2) if report.oracle is not None else 0
    header = f"{'term':<{width}}  {'phase':<9} {'max |Δ|':>9} {'max rel':>9}  {'ok':<{ok_width}}"
    lines = [header + ("  FD" if report.oracle is not None else "")]
    for name, stats in report.terms.items():
        row = f"{name:<{width}}  {stats.phase:<9} {stats.max_abs:9.1e} {stats.max_rel:9.1e}  "
        row += f"{oks[name]:<{ok_width}}"
        if name in fd:
            ok, worst = fd[name]
            row += f"  {'ok' if ok else 'FAIL'} {worst:.1e}"
        lines.append(row.rstrip())
    return "\n".join(lines)


class _Progress:
    """A one-line progress bar on a terminal; silent when stdout is not a terminal."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.enabled = sys.stdout.isatty()
        self.shown = -1

    def __call__(self, step: int, total: int) -> None:
        if not self.enabled or total < 200:
            return
        percent = step * 100 // total
        if percent != self.shown:
            self.shown = percent
            bar = "#" * (percent // 4)
            end = "\n" if step == total else ""
            print(f"\r{self.label} [{bar:<25}] {step}/{total}", end=end, flush=True)


def _write_json(path: str, report: Report) -> None:
    text = json.dumps(report.to_json(), indent=2, sort_keys=False, allow_nan=False)
    atomic_write_bytes(path, (text + "\n").encode())


def _build(name: str, args: argparse.Namespace) -> harness.Experiment:
    """Both sides of scenario ``name``; without torch installed, one line saying so (the torch twin
    is what ``compare`` checks against; ``handgrad gradcheck`` needs no torch)."""
    try:
        return SCENARIOS[name].build(args)
    except ModuleNotFoundError as error:
        if error.name != "torch" and not str(error.name or "").startswith("torch."):
            raise
        raise SpecError(
            "torch",
            "handgrad compare needs PyTorch (pip install torch==2.13.0 -c constraints.txt); "
            "handgrad gradcheck runs without it",
        ) from None


def compare(name: str, argv: Sequence[str]) -> int:
    args = scenario_parser(name).parse_args(list(argv))
    if args.json:
        check_output_path("--json", args.json)
    workbook = None
    if args.xlsx:
        from handgrad.workbook.writer import WorkbookWriter, parse_walkthrough
        from handgrad.workbook.xlsx import EXCEL_MAX_ROWS

        check_output_path("--xlsx", args.xlsx)
        walkthrough = parse_walkthrough(args.walkthrough)
        require_int("live_steps", args.live_steps, 1)
        if args.live_steps >= EXCEL_MAX_ROWS - 10:
            raise SpecError("live_steps", f"expected at most {EXCEL_MAX_ROWS - 11:,} (Excel's row limit)")
    oracle = None
    if args.gradcheck is not None:
        from handgrad.gradcheck import CompareOracle, parse_steps

        fd_steps = parse_steps(args.gradcheck)
    experiment = _build(name, args)
    if args.gradcheck is not None:
        oracle = CompareOracle(experiment, fd_steps)
    if args.xlsx:
        late = [step for step in walkthrough if step > experiment.steps]
        if late:
            raise SpecError("walkthrough", f"step {late[0]} is past the last step ({experiment.steps})")
        workbook = WorkbookWriter(experiment, walkthrough_steps=walkthrough, live_steps=args.live_steps)
    try:
        observers = [workbook.observe] if workbook else []
        if oracle is not None:
            oracle.before_run()  # step 1, at the initial parameters
            observers.append(oracle.observe)  # step k, at the end of step k − 1
        report = harness.run(experiment, resync=args.resync, observers=observers, progress=_Progress(name))
        if oracle is not None:
            report.oracle = oracle.results(report.steps_run)
        if workbook:  # written even when the run stopped early: it holds the steps run
            workbook.write(args.xlsx, report)
    finally:
        if workbook:
            workbook.close()
    if args.json:
        _write_json(args.json, report)
    if not args.quiet:
        print(_format_table(report))
        if oracle is not None and oracle.input_reason is not None:
            print(f"{name}: input.x not checked by finite differences: {oracle.input_reason}")
    print(f"{name}: {report.verdict()}")
    if report.stopped:
        print(f"{name}: stopped early: {report.stopped}")
    return EXIT_OK if report.ok else EXIT_MISMATCH


def compare_all(argv: Sequence[str]) -> int:
    if argv:
        raise SpecError("compare all", f"takes no options (got {' '.join(argv)})")
    worst = EXIT_OK
    for name in SCENARIOS:
        args = scenario_parser(name).parse_args([])
        report = harness.run(_build(name, args))
        print(f"{name}: {report.verdict()}")
        if not report.ok:
            worst = EXIT_MISMATCH
    return worst


def list_scenarios() -> int:
    width = max(len(name) for name in SCENARIOS)
    for scenario in SCENARIOS.values():
        print(f"{scenario.name:<{width}}  {scenario.summary}")
    return EXIT_OK


USAGE = """usage: handgrad compare SCENARIO [options]   compare hand vs torch (SCENARIO 'all' runs every one)
       handgrad compare SCENARIO --help          the options of a scenario
       handgrad list                             the built-in scenarios
       handgrad gradcheck SCENARIO [options]     finite-difference check of the hand pass (no torch)"""


def dispatch(argv: Sequence[str]) -> int:
    if not argv:
        raise SpecError("command", "expected compare or list (handgrad --help shows the usage)")
    if argv[0] in ("-h", "--help"):
        print(USAGE)
        return EXIT_OK
    command, rest = argv[0], list(argv[1:])
    if command == "list":
        return list_scenarios()
    if command == "gradcheck":  # the torch-free oracle: handgrad/gradcheck.py
        if not rest or rest[0].startswith("-") or rest[0] not in SCENARIOS:
            got = f" (got {rest[0]!r})" if rest and not rest[0].startswith("-") else ""
            raise SpecError("scenario", f"expected one of {', '.join(SCENARIOS)}{got}")
        from handgrad.gradcheck import command as gradcheck_command

        return gradcheck_command(rest[0], rest[1:])
    if command == "compare":
        if not rest or rest[0].startswith("-"):
            raise SpecError("scenario", f"expected one of {', '.join(SCENARIOS)} or all")
        name, options = rest[0], rest[1:]
        if name == "all":
            return compare_all(options)
        if name not in SCENARIOS:
            raise SpecError(
                "scenario", f"unknown scenario {name!r}; expected one of {', '.join(SCENARIOS)} or all"
            )
        return compare(name, options)
    raise SpecError("command", f"unknown command {command!r}; expected compare or list")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return dispatch(sys.argv[1:] if argv is None else argv)
    except SpecError as error:
        print(f"handgrad: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("handgrad: interrupted; no output file was changed", file=sys.stderr)
        return EXIT_INTERRUPTED
