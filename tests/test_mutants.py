"""Every planted bug of handgrad.mutants is caught, at the term it first touches.

Each case plants one broken copy of a shipped hand function (the shipped code is not edited),
runs its small experiment through the harness and asserts that the first divergence is at the
expected step and term, with the term just before it in agreement. A control runs each distinct
experiment with the shipped code and must agree, so what is caught is the bug, not the setup.
"""

from __future__ import annotations

import pytest

from handgrad import harness
from handgrad.hand import activations, attention, conv, dense, embedding, losses, normalization, optim
from handgrad.mutants import MUTANTS, SCENARIO_MUTANTS, run_mutant

SHIPPED = (
    dense.forward,
    dense.backward,
    activations.derivative,
    losses.forward,
    losses.backward,
    conv.conv2d_backward,
    dict(optim.RULES),
)


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.id for m in MUTANTS])
def test_planted_bug_is_caught_at_its_first_term(mutant) -> None:
    outcome = run_mutant(mutant)
    assert outcome.caught, f"{mutant.id} went unnoticed: {outcome.message}"
    assert (outcome.step, outcome.term) == (mutant.expected_step, mutant.expected_term), outcome.message
    assert mutant.expected_term in outcome.message  # the message names the term


_CONTROLS = {(m.scenario, m.argv): m for m in MUTANTS}


@pytest.mark.parametrize("mutant", list(_CONTROLS.values()), ids=[f"{s} {' '.join(a)}" for s, a in _CONTROLS])
def test_control_without_the_bug_agrees(mutant) -> None:
    report = harness.run(mutant.experiment())
    assert report.ok, report.verdict()


def test_registry_spans_every_family_and_restores_the_shipped_code() -> None:
    assert len(MUTANTS) >= 20
    families = {"dense", "activations", "losses", "optim", "conv", "recurrent", "multitask"}
    assert {m.family for m in MUTANTS} == families
    assert len({m.id for m in MUTANTS}) == len(MUTANTS)
    after = (
        dense.forward,
        dense.backward,
        activations.derivative,
        losses.forward,
        losses.backward,
        conv.conv2d_backward,
        dict(optim.RULES),
    )
    assert after == SHIPPED


@pytest.mark.parametrize("mutant", SCENARIO_MUTANTS, ids=[m.id for m in SCENARIO_MUTANTS])
def test_layer_bug_in_a_scenario_is_caught_at_its_first_term(mutant) -> None:
    """The layer slips of handgrad.mutants.layers, planted in the makemore and transformer runs."""
    outcome = run_mutant(mutant)
    assert outcome.caught, f"{mutant.id} went unnoticed: {outcome.message}"
    assert (outcome.step, outcome.term) == (mutant.expected_step, mutant.expected_term), outcome.message
    assert mutant.expected_term in outcome.message


def test_scenario_mutants_control_agrees_and_restores_the_shipped_code() -> None:
    def functions() -> tuple[object, ...]:
        return (normalization.batchnorm_forward, normalization.layernorm_backward, embedding.backward,
                conv.avgpool2d_forward, conv.flatten_forward,
                activations.derivative, attention.sdpa_forward, attention.causal_mask,
                attention.residual_backward)  # fmt: skip

    shipped = functions()
    for mutant in SCENARIO_MUTANTS:
        run_mutant(mutant)
    assert functions() == shipped
    scenarios = {"makemore", "transformer", "batchnorm-stack", "layernorm-stack", "pooled-stack"}
    assert {m.scenario for m in SCENARIO_MUTANTS} == scenarios
    for scenario in scenarios:
        report = harness.run(next(m for m in SCENARIO_MUTANTS if m.scenario == scenario).experiment())
        assert report.ok, report.verdict()
