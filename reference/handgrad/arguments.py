"""The argument parser every command uses: bad options as one line, defaults shown, sizes bounded.

A bad option is a :class:`SpecError` naming it (the command line prints one line and exits 2);
every option's default appears in ``--help``; an empty value is refused; integer sizes above their
stated maxima (:data:`SIZE_LIMITS`) are refused before anything is built.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from handgrad.contract.spec import SpecError

MAX_STEPS = 10**12
MAX_SEED = 2**63 - 1
# the largest value each integer option takes; the memory estimate (check_memory) bounds products
SIZE_LIMITS: dict[str, int] = {
    "steps": MAX_STEPS,
    "seed": MAX_SEED,
    "step_size": MAX_STEPS,
    "t_max": MAX_STEPS,
    "batch_size": 1_000_000,
    "hidden": 100_000,
    "width": 100_000,
    "depth": 1_000,
    "inputs": 100_000,
    "outputs": 100_000,
    "classes": 100_000,
    "rows": 1_000_000,
    "samples": 1_000_000,
    "image_size": 4_096,
    "lrn_size": 1_024,
    "length": 100_000,
    "sequences": 1_000_000,
    "layers": 1_000,
    "delay": 100_000,
    "sizes": 100_000,
    "channels": 100_000,
}
DEFAULT_MAX_MEMORY_GIB = 4.0


def bound_arguments(args: argparse.Namespace) -> None:
    """Refuse, before anything is allocated, an integer option above its stated maximum."""
    for name, limit in SIZE_LIMITS.items():
        value = getattr(args, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > limit:
            raise SpecError(name, f"expected at most {limit:,}, got {value:,}")
        if isinstance(value, int) and not isinstance(value, bool) and name in ("seed", "steps") and value < 0:
            raise SpecError(name, f"expected an integer >= 0, got {value}")
    memory = getattr(args, "max_memory", None)
    if memory is not None and not 0 < memory < float("inf"):
        raise SpecError("max_memory", f"expected a number of GiB > 0, got {memory}")


class _Formatter(argparse.HelpFormatter):
    """Every option's default shown: appended where the help text does not already say it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        shown = "default" in text or "%(default)" in text
        silent = action.default in (None, False, argparse.SUPPRESS) or not action.option_strings
        if not shown and not silent and action.nargs != 0:
            text += " (default: %(default)s)"
        return text


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad option as one SpecError line instead of usage + exit."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> None:  # type: ignore[override]
        field = "arguments"
        if message.startswith("argument "):
            field, _, message = message[len("argument ") :].partition(": ")
        raise SpecError(field, message)

    def parse_args(self, args: Sequence[str] | None = None, namespace: object = None) -> argparse.Namespace:  # type: ignore[override]
        """Parse, then refuse empty values and sizes above their stated maxima (README "Limits")."""
        argv = _attach_negative_values(self, list(sys.argv[1:] if args is None else args))
        parsed = super().parse_args(argv, namespace)  # type: ignore[arg-type]
        for key, value in vars(parsed).items():
            if isinstance(value, str) and not value.strip():
                raise SpecError(key, "expected a value, got an empty one")
        bound_arguments(parsed)
        return parsed


def _attach_negative_values(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """``--loss-weights -1,1``: argparse takes ``-1,1`` for an option; join it to its option
    (``--loss-weights=-1,1``) when the option takes a value and the token reads as numbers."""
    takes_value = {
        option
        for action in parser._actions
        if action.nargs is None and action.option_strings
        for option in action.option_strings
    }
    result: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        following = argv[i + 1] if i + 1 < len(argv) else ""
        numeric = following.startswith("-") and following[1:2].isdigit() or following[:2] == "-."
        if token in takes_value and numeric:
            result.append(f"{token}={following}")
            i += 2
            continue
        result.append(token)
        i += 1
    return result


def all_parser(command: str) -> ArgumentParser:
    parser = ArgumentParser(
        prog=f"handgrad {command} all",
        description=f"{command} every built-in scenario at its defaults: the CI-regression mode",
    )
    parser.add_argument(
        "--json", metavar="FILE", help="one JSON document: a report per scenario and the overall verdict"
    )
    if command == "compare":
        parser.add_argument(
            "--jobs",
            type=int,
            default=os.cpu_count() or 1,
            metavar="N",
            help="run N scenarios at a time in worker processes (default: one per CPU, %(default)s here; "
            "1: in this process); output in scenario order",
        )
    return parser
