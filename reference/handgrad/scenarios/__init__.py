"""The built-in scenarios, by name. ``handgrad list`` prints them; ``compare all`` runs them all."""

from __future__ import annotations

from handgrad.scenarios.common import Scenario
from handgrad.scenarios.dense import MLP, XOR

SCENARIOS: dict[str, Scenario] = {scenario.name: scenario for scenario in (XOR, MLP)}
