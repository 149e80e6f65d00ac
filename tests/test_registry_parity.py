"""Registry parity (issue 16): every layer kind handgrad checks has all of its parts.

:data:`handgrad.contract.layers.LAYER_KINDS` names, for each kind, its hand functions, its torch
module, its manual page and its live-sheet status; the layer stack's kinds must match the
contract's ``LAYER_SHAPES`` and the recurrent ones its ``CELLS``, so a kind added to the contract
without a row fails here, and a row without one of its parts names the part. The parts are checked
against the real registries: ``hand/network.py``'s ``LAYER_OPS`` and ``twin/network.py``'s
``TWIN_OPS`` for the stack, the term names the contract (or the family's run) gives, and a planted
bug in ``handgrad.mutants`` whose patch replaces one of the kind's
hand functions.
"""

from __future__ import annotations

import importlib
from functools import cache
from pathlib import Path

import pytest
import torch

from handgrad import mutants
from handgrad.cli import scenario_parser
from handgrad.contract import layers
from handgrad.contract.conv_layers import AvgPool2d, Conv2d, Dropout, Flatten, LocalResponseNorm, MaxPool2d
from handgrad.contract.layers import LAYER_KINDS, USER_BROUGHT, LayerKind
from handgrad.contract.names import CELLS, gate_grad_names
from handgrad.contract.normalization import BatchNorm, LayerNorm
from handgrad.contract.spec import Activation, Dense, Stage  # fmt: skip
from handgrad.contract.stack import LAYER_SHAPES, StageTerms
from handgrad.hand.network import LAYER_OPS
from handgrad.scenarios import SCENARIOS
from handgrad.twin.network import TWIN_OPS

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = {  # one instance of every stack kind, for its term names
    "Dense": Dense(3, 2),
    "Activation": Activation("tanh"),
    "Conv2d": Conv2d(1, 2, 3),
    "MaxPool2d": MaxPool2d(2),
    "AvgPool2d": AvgPool2d(2),
    "LocalResponseNorm": LocalResponseNorm(2),
    "Flatten": Flatten(),
    "Dropout": Dropout(0.5),
    "BatchNorm": BatchNorm(3),
    "LayerNorm": LayerNorm((3,)),
}
STACK_CLASSES = {cls.__name__: cls for cls in LAYER_SHAPES}


def _planted() -> set[tuple[str, str]]:
    """(hand module, function) of every patch of every planted bug."""
    every = (*mutants.MUTANTS, *mutants.SCENARIO_MUTANTS, *mutants.LAYER_MUTANTS)
    return {(getattr(target, "__name__", ""), name) for mutant in every for target, name, _ in mutant.patches}


@cache
def _family_terms(family: str) -> frozenset[str]:
    """The term names one step of the family's scenario emits (its defaults, one step)."""
    experiment = SCENARIOS[family].build(scenario_parser(family).parse_args(["--steps", "1"]))
    return frozenset(experiment.hand.step(1).names())


def missing_parts(kind: LayerKind, planted: set[tuple[str, str]]) -> list[str]:
    """The parts of ``kind`` that are not there, each named; [] when it is complete."""
    missing = []
    module = importlib.import_module(kind.hand)
    absent = [name for name in kind.functions if not callable(getattr(module, name, None))]
    if absent or not kind.functions:
        missing.append(f"hand op: {kind.hand} has no {absent or 'functions listed'}")
    if not isinstance(getattr(torch.nn, kind.twin, None), type):
        missing.append(f"twin op: torch.nn.{kind.twin} does not exist")
    if kind.family == "stack":
        cls = STACK_CLASSES.get(kind.name)
        if cls is None or cls not in LAYER_OPS or cls not in TWIN_OPS:
            missing.append(f"stack op: {kind.name} is not in LAYER_SHAPES, LAYER_OPS and TWIN_OPS")
        elif not StageTerms.of(Stage("x1", SAMPLES[kind.name], 1)).output:
            missing.append("term names: LayerShape names no output term")
    elif kind.family == "recurrent":
        if kind.name not in CELLS or not gate_grad_names(kind.name):
            missing.append(f"term names: {kind.name} is not a cell of contract/names.py")
    elif kind.term not in _family_terms(kind.family):
        missing.append(f"term names: a {kind.family} run emits no {kind.term!r}")
    if not any((kind.hand, name) in planted for name in kind.functions):
        missing.append(f"mutant: no planted bug replaces any of {kind.hand}.{{{', '.join(kind.functions)}}}")
    page = ROOT / "manual" / kind.manual
    if not page.is_file() or kind.twin not in page.read_text(encoding="utf-8"):
        missing.append(f"manual: manual/{kind.manual} does not name {kind.twin}")
    status, _, detail = kind.live.partition(": ")
    if status == "live":
        builder = ROOT / "reference" / "handgrad" / detail
        if not builder.is_file() or not {kind.name, kind.twin} & set(_words(builder)):
            missing.append(f"live: {detail} does not build {kind.name}")
    elif status != "trace only" or len(detail) < 20:
        missing.append(f"live: neither a builder nor a reason in words ({kind.live!r})")
    return missing


def _words(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").replace('"', " ").replace("(", " ").replace(",", " ").split()


def test_every_kind_of_the_contract_has_a_row() -> None:
    rows = {kind.family: set() for kind in LAYER_KINDS}
    for kind in LAYER_KINDS:
        rows[kind.family].add(kind.name)
    assert set(STACK_CLASSES) - USER_BROUGHT == rows["stack"]
    assert set(CELLS) == rows["recurrent"]
    assert len({kind.name for kind in LAYER_KINDS}) == len(LAYER_KINDS)


@pytest.mark.parametrize("kind", LAYER_KINDS, ids=lambda kind: kind.name)
def test_every_kind_has_every_part(kind: LayerKind) -> None:
    assert missing_parts(kind, _planted()) == []


def test_a_missing_part_is_named() -> None:
    """The check bites: a kind whose bug was never planted, whose page does not name it and whose
    live status gives no reason has those three parts named."""
    fake = LayerKind(
        "AvgPool2d", "stack", "handgrad.hand.conv", ("avgpool2d_backward",), "AvgPool2d", "dense.md", "soon"
    )
    planted = _planted() - {("handgrad.hand.conv", "avgpool2d_backward")}
    found = missing_parts(fake, planted)
    assert [part.split(":")[0] for part in found] == ["mutant", "manual", "live"], found


def test_user_brought_layers_are_the_only_exception() -> None:
    assert USER_BROUGHT == {"UserLayer"} and layers.USER_BROUGHT <= set(STACK_CLASSES)
