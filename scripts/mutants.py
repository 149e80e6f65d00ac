"""Run every planted bug of handgrad.mutants (its harness mutants and its scenario mutants)
through the harness and print the tally.

Usage: python scripts/mutants.py [ID ...]   (exit 1 unless every bug is caught at its expected term)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "reference"))

from handgrad.mutants import MUTANTS as SHIPPED_MUTANTS  # noqa: E402
from handgrad.mutants import SCENARIO_MUTANTS, run_mutant  # noqa: E402

MUTANTS = (*SHIPPED_MUTANTS, *SCENARIO_MUTANTS)


def main(argv: list[str]) -> int:
    chosen = [m for m in MUTANTS if not argv or m.id in argv]
    unknown = sorted(set(argv) - {m.id for m in MUTANTS})
    if unknown:
        print(f"mutants: error: unknown mutant {', '.join(unknown)}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    caught = expected = 0
    width = max(len(m.id) for m in chosen)
    for mutant in chosen:
        outcome = run_mutant(mutant)
        caught += outcome.caught
        expected += outcome.as_expected
        where = f"step {outcome.step}, {outcome.term}" if outcome.term else "not caught"
        verdict = (
            "ok" if outcome.as_expected else f"EXPECTED step {mutant.expected_step}, {mutant.expected_term}"
        )
        print(f"{mutant.id:<{width}}  {mutant.family:<11} caught at {where:<28} {verdict}")
    total = len(chosen)
    seconds = time.perf_counter() - start
    print(f"caught {caught}/{total} planted bugs, {expected} with the expected first term ({seconds:.1f} s)")
    return 0 if caught == expected == total else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
