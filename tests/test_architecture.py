"""The import rules of manual/architecture.md, checked over every module of the package.

Each module belongs to a room (``handgrad.hand.dense`` → ``hand``; ``handgrad.contract.spec`` → ``spec``).
A room may import only the rooms :data:`ALLOWED` lists for it (the picture in DESIGN.md: the
contract below both sides; hand/ and twin/ never import each other; the workbook reads the run,
never the sides or the scenarios). Imports inside functions count: a lazy import is still a
dependency. :data:`KNOWN_DEBT` lists, edge by edge, the imports that break the rules today (the
work of issue 16); the test requires the breaches to be exactly that list, so a new one fails and
a fixed one must be struck from it.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "reference" / "handgrad"
CONTRACT = {"contract"}
UTILITIES = {"arguments", "atomic", "inputs", "tracebudget"}  # leaf helpers; import the contract only

ALLOWED: dict[str, set[str]] = {
    "version": set(),
    "contract": set(),
    "arguments": CONTRACT,
    "atomic": CONTRACT,
    "inputs": CONTRACT,
    "tracebudget": CONTRACT,
    "perturb": CONTRACT,
    "hand": CONTRACT,
    "twin": CONTRACT,
    "harness": CONTRACT | {"version"},
    "oracle": CONTRACT,
    "layercheck": CONTRACT | {"harness"},
    "testing": {"layercheck", "modelcheck"},
    "modelcheck": CONTRACT | UTILITIES | {"harness", "scenarios", "workbook"},
    "workbook": CONTRACT | {"harness", "atomic", "version", "tracebudget"},
    "scenarios": CONTRACT | UTILITIES | {"hand", "twin", "harness", "oracle"},
    "gradcheck": CONTRACT | UTILITIES | {"harness", "oracle", "scenarios"},
    "cli": CONTRACT
    | UTILITIES
    | {"harness", "scenarios", "gradcheck", "workbook", "version", "check_command"},
    # handgrad check's options and run; cli.py prints its report as compare's
    "check_command": CONTRACT | UTILITIES | {"harness", "scenarios", "workbook"},
    "__main__": {"cli"},
    "handgrad": {"layercheck", "modelcheck", "testing", "version"},
    "mutants": CONTRACT | {"hand", "scenarios", "harness", "cli"},
    "data": set(),  # package data (names.txt), read through importlib.resources
}

KNOWN_DEBT: set[tuple[str, str]] = set()  # (module, import) edges that still break a rule: none today


def _module_name(path: Path) -> str:
    parts = ["handgrad", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every handgrad module ``path`` imports, at any depth (``from handgrad.hand import optim``
    counts as ``handgrad.hand.optim`` when that is a module, else ``handgrad.hand``)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            submodules = {f"{base}.{alias.name}" for alias in node.names} & set(MODULES)
            found.update(submodules)
            if len(submodules) < len(node.names):  # some names are the package's own attributes
                found.add(base)
    return {name for name in found if name == "handgrad" or name.startswith("handgrad.")}


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "handgrad"


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}
GRAPH = {module: _imports(path) - {module} for module, path in MODULES.items()}


def test_every_room_has_a_rule() -> None:
    rooms = {_room(module) for module in MODULES}
    assert rooms <= set(ALLOWED), f"rooms without an import rule: {sorted(rooms - set(ALLOWED))}"


def test_import_rules_hold_except_the_listed_debt() -> None:
    breaches = {
        (module, imported)
        for module, imports in GRAPH.items()
        for imported in imports
        if _room(imported) != _room(module) and _room(imported) not in ALLOWED[_room(module)]
    }
    new = sorted(breaches - KNOWN_DEBT)
    fixed = sorted(KNOWN_DEBT - breaches)
    assert not new, f"imports that break manual/architecture.md's rules: {new}"
    assert not fixed, f"fixed: strike these from KNOWN_DEBT: {fixed}"


@pytest.mark.parametrize("room", ["hand", "harness", "oracle", "contract"])
def test_torch_free_rooms_never_import_torch(room: str) -> None:
    for module, path in MODULES.items():
        if _room(module) != room:
            continue
        names = {
            alias.name.split(".")[0] if isinstance(node, ast.Import) else (node.module or "").split(".")[0]
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, (ast.Import, ast.ImportFrom))
            for alias in (node.names if isinstance(node, ast.Import) else [node])
        }
        assert "torch" not in names, f"{module} imports torch"


def _cycle() -> list[str] | None:
    """One import cycle among handgrad's modules (a package counts as importing its submodules'
    importers only through its own __init__), or None."""
    colour: dict[str, int] = defaultdict(int)  # 0 new, 1 on the path, 2 done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        colour[module] = 1
        path.append(module)
        for imported in sorted(GRAPH.get(module, ())):
            if imported not in MODULES:
                continue
            if colour[imported] == 1:
                return [*path[path.index(imported) :], imported]
            if colour[imported] == 0 and (found := visit(imported)):
                return found
        path.pop()
        colour[module] = 2
        return None

    for module in sorted(MODULES):
        if colour[module] == 0 and (found := visit(module)):
            return found
    return None


def test_no_import_cycles() -> None:
    assert _cycle() is None, " → ".join(_cycle() or [])


def test_the_checker_sees_a_planted_breach_and_a_planted_cycle(monkeypatch) -> None:
    monkeypatch.setitem(
        GRAPH, "handgrad.hand.dense", GRAPH["handgrad.hand.dense"] | {"handgrad.twin.network"}
    )
    with pytest.raises(AssertionError, match="handgrad.hand.dense"):
        test_import_rules_hold_except_the_listed_debt()
    spec = "handgrad.contract.spec"
    monkeypatch.setitem(GRAPH, spec, GRAPH[spec] | {"handgrad.hand.network"})
    assert _cycle() is not None
