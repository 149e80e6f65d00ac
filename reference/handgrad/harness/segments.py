"""Segments of one flat array, each a term: the per-term figures of a batch of terms.

:class:`handgrad.harness.batches.LargeTerms` lays a batch's terms one after another in one array
(``joined``) and reads each term's figures off its segment: a largest element by
``np.maximum.reduceat`` (exact in any order), a norm by ``np.add.reduce`` of the segment alone
(the pairwise order of :func:`handgrad.contract.tolerance.norm` on the term alone), a first largest
element by ``argmax``. A run of consecutive terms of one size is read as the rows of one 2-d
view: a row of a C-contiguous array is reduced exactly as the 1-d segment is, in one call for
the run (an LSTM's 600 gate terms of one size: 20 calls instead of 600).
"""

from __future__ import annotations

import math

import numpy as np


def flushed(values: np.ndarray, tiny: float) -> tuple[np.ndarray, np.ndarray]:
    """(``Tolerance.flush(values)``, its |·|): a value below ``tiny`` set to 0. Only a subnormal
    changes value (a zero stays one; its sign is gone under the |·| every figure takes of it), so
    without one ``values`` itself is returned and no flushed copy is made: |·| once, a comparison
    and a look at the few values below ``tiny``, instead of |·|, comparison and a where for each
    side and |·| again for torch's."""
    magnitude = np.abs(values)
    below = magnitude < tiny
    # a subnormal is below tiny and not 0: counts, not magnitude[below].any() (a gather through a
    # mask of scattered zeros: 160 µs for 32,768 values half of them 0, the counts 10 µs)
    if below.any() and np.count_nonzero(below) != np.count_nonzero(magnitude == 0):
        magnitude[below] = 0.0
        return np.where(below, 0.0, values), magnitude
    return values, magnitude


def per_element(figures: np.ndarray, sizes: list[int]) -> float | np.ndarray:
    """Each term's figure repeated over its elements; for a batch of one term the figure itself
    (the same quotients and sums, exactly, without an array the size of the term)."""
    return float(figures[0]) if len(sizes) == 1 else np.repeat(figures, sizes)


def joined(arrays: list[np.ndarray]) -> np.ndarray:
    """The arrays flattened (C order) one after another; one array's own flat view when alone."""
    return arrays[0].reshape(-1) if len(arrays) == 1 else np.concatenate(arrays, axis=None)


def runs(starts: list[int], sizes: list[int]) -> list[tuple[int, int, int]]:
    """(start, count, size) of each run of consecutive terms of one size (an LSTM's gates: one per
    time step), so that a run's sums and maxima are one call over its rows."""
    runs: list[tuple[int, int, int]] = []
    for start, size in zip(starts, sizes, strict=True):
        if runs and runs[-1][2] == size:
            first, count, _ = runs[-1]
            runs[-1] = (first, count + 1, size)
        else:
            runs.append((start, 1, size))
    return runs


def segment_norms(squares: np.ndarray, runs: list[tuple[int, int, int]], largest: list[float]) -> list[float]:
    """:func:`handgrad.contract.tolerance.norm` of each segment, given its (vᵢ/largest)² and its
    largest |vᵢ|: the same formula, ``largest·√Σ(vᵢ/largest)²`` (0, inf, NaN: ``largest``)."""
    sums: list[float] = []
    with np.errstate(over="ignore", invalid="ignore"):  # a segment whose largest is not finite
        for start, count, size in runs:
            block = squares[start : start + count * size]
            sums.extend(np.add.reduce(block.reshape(count, size), axis=1).tolist())
    return [
        peak if peak == 0 or not math.isfinite(peak) else peak * math.sqrt(total)
        for total, peak in zip(sums, largest, strict=True)
    ]


def first_maxima(values: np.ndarray, runs: list[tuple[int, int, int]]) -> list[int]:
    """Each segment's ``argmax`` (the first largest element), relative to the segment's start."""
    firsts: list[int] = []
    for start, count, size in runs:
        firsts.extend(values[start : start + count * size].reshape(count, size).argmax(axis=1).tolist())
    return firsts


def unravel(flat: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    """``np.unravel_index(flat, shape)`` (C order) as a tuple of ints, without the array calls."""
    if len(shape) == 2:  # most terms: one divmod
        return divmod(flat, shape[1])
    index = []
    for extent in reversed(shape):
        flat, position = divmod(flat, extent)
        index.append(position)
    return tuple(reversed(index))
