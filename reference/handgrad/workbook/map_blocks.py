"""Maps: a 4-D array (N, C, H, W) laid out as bands of H×W maps, one band per sample, one map per
channel across, so that a formula reading a window of a feature map reads a *contiguous* range
(clicking the cell makes LibreOffice or Excel outline the window).

:class:`ConvSheet` is the :class:`handgrad.workbook.blocks.Sheet` that lays out its blocks as
maps: input maps, computed maps (one formula per cell, torch's values and |Δ| beside them), the
hand side's numbers of a term from outside the sheet, and the parameter-shaped blocks through
which :func:`~handgrad.workbook.blocks.clip_blocks` and
:func:`~handgrad.workbook.blocks.update_blocks` write clipping and the update.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from handgrad.contract.spec import SpecError
from handgrad.contract.training import Clip
from handgrad.workbook import formulas as fx
from handgrad.workbook.blocks import LEFT, Cells, Sheet
from handgrad.workbook.grid import address, area

Shape4 = tuple[int, int, int, int]


@dataclass(frozen=True)
class Maps:
    """A 4-D array (A, B, H, W) laid out as A bands of B maps of H×W cells; each map has a label
    row above it and one empty column after it."""

    top: int
    left: int
    shape: Shape4

    def origin(self, a: int, b: int) -> tuple[int, int]:
        _, _, h, w = self.shape
        return self.top + a * (h + 2) + 1, self.left + b * (w + 1)

    def cell(self, a: int, b: int, h: int, w: int, absolute: bool = False) -> str:
        row, col = self.origin(a, b)
        return address(row + h, col + w, absolute=absolute)

    def ref(self, flat: int) -> str:
        return self.cell(*np.unravel_index(flat, self.shape))  # type: ignore[arg-type]

    def window(self, a: int, b: int, h: int, w: int, rows: int, cols: int) -> str:
        row, col = self.origin(a, b)
        return area(row + h, col + w, rows, cols)

    @property
    def height(self) -> int:
        return self.shape[0] * (self.shape[2] + 2)

    @property
    def width(self) -> int:
        return self.shape[1] * (self.shape[3] + 1)


def _indices(shape: Shape4) -> Iterable[tuple[int, int, int, int]]:
    return np.ndindex(*shape)  # type: ignore[return-value]


class ConvSheet(Sheet):
    """A :class:`~handgrad.workbook.blocks.Sheet` whose blocks are maps (:class:`Maps`): a
    parameter-shaped block (state, clipped gradient, update) is laid out as its parameter's maps."""

    def heading(self, text: str, style: str, torch: bool = False) -> None:
        self.title(text, style, torch)
        self.top += 1

    def note(self, text: str) -> None:
        self.grid.text(self.top, 1, text, "note")
        self.top += 1

    def map_labels(self, maps: Maps, labels: tuple[str, str] | None, lefts: Iterable[int]) -> None:
        """Each map's label (``labels`` names the band and the map: ("n", "c") gives "n1 c2"); a
        bias row gets one label per output channel, ``None`` none."""
        if labels is None:
            return
        a_count, b_count, _, _ = maps.shape
        for left in lefts:
            shifted = Maps(maps.top, left, maps.shape)
            for a in range(a_count):
                for b in range(b_count):
                    row, col = shifted.origin(a, b)
                    if labels == ("", ""):  # one row of per-output-channel values (a bias)
                        for w in range(maps.shape[3]):
                            self.grid.text(row - 1, col + w, f"o{w + 1}", "header")
                        continue
                    parts = [f"{name}{index + 1}" for name, index in zip(labels, (a, b), strict=True) if name]
                    self.grid.text(row - 1, col, " ".join(parts), "header")

    def map_inputs(self, title: str, values: np.ndarray, shape: Shape4, labels: tuple[str, str]) -> Maps:
        """Plain input cells (editable), laid out as maps."""
        self.heading(title, "subtitle")
        maps = Maps(self.top, LEFT, shape)
        self.map_labels(maps, labels, [LEFT])
        array = np.asarray(values, dtype=float).reshape(shape)
        for a, b, h, w in _indices(shape):
            row, col = maps.origin(a, b)
            self.grid.set(row + h, col + w, float(array[a, b, h, w]), "input")
        self.top += maps.height
        return maps

    def map_computed(
        self,
        term: str | None,
        title: str,
        phase: str,
        shape: Shape4,
        body: Callable[[int, int, int, int], str] | None,
        labels: tuple[str, str] | None,
        *,
        indices: np.ndarray | None = None,
    ) -> Maps:
        """One formula per cell (``body(a, b, h, w)``, without its ``=``), or (``body`` None) the
        hand side's numbers of ``term``. With ``term``: formula cells are recorded in
        ``grid.checks`` (flat index = C order of ``shape``, a reshape of the term's value), torch's
        values and |Δ| are laid out beside the maps. ``indices`` (one flat index into the term per
        cell, C order of ``shape``) lays out a slice of a larger term: the sliced conv sheet's
        first image of the batch."""
        has_torch = False
        if term is not None:
            if indices is None:
                self.known_term(term, int(np.prod(shape)), shape)
            else:
                self.known_slice(term, indices, shape)
            title = f"{self.hand[term].symbol}:  {title}"
            has_torch = self.has_torch(term)
        flat = np.arange(int(np.prod(shape))) if indices is None else np.ravel(indices)
        self.heading(title, phase if term is not None else "subtitle", torch=has_torch)
        maps = Maps(self.top, LEFT, shape)
        self.map_labels(maps, labels, [LEFT, self.torch_left, self.delta_left] if has_torch else [LEFT])
        given = np.ravel(self.hand.value(term)).astype(float) if body is None and term else None
        placed = []
        for place, (a, b, h, w) in enumerate(_indices(shape)):
            row, col = maps.origin(a, b)
            index = int(flat[place])
            if given is not None:
                self.grid.set(row + h, col + w, float(given[index]), phase)
            else:
                assert body is not None
                self.grid.set(row + h, col + w, fx.formula(body(a, b, h, w)), phase)
                if term is not None:
                    self.grid.check(row + h, col + w, self.step, term, index)
            placed.append((row + h, col + w, index))
        if has_torch and term is not None:
            self.mirror(term, placed)
        self.top += maps.height
        return maps

    def known_slice(self, term: str, indices: np.ndarray, shape: Shape4) -> None:
        """A SpecError unless ``indices`` (one per cell of ``shape``) fall inside the hand term."""
        if term not in self.hand:
            raise SpecError("workbook", f"the hand trace of step {self.step} has no term {term!r}")
        size = np.asarray(self.hand.value(term)).size
        if np.size(indices) != int(np.prod(shape)) or int(np.max(indices)) >= size:
            raise SpecError(
                "workbook", f"{term}: a slice {shape} does not fit the hand term's {size} elements"
            )

    def param_inputs(self, title: str, value: np.ndarray, name: str) -> Cells:
        array = np.asarray(value, dtype=float)
        shape = array.shape if array.ndim == 4 else (1, 1, 1, array.size)
        maps = self.map_inputs(title, array, shape, _param_map_labels(name))  # type: ignore[arg-type]
        self.top += 1
        return maps

    def param_slot(self, top: int, like: Cells) -> tuple[Cells, int]:
        assert isinstance(like, Maps)
        maps = Maps(top + 1, LEFT, like.shape)
        return maps, maps.top + maps.height + 1

    def param_computed(
        self, term: str, title: str, phase: str, name: str, like: Cells, body: Callable[[int], str]
    ) -> Cells:
        assert isinstance(like, Maps)
        shape = like.shape
        maps = self.map_computed(
            term,
            title,
            phase,
            shape,
            lambda a, b, h, w: body(int(np.ravel_multi_index((a, b, h, w), shape))),
            _param_map_labels(name),
        )
        self.top += 1
        return maps

    def next_title(self, symbol: str, rule: fx.UpdateRule, stateless_sgd: bool) -> str:
        return rule.equation

    def total_norm(self, clip: Clip, cells: list[str]) -> str:
        """‖g‖ as the hand side's number: the gradients of the layers after are not on this sheet."""
        maps = self.map_computed(
            "clip.total_norm",
            "‖∂L/∂θ‖ over every parameter of the network, before clipping (the hand side's number: "
            "the other layers' gradients are on the Trace sheet)",
            "update",
            (1, 1, 1, 1),
            None,
            None,
        )
        return maps.cell(0, 0, 0, 0)


def _param_map_labels(name: str) -> tuple[str, str]:
    return ("", "") if name.endswith(".b") else ("o", "c")
