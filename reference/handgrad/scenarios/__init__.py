"""The built-in scenarios, by name. ``handgrad list`` prints them; ``compare all`` runs them all."""

from __future__ import annotations

from handgrad.scenarios.common import Scenario
from handgrad.scenarios.conv import ALEXNET_MINI
from handgrad.scenarios.deep import DEEP
from handgrad.scenarios.dense import MLP, XOR
from handgrad.scenarios.makemore import MAKEMORE
from handgrad.scenarios.multitask import MULTITASK
from handgrad.scenarios.recurrent import ECHO, PARITY
from handgrad.scenarios.transformer import TRANSFORMER

SCENARIOS: dict[str, Scenario] = {
    scenario.name: scenario
    for scenario in (XOR, MLP, ALEXNET_MINI, PARITY, ECHO, DEEP, MULTITASK, MAKEMORE, TRANSFORMER)
}
