"""The one comparison helper: two traces of a step, term by term, and the first divergence.

Every term of a step is compared by the rule in :mod:`handgrad.contract.tolerance`: element-wise
``|hand − torch| ≤ atol·s + rtol·|torch|`` (s: the term's largest |torch| over the recent steps)
and normwise ``‖hand − torch‖₂ ≤ rtol·‖torch‖₂``, subnormals flushed to zero, from one
dtype-keyed table. Non-finite values are their own finding, never compared. Everything in handgrad
that compares goes through :func:`compare_values` / :func:`compare_traces`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NoReturn

import numpy as np

from handgrad.contract.tolerance import (
    RecentScale,
    Tolerance,
    norm,
    summand_scale,
    tolerance_for,
)
from handgrad.contract.trace import StepTrace
from handgrad.harness.batches import BATCHED_TERM_LIMIT as BATCHED_TERM_LIMIT
from handgrad.harness.batches import LargeTerms, SmallTerms
from handgrad.harness.concurrent import split_map
from handgrad.harness.termcheck import TermCheck as TermCheck
from handgrad.harness.termcheck import _finite_check as _finite_check


def compare_values(
    name: str,
    hand: np.ndarray,
    torch: np.ndarray,
    tol: Tolerance,
    *,
    scale: float = 0.0,
    norm_scale: float = 0.0,
) -> TermCheck:
    """Compare two arrays of one term; the single helper every check in handgrad goes through.

    ``scale``, ``norm_scale``: the term's largest |torch| and ‖torch‖₂ over recent steps
    (:class:`handgrad.contract.tolerance.RecentScale`; :func:`compare_traces` passes them during a run);
    alone, a term is measured against its own size."""
    hand = np.asarray(hand, dtype=np.float64)
    torch = np.asarray(torch, dtype=np.float64)
    if hand.shape != torch.shape:
        return TermCheck(
            name,
            math.inf,
            math.inf,
            math.inf,
            max(hand.size, torch.size),
            max(hand.size, 1),
            (),
            math.nan,
            math.nan,
            tol.rtol,
            shape_error=f"shape {hand.shape} (hand) vs {torch.shape} (torch)",
        )
    if hand.size == 0:
        return TermCheck(name, 0.0, 0.0, 0.0, 0, 0, (), math.nan, math.nan, tol.rtol)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(hand - torch)  # finite exactly when both sides are finite
    if not np.isfinite(diff).all():
        hand_finite, torch_finite = bool(np.isfinite(hand).all()), bool(np.isfinite(torch).all())
        if hand_finite and torch_finite:  # both finite but the difference overflowed
            bad = ~np.isfinite(diff)
            side = None
        else:
            bad = ~np.isfinite(hand) | ~np.isfinite(torch)
            side = "both" if not (hand_finite or torch_finite) else ("torch" if hand_finite else "hand")
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        return TermCheck(
            name,
            math.inf,
            math.inf,
            math.inf,
            int(bad.sum()),
            hand.size,
            index,
            float(hand[index]),
            float(torch[index]),
            tol.rtol,
            non_finite=side,
        )
    measure = tol.measure(hand, torch, scale=scale, norm_scale=norm_scale)
    mismatched = int(np.count_nonzero(measure.errors > tol.rtol))
    flat = int(np.argmax(measure.errors))
    index = tuple(int(i) for i in np.unravel_index(flat, hand.shape))
    return TermCheck(
        name,
        float(measure.diff.max()),
        float(measure.errors[flat]),
        measure.norm_rel,
        mismatched,
        hand.size,
        index,
        float(hand.reshape(-1)[flat]),
        float(torch.reshape(-1)[flat]),
        tol.rtol,
        scale=measure.scale,
    )


@dataclass(frozen=True)
class Divergence:
    """Where the two sides first disagree, with everything a reader needs to start looking."""

    step: int
    term: str
    symbol: str
    phase: str
    index: tuple[int, ...]
    hand: float
    torch: float
    abs_error: float
    rel_error: float
    norm_rel: float
    mismatched: int
    total: int
    tolerance: Tolerance
    previous_term: str | None
    previous_max_abs: float | None
    non_finite: str | None = None
    shape_error: str | None = None

    @property
    def layer(self) -> str:
        return self.term.split(".", 1)[0]

    def message(self) -> str:
        where = f"step {self.step}, {self.term} ({self.symbol}, {self.phase})"
        if self.shape_error:
            return f"{where}: {self.shape_error}"
        if self.non_finite == "both":
            head = f"both diverged at step {self.step} ({self.term})"
            return f"{head}: hand {self.hand!r}, torch {self.torch!r} at index {list(self.index)}"
        if self.non_finite:
            head = f"non-finite at step {self.step} in {self.term} ({self.non_finite})"
            return f"{head}: hand {self.hand!r}, torch {self.torch!r} at index {list(self.index)}"
        if self.mismatched:
            text = (
                f"{where}: {self.mismatched} / {self.total} elements differ; greatest at index "
                f"{list(self.index)}: hand {self.hand!r}, torch {self.torch!r}, |Δ| "
                f"{self.abs_error:.3e}, rel {self.rel_error:.3e} (element-wise), "
                f"{self.norm_rel:.3e} (normwise); tolerance {self.tolerance.describe()}."
            )
            zero = "torch" if self.torch == 0 else "hand" if self.hand == 0 else None
            if zero is not None:
                other = "hand" if zero == "torch" else "torch"
                text += (
                    f" {zero.capitalize()} is exactly 0 there and {other} is not (only values below the "
                    f"smallest normal, {self.tolerance.tiny:.1e}, count as 0)."
                )
        else:  # every element within its bound, the term as a whole is not
            text = (
                f"{where}: normwise rel error ‖hand − torch‖/‖torch‖ = {self.norm_rel:.3e} > rtol "
                f"{self.tolerance.rtol:.0e} over {self.total} elements (each element within its own "
                f"bound; largest element-wise rel {self.rel_error:.3e} at index {list(self.index)})."
            )
        if self.previous_term is None:
            return text + " It is the first term of the step."
        verdict = "agreed" if self.previous_max_abs is not None else "also differed"
        detail = f" (max |Δ| {self.previous_max_abs:.1e})" if self.previous_max_abs is not None else ""
        return text + f" The term before, {self.previous_term}, {verdict}{detail}."


def first_divergence(
    step: int,
    hand: StepTrace,
    checks: Sequence[TermCheck],
    tol: Tolerance,
) -> Divergence | None:
    """The first failing term of a step, in computation order, with the term just before it."""
    for position, check in enumerate(checks):
        if check.ok:
            continue
        term = hand[check.name]
        previous = checks[position - 1] if position else None
        return Divergence(
            step=step,
            term=check.name,
            symbol=term.symbol,
            phase=term.phase,
            index=check.worst_index,
            hand=check.hand_value,
            torch=check.torch_value,
            abs_error=check.max_abs,
            rel_error=check.elem_rel,
            norm_rel=check.norm_rel,
            mismatched=check.mismatched,
            total=check.total,
            tolerance=tol,
            previous_term=previous.name if previous else None,
            previous_max_abs=(previous.max_abs if previous is not None and previous.ok else None),
            non_finite=check.non_finite,
            shape_error=check.shape_error,
        )
    return None


class TermContractError(RuntimeError):
    """The two sides emitted different term names: a bug in handgrad itself, not a mismatch."""


def compare_traces(
    hand: StepTrace, torch: StepTrace, tol: Tolerance, recent: RecentScale | None = None
) -> list[TermCheck]:
    """Compare every term of one step, in the hand side's order.

    ``recent``: the run's memory of each term's size (:class:`RecentScale`), updated here; without
    it each term is measured against its own size at this step."""
    names = [term.name for term in hand.terms]
    if names != [term.name for term in torch.terms]:
        _differ(hand, torch)
    # np.asarray(value, dtype=np.float64), skipped where the value already is one (0.25 µs a term)
    hand_values = [
        value
        if type(value) is np.ndarray and value.dtype is _FLOAT64
        else np.asarray(value, dtype=np.float64)
        for value in (term.value for term in hand.terms)
    ]
    torch_values = [
        value
        if type(value) is np.ndarray and value.dtype is _FLOAT64
        else np.asarray(value, dtype=np.float64)
        for value in (term.value for term in torch.terms)
    ]
    small: list[int] = []  # compared together in one pass (SmallTerms)
    large: list[int] = []  # measured in batches (LargeTerms), or alone
    for i, (h, t) in enumerate(zip(hand_values, torch_values, strict=True)):
        if h.shape == t.shape:
            (small if 0 < h.size <= BATCHED_TERM_LIMIT else large).append(i)
    count = len(names)
    # This step's size of every term (max|t| and ‖t‖₂ of torch's finite, flushed values)
    peaks, norms = np.zeros(count), np.zeros(count)
    few = SmallTerms(small, hand_values, torch_values, tol) if small else None
    if few is not None:
        peaks[small], norms[small] = few.peaks, few.norms
    # large terms: measured together in batches (see LargeTerms), the torch side kept for the
    # comparison below; a term the batches leave out is sized alone and compared by compare_values
    batches = LargeTerms.measure(large, torch_values, tol)
    batched = {i for batch in batches for i in batch.indices}
    for batch in batches:
        peaks[batch.indices], norms[batch.indices] = batch.peaks, batch.norms
    for i in large if len(batched) < len(large) else ():
        if i not in batched:
            magnitude = np.abs(tol.flush(torch_values[i]))
            magnitude[~np.isfinite(magnitude)] = 0.0
            peaks[i], norms[i] = float(magnitude.max(initial=0.0)), norm(magnitude)
    _raise_to_summands(hand, torch, hand_values, peaks, norms)
    scales, norm_scales = recent.update(peaks, norms) if recent is not None else (peaks, norms)
    checks: list[TermCheck | None] = [None] * count
    # the per-term figures as Python floats once (.tolist() gives the same doubles as float(x[i]))
    scale_list, norm_scale_list = scales.tolist(), norm_scales.tolist()
    if few is not None:
        for i, check in few.agreeing(names, tol, scales[small], scale_list, norm_scale_list):
            checks[i] = check
    compared = split_map(
        lambda batch: batch.compare(names, hand_values, tol, scale_list, norm_scale_list),
        batches,
        [sum(batch.sizes) for batch in batches],
    )
    for batch_checks in compared:
        for i, check in batch_checks:
            checks[i] = check
    return [
        check
        if check is not None
        else compare_values(
            names[i],
            hand_values[i],
            torch_values[i],
            tol,
            scale=scale_list[i],
            norm_scale=norm_scale_list[i],
        )
        for i, check in enumerate(checks)
    ]


_FLOAT64 = np.dtype(np.float64)


def _differ(hand: StepTrace, torch: StepTrace) -> NoReturn:
    only_hand = [n for n in hand.names() if n not in torch]
    only_torch = [n for n in torch.names() if n not in hand]
    raise TermContractError(
        f"step {hand.step}: term lists differ (hand only: {only_hand}, torch only: "
        f"{only_torch}; or the order differs)"
    )


def _raise_to_summands(
    hand: StepTrace, torch: StepTrace, hand_values: list[np.ndarray], peaks: np.ndarray, norms: np.ndarray
) -> None:
    """A term that is a sum of products of other terms (``Term.summands``) is judged at the size
    of torch's summands where that is larger than its own: max Σ|aₖbₖ| element-wise, ‖Σ|aₖbₖ|‖₂
    normwise (:func:`handgrad.contract.tolerance.summand_scale`). Non-finite summands leave the
    term's own size (the non-finite values are a finding of their own)."""
    for i, term in enumerate(hand.terms):
        if term.summands is None:
            continue
        subscripts, operands = term.summands
        missing = [name for name in operands if name not in torch]
        if missing:
            raise TermContractError(f"step {hand.step}: {term.name} is a sum over untraced {missing}")
        floor = summand_scale(subscripts, *(torch.value(name) for name in operands))
        if floor.shape != hand_values[i].shape:
            raise TermContractError(
                f"step {hand.step}: {term.name} {hand_values[i].shape} is declared {subscripts} of "
                f"{list(operands)}, of shape {floor.shape}"
            )
        # floor.max(initial=0.0) and np.sum(...): the same reductions without numpy's wrappers
        peak = float(np.maximum.reduce(floor, axis=None, initial=0.0))
        if peak > 0 and math.isfinite(peak):
            peaks[i] = max(peaks[i], peak)
            norms[i] = max(
                norms[i], peak * math.sqrt(float(np.add.reduce(np.square(floor / peak), axis=None)))
            )


def assert_values_match(name: str, hand: np.ndarray, torch: np.ndarray, tol: Tolerance) -> None:
    """pytest helper for one array: AssertionError with the divergence message unless it agrees."""
    check = compare_values(name, hand, torch, tol)
    if not check.ok:
        trace = StepTrace(1)
        trace.add(name, name, "forward", np.asarray(hand, dtype=np.float64))
        raise AssertionError(first_divergence(1, trace, [check], tol).message())  # type: ignore[union-attr]


def assert_traces_match(hand: StepTrace, torch: StepTrace, tol: Tolerance | None = None) -> None:
    """pytest helper: raise AssertionError with the full divergence message on any mismatch."""
    tol = tol or tolerance_for(str(hand.terms[0].value.dtype) if hand.terms else "float64")
    checks = compare_traces(hand, torch, tol)
    divergence = first_divergence(hand.step, hand, checks, tol)
    if divergence is not None:
        raise AssertionError(divergence.message())
