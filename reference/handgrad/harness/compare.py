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
from itertools import accumulate
from typing import NoReturn

import numpy as np

from handgrad.contract.tolerance import (
    RecentScale,
    Tolerance,
    norm,
    relative,
    summand_scale,
    tolerance_for,
)
from handgrad.contract.trace import StepTrace
from handgrad.harness import segments
from handgrad.harness.concurrent import split_map


@dataclass(frozen=True)
class TermCheck:
    """The comparison of one term at one step.

    ``elem_rel``: the largest element-wise relative error ``|Δᵢ| / ((atol/rtol)·max|t| + |tᵢ|)``;
    ``norm_rel``: ``‖Δ‖₂ / ‖t‖₂``. The term agrees when both are ≤ rtol and every side is finite.
    ``worst_index`` is the element shown in messages (the largest ``elem_rel``); ``scale`` is the
    term's largest |torch| at this step.
    """

    name: str
    max_abs: float
    elem_rel: float
    norm_rel: float
    mismatched: int
    total: int
    worst_index: tuple[int, ...]
    hand_value: float
    torch_value: float
    rtol: float
    non_finite: str | None = None  # "hand", "torch" or "both" when a side is not finite
    shape_error: str | None = None
    scale: float = 0.0

    @property
    def ok(self) -> bool:
        return (
            self.mismatched == 0
            and self.norm_rel <= self.rtol
            and self.non_finite is None
            and self.shape_error is None
        )

    @property
    def largest_rel(self) -> float:
        """The larger of the two figures, the one that decides."""
        return max(self.elem_rel, self.norm_rel)


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


def _finite_check(
    name: str,
    max_abs: float,
    elem_rel: float,
    norm_rel: float,
    mismatched: int,
    total: int,
    worst_index: tuple[int, ...],
    hand_value: float,
    torch_value: float,
    rtol: float,
    scale: float,
) -> TermCheck:
    """``TermCheck(..., scale=scale)`` of a term whose two sides are finite and of one shape, made
    without the frozen dataclass's ``__init__`` (13 ``object.__setattr__`` calls, 2.5 µs against
    1.0 µs here; a step of the LSTM bench model makes 600 of them). tests/test_lockstep_sides.py
    checks it equal to the constructor's, so a field added to TermCheck cannot be missed."""
    check = _new(TermCheck)
    _set(
        check,
        "__dict__",
        {
            "name": name,
            "max_abs": max_abs,
            "elem_rel": elem_rel,
            "norm_rel": norm_rel,
            "mismatched": mismatched,
            "total": total,
            "worst_index": worst_index,
            "hand_value": hand_value,
            "torch_value": torch_value,
            "rtol": rtol,
            "non_finite": None,
            "shape_error": None,
            "scale": scale,
        },
    )
    return check


_new, _set = object.__new__, object.__setattr__


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


BATCHED_TERM_LIMIT = 64  # terms up to this many elements are compared together in one pass


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
    small: list[int] = []  # compared together in one pass (_SmallTerms)
    large: list[int] = []  # measured in batches (_LargeTerms), or alone
    for i, (h, t) in enumerate(zip(hand_values, torch_values, strict=True)):
        if h.shape == t.shape:
            (small if 0 < h.size <= BATCHED_TERM_LIMIT else large).append(i)
    count = len(names)
    # This step's size of every term (max|t| and ‖t‖₂ of torch's finite, flushed values)
    peaks, norms = np.zeros(count), np.zeros(count)
    few = _SmallTerms(small, hand_values, torch_values, tol) if small else None
    if few is not None:
        peaks[small], norms[small] = few.peaks, few.norms
    # large terms: measured together in batches (see _LargeTerms), the torch side kept for the
    # comparison below; a term the batches leave out is sized alone and compared by compare_values
    batches = _LargeTerms.measure(large, torch_values, tol)
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


class _SmallTerms:
    """Terms of 1 to :data:`BATCHED_TERM_LIMIT` elements (of one shape on both sides), measured
    in one numpy pass: both sides' values side by side in one array of two rows (hand, torch),
    so each operation of the rule is one call for every term of both sides.

    Row 0 becomes |Δ| (flushed hand − flushed torch), row 1 |t| (flushed torch; a non-finite |t|
    set to 0 for the term's size); a term's figures are reductions of its columns
    (``np.*.reduceat`` along the rows: each row's segment reduced as the 1-d segment is). A term
    is finite exactly where its largest |Δ| is (``np.maximum`` propagates NaN). Only a term that
    agrees gets its check here (its worst element is not located: no message shows it); any
    other goes through :func:`compare_values`."""

    def __init__(
        self, small: list[int], hand: list[np.ndarray], torch: list[np.ndarray], tol: Tolerance
    ) -> None:
        sizes = [hand[i].size for i in small]
        starts = [0, *accumulate(sizes[:-1])]
        pair = np.concatenate([*(hand[i] for i in small), *(torch[i] for i in small)], axis=None)
        with np.errstate(invalid="ignore", over="ignore"):
            pair = tol.flush(pair).reshape(2, -1)
            pair[0] -= pair[1]
            np.abs(pair, out=pair)  # |Δ|, |t|
            top = np.maximum.reduceat(pair, starts, axis=1)  # max |Δ|, max |t|
            max_abs = top[0]
            self.all_finite = math.isfinite(float(np.maximum.reduce(max_abs)))
            if not self.all_finite:  # then torch's values are all finite too
                magnitude = pair[1]
                magnitude[~np.isfinite(magnitude)] = 0.0
                top[1] = np.maximum.reduceat(magnitude, starts)
            # normwise, each term scaled by its own largest value (no overflow, no underflow)
            unit = np.maximum(max_abs, top[1])
            unit = (
                np.where(unit > 0, unit, 1.0)
                if self.all_finite
                else np.where((unit > 0) & np.isfinite(unit), unit, 1.0)
            )
            sums = np.add.reduceat(np.square(pair / np.repeat(unit, sizes)), starts, axis=1)
            self.diff_norms, self.norms = unit * np.sqrt(sums)
        self.small, self.sizes, self.starts, self.pair = small, sizes, starts, pair
        self.max_abs, self.peaks = max_abs, top[1]

    def agreeing(
        self,
        names: list[str],
        tol: Tolerance,
        scales: np.ndarray,
        scale_list: list[float],
        norm_scale_list: list[float],
    ) -> list[tuple[int, TermCheck]]:
        """(index, check) of each term that is finite and agrees, measured at ``scales`` (the
        small terms' s, in order) and the run's ``scale_list``/``norm_scale_list`` (every term's)."""
        diff, magnitude = self.pair
        errors = tol.element_errors(diff, magnitude, scales, self.sizes)
        elem_rels = np.maximum.reduceat(errors, self.starts).tolist()
        finite = [True] * len(self.small) if self.all_finite else np.isfinite(self.max_abs).tolist()
        rtol, checks = tol.rtol, []
        for i, size, max_abs, elem_rel, diff_norm, ok in zip(
            self.small,
            self.sizes,
            self.max_abs.tolist(),
            elem_rels,
            self.diff_norms.tolist(),
            finite,
            strict=True,
        ):
            norm_rel = relative(diff_norm, norm_scale_list[i])
            if ok and elem_rel <= rtol and norm_rel <= rtol:
                check = _finite_check(
                    names[i],
                    max_abs,
                    elem_rel,
                    norm_rel,
                    0,
                    size,
                    (),
                    math.nan,
                    math.nan,
                    rtol,
                    scale_list[i],
                )
                checks.append((i, check))
            # any other is compared alone, with its worst element located
        return checks


# Large terms are measured together in batches of about this many elements (one larger term is a
# batch of its own): each temporary array of a batch stays in cache (256 kB). Measured on deep's
# 123,000 elements a step: 2¹⁵ per batch 3.8 ms, one batch of all 12 ms, term by term 8 ms.
LARGE_BATCH_ELEMENTS = 1 << 15
# Every array of this size that has to be mapped afresh costs page faults (harness/allocator.py):
# x / np.repeat(...) over 131,072 doubles took 1.15 ms with a fresh array, 0.09 ms with reused
# memory. So a batch of one term divides by its figure itself (segments.per_element), and squares
# and |Δ| are taken in place: fewer arrays, the same doubles.


@dataclass(frozen=True)
class _LargeTerms:
    """Terms above :data:`BATCHED_TERM_LIMIT` elements measured together: their size for the
    :class:`RecentScale` and then their comparison, one numpy pass over all of them each.

    Every figure is the double :func:`compare_values` gives for the term alone with the same
    ``scale``/``norm_scale`` (tests/test_tolerance_rule.py checks them equal, field by field):

    * element by element the same operations on the same doubles (flush, |·|, Δ, eᵢ); a value
      flush leaves alone is not copied (:func:`handgrad.harness.segments.flushed`);
    * maxima of a term's segment (``np.maximum.reduceat``): a maximum is exact in any order;
    * sums (the two norms) by ``np.add.reduce`` of the term's own contiguous segment: the same
      pairwise summation over the same values in the same order as
      :func:`handgrad.contract.tolerance.norm` of the term alone (``np.add.reduceat`` would sum in
      another order); a run of terms of one size is summed as the rows of one 2-d view (a row of a
      C-contiguous array is summed pairwise as the 1-d segment is), and its first maximal elements
      are ``argmax`` along those rows;
    * ``max(scale, max|t|)`` and ``max(norm_scale, ‖t‖₂)`` of :meth:`Tolerance.measure` are
      ``scale`` and ``norm_scale`` here: both are maxima over a window that holds this step's figures
      (:meth:`RecentScale.update`), or those figures raised by the summands' size.

    Only a C-contiguous torch array whose values are all finite is batched (its flattened order
    is its memory order, so its norm sums in the same order as for the N-d array); any other
    term, and a term whose difference is not finite, goes through :func:`compare_values`.
    Batches share nothing: :func:`handgrad.harness.concurrent.split_map` measures and compares
    them in two threads when a step has enough elements."""

    indices: list[int]
    sizes: list[int]
    starts: list[int]
    runs: list[tuple[int, int, int]]  # (start, count, size) of each run of terms of one size
    values: np.ndarray  # torch's values, flattened and concatenated in the order of ``indices``
    flushed: np.ndarray  # the same with subnormals set to 0
    magnitude: np.ndarray  # |flushed|
    peaks: np.ndarray  # max |t| of each term
    norms: list[float]  # ‖t‖₂ of each term

    @classmethod
    def measure(cls, indices: list[int], torch: list[np.ndarray], tol: Tolerance) -> list[_LargeTerms]:
        """The batches of the terms at ``indices`` that can be batched, each measured."""
        chosen = [i for i in indices if torch[i].size and torch[i].flags.c_contiguous]
        # a term of a batch's size or more is a batch of its own, and does not close the batch
        # being filled (MLP 784-256-10: 6 batches instead of 8; each costs ~100 µs of calls)
        groups, group, elements = [], [], 0
        for i in chosen:
            size = torch[i].size
            if size >= LARGE_BATCH_ELEMENTS:
                groups.append([i])
                continue
            if group and elements + size > LARGE_BATCH_ELEMENTS:
                groups.append(group)
                group, elements = [], 0
            group.append(i)
            elements += size
        if group:
            groups.append(group)
        batches = split_map(
            lambda group: cls._of(group, torch, tol), groups, [sum(torch[i].size for i in g) for g in groups]
        )
        return [batch for batch in batches if batch is not None]

    @classmethod
    def _of(cls, group: list[int], torch: list[np.ndarray], tol: Tolerance) -> _LargeTerms | None:
        sizes = [torch[i].size for i in group]
        starts = [0, *accumulate(sizes[:-1])]
        values = segments.joined([torch[i] for i in group])
        flushed, magnitude = segments.flushed(values, tol.tiny)
        peaks = np.maximum.reduceat(magnitude, starts)  # NaN or inf where a value is not finite
        finite = np.isfinite(peaks)
        if not finite.all():  # those terms are sized and compared alone
            kept = [i for i, ok in zip(group, finite.tolist(), strict=True) if ok]
            return cls._of(kept, torch, tol) if kept else None
        unit = np.where(peaks > 0, peaks, 1.0)
        runs = segments.runs(starts, sizes)
        squares = magnitude / segments.per_element(unit, sizes)
        np.square(squares, out=squares)
        norms = segments.segment_norms(squares, runs, peaks.tolist())
        return cls(group, sizes, starts, runs, values, flushed, magnitude, peaks, norms)

    def compare(
        self,
        names: list[str],
        hand: list[np.ndarray],
        tol: Tolerance,
        scales: list[float],
        norm_scales: list[float],
    ) -> list[tuple[int, TermCheck]]:
        """(index, check) of each term whose difference is finite (the others are left out)."""
        flat_hand = segments.joined([hand[i] for i in self.indices])
        with np.errstate(invalid="ignore", over="ignore"):
            flushed_hand, diff = segments.flushed(flat_hand, tol.tiny)  # diff: |hand|, reused for |Δ|
            np.subtract(flushed_hand, self.flushed, out=diff)
            np.abs(diff, out=diff)
        max_abs = np.maximum.reduceat(diff, self.starts)  # NaN or inf where a |Δ| is not finite
        finite = np.isfinite(max_abs)
        unit = np.where(finite & (max_abs > 0), max_abs, 1.0)
        sizes, runs, rtol = self.sizes, self.runs, tol.rtol
        term_scales = [scales[i] for i in self.indices]
        errors = tol.element_errors(diff, self.magnitude, np.array(term_scales), sizes)
        with np.errstate(invalid="ignore", over="ignore"):  # |Δ| is not needed again
            squares = np.divide(diff, segments.per_element(unit, sizes), out=diff)
            np.square(squares, out=squares)
        max_abs_list = max_abs.tolist()
        diff_norms = segments.segment_norms(squares, runs, max_abs_list)
        worst = segments.first_maxima(errors, runs)  # each term's flat index of its largest eᵢ
        at = np.add(self.starts, worst)
        elem_rels, hand_at, torch_at = errors[at].tolist(), flat_hand[at].tolist(), self.values[at].tolist()
        checks = []
        unravel = segments.unravel
        for i, ok, start, size, top, elem_rel, diff_norm, flat, hand_value, torch_value, scale in zip(
            self.indices,
            finite.tolist(),
            self.starts,
            sizes,
            max_abs_list,
            elem_rels,
            diff_norms,
            worst,
            hand_at,
            torch_at,
            term_scales,
            strict=True,
        ):
            if not ok:
                continue
            # no NaN among the errors (finite |Δ|, denominators ≥ 0): none is over rtol if the largest is not
            mismatched = int(np.count_nonzero(errors[start : start + size] > rtol)) if elem_rel > rtol else 0
            check = _finite_check(
                names[i],
                top,
                elem_rel,
                relative(diff_norm, norm_scales[i]),
                mismatched,
                size,
                unravel(flat, hand[i].shape),
                hand_value,
                torch_value,
                rtol,
                scale,
            )
            checks.append((i, check))
        return checks


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
