"""The verdict bites at every scale: one hand term perturbed by a factor is named, every element flagged.

For each family (dense at depth 20 with torch's init, where first-layer gradients are ~1e-19;
conv; recurrent with 3 stacked layers and long sequences; multitask; optimizer state) one hand
term, in the first, a middle and the last layer, is multiplied by a factor at every step
(:class:`handgrad.perturb.PerturbedSide`): 0 (a zeroed gradient), 2, and 1 + 1e-6 in float64. The
harness must name that term as the first divergence at step 1 and flag every element the factor
changed — whatever the term's size. In float32, 1 + 1e-3 is only 10·rtol: the term must fail, and
every element at least a ninth of the term's scale s is flagged (below that, a 1e-3 error of an
element is within atol·s, the float32 cancellation allowance; s is the term's largest |torch|, or
for a sum such as a bias gradient the size of its summands; manual/harness.md).
"""

from __future__ import annotations

import numpy as np
import pytest

from handgrad import harness
from handgrad.cli import scenario_parser
from handgrad.perturb import PerturbedSide, changed_elements
from handgrad.scenarios import SCENARIOS

DEEP = ("deep", ("--depth", "20", "--init", "torch", "--steps", "2"))
CONV = ("alexnet-mini", ("--steps", "2"))
RECURRENT = ("parity", ("--layers", "3", "--length", "16", "--steps", "2"))
MULTITASK = ("multitask", ("--steps", "2"))
OPTIMIZER = ("xor", ("--optimizer", "adam", "--mode", "batch", "--steps", "3"))

CASES = [
    # family, scenario, first / middle / last layer's term
    ("dense", DEEP, "dense1.dL_dW"),
    ("dense", DEEP, "dense10.a"),
    ("dense", DEEP, "dense21.dL_dz"),
    ("dense", DEEP, "dense10.dL_db"),  # a sum judged at its summands' size (Term.summands)
    ("dense", DEEP, "dense21.dL_dW"),
    ("dense", DEEP, "dense1.W_next"),
    ("conv", CONV, "conv1.dL_dW"),
    ("conv", CONV, "conv2.dL_db"),
    ("conv", CONV, "lrn2.dL_dout"),
    ("conv", CONV, "dense2.z"),
    ("recurrent", RECURRENT, "lstm1.dL_dW_ih"),
    ("recurrent", RECURRENT, "lstm2.c[8]"),
    ("recurrent", RECURRENT, "dense1.dL_dW"),
    ("multitask", MULTITASK, "trunk.dL_dW"),
    ("multitask", MULTITASK, "head1.z"),
    ("multitask", MULTITASK, "head2.dL_dW"),
    ("optimizer", OPTIMIZER, "adam.exp_avg.dense1.W"),
    ("optimizer", OPTIMIZER, "adam.exp_avg_sq.dense2.b"),
]
FACTORS64 = (0.0, 2.0, 1 + 1e-6)
CASES32 = [case for case in CASES if case[0] != "recurrent"]  # the recurrent family is float64 only


def _run(scenario: tuple[str, tuple[str, ...]], term: str, factor: float, *extra: str):
    name, argv = scenario
    experiment = SCENARIOS[name].build(scenario_parser(name).parse_args([*argv, *extra]))
    experiment.hand = PerturbedSide(experiment.hand, term, factor)
    first_values: dict[str, np.ndarray] = {}

    def keep(step, hand, twin, checks):  # torch's value of the term at step 1, and its scale s
        if step == 1:
            first_values["torch"] = twin.value(term)
            first_values["scale"] = next(check.scale for check in checks if check.name == term)

    report = harness.run(experiment, observers=[keep])
    return report, first_values["torch"], first_values["scale"]


def _perturbed_step(report, term: str):
    assert not report.ok, f"{term} perturbed, yet: {report.verdict()}"
    first = report.first
    assert (first.step, first.term) == (1, term), report.verdict()
    return first


@pytest.mark.parametrize("factor", FACTORS64, ids=["zeroed", "doubled", "1+1e-6"])
@pytest.mark.parametrize(("family", "scenario", "term"), CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_float64_perturbation_is_named_with_every_changed_element(family, scenario, term, factor) -> None:
    report, torch_value, _ = _run(scenario, term, factor)
    first = _perturbed_step(report, term)
    changed = changed_elements(torch_value, factor)
    assert changed > 0, f"{term} has no element the factor changes: pick another term"
    assert first.mismatched == changed, report.verdict()


@pytest.mark.parametrize(("family", "scenario", "term"), CASES32, ids=[f"{c[0]}-{c[2]}" for c in CASES32])
def test_float32_perturbation_by_ten_rtol_is_named(family, scenario, term) -> None:
    report, torch_value, scale = _run(scenario, term, 1 + 1e-3, "--dtype", "float32")
    first = _perturbed_step(report, term)
    magnitude = np.abs(torch_value)
    assert scale >= magnitude.max()
    # A sum judged at its summands' size (conv2's bias gradient cancels ~10× here) has the normwise
    # bound rtol·‖Σ|summands|‖, which a 10·rtol error of the sum itself need not cross.
    if scale == magnitude.max():
        assert first.norm_rel > report.tolerance.rtol
    large = int(np.count_nonzero(magnitude >= scale / 9))
    assert large > 0
    assert first.mismatched >= large, report.verdict()


@pytest.mark.parametrize("depth", [12, 14, 16, 20])
def test_zeroed_first_layer_gradient_is_caught_at_every_depth(depth) -> None:
    """The issue's runs: `deep --depth D --init torch --steps 3` with ∂L/∂W⁽¹⁾ zeroed."""
    deep = ("deep", ("--depth", str(depth), "--init", "torch", "--steps", "3"))
    report, torch_value, _ = _run(deep, "dense1.dL_dW", 0)
    first = _perturbed_step(report, "dense1.dL_dW")
    assert first.mismatched == first.total == torch_value.size
    if depth >= 14:  # every element is below the old fixed floor, atol 1e-12, that let this pass
        assert np.abs(torch_value).max() < 1e-12


def test_float32_doubled_gradient_at_depth_4_flags_every_element() -> None:
    deep = ("deep", ("--depth", "4", "--init", "torch", "--steps", "3", "--dtype", "float32"))
    report, torch_value, _ = _run(deep, "dense1.dL_dW", 2)
    first = _perturbed_step(report, "dense1.dL_dW")
    assert first.mismatched == changed_elements(torch_value, 2) == torch_value.size
