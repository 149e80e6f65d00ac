"""A step's terms compared together: the small ones in one pass, the large ones in batches.

:func:`handgrad.harness.compare.compare_traces` hands them here; every figure is the double
:func:`handgrad.harness.compare.compare_values` gives for the term alone with the same scales
(tests/test_tolerance_rule.py, tests/test_compare_batches.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import accumulate

import numpy as np

from handgrad.contract.tolerance import Tolerance, relative
from handgrad.harness import segments
from handgrad.harness.concurrent import split_map
from handgrad.harness.termcheck import TermCheck, _finite_check

BATCHED_TERM_LIMIT = 64  # terms up to this many elements are compared together in one pass


class SmallTerms:
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
            # every |Δ| finite: then torch's values are all finite too
            self.all_finite = math.isfinite(float(np.maximum.reduce(max_abs)))
            if not self.all_finite:
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
class LargeTerms:
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
    def measure(cls, indices: list[int], torch: list[np.ndarray], tol: Tolerance) -> list[LargeTerms]:
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
    def _of(cls, group: list[int], torch: list[np.ndarray], tol: Tolerance) -> LargeTerms | None:
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
