"""The comparison of one term at one step (:class:`TermCheck`), and its fast constructor."""

from __future__ import annotations

from dataclasses import dataclass


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
