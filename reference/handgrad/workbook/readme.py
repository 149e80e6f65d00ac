"""The Read me sheet: how to read each sheet, the colour legend, the conventions, how to recompute."""

from __future__ import annotations

from dataclasses import dataclass, field

from handgrad.contract.runs import MakemoreRun, TransformerRun
from handgrad.harness import Experiment, Report
from handgrad.workbook import live_sheets
from handgrad.workbook.grid import Grid
from handgrad.workbook.styles import COLOURS

TITLE = "Read me"


@dataclass(frozen=True)
class WorkbookFacts:
    """What the writer knows about the sheets it wrote, for the Read me to state."""

    walkthrough_sheets: list[str] = field(default_factory=list)
    walkthrough_steps: list[int] = field(default_factory=list)
    training_sheet: str | None = None
    training_not_live: str | None = None  # a Training sheet without formulas: why
    training_rows: int = 0  # live rows of the Training sheet
    live_note: str | None = None  # why no live-formula sheet was written, when none was
    live_steps: int = 1000
    trace_sheets: list[str] = field(default_factory=list)
    trace_rows: int = 0
    trace_note: str = ""  # which steps the Trace keeps (tracebudget.TraceBudget.describe)
    rows_per_sheet: int = 1_048_576
    chart_stride: int = 1
    checks: int = 0
    other_sheets: list[str] = field(default_factory=list)  # Diagnostics, Gradient through time
    command: str = "handgrad compare SCENARIO --xlsx FILE"  # the command that wrote this workbook

    def sheet_list(self) -> str:
        """The sheets present, one phrase each (Summary!A3 and the Read me say the same)."""
        parts = ["Summary"]
        if self.walkthrough_sheets:
            steps = ", ".join(map(str, self.walkthrough_steps))
            parts.append(f"{', '.join(self.walkthrough_sheets)} (step {steps} as live formulas)")
        else:
            parts.append("no live Walkthrough")
        if self.training_sheet and not self.training_not_live:
            parts.append(f"{self.training_sheet} (steps 1–{self.training_rows:,} live)")
        elif self.training_sheet:
            parts.append(f"{self.training_sheet} (not live)")
        else:
            parts.append("no Training sheet")
        trace = ", ".join(self.trace_sheets)
        parts.append(f"{trace} ({self.trace_rows:,} rows, every number of the steps kept)")
        parts += [*self.other_sheets, "Parameters", "Read me"]
        return "; ".join(parts)

    def not_live(self) -> list[str]:
        """Each live sheet this workbook lacks, with the reason (the Summary and the console)."""
        lines = []
        if not self.walkthrough_sheets:
            lines.append(f"No live Walkthrough: {self.live_note}.")
        if self.training_sheet is None:
            why = (
                self.live_note
                if not self.walkthrough_sheets
                else (
                    "a row of formulas per step is written for stacks of Dense layers and activations; "
                    f"{' and '.join(self.walkthrough_sheets)} shows step "
                    f"{', '.join(map(str, self.walkthrough_steps))} of this network live"
                )
            )
            lines.append(f"No Training sheet: {why}.")
        elif self.training_not_live:
            lines.append(f"The Training sheet is not live: {self.training_not_live}.")
        return lines


LEGEND = [
    ("input", "input: a plain number you may edit (x, y, initial weights, η); every formula reads it"),
    ("forward", "forward pass: z = W·a + b, a = f(z)"),
    ("loss", "loss: L and what feeds it"),
    ("backward", "backward pass: ∂L/∂(…), the gradients"),
    ("update", "update: the new weights W − η·∂L/∂W"),
    ("state", "optimizer state (momentum buffers, Adam moments)"),
    ("torch", "torch: the numbers PyTorch computed for the same term (plain numbers, not formulas)"),
    ("delta", "|Δ|: |hand − torch|, computed by formula from the two blocks beside it"),
]


def _conventions(config: dict[str, object]) -> list[str]:
    lines = [
        "Weights are (out, in) and z = W·x + b, as torch.nn.Linear; a row of the data is one sample.",
        "ReLU′(0) = 0 and LeakyReLU′(0) = slope, as torch.",
        "Sigmoid is written IF(z>=0, 1/(1+EXP(-z)), EXP(z)/(1+EXP(z))) so a large negative z gives no #NUM!.",
    ]
    loss, reduction, half = config.get("loss"), config.get("reduction"), config.get("half")
    if loss == "mse":
        if reduction == "mean":
            text = "Loss: mean squared error over every element of ŷ, as nn.MSELoss (reduction='mean')"
        else:
            text = "Loss: summed squared error, as nn.MSELoss(reduction='sum')"
        if half:
            text += ", times ½ (the textbook ½·Σ(ŷ−y)²; torch's loss is scaled by 0.5 to match)"
        lines.append(text + ".")
    elif loss == "bce":
        lines.append(
            f"Loss: binary cross-entropy as nn.BCELoss: each log clamped at −100, reduction '{reduction}'."
        )
    if config.get("fold_bias"):
        lines.append(
            "Folded bias: W̃ = [W | b] multiplies the augmented input [x; 1]; W̃[:, :-1] is torch's "
            "weight and W̃[:, -1] its bias (see Parameters)."
        )
    mode = config.get("mode")
    if mode == "online":
        lines.append("Online training: one row of the data per step, cycling through the rows.")
    elif mode == "batch":
        lines.append("Batch training: every row of the data at every step.")
    elif mode == "minibatch":
        lines.append(f"Minibatch training: {config.get('batch_size')} rows per step.")
    if config.get("optimizer") == "sgd":
        lines.append("Update: plain SGD, W′ = W − η·∂L/∂W, as torch.optim.SGD.")
    return lines


def readme_grid(experiment: Experiment, report: Report, facts: WorkbookFacts) -> Grid:
    grid = Grid(TITLE)
    grid.widths.update({1: 24, 2: 110})
    row = 1
    grid.set(row, 1, "Read me: how to read this workbook", "title")
    row += 2

    def line(label: str, text: str, style: str | None = None) -> None:
        nonlocal row
        grid.text(row, 1, label, style or "label")
        grid.text(row, 2, text, "text")
        row += 1

    grid.set(row, 1, "The sheets", "subtitle")
    row += 1
    line("In this workbook", facts.sheet_list() + ".")
    for text in facts.not_live():
        line("Not live", text)
    line(
        "Summary",
        "The verdict, the run's configuration, library versions, each term's worst |Δ| and rel "
        "error over the run against its tolerance, the first divergence, and three charts (loss per step, "
        "gradient norm per layer, step size: the η in force and the effective step ‖θ′ − θ‖/‖∂L/∂θ‖).",
    )
    if facts.walkthrough_sheets and isinstance(experiment.spec, (MakemoreRun, TransformerRun)):
        line(
            "Walkthrough",
            f"Sheets {', '.join(facts.walkthrough_sheets)}: a slice of one training step (named in the "
            "sheet's second row) as live formulas, forward and backward, block by block. Intermediates "
            "no side traces (μ, σ², x̂; Q, K, V, S, P) are formula blocks without a torch column; beside "
            "every block of a traced term: torch's numbers and a |Δ| block. Edit an input cell (yellow) "
            "and the blocks below recompute; the rest of the step is on the Trace.",
        )
    elif facts.walkthrough_sheets and (note := _conv_slice_note(experiment)):
        line(
            "Walkthrough",
            f"Sheets {', '.join(facts.walkthrough_sheets)}: one training step's first conv layer as live "
            f"formulas, on a slice ({note[len('Slice: ') :]}; named in the sheet's second row). Beside "
            "every block of a traced term: torch's numbers and a |Δ| block; the rest is on the Trace.",
        )
    elif facts.walkthrough_sheets:
        line(
            "Walkthrough",
            f"Sheets {', '.join(facts.walkthrough_sheets)}: one training step as live formulas, block by "
            "block in computation order (forward, loss, backward, update), each block titled with its "
            "symbol and equation. Beside each hand block: torch's numbers for the same term and a |Δ| "
            "block. Edit an input cell (yellow) and the whole step recomputes. Without --walkthrough the "
            "step shown is the first of steps 1-8 where no gradient is zero everywhere.",
        )
    else:
        line("Walkthrough", f"Not written for this run: {facts.live_note}.")
    if facts.training_sheet and not facts.training_not_live:
        cap = (
            f"Only the first {facts.training_rows:,} steps are live (--live-steps, and the steps the "
            "Trace keeps from step 1)."
            if report.steps_run > facts.training_rows
            else "Every step of the run is live."
        )
        line(
            "Training",
            "One row per step; every term is a formula reading the previous row's updated "
            f"weights, so editing an initial weight or η recomputes the whole run. {cap}",
        )
    elif facts.training_sheet:
        line("Training", f"Written without live formulas: {facts.training_not_live}.")
    else:
        line("Training", "Not written for this run" + (f": {facts.live_note}." if facts.live_note else "."))
    trace = ", ".join(facts.trace_sheets)
    split = (
        f" An Excel sheet holds {facts.rows_per_sheet:,} rows, so the Trace continues on {trace}: each with "
        "its own header and filters, rows in order."
        if len(facts.trace_sheets) > 1
        else f" When a run has more rows than one sheet holds ({facts.rows_per_sheet:,}), the Trace "
        "continues on 'Trace 2', 'Trace 3', ..."
    )
    line(
        "Trace",
        f"{facts.trace_note} Every element of every term of each step kept ({facts.trace_rows:,} rows): "
        "step, phase, layer, term, index (C order, [row,col] from 1), "
        "hand and torch (all 17 digits), |Δ| and the element-wise rel "
        "= |Δ| / ((atol/rtol)·s + |torch|), s the term's largest |torch| over recent steps (6 digits; "
        "empty where infinite: torch is 0 and hand is not), ok (rel ≤ rtol, on the exact numbers). "
        "An Excel table: use the header's filters, e.g. ok = FAIL." + split,
    )
    line(
        "Parameters",
        "Initial and final weights of both sides with their |Δ|, and the torch state_dict "
        "key each hand parameter maps onto; at the end, each option as asked for and as torch ran with.",
    )
    line(
        "Chart data",
        "Hidden: the numbers the Summary charts draw"
        + ("." if facts.chart_stride == 1 else f" (every {facts.chart_stride}th step, and the last)."),
    )
    line(
        "Checks",
        f"Hidden: what each of the {facts.checks:,} live formula cells computes, so scripts/recalc.py can "
        "compare a recomputed workbook with the hand side's numbers on the Trace. One row per run of cells "
        "down a column: row 'first row' + k computes element 'index' + k·'index +' (flat, C order) of 'term' "
        "at step 'step' + k·'step +' (k = 0 .. 'last row' − 'first row').",
    )
    row += 1

    grid.set(row, 1, "Colours", "subtitle")
    row += 1
    for key, text in LEGEND:
        colour = COLOURS.get(key, ("", ""))[0]
        grid.text(row, 1, f"{key} ({colour})" if colour else key, key)
        grid.text(row, 2, text, "text")
        row += 1
    row += 1

    grid.set(row, 1, "Conventions in use", "subtitle")
    row += 1
    for text in _conventions(report.config):
        grid.text(row, 2, text, "text")
        row += 1
    grid.text(row, 2, f"Comparison: |hand − torch| ≤ {report.tolerance.describe()} ({report.dtype}).", "text")
    row += 2

    grid.set(row, 1, "How to recompute", "subtitle")
    row += 1
    line(
        "Excel",
        "Formulas recompute when an input changes (Formulas > Calculation Options > Automatic); "
        "Ctrl+Alt+F9 recomputes everything.",
    )
    line(
        "LibreOffice",
        "Data > Calculate > Recalculate Hard (Ctrl+Shift+F9). When asked on opening whether "
        "to recalculate, say yes.",
    )
    line(
        "Check",
        "python scripts/recalc.py WORKBOOK.xlsx recomputes the file in headless LibreOffice and "
        "compares every live formula with the hand side's number (exit 1 on any difference).",
    )
    line("Regenerate", f"{facts.command}   (the command that wrote this workbook)")
    return grid


def _conv_slice_note(experiment: Experiment) -> str | None:
    """The conv sheet's slice (conv_walkthrough.slice_note); its module imported for a conv run only."""
    if live_sheets.provider(experiment.spec) is not live_sheets.CONV:
        return None  # slice_note's own answer: the conv walkthrough covers Conv2d-first stacks only
    from handgrad.workbook.conv_walkthrough import slice_note

    return slice_note(experiment)
