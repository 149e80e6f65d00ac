"""The vanishing-gradient table of ``manual/vanishing-gradients.md``, produced by handgrad itself.

For each init (``auto``: the activation's own; ``torch``: nn.Linear's default), activation and
depth, run one step of scenario ``deep`` (hand and torch in lock-step, every term compared) and
print ‖∂L/∂W⁽¹⁾‖ / ‖∂L/∂W⁽ᴸ⁾‖ at step 1 from the hand side's ``grad_norm`` terms, after checking
that torch's terms agree (exit 1 if any term of any run disagrees).

    python scripts/vanishing.py                       # print the table (Markdown)
    python scripts/vanishing.py --write manual/vanishing-gradients.md   # replace it between markers

``tests/test_vanishing_table.py`` reruns the command the manual shows and checks its output is the
committed table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reference"))

from handgrad import harness  # noqa: E402
from handgrad.cli import scenario_parser  # noqa: E402
from handgrad.harness import compare_values  # noqa: E402
from handgrad.scenarios import SCENARIOS  # noqa: E402

DEPTHS = (2, 4, 8, 12)
ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu")
INITS = {
    "auto": "each activation's own init (he for relu and leaky_relu, xavier for sigmoid and tanh)",
    "torch": "torch's nn.Linear default init, U(±1/√fan_in), for every activation",
}
BEGIN, END = "<!-- vanishing-table:begin -->", "<!-- vanishing-table:end -->"


def first_step_ratio(depth: int, activation: str, init: str, width: int, seed: int) -> float:
    """‖∂L/∂W⁽¹⁾‖/‖∂L/∂W⁽ᴸ⁾‖ at step 1 (hand), after checking every term against torch."""
    options = ["--depth", str(depth), "--activation", activation, "--init", init]
    options += ["--width", str(width), "--seed", str(seed), "--steps", "1"]
    experiment = SCENARIOS["deep"].build(scenario_parser("deep").parse_args(options))
    traces = {}
    report = harness.run(
        experiment, observers=[lambda step, hand, twin, checks: traces.update(hand=hand, twin=twin)]
    )
    if not report.ok:
        raise SystemExit(f"deep {' '.join(options)}: {report.verdict()}")
    last = f"dense{depth + 1}.grad_norm"
    hand = traces["hand"].value("dense1.grad_norm") / traces["hand"].value(last)
    twin = traces["twin"].value("dense1.grad_norm") / traces["twin"].value(last)
    check = compare_values("ratio", hand, twin, report.tolerance)
    if not check.ok:
        raise SystemExit(f"deep {' '.join(options)}: the ratio differs, hand {hand} vs torch {twin}")
    return float(hand)


def table(width: int, seed: int) -> str:
    lines = []
    for init, description in INITS.items():
        lines.append(f"`--init {init}`: {description}.")
        lines.append("")
        lines.append("| activation | " + " | ".join(f"depth {d}" for d in DEPTHS) + " |")
        lines.append("|---|" + "---:|" * len(DEPTHS))
        for activation in ACTIVATIONS:
            ratios = [first_step_ratio(d, activation, init, width, seed) for d in DEPTHS]
            lines.append(f"| {activation} | " + " | ".join(f"{r:.2e}" for r in ratios) + " |")
        lines.append("")
    return "\n".join(lines[:-1]) + "\n"


def write_between_markers(path: Path, text: str) -> None:
    page = path.read_text(encoding="utf-8")
    head, begin, rest = page.partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not begin or not end:
        raise SystemExit(f"{path}: markers {BEGIN} ... {END} not found")
    path.write_text(f"{head}{BEGIN}\n{text}{END}{tail}", encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=64, help="hidden units per layer (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights and data (default 0)")
    parser.add_argument("--write", metavar="PAGE", help="replace the table between the page's markers")
    args = parser.parse_args()
    text = table(args.width, args.seed)
    if args.write:
        write_between_markers(Path(args.write), text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
