"""The command line: ``handgrad compare SCENARIO [options]``, ``handgrad gradcheck``, ``handgrad list``.

Exit codes, one contract for every command:

    0    every term agrees
    1    a finding: a mismatch, or non-finite values
    2    bad input or environment (one line on stderr naming the field; nothing written)
    3    internal error: a bug in handgrad (one line; ``--debug`` shows the traceback)
    130  interrupted (Ctrl-C); no output file was changed
    141  stdout closed early (``handgrad ... | head -1``): ends quietly, as tools killed by SIGPIPE
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import shlex
import sys
import time
import traceback
from collections.abc import Iterator, Sequence

from handgrad import harness
from handgrad.arguments import ArgumentParser, all_parser
from handgrad.atomic import atomic_write_bytes, check_outputs
from handgrad.contract.spec import SpecError, require_int
from handgrad.harness import Report, all_document
from handgrad.harness.allocator import keep_freed_memory
from handgrad.harness.drift import diagnose, needs_diagnosis
from handgrad.scenarios import SCENARIOS
from handgrad.scenarios.common import check_memory, estimate_memory
from handgrad.tracebudget import HELP as TRACE_HELP

EXIT_OK, EXIT_MISMATCH, EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_PIPE = 0, 1, 2, 3, 130, 141
MAX_WALKTHROUGH_STEPS = 20  # each walkthrough step is a sheet of its own


def _common_output_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", metavar="FILE", help="write the report as JSON (never over an input; default: none)"
    )
    parser.add_argument(
        "--resync", action="store_true", help="copy the hand weights into torch before each step"
    )
    parser.add_argument("--quiet", action="store_true", help="print the verdict line only")
    parser.add_argument(
        "--all-terms",
        action="store_true",
        help=f"print every term's row (default: at most {TABLE_ROWS}, failing and largest errors first)",
    )
    parser.add_argument(
        "--xlsx", metavar="FILE", help="write the workbook (live formulas, every term; default: none)"
    )
    parser.add_argument(
        "--walkthrough",
        "--walkthrough-step",
        metavar="STEPS",
        help="steps the workbook shows as live formulas, e.g. 2 or 1,50,1000 (default: the first of "
        "steps 1-8 where no gradient is zero everywhere, else 1)",
    )
    parser.add_argument("--trace-steps", metavar="WHICH", help=TRACE_HELP)
    parser.add_argument(
        "--live-steps",
        metavar="N",
        type=int,
        default=1000,
        help="steps of the Training sheet written as live formulas (default 1000; at most 1,048,565)",
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


TABLE_ROWS = 200  # the console table's rows at most: every scenario at its defaults fits (echo: 153)


def _format_table(report: Report, limit: int | None = TABLE_ROWS) -> str:
    """One row per term: max |hand − torch| over the run, and with ``--gradcheck`` the FD column:
    max |hand − finite differences| over the steps checked, ok or FAIL by the oracle's tolerance.

    More than ``limit`` terms (a long sequence has a dozen a time step): the failing terms, then
    the largest errors, ``limit`` rows in the trace's order, and a line that counts the rest."""
    fd: dict[str, tuple[bool, float]] = {}
    for result in report.oracle or ():
        ok, worst = fd.get(result.term, (True, 0.0))
        fd[result.term] = (ok and result.ok, max(worst, result.check.max_abs))
    oks = {
        name: "ok" if not stats.failing_steps else f"FAIL ({stats.failing_steps} steps)"
        for name, stats in report.terms.items()
    }
    fd_failing = {name for name, (ok, _) in fd.items() if not ok}
    failing = {name for name, stats in report.terms.items() if stats.failing_steps} | fd_failing
    shown = _shown_terms(report, failing, limit)
    width = max((len(name) for name in shown), default=4)
    ok_width = max(map(len, oks.values()), default=2) if report.oracle is not None else 0
    header = f"{'term':<{width}}  {'phase':<9} {'max |Δ|':>9} {'elem rel':>9} {'norm rel':>9}  "
    header += f"{'ok':<{ok_width}}"
    lines = [header + ("  FD" if report.oracle is not None else "")]
    for name in shown:
        stats = report.terms[name]
        row = f"{name:<{width}}  {stats.phase:<9} {stats.max_abs:9.1e} {stats.elem_rel:9.1e} "
        row += f"{stats.norm_rel:9.1e}  "
        row += f"{oks[name]:<{ok_width}}"
        if name in fd:
            ok, worst = fd[name]
            row += f"  {'ok' if ok else 'FAIL'} {worst:.1e}"
        lines.append(row.rstrip())
    hidden = [name for name in report.terms if name not in shown]
    if hidden:
        failing_hidden = len(failing.intersection(hidden))
        largest = max(report.terms[name].max_rel for name in hidden)
        what = f"{failing_hidden:,} of them failing" if failing_hidden else "all agreeing"
        lines.append(
            f"… {len(hidden):,} more terms not shown ({what}; their largest rel error {largest:.1e}): "
            "--all-terms prints every row, --json FILE writes every term"
        )
    return "\n".join(lines)


def _shown_terms(report: Report, failing: set[str], limit: int | None) -> list[str]:
    """The terms the table prints: all of them, or the ``limit`` that matter most (``failing``,
    by either check, first, then the largest relative error), in the report's order."""
    names = list(report.terms)
    if limit is None or len(names) <= limit:
        return names
    chosen = set(sorted(names, key=lambda name: (name not in failing, -report.terms[name].max_rel))[:limit])
    return [name for name in names if name in chosen]


def _configuration_line(report: Report) -> str:
    """How the options torch read back compare with those asked (harness/configuration.py)."""
    count, failures = len(report.configuration or ()), report.configuration_failures
    if not failures:
        return f"configuration: all {count} options torch ran with are as asked (JSON: configuration)"
    return f"{len(failures)} of {count} options differ; {report.configuration_finding()}"


class _Progress:
    """A one-line progress bar on a terminal, redrawn at each new percent and at least every half
    second (a run of 10⁹ steps shows its count at once); silent when stdout is not a terminal."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.enabled = sys.stdout.isatty()
        self.shown = -1
        self.drawn = 0.0

    def __call__(self, step: int, total: int) -> None:
        if not self.enabled or total < 200:
            return
        percent = step * 100 // total
        now = time.monotonic()
        if percent != self.shown or now - self.drawn > 0.5 or step == total:
            self.shown, self.drawn = percent, now
            bar = "#" * (percent // 4)
            end = "\n" if step == total else ""
            print(f"\r{self.label} [{bar:<25}] {step:,}/{total:,}", end=end, flush=True)


def _json_bytes(document: object) -> bytes:
    return (json.dumps(document, indent=2, sort_keys=False, allow_nan=False) + "\n").encode()


def _write_json(path: str, report: Report) -> None:
    atomic_write_bytes(path, _json_bytes(report.to_json()), "json")


def _build(name: str, args: argparse.Namespace) -> harness.Experiment:
    """Both sides of scenario ``name``; without torch installed, one line saying so (the torch twin
    is what ``compare`` checks against; ``handgrad gradcheck`` needs no torch). The memory the run
    would need is estimated from the options first: over ``--max-memory``, nothing is built."""
    estimate, field, what = estimate_memory(args)
    check_memory(field, estimate, what, args)
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


def input_files(args: argparse.Namespace) -> dict[str, str | None]:
    """The files a run reads, by option: an output may never be one of them."""
    return {"--weights": getattr(args, "weights", None), "--data": getattr(args, "data", None)}


def regenerate_command(name: str, argv: Sequence[str]) -> str:
    """The command that wrote a workbook, as its Read me prints it: every option as given, the
    output files as FILE.xlsx / FILE.json (so the same run writes the same bytes wherever it goes)."""
    words = list(argv)
    for i, word in enumerate(words):
        for option in ("--xlsx", "--json"):
            placeholder = f"FILE.{option[2:]}"
            if word == option and i + 1 < len(words):
                words[i + 1] = placeholder
            elif word.startswith(f"{option}="):
                words[i] = f"{option}={placeholder}"
    return shlex.join(["handgrad", "compare", name, *words])


def _diagnose(name: str, args: argparse.Namespace, report: Report) -> None:
    """A mismatch of finite values without ``--resync``: drift or an error (harness/drift.py),
    kept on the report (``report.diagnosis``: the console's line and the JSON's field); not with
    ``--quiet`` unless ``--json`` asks for the report, as nothing would show it."""
    if args.resync or (args.quiet and not args.json) or not needs_diagnosis(report):
        return
    if not args.quiet:
        step = report.first.step
        print(f"{name}: diagnosing the mismatch: steps 1-{step} again with --resync …", flush=True)
    report.diagnosis = diagnose(lambda: SCENARIOS[name].build(args), report).to_json()


def compare(name: str, argv: Sequence[str]) -> int:
    args = scenario_parser(name).parse_args(list(argv))
    check_outputs({"--json": args.json, "--xlsx": args.xlsx}, input_files(args))
    workbook = None
    if args.xlsx:
        from handgrad.tracebudget import parse_trace_steps
        from handgrad.workbook.writer import WorkbookWriter, parse_walkthrough
        from handgrad.workbook.xlsx import EXCEL_MAX_ROWS

        trace_steps = parse_trace_steps(args.trace_steps)
        walkthrough = None if args.walkthrough is None else parse_walkthrough(args.walkthrough)
        if walkthrough is not None and len(walkthrough) > MAX_WALKTHROUGH_STEPS:
            most = f"expected at most {MAX_WALKTHROUGH_STEPS} steps"
            raise SpecError("walkthrough", f"{most}, got {len(walkthrough)}")
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
        late = [step for step in walkthrough or () if step > experiment.steps]
        if late:
            raise SpecError("walkthrough", f"step {late[0]} is past the last step ({experiment.steps})")
        workbook = WorkbookWriter(
            experiment,
            walkthrough_steps=walkthrough,
            live_steps=args.live_steps,
            trace_steps=trace_steps,
            command=regenerate_command(name, argv),
        )
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
    _diagnose(name, args, report)
    if args.json:
        _write_json(args.json, report)
    if not args.quiet:
        print(_format_table(report, None if args.all_terms else TABLE_ROWS))
        if report.configuration is not None:
            print(f"{name}: {_configuration_line(report)}")
        if oracle is not None and oracle.input_reason is not None:
            print(f"{name}: input.x not checked by finite differences: {oracle.input_reason}")
    if report.predictions is not None and not args.quiet:
        print(f"{name}: final predictions, every row of the data at the last step's weights:")
        print(report.predictions.table())
    if workbook and not args.quiet:
        for line in workbook.notices():
            print(f"{name}: workbook: {line}")
    if report.diagnosis is not None and not args.quiet:
        print(f"{name}: {report.diagnosis['message']}")
    print(f"{name}: {report.verdict()}")  # the verdict last (before a stop note): `| tail -1` reads it
    if report.stopped:
        print(f"{name}: stopped early: {report.stopped}")
    return EXIT_OK if report.ok else EXIT_MISMATCH


def check(argv: Sequence[str]) -> int:
    """``handgrad check FILE.py:FACTORY``: run by handgrad/check_command.py, reported as compare."""
    from handgrad.check_command import run_check

    label, report, args, notices = run_check(argv, _Progress)
    if args.json:
        _write_json(args.json, report)
    if not args.quiet:
        print(_format_table(report, None if args.all_terms else TABLE_ROWS))
        print(f"{label}: {_configuration_line(report)}")
        if report.predictions is not None:
            print(f"{label}: final predictions, every row of the data at the last step's weights:")
            print(report.predictions.table())
        for line in notices:
            print(f"{label}: workbook: {line}")
        if report.diagnosis is not None:
            print(f"{label}: {report.diagnosis['message']}")
    print(f"{label}: {report.verdict()}")
    if report.stopped:
        print(f"{label}: stopped early: {report.stopped}")
    return EXIT_OK if report.ok else EXIT_MISMATCH


def compare_all(argv: Sequence[str]) -> int:
    args = all_parser("compare").parse_args(list(argv))
    if args.jobs < 1:
        raise SpecError("jobs", f"expected a number of worker processes >= 1, got {args.jobs}")
    check_outputs({"--json": args.json})
    results = []
    for name, (verdict, ok, document) in zip(SCENARIOS, _scenario_results(args.jobs), strict=True):
        print(f"{name}: {verdict}", flush=True)
        results.append((name, ok, document))
    document = all_document(results)
    if args.json:
        atomic_write_bytes(args.json, _json_bytes(document), "json")
    print(f"all: {document['verdict']}")
    return EXIT_OK if document["ok"] else EXIT_MISMATCH


def _run_scenario(name: str) -> tuple[str, bool, dict[str, object]]:
    """One scenario of ``compare all`` at its defaults: its verdict line, ok, and JSON report."""
    report = harness.run(_build(name, scenario_parser(name).parse_args([])))
    return report.verdict(), report.ok, report.to_json()


# `compare all --jobs N` starts the scenarios longest first, so that no worker starts a long one
# while the others have nothing left (CPU seconds at the defaults, 2026-12-04: transformer 2.6,
# echo 2.2, parity 1.6, deep 1.5, xor 1.2, alexnet-mini 0.9, makemore 0.8, multitask 0.4, mlp 0.2);
# a scenario not listed starts last
LONGEST_FIRST = (
    "transformer",
    "echo",
    "parity",
    "deep",
    "xor",
    "alexnet-mini",
    "makemore",
    "multitask",
    "mlp",
)


def _scenario_results(jobs: int) -> Iterator[tuple[str, bool, dict[str, object]]]:
    """Every scenario's result in SCENARIOS' order; ``jobs > 1``: from that many worker processes
    (forked: they inherit the imported modules), started longest first (:data:`LONGEST_FIRST`) and
    still yielded in SCENARIOS' order as each one finishes."""
    if jobs == 1:
        yield from map(_run_scenario, SCENARIOS)
        return
    import multiprocessing

    names = list(SCENARIOS)
    start_order = sorted(
        names, key=lambda name: LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(names)
    )
    with multiprocessing.Pool(min(jobs, len(names))) as pool:
        pending = {name: pool.apply_async(_run_scenario, (name,)) for name in start_order}
        for name in names:
            yield pending[name].get()


def list_scenarios() -> int:
    width = max(len(name) for name in SCENARIOS)
    for scenario in SCENARIOS.values():
        print(f"{scenario.name:<{width}}  {scenario.summary}")
    return EXIT_OK


USAGE = f"""usage: handgrad compare SCENARIO [options]    compare hand vs torch, term by term, at every step
       handgrad compare all [--json FILE] [--jobs N]  every scenario at its defaults (the CI mode)
       handgrad compare SCENARIO --help           the options of a scenario
       handgrad gradcheck SCENARIO [options]      finite-difference check of the hand pass (no torch)
       handgrad gradcheck all [--json FILE]       every scenario, by finite differences
       handgrad check FILE.py:FACTORY [options]   check your own torch model (runs FILE.py's code)
       handgrad list                              the built-in scenarios
       handgrad --version | --help

scenarios: {", ".join(SCENARIOS)}
options anywhere: --debug (show the traceback of an internal error)
exit codes: 0 agree, 1 mismatch or non-finite, 2 bad input, 3 internal error, 130 interrupted"""


def _version() -> str:
    from handgrad.version import __version__

    return f"handgrad {__version__}"


def _scenario_argument(command: str, rest: list[str]) -> str:
    if not rest or rest[0].startswith("-"):
        got = f" (got {rest[0]!r})" if rest else ""
        raise SpecError("scenario", f"expected one of {', '.join(SCENARIOS)} or all{got}")
    if rest[0] != "all" and rest[0] not in SCENARIOS:
        raise SpecError(
            "scenario", f"unknown scenario {rest[0]!r}; expected one of {', '.join(SCENARIOS)} or all"
        )
    return rest[0]


def dispatch(argv: Sequence[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return EXIT_OK
    if argv[0] == "--version":
        print(_version())
        return EXIT_OK
    command, rest = argv[0], list(argv[1:])
    if command in ("compare", "gradcheck") and rest[:1] in (["-h"], ["--help"]):
        print(USAGE)
        return EXIT_OK
    if command == "list":
        if rest and rest[0] in ("-h", "--help"):
            print("usage: handgrad list   the built-in scenarios, one line each")
            return EXIT_OK
        if rest:
            raise SpecError("list", f"takes no options (got {' '.join(rest)})")
        return list_scenarios()
    if command == "gradcheck":  # the torch-free oracle: handgrad/gradcheck.py
        from handgrad.gradcheck import command as gradcheck_command
        from handgrad.gradcheck import command_all

        name = _scenario_argument(command, rest)
        return command_all(rest[1:]) if name == "all" else gradcheck_command(name, rest[1:])
    if command == "check":  # a user's own torch model: handgrad/check_command.py
        return check(rest)
    if command == "compare":
        name = _scenario_argument(command, rest)
        return compare_all(rest[1:]) if name == "all" else compare(name, rest[1:])
    raise SpecError("command", f"unknown command {command!r}; expected compare, check, gradcheck or list")


_ENVIRONMENT = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG, errno.EROFS}


def _quiet_stdout() -> None:
    """stdout is gone (a closed pipe): point it at /dev/null so nothing more is said at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in arguments
    arguments = [argument for argument in arguments if argument != "--debug"]
    keep_freed_memory()  # this process's arrays: reused, not remapped every step (harness/allocator.py)
    try:
        status = dispatch(arguments)
        sys.stdout.flush()
        return status
    except SpecError as error:
        print(f"handgrad: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("\nhandgrad: interrupted; no output file was changed", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_PIPE
    except OSError as error:
        if error.errno not in _ENVIRONMENT:
            return _internal(error, debug)
        _quiet_stdout()
        print(f"handgrad: error: output: {error.strerror}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except RecursionError as error:
        return _internal(error, debug)
    except Exception as error:  # noqa: BLE001 (every escape is an internal error, never exit 1)
        return _internal(error, debug)


def _internal(error: BaseException, debug: bool) -> int:
    if debug:
        traceback.print_exception(error)
    hint = "" if debug else " (rerun with --debug for the traceback)"
    where = f"{type(error).__name__}: {error}".splitlines()[0][:300]
    print(f"handgrad: internal error: {where}{hint}", file=sys.stderr)
    return EXIT_INTERNAL
