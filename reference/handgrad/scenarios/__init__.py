"""The built-in scenarios, by name. ``handgrad list`` prints them; ``compare all`` runs them all.

The registry is lazy: a name maps to the module that defines its :class:`Scenario`, imported on
first look-up, so ``compare xor`` loads the dense family only (not the conv, recurrent or
multitask modules). Iteration order is the listing order.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping

from handgrad.scenarios.common import Scenario

_WHERE: dict[str, tuple[str, str]] = {
    "xor": ("handgrad.scenarios.dense", "XOR"),
    "mlp": ("handgrad.scenarios.dense", "MLP"),
    "alexnet-mini": ("handgrad.scenarios.conv", "ALEXNET_MINI"),
    "parity": ("handgrad.scenarios.recurrent", "PARITY"),
    "echo": ("handgrad.scenarios.recurrent", "ECHO"),
    "deep": ("handgrad.scenarios.deep", "DEEP"),
    "multitask": ("handgrad.scenarios.multitask", "MULTITASK"),
    "makemore": ("handgrad.scenarios.makemore", "MAKEMORE"),
    "transformer": ("handgrad.scenarios.transformer", "TRANSFORMER"),
}


class _Registry(Mapping[str, Scenario]):
    """``SCENARIOS[name]`` imports the scenario's module the first time it is asked for."""

    def __getitem__(self, name: str) -> Scenario:
        module, attribute = _WHERE[name]
        scenario = getattr(importlib.import_module(module), attribute)
        if scenario.name != name:  # the table and the module must agree
            raise RuntimeError(f"registry: {name!r} is {module}.{attribute}, named {scenario.name!r}")
        return scenario

    def __iter__(self) -> Iterator[str]:
        return iter(_WHERE)

    def __len__(self) -> int:
        return len(_WHERE)

    def __contains__(self, name: object) -> bool:
        return name in _WHERE


SCENARIOS: Mapping[str, Scenario] = _Registry()
