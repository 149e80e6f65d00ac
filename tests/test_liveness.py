"""The workbook is live: edit η and one initial weight, and LibreOffice recomputes the whole run.

1. ``handgrad``'s writer produces the xor workbook (40 steps, all of them live).
2. LibreOffice recomputes it: every checked cell of Training and Walkthrough equals the hand run.
   That recomputed copy, loaded values-only and saved, is the "pasted numbers" workbook.
3. Both workbooks get the same edits with openpyxl (η and W⁽¹⁾[1,1] on the Training and the
   Walkthrough sheet: load, change the input cell, save) and LibreOffice recomputes both in one run.
4. A fresh hand run (a new HandNetwork with the new η and weight) must match every checked cell of
   the edited live workbook, and must NOT match the pasted one: a sheet of numbers cannot follow
   an edit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openpyxl
import pytest
import test_walkthrough as tw

from handgrad.cli import scenario_parser
from handgrad.contract.trace import StepTrace
from handgrad.contract.training import Optimizer
from handgrad.hand.network import HandNetwork
from handgrad.scenarios import SCENARIOS
from handgrad.workbook.grid import Grid
from handgrad.workbook.training import training_grid
from handgrad.workbook.walkthrough import walkthrough_grids
from handgrad.workbook.writer import run_with_workbook

STEPS = 40
NEW_LR = 0.8
NEW_W11 = -0.375
SHEETS = ("Training", "Walkthrough")


def _edit(source: Path, target: Path) -> None:
    """Set η and W⁽¹⁾[1,1] on each live sheet, through its defined names, and save."""
    book = openpyxl.load_workbook(source)
    for title in SHEETS:
        sheet = book[title]
        for name, value in (("eta", NEW_LR), ("W_1", NEW_W11)):
            ref = sheet.defined_names[name].attr_text.split("!")[1].split(":")[0].replace("$", "")
            assert isinstance(sheet[ref].value, (int, float)), f"{title}!{ref} is not an input cell"
            sheet[ref].value = value
    book.save(target)


def _fresh_hand(experiment) -> dict[int, StepTrace]:
    """The hand side from scratch with the edited η and W⁽¹⁾[1,1]."""
    spec = experiment.spec
    params = {name: np.array(value, dtype=float) for name, value in experiment.initial_params.items()}
    assert params["dense1.W"][0, 0] != NEW_W11 and spec.optimizer.lr != NEW_LR
    params["dense1.W"][0, 0] = NEW_W11
    hand = HandNetwork(
        spec.network,
        spec.loss,
        Optimizer("sgd", NEW_LR),
        params,
        spec.data.x,
        spec.data.y,
        spec.batches,
    )
    return {step: hand.step(step) for step in range(1, STEPS + 1)}


@pytest.mark.libreoffice
def test_editing_eta_and_a_weight_recomputes_every_step(tmp_path: Path, libreoffice: str) -> None:
    args = scenario_parser("xor").parse_args(["--steps", str(STEPS), "--mode", "online"])
    experiment = SCENARIOS["xor"].build(args)
    original = tmp_path / "xor.xlsx"
    report = run_with_workbook(experiment, original, walkthrough_steps=[1], live_steps=STEPS)
    assert report.ok, report.verdict()

    # where each term sits: the same layout functions the writer used
    before = {trace.step: trace for trace in tw.replay_hand(experiment, STEPS)}
    grids: list[Grid] = [
        *walkthrough_grids(experiment, {1: (before[1], before[1])}, steps=[1]),
        training_grid(experiment, report, STEPS),
    ]
    assert [grid.title for grid in grids] == list(SHEETS[::-1])

    (recomputed,) = tw.recalc([original], tmp_path / "first", libreoffice)
    values = tw.read_values(recomputed, SHEETS)
    for grid in grids:
        tw.assert_checks(values[grid.title], grid, before)

    pasted = tmp_path / "pasted.xlsx"
    openpyxl.load_workbook(recomputed, data_only=True).save(pasted)  # values only: no formula left
    edited_live, edited_pasted = tmp_path / "edited" / "live.xlsx", tmp_path / "edited" / "pasted.xlsx"
    edited_live.parent.mkdir()
    _edit(original, edited_live)
    _edit(pasted, edited_pasted)
    live_after, pasted_after = tw.recalc([edited_live, edited_pasted], tmp_path / "second", libreoffice)

    after = _fresh_hand(experiment)
    live_values = tw.read_values(live_after, SHEETS)
    pasted_values = tw.read_values(pasted_after, SHEETS)
    for grid in grids:
        tw.assert_checks(live_values[grid.title], grid, after)
        checked, bad = tw.mismatches(pasted_values[grid.title], grid, after)
        # a sheet of numbers keeps the old run: it fails the check (on the Training sheet nearly every
        # cell; step 1 reads x = (0, 0), so in the walkthrough the edit reaches the update terms only)
        assert bad, f"{grid.title}: the pasted numbers matched the edited run"
        if grid.title == "Training":
            assert len(bad) > 0.9 * checked
    loss_cells = sorted(cell for cell, (_, term, _) in grids[1].checks.items() if term == "loss.L")
    assert len(loss_cells) == STEPS
    steps = range(1, STEPS + 1)
    new_losses = [live_values["Training"][cell] for cell in loss_cells]
    old_losses = [pasted_values["Training"][cell] for cell in loss_cells]
    assert new_losses == pytest.approx([float(after[s].value("loss.L")) for s in steps], rel=1e-12)
    assert old_losses == pytest.approx([float(before[s].value("loss.L")) for s in steps], rel=1e-12)
