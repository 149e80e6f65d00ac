"""A run imports only what it uses: the other families' scenario modules and the workbook
(openpyxl) load when asked for (issue 19). Nothing here is timed; scripts/bench.py measures."""

from __future__ import annotations

import ast
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from handgrad.scenarios import SCENARIOS

ROOT = Path(__file__).resolve().parents[1]

RUN_AND_LIST = """
import runpy, sys
prefixes = tuple(sys.argv.pop(1).split(","))
sys.argv = ["handgrad", *sys.argv[1:]]
try:
    runpy.run_module("handgrad", run_name="__main__")
except SystemExit as exit:
    assert not exit.code, exit.code
print(sorted(m for m in sys.modules if m.startswith(prefixes)))
"""


def loaded_after(*argv: str, prefixes: str = "handgrad.scenarios.,handgrad.workbook,openpyxl") -> list[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "reference"), env.get("PYTHONPATH")]))
    completed = subprocess.run(
        [sys.executable, "-c", RUN_AND_LIST, prefixes, *argv],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return ast.literal_eval(completed.stdout.strip().splitlines()[-1])


def test_compare_xor_loads_the_dense_family_only_and_no_workbook() -> None:
    loaded = loaded_after("compare", "xor", "--steps", "1", "--quiet")
    assert "handgrad.scenarios.dense" in loaded
    others = ("conv", "recurrent", "multitask", "deep", "makemore", "transformer")
    assert [m for m in loaded if m.rsplit(".", 1)[-1] in others] == []
    assert [m for m in loaded if m.startswith(("handgrad.workbook", "openpyxl"))] == []


def test_compare_xor_with_xlsx_loads_the_workbook(tmp_path: Path) -> None:
    loaded = loaded_after("compare", "xor", "--steps", "1", "--quiet", "--xlsx", str(tmp_path / "x.xlsx"))
    assert "handgrad.workbook.writer" in loaded and "openpyxl" in loaded


def test_the_lazy_registry_lists_every_scenario_in_order_and_each_resolves_to_its_name() -> None:
    names = ["xor", "mlp", "alexnet-mini", "parity", "echo", "deep", "multitask", "makemore", "transformer"]
    assert list(SCENARIOS) == names and len(SCENARIOS) == len(names)
    assert all(SCENARIOS[name].name == name for name in names)
    assert "nope" not in SCENARIOS


# what a plain `compare xor` has no use for: other families' code, the workbook, the optional
# checks (gradcheck, check, the planted bugs), and no third-party module beyond numpy and torch
NOT_FOR_XOR = (
    "handgrad.workbook",
    "handgrad.gradcheck",
    "handgrad.oracle",
    "handgrad.perturb",
    "handgrad.mutants",
    "handgrad.layercheck",
    "handgrad.modelcheck",
    "handgrad.check_command",
    "openpyxl",
    "scipy",
    "pandas",
    "matplotlib",
)
OTHER_FAMILIES = ("recurrent", "transformer", "attention", "embedding", "makemore", "multitask", "deep")


def test_compare_xor_loads_no_other_family_no_optional_check_and_no_extra_library() -> None:
    loaded = loaded_after(
        "compare", "xor", "--steps", "1", "--quiet", prefixes="handgrad,openpyxl,scipy,pandas,matplotlib"
    )
    assert "handgrad.harness.lockstep" in loaded and "handgrad.twin.network" in loaded  # the listing works
    assert [m for m in loaded if m.startswith(NOT_FOR_XOR)] == []
    family = [m for m in loaded if any(word in m.rsplit(".", 1)[-1] for word in OTHER_FAMILIES)]
    assert family == []


def test_compare_all_starts_only_registered_scenarios_longest_first() -> None:
    from handgrad.cli import LONGEST_FIRST

    assert len(set(LONGEST_FIRST)) == len(LONGEST_FIRST) and set(LONGEST_FIRST) <= set(SCENARIOS)


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or not platform.libc_ver()[0] == "glibc", reason="glibc only"
)
def test_the_command_line_keeps_freed_memory_for_the_next_step() -> None:
    """harness/allocator.py: glibc accepts the three mallopt settings, once and for all."""
    from handgrad.harness.allocator import keep_freed_memory

    assert keep_freed_memory() and keep_freed_memory()
