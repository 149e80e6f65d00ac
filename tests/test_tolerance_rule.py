"""The tolerance rule at its edges: zeros, subnormals, zero crossings, factor errors, overflow.

The rule (handgrad.contract.tolerance, manual/harness.md): per element |Δᵢ| ≤ atol·s + rtol·|tᵢ| with s
the term's largest |torch| over the recent steps, per term ‖Δ‖₂ ≤ rtol·‖t‖₂, values below the
smallest normal flushed to zero; both figures are printed as relative errors against rtol.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from handgrad import harness
from handgrad.cli import main, scenario_parser
from handgrad.contract.tolerance import TOLERANCES, RecentScale, norm
from handgrad.contract.trace import Reduction, StepTrace
from handgrad.harness import TermContractError, compare_traces, compare_values
from handgrad.scenarios import SCENARIOS

F64 = TOLERANCES["float64"]
F32 = TOLERANCES["float32"]
TINY = np.finfo(np.float64).tiny
SUBNORMAL = 5e-324


@pytest.mark.parametrize(
    ("hand", "torch"),
    [([0.0, 1.0], [1e-300, 1.0]), ([1e-300], [1e-300 * (1 + 1e-12)]), ([3.0, -2.0], [3.0, -2.0])],
    ids=["tiny-element-of-a-large-term", "relative-1e-12", "equal"],
)
def test_agreeing_values(hand, torch) -> None:
    check = compare_values("t", np.array(hand), np.array(torch), F64)
    assert check.ok and check.elem_rel <= F64.rtol and check.norm_rel <= F64.rtol


@pytest.mark.parametrize(
    ("hand", "torch"),
    [([1e-300], [0.0]), ([0.0], [1e-300]), ([0.0, 0.0], [1e-200, 0.0])],
    ids=["torch-zero", "hand-zero", "zero-term-vs-normal"],
)
def test_exact_zero_against_a_normal_value_disagrees_and_says_so(hand, torch) -> None:
    check = compare_values("t", np.array(hand), np.array(torch), F64)
    assert not check.ok and check.mismatched == 1
    assert math.isinf(check.elem_rel) or check.elem_rel > F64.rtol
    trace = StepTrace(1)
    trace.add("t", "t", "forward", np.array(hand))
    message = harness.first_divergence(1, trace, [check], F64).message()
    assert "is exactly 0 there" in message and "smallest normal" in message


@pytest.mark.parametrize(
    ("hand", "torch"),
    [([SUBNORMAL], [2 * SUBNORMAL]), ([0.0], [TINY / 2]), ([TINY / 3, 1e-320], [0.0, 0.0])],
    ids=["one-ulp-subnormal", "zero-vs-subnormal", "subnormals-vs-zeros"],
)
def test_values_in_the_underflow_range_count_as_zero(hand, torch) -> None:
    check = compare_values("t", np.array(hand), np.array(torch), F64)
    assert check.ok and check.elem_rel == 0.0 and check.norm_rel == 0.0  # no "rel 0.5" beside agree


def test_float32_flushes_below_its_own_smallest_normal() -> None:
    tiny32 = float(np.finfo(np.float32).tiny)
    assert compare_values("t", np.array([tiny32 / 4]), np.array([0.0]), F32).ok
    assert not compare_values("t", np.array([tiny32 * 4]), np.array([0.0]), F32).ok


def test_a_term_wide_factor_error_between_rtol_and_2rtol_fails_normwise() -> None:
    torch = np.array([1.0, 0.5, -0.25])
    hand = torch * (1 + 1.5e-10)  # each element within atol·max + rtol·|t|; the term is not
    check = compare_values("t", hand, torch, F64)
    assert check.mismatched == 0 and check.elem_rel <= F64.rtol
    assert check.norm_rel == pytest.approx(1.5e-10, rel=1e-3) and not check.ok
    trace = StepTrace(1)
    trace.add("t", "t", "forward", hand)
    assert "normwise rel error" in harness.first_divergence(1, trace, [check], F64).message()


def test_norm_neither_overflows_nor_underflows() -> None:
    assert norm(np.array([3e200, 4e200])) == pytest.approx(5e200)
    assert norm(np.array([3e-300, 4e-300])) == pytest.approx(5e-300)


def _trace(value: float) -> StepTrace:
    trace = StepTrace(1)
    trace.add("dense2.z", "z", "forward", np.array([value]))
    return trace


def test_a_scalar_crossing_zero_is_measured_at_its_recent_size() -> None:
    """A scalar z = w·a + b passing within 2e-6 of zero: a last-bit error of 4.4e-16 is rounding of
    summands of size ~0.5, not a 2.2e-10 relative error (deep's output bias gradient ∂L/∂b⁽⁹⁾, a
    batch sum that cancels, did this at step 11 of `compare all`: 1.5e-10 against its own value)."""
    recent = RecentScale()
    for value in (0.6, 0.3, 0.1):
        (check,) = compare_traces(_trace(value), _trace(value), F64, recent)
        assert check.ok
    crossing, off = 2e-6, 2e-6 + 4.4e-16
    (check,) = compare_traces(_trace(off), _trace(crossing), F64, recent)
    assert check.ok and check.scale == 0.6
    alone = compare_values("dense2.z", np.array([off]), np.array([crossing]), F64)
    assert not alone.ok  # measured against its own value at the crossing, it would fail


def _bias_traces(dL_dz: np.ndarray, hand_db: np.ndarray, torch_db: np.ndarray, declared: bool) -> list:
    summands = Reduction("no->o", ("dense1.dL_dz",)) if declared else None
    traces = []
    for dL_db in (hand_db, torch_db):
        trace = StepTrace(1)
        trace.add("dense1.dL_dz", "∂L/∂z⁽¹⁾", "backward", dL_dz)
        trace.add("dense1.dL_db", "∂L/∂b⁽¹⁾", "backward", dL_db, summands=summands)
        traces.append(trace)
    return compare_traces(*traces, F64)


def test_a_sum_that_cancels_exactly_is_judged_at_its_summands() -> None:
    """∂L/∂b of a layer feeding a training-mode BatchNorm is Σₙ ∂L/∂zₙ = 0 exactly (the BatchNorm's
    input gradient has zero mean over the batch); summed in two orders it is rounding noise of
    the summands' size on each side. Judged against its own size (the noise) it would fail;
    judged against Σ|∂L/∂zₙ|, the size its rounding follows, it agrees."""
    rng = np.random.default_rng(0)
    dL_dz = rng.normal(size=(16, 5))
    dL_dz -= dL_dz.mean(axis=0)
    forward, backward = dL_dz.sum(axis=0), dL_dz[::-1].cumsum(axis=0)[-1]
    assert np.all(np.abs(forward) < 1e-14) and not np.array_equal(forward, backward)
    assert not _bias_traces(dL_dz, forward, backward, declared=False)[1].ok
    z_check, b_check = _bias_traces(dL_dz, forward, backward, declared=True)
    assert z_check.ok and b_check.ok
    assert b_check.scale == pytest.approx(np.abs(dL_dz).sum(axis=0).max())


@pytest.mark.parametrize("factor", [0.0, 2.0, 1 + 1e-6])
def test_a_wrong_sum_still_fails_at_its_summands_scale(factor: float) -> None:
    """The summands' scale forgives rounding, not error: a zeroed, doubled or 1+1e-6 bias
    gradient of a batch that does not cancel fails at every element."""
    rng = np.random.default_rng(1)
    dL_dz = rng.normal(loc=0.5, size=(16, 5))
    dL_db = dL_dz.sum(axis=0)
    _, b_check = _bias_traces(dL_dz, dL_db * factor, dL_db, declared=True)
    assert not b_check.ok and b_check.mismatched == 5


def test_a_sum_over_an_untraced_term_is_a_contract_error() -> None:
    hand, torch = StepTrace(1), StepTrace(1)
    for trace in (hand, torch):
        trace.add("dense1.dL_db", "∂L/∂b⁽¹⁾", "backward", np.ones(3), summands=Reduction("no->o", ("x",)))
    with pytest.raises(TermContractError, match="untraced"):
        compare_traces(hand, torch, F64)


def test_deep_long_run_cancelling_sums_agree(capsys) -> None:
    """`compare deep --steps 300` failed at step 111 (∂L/∂b⁽⁹⁾: |Δ| 1.1e-17 on a value 5.0e-8,
    rel 1.03e-10) and, that fixed, at step 129 (∂L/∂W⁽⁹⁾ normwise 1.11e-10): batch sums whose
    rows cancel, judged at their own size instead of their summands'."""
    assert main(["compare", "deep", "--steps", "130"]) == 0
    assert "agree at every one of 130 steps" in capsys.readouterr().out


def test_the_window_forgets() -> None:
    recent = RecentScale(window=3)
    for value in (1.0, 1e-3, 1e-3, 1e-3):
        peaks, _ = recent.update(np.array([value]), np.array([value]))
    assert peaks[0] == 1e-3


def test_deep_1000_verdict_matches_its_numbers(capsys) -> None:
    """`deep --depth 1000 --steps 1`: gradients reach the subnormal range; the verdict says agree
    and every figure beside it is within rtol (it printed "agree; largest rel error 5.0e-01")."""
    args = scenario_parser("deep").parse_args(["--depth", "1000", "--steps", "1"])
    experiment = SCENARIOS["deep"].build(args)
    subnormal_terms = []

    def find_subnormals(step, hand, twin, checks):
        for term in twin:
            magnitude = np.abs(term.value)
            if np.any((magnitude > 0) & (magnitude < TINY)):
                subnormal_terms.append(term.name)

    report = harness.run(experiment, observers=[find_subnormals])
    assert subnormal_terms, "the run should reach the subnormal range"
    assert report.ok, report.verdict()
    assert report.largest_rel <= report.tolerance.rtol
    assert "agree" in report.verdict() and f"(rtol {report.tolerance.rtol:.0e})" in report.verdict()


def test_both_sides_overflowing_is_reported_as_both_diverged(capsys) -> None:
    argv = ["compare", "xor", "--lr", "1e4", "--activation", "relu", "--output-activation", "identity"]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "xor: both diverged at step" in out and "terms disagree" not in out


def test_json_records_both_figures_per_term() -> None:
    experiment = SCENARIOS["xor"].build(scenario_parser("xor").parse_args(["--steps", "20"]))
    report = harness.run(experiment)
    document = report.to_json()
    for term in document["terms"]:
        stats = report.terms[term["name"]]
        assert term["elem_rel"] == stats.elem_rel and term["norm_rel"] == stats.norm_rel
    assert document["tolerance"]["rtol"] == F64.rtol and "rule" in document["tolerance"]


def test_the_trace_sheet_judges_each_element_as_the_harness_does() -> None:
    """The Trace sheet's ok column takes the harness's s (TermCheck.scale): at a zero crossing, an
    element the harness passes is not marked FAIL on the sheet."""
    from openpyxl import Workbook

    from handgrad.workbook.tracesheet import TraceSheets
    from handgrad.workbook.xlsx import SharedStrings

    strings = SharedStrings()
    sheets = TraceSheets(Workbook(), F64, strings=strings)
    recent = RecentScale()
    crossing, off = 2e-6, 2e-6 + 4.4e-16
    for step, (hand, torch) in enumerate([(0.6, 0.6), (off, crossing)], start=1):
        checks = compare_traces(_trace(hand), _trace(torch), F64, recent)
        sheets.add_step(step, _trace(hand), _trace(torch), [check.scale for check in checks])
    assert all(check.ok for check in checks)

    def ok_column(trace_sheets: TraceSheets) -> list[str]:
        xml = "".join(trace_sheets.sheets[0][1]._pending)
        text = {index: text for text, index in strings.index.items()}
        return [text[int(i)] for i in re.findall(r'<c t="s"><v>([0-9]+)</v></c></row>', xml)[1:]]

    assert ok_column(sheets) == ["ok", "ok"]
    alone = TraceSheets(Workbook(), F64, strings=strings)
    alone.add_step(1, _trace(off), _trace(crossing))  # without the harness's s: its own size only
    assert ok_column(alone) == ["FAIL"]


def _large_cases() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(hand, torch) pairs of terms above BATCHED_TERM_LIMIT elements, every branch of the rule."""
    rng = np.random.default_rng(7)
    t = rng.normal(size=(12, 20))
    near = t * (1 + rng.uniform(-1e-13, 1e-13, t.shape))
    with_zeros = np.where(t > 0, t, 0.0)
    subnormal = t.copy()
    subnormal[0, :4] = [SUBNORMAL, -SUBNORMAL, 0.0, -0.0]
    subnormal_hand = subnormal.copy()
    subnormal_hand[0, :4] = [0.0, 3 * SUBNORMAL, -0.0, 0.0]
    not_finite, overflow = near.copy(), np.full((9, 9), 5e307)  # |Δ| overflows at 3×
    not_finite[3, 4] = math.nan
    return {
        "agree": (near, t),
        "exact": (t.copy(), t),
        "factor": (t * (1 + 1.5e-10), t),  # each element within its bound, the term fails normwise
        "elements": (near + (np.arange(t.size).reshape(t.shape) % 7 == 0) * 1e-6, t),
        "zeros": (np.where(with_zeros > 0, with_zeros * (1 + 1e-14), 0.0), with_zeros),
        "zero against value": (with_zeros, np.where(with_zeros > 0, with_zeros, 1e-3)),
        "all zero": (np.zeros((8, 10)), np.zeros((8, 10))),
        "subnormals": (subnormal_hand, subnormal),
        "hand not finite": (not_finite, t),
        "torch not finite": (t, not_finite),
        "difference overflows": (overflow, -overflow),
        "torch in column order": (near, np.asfortranarray(t)),
    }


@pytest.mark.parametrize("case", list(_large_cases()))
def test_a_large_term_in_a_trace_is_measured_as_compare_values_measures_it(case: str) -> None:
    """compare_traces measures a large term once for its size and its comparison (harness/batches.py
    LargeTerms); every figure must be the double compare_values gives with the same scales — here
    the window's, taken from an earlier step with larger values, and the term's own at step 1."""
    hand_value, torch_value = _large_cases()[case]
    assert hand_value.size > harness.BATCHED_TERM_LIMIT
    recent, verdicts = RecentScale(), []
    for step, factor in ((1, 3.0), (2, 1.0)):
        traces = []
        for value in (hand_value, torch_value):
            trace = StepTrace(step)
            trace.add("dense1.z", "z", "forward", value * factor)
            traces.append(trace)
        (check,) = compare_traces(*traces, F64, recent)
        torch_flushed = np.abs(F64.flush(torch_value * factor))
        own_scale = float(np.nan_to_num(torch_flushed, nan=0.0, posinf=0.0).max())
        if step == 1:
            scale, norm_scale = own_scale, norm(np.nan_to_num(torch_flushed, nan=0.0, posinf=0.0))
        expected = compare_values(
            "dense1.z", hand_value * factor, torch_value * factor, F64, scale=scale, norm_scale=norm_scale
        )
        assert repr(check) == repr(expected)
        verdicts.append(check.ok)
    agreeing = ("agree", "exact", "zeros", "all zero", "subnormals", "torch in column order")
    assert verdicts[0] == (case in agreeing)  # at step 1 each term is measured at its own size
