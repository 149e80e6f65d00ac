"""The Trace keeps a stated budget of steps; the comparison still covers every step."""

from __future__ import annotations

from pathlib import Path

import pytest
from openpyxl import load_workbook

from handgrad import cli
from handgrad.contract.spec import SpecError
from handgrad.tracebudget import TraceBudget, TraceSteps, parse_trace_steps, spread


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, TraceSteps("auto")),
        ("all", TraceSteps("all")),
        ("40", TraceSteps("count", 40)),
        ("3:9", TraceSteps("range", 3, 9)),
        ("every:10", TraceSteps("every", 10)),
    ],
)
def test_trace_steps_parse(text: str | None, expected: TraceSteps) -> None:
    assert parse_trace_steps(text) == expected


@pytest.mark.parametrize("text", ["0", "every:0", "9:3", "0:4", "some", "1:2:3", "every:x"])
def test_bad_trace_steps_name_the_field(text: str) -> None:
    with pytest.raises(SpecError) as error:
        parse_trace_steps(text)
    assert error.value.field == "trace_steps"


def test_bad_trace_steps_exit_2_before_running(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["compare", "xor", "--xlsx", str(tmp_path / "x.xlsx"), "--trace-steps", "every:0"]) == 2
    assert "trace_steps" in capsys.readouterr().err
    assert not (tmp_path / "x.xlsx").exists()


@pytest.mark.parametrize(("count", "steps"), [(1, 100), (2, 100), (7, 100), (40, 1000), (100, 100), (5, 3)])
def test_spread_keeps_first_last_and_an_even_sample(count: int, steps: int) -> None:
    kept = spread(count, steps)
    assert len(kept) == min(count, steps)
    assert 1 in kept and all(1 <= k <= steps for k in kept)
    if count > 1:
        assert steps in kept


def _admit(budget: TraceBudget, steps: int, failing_from: int | None = None) -> list[int]:
    written = []
    for step in range(1, steps + 1):
        failing = failing_from is not None and step >= failing_from
        written += [k for k, _ in budget.admit(step, 10, failing, None)]
    written += [k for k, _ in budget.finish()]
    return written


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        (TraceSteps("all"), list(range(1, 21))),
        (TraceSteps("range", 3, 5), [3, 4, 5, 20]),
        (TraceSteps("every", 10), [1, 11, 20]),
        (TraceSteps("count", 2), [1, 20]),
    ],
)
def test_each_choice_keeps_its_steps_and_the_last(choice: TraceSteps, expected: list[int]) -> None:
    assert _admit(TraceBudget(choice, 20), 20) == expected


def test_first_divergence_and_its_neighbours_are_always_kept() -> None:
    written = _admit(TraceBudget(TraceSteps("count", 2), 100), 100, failing_from=50)
    assert written == [1, 49, 50, 51, 100]  # in step order: the rows stream


def test_live_sheet_steps_are_kept_and_count_against_the_automatic_budget() -> None:
    budget = TraceBudget(TraceSteps("auto"), 1000, budget_rows=100)  # 10 steps of 10 rows
    budget.require([500, 501])
    written = _admit(budget, 1000)
    assert {500, 501} <= set(written)
    assert len(written) == 10


@pytest.mark.parametrize(("required", "expected"), [([1], [1, 200]), ([1, 2], [1, 2]), ([], [1, 200])])
def test_a_required_step_the_plan_holds_costs_nothing_extra(required: list[int], expected: list[int]) -> None:
    """The transformer at its defaults: two steps fit and the walkthrough needs step 1, which the
    plan (first and last) holds already: the Trace keeps steps 1 and 200, not step 1 alone."""
    budget = TraceBudget(TraceSteps("auto"), 200, budget_rows=25)  # 2 steps of 10 rows
    budget.require(required)
    assert _admit(budget, 200) == expected


def test_long_xor_keeps_a_budget_and_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "xor.xlsx"
    assert cli.main(["compare", "xor", "--steps", "4000", "--xlsx", str(path)]) == 0
    out = capsys.readouterr().out
    assert "all 19 terms agree at every one of 4000 steps" in out  # every step compared
    [line] = [line for line in out.splitlines() if "The Trace keeps" in line]
    book = load_workbook(path, read_only=True)
    steps = [row[0] for row in book["Trace"].iter_rows(min_row=2, values_only=True)]
    kept = sorted(set(steps))
    assert len(steps) <= 120_000 and kept[0] == 1 and kept[-1] == 4000 and len(kept) < 4000
    assert f"keeps {len(kept):,} of the 4,000 steps" in line
    summary = [v for row in book["Summary"].iter_rows(max_row=8, values_only=True) for v in row if v]
    readme = [v for row in book["Read me"].iter_rows(values_only=True) for v in row if v]
    assert any(line.split("workbook: ")[1] in str(text) for text in summary)
    assert any(line.split("workbook: ")[1] in str(text) for text in readme)
    assert any(str(text).startswith("handgrad compare xor --steps 4000 --xlsx FILE.xlsx") for text in readme)
    book.close()


@pytest.mark.parametrize(("rows", "warned"), [(124_831, False), (912_300, True)])
def test_a_step_over_the_budget_is_said_with_its_size_when_large(rows: int, warned: bool) -> None:
    """deep's one step (124,831 rows, ~3 MB) passes the budget quietly; echo at length 2,000 (one
    step of 912,300 rows, a 25.6 MB workbook measured) is said with its size in megabytes."""
    budget = TraceBudget(TraceSteps("auto"), 1)
    budget.admit(1, rows, False, None)
    text = budget.describe(1)
    assert text.startswith("The Trace keeps every one of the 1 steps run.")
    assert ("One step is 912,300 rows" in text and "about 25 MB" in text) is warned
    assert ("One step is" in text) is warned


def test_required_steps_over_the_budget_say_so_and_the_remedy() -> None:
    """deep with --walkthrough 1,2,3,4 keeps four steps of 124,831 rows (a 31 MB workbook)."""
    budget = TraceBudget(TraceSteps("auto"), 100)
    budget.require([1, 2, 3, 4])
    for step in range(1, 101):
        budget.admit(step, 124_831, False, None)
    budget.finish()
    text = budget.describe(100)
    assert "The 4 steps it must keep (the steps the live sheets show) are 499,324 rows" in text
    assert "about 13 MB (fewer --walkthrough steps or a smaller run give a smaller workbook)" in text


def test_a_divergence_over_the_budget_names_it() -> None:
    """transformer --n-embd 160 drifted past rtol at step 185: steps 1 and 184-186 of 720,239 rows."""
    budget = TraceBudget(TraceSteps("auto"), 200)
    budget.require([1])
    for step in range(1, 201):
        budget.admit(step, 720_239, step >= 185, None)
    budget.finish()
    text = budget.describe(200)
    assert "The 4 steps it must keep (the first divergence and its neighbours) are 2,880,956 rows" in text
    assert "about 78 MB (a smaller run gives a smaller workbook)" in text
