r"""Live formulas of every loss: ℓ, L and ∂L/∂ŷ as spreadsheet formulas, one object per loss kind.

:func:`loss_formulas` (the one entry point) returns a :class:`LossFormulas` for a
:class:`~handgrad.contract.training.Loss`; a live sheet asks it

- ``helpers(units, targets)``: the helper blocks the loss needs before L, in order (``ℓ`` per
  element or per row, the class losses' ``log p``, ``T`` and ``w_t``), each ``width`` cells per
  sample, and the trace term one computes (``loss.l`` under reduction none; the others have none);
- ``helper(key, cells, i)``: the formula bodies of sample i's cells of that helper block;
- ``total(cells)``: L;  ``gradient(cells, i, j)``: ∂L/∂ŷᵢⱼ;  ``equations()`` and ``count_note``:
  the texts the sheets print.

``cells`` (:class:`LossCells`) holds the references of one step as the sheet laid them out: ŷ
and y per sample, the helper cells written so far and ranges covering each. Every formula is
written in the operation order of ``handgrad.hand.losses`` and takes torch's branch at each
kink (all within 1e-12 of the hand side, recomputed by LibreOffice in the tests; ŷ is the
logits for bce_logits and cross_entropy, log p for nll):

======================  ==============================================  ======================================
loss                    ℓ  (d = ŷ − y)                                   ∂L/∂ŷ  (c = 1/n mean, 1 sum/none)
======================  ==============================================  ======================================
mse                     d²  (½ with ``half``)                            2c·d  (c·d with ``half``)
l1, smooth_l1 (β = 0)   |d|                                              c·sgn(d), sgn(0) = 0 (``SIGN``)
smooth_l1               ½d²/β if |d| < β, else |d| − ½β                  c·d/β if |d| < β, else c·sgn(d)
huber                   ½d² if |d| < δ, else δ(|d| − ½δ)                 c·d if |d| < δ, else c·δ·sgn(d)
bce                     −[y·max(ln ŷ, −100) + (1−y)·max(ln(1−ŷ), −100)]  c·d / max((1−ŷ)ŷ, ε₃₂)
bce_logits              (1−y)ŷ − w⁺·ln σ(ŷ), w⁺ = 1 + (pw − 1)y          c·((pw·y + 1 − y)σ(ŷ) − pw·y)
cross_entropy, nll      ℓᵢ = −Σ_c T_ic·log p_ic (a row)                  see below
======================  ==============================================  ======================================

At |d| = δ (β) the sheet, as the hand side, takes the outer branch (``<`` is strict); torch's
kernel gives the same number there. ln σ(ŷ) = min(ŷ, 0) − ln(1 + e^(−|ŷ|)) (Excel has no LOG1P:
the difference is below 1.2e-16 absolute).

The class losses (a row of logits ŷ, C classes): log p_c = (ŷ_c − m) − ln Σ_k e^(ŷ_k − m) with
m = max_k ŷ_k (``MAX``: no overflow, a tie in the maximum is harmless); the target weights
T_ic = (1 − ε)·w_c·[c = t_i] + (ε/C)·w_c (class ids; T_i = 0 where t_i is ignore_index) or
T_ic = w_c·((1 − ε)·q_ic + ε/C) (class probabilities q); L = Σᵢℓᵢ/D with D = Σᵢ w_{tᵢ} over the
rows not ignored (class ids) or D = N (probabilities), and

    ∂L/∂ŷ_ic = −c·T_ic − p_ic·Σ_k(−c·T_ik),   p = e^(log p)   (= c·(p_ic·Σ_k T_ik − T_ic): softmax − T)

with c = 1/D (mean) or 1 (sum, none); nll (log p given) stops at −c·T_ic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from handgrad.contract.spec import SpecError
from handgrad.contract.training import CLASS_LOSSES, LOSSES, Loss
from handgrad.workbook.formulas import number, sigmoid

BCE_LOG_FLOOR = -100  # nn.BCELoss clamps each log at −100
# ... and the gradient's denominator (1 − p)p at torch's EPSILON, a float32 literal even in float64:
# float32(1e-12) = 9.999999960041972e-13 (hand/losses.py BCE_GRAD_EPS)
BCE_GRAD_EPS = "9.999999960041972e-13"


@dataclass(frozen=True)
class Helper:
    """A block of cells the loss needs before L: ``width`` cells per sample; ``term`` is the trace
    term it computes (then the sheet checks it and shows torch's values), else None."""

    key: str
    title: str
    width: int
    term: str | None = None


@dataclass
class LossCells:
    """One step's references as a sheet laid them out: ``yhat[i][j]`` and ``y[i][k]`` per sample
    i, ``pairs`` of (ŷ range, y range) covering every element (for ``SUMXMY2``), and each helper
    written so far: ``helpers[key][i][k]`` and ``ranges[key]`` covering its cells."""

    yhat: Sequence[Sequence[str]]
    y: Sequence[Sequence[str]]
    pairs: Sequence[tuple[str, str]]
    helpers: dict[str, Sequence[Sequence[str]]] = field(default_factory=dict)
    ranges: dict[str, Sequence[str]] = field(default_factory=dict)

    def add(self, key: str, cells: Sequence[Sequence[str]], ranges: Sequence[str]) -> None:
        self.helpers[key], self.ranges[key] = cells, ranges

    @property
    def count(self) -> int:
        """n, the elements of ŷ."""
        return len(self.yhat) * len(self.yhat[0])


def _sum(ranges: Sequence[str]) -> str:
    return f"SUM({','.join(ranges)})"


@dataclass(frozen=True)
class _Reduced:
    """What every loss shares: its spec and its reduction."""

    spec: Loss

    @property
    def mean(self) -> bool:
        return self.spec.reduction == "mean"

    def ell_term(self) -> str | None:
        """ℓ is the trace term ``loss.l`` under reduction none (torch returns it), else a helper."""
        return "loss.l" if self.spec.reduction == "none" else None


# --- element-wise losses ----------------------------------------------------------------------


ELEMENT_TEXT = {  # kind: (ℓ, ∂ℓ/∂ŷ) in the printed symbols; d = ŷ − y
    "mse": ("(ŷ−y)²", "2(ŷ−y)"),
    "l1": ("|ŷ−y|", "sgn(ŷ−y)  (sgn(0) = 0, as torch)"),
    "smooth_l1": ("½d²/β if |d| < β, else |d| − ½β", "d/β if |d| < β, else sgn(d)"),
    "huber": ("½d² if |d| < δ, else δ(|d| − ½δ)", "d if |d| < δ, else δ·sgn(d)"),
    "bce": ("−[y·ln ŷ + (1−y)·ln(1−ŷ)]  (each ln clamped at −100)", "(ŷ−y) / max((1−ŷ)ŷ, ε₃₂)"),
    "bce_logits": ("(1−y)ŷ − w⁺·ln σ(ŷ), w⁺ = 1 + (pw−1)y  (ŷ: logits)", "(pw·y + 1 − y)σ(ŷ) − pw·y"),
}


@dataclass(frozen=True)
class ElementLoss(_Reduced):
    """A loss of each element of ŷ against the same element of y (every kind but the class losses)."""

    @property
    def kind(self) -> str:
        """smooth_l1 with β = 0 is l1, as torch."""
        spec = self.spec
        return "l1" if spec.kind == "smooth_l1" and spec.beta == 0 else spec.kind

    def helpers(self, units: int, targets: int) -> list[Helper]:
        if self.kind == "mse" and self.ell_term() is None:
            return []  # L straight from ŷ and y by SUMXMY2
        symbols = ", ".join(self._symbols())
        title = f"ℓ = {ELEMENT_TEXT[self.kind][0]}" + (f", {symbols}" if symbols else "")
        return [Helper("ell", title, units, self.ell_term())]

    def helper(self, key: str, cells: LossCells, i: int) -> list[str]:
        return [
            self.element(yhat, y, j)
            for j, (yhat, y) in enumerate(zip(cells.yhat[i], cells.y[i], strict=True))
        ]

    def element(self, yhat: str, y: str, unit: int = 0) -> str:
        """ℓ of one element (ŷ in ``yhat``, y in ``y``; ``unit`` picks bce_logits' pos_weight)."""
        kind, spec, d = self.kind, self.spec, f"({yhat}-{y})"
        if kind == "mse":  # only under reduction none (else L is written from ŷ and y directly)
            return f"0.5*({d}*{d})" if spec.half else f"{d}*{d}"
        if kind == "l1":
            return f"ABS{d}"
        if kind == "smooth_l1":
            beta = number(spec.beta)
            return f"IF(ABS{d}<{beta},0.5*ABS{d}*ABS{d}/{beta},ABS{d}-0.5*{beta})"
        if kind == "huber":
            delta = number(spec.delta)
            return f"IF(ABS{d}<{delta},0.5*ABS{d}*ABS{d},{delta}*(ABS{d}-0.5*{delta}))"
        if kind == "bce":  # torch: (y − 1)·ln(1 − p) − y·ln p, each log clamped, LN(0) never asked
            floor = BCE_LOG_FLOOR
            log_p = f"IF({yhat}>0,MAX(LN({yhat}),{floor}),{floor})"
            log_1mp = f"IF(1-{yhat}>0,MAX(LN(1-{yhat}),{floor}),{floor})"
            return f"({y}-1)*{log_1mp}-{y}*{log_p}"
        # bce_logits: (1 − y)x − w⁺·ln σ(x), ln σ(x) = min(x, 0) − ln(1 + e^(−|x|))
        log_sig = f"(MIN({yhat},0)-LN(1+EXP(-ABS({yhat}))))"
        pw = self._pos_weight(unit)
        if pw is not None:
            log_sig = f"{log_sig}*(({pw}-1)*{y}+1)"
        return f"(1-{y})*{yhat}-{log_sig}"

    def total(self, cells: LossCells) -> str:
        spec, n = self.spec, cells.count
        if "ell" in cells.ranges:
            summed = _sum(cells.ranges["ell"])
            return f"{summed}/{n}" if self.mean else summed
        # mse, mean or sum: Σ(ŷ − y)²/n or Σ(ŷ − y)², ×½ after the reduction (as the hand side)
        squares = "+".join(f"SUMXMY2({yhat},{y})" for yhat, y in cells.pairs)
        reduced = squares
        if self.mean:
            reduced = f"({squares})/{n}" if len(cells.pairs) > 1 else f"{squares}/{n}"
        if spec.half:
            return f"0.5*({reduced})" if ("+" in reduced or "/" in reduced) else f"0.5*{reduced}"
        return reduced

    def gradient(self, cells: LossCells, i: int, j: int) -> str:
        return self.element_gradient(cells.yhat[i][j], cells.y[i][j], cells.count, j)

    def element_gradient(self, yhat: str, y: str, count: int | str, unit: int = 0) -> str:
        """∂L/∂ŷ of one element; ``count`` is n (a number or a cell holding it)."""
        kind, spec, d = self.kind, self.spec, f"({yhat}-{y})"
        per_n = f"/{count}" if self.mean else ""
        if kind == "mse":
            if self.mean:
                factor = f"1/{count}" if spec.half else f"2/{count}"  # (2/n)·½ = 1/n exactly
            else:
                factor = "" if spec.half else "2"
            return f"{factor}*{d}" if factor else f"{yhat}-{y}"
        if kind == "l1":
            return f"SIGN{d}{per_n}"  # NOTE: SIGN(0) = 0, torch's l1 gradient at d = 0
        norm = f"(1/{count})*" if self.mean else ""  # torch multiplies by 1/n inside each branch
        if kind == "smooth_l1":
            beta = number(spec.beta)
            outside = f"SIGN{d}*(1/{count})" if self.mean else f"SIGN{d}"
            return f"IF(ABS{d}<{beta},{norm}{d}/{beta},{outside})"  # |d| = β: the outer branch, as torch
        if kind == "huber":
            delta = number(spec.delta)
            return f"IF(ABS{d}<{delta},{norm}{d},{norm}{delta}*SIGN{d})"  # |d| = δ: the outer branch
        if kind == "bce":
            return f"{d}/MAX((1-{yhat})*{yhat},{BCE_GRAD_EPS}){per_n}"
        sig = sigmoid(yhat)  # bce_logits
        pw = self._pos_weight(unit)
        if pw is None:
            return f"({sig}-{y}){per_n}"  # σ(x) − y
        return f"(({pw}*{y}+1-{y})*{sig}-{pw}*{y}){per_n}"  # (pw·y + 1 − y)σ(x) − pw·y

    def _pos_weight(self, unit: int) -> str | None:
        weights = self.spec.pos_weight
        if weights is None:
            return None
        return number(weights[unit if len(weights) > 1 else 0])

    def _symbols(self) -> list[str]:
        spec, kind = self.spec, self.kind
        found = {"smooth_l1": [f"β = {number(spec.beta)}"], "huber": [f"δ = {number(spec.delta)}"]}.get(
            kind, []
        )
        if spec.pos_weight is not None:
            found.append(f"pw = ({', '.join(map(number, spec.pos_weight))})")
        return found

    def equations(self) -> tuple[str, str]:
        """(L = ..., ∂L/∂ŷ = ...) as the sheets print them; n counts the elements of ŷ (N·out)."""
        spec, kind = self.spec, self.kind
        extra = "".join(f", {s}" for s in self._symbols())
        if kind == "mse":
            if spec.reduction == "none":
                ell = "½·(ŷ−y)²" if spec.half else "(ŷ−y)²"
                g = "" if spec.half else "2·"
                return f"L = Σ ℓ,  ℓ = {ell} per element (reduction none)", f"∂L/∂ŷ = {g}(ŷ−y)"
            if self.mean:
                c, g = ("½·(1/n)·", "(1/n)·") if spec.half else ("(1/n)·", "(2/n)·")
            else:
                c, g = ("½·", "") if spec.half else ("", "2·")
            return f"L = {c}Σ(ŷ−y)²", f"∂L/∂ŷ = {g}(ŷ−y)"
        ell, grad = ELEMENT_TEXT[kind]
        reduce = {"mean": "(1/n)·Σ ℓ", "sum": "Σ ℓ", "none": "Σ ℓ (reduction none: ℓ per element)"}
        g = {"mean": "(1/n)·", "sum": "", "none": ""}[spec.reduction]
        if kind == "bce":  # the existing sheets print bce's division after the ratio
            return f"L = {reduce[spec.reduction]},  ℓ = {ell}", f"∂L/∂ŷ = {grad}{' / n' if self.mean else ''}"
        return f"L = {reduce[spec.reduction]},  ℓ = {ell}{extra}", f"∂L/∂ŷ = {g}[{grad}]{extra}"

    def count_note(self, cells: LossCells) -> str:
        return f"n = {cells.count}"


# --- class losses: a row of logits (cross_entropy) or log-probabilities (nll) ------------------


@dataclass(frozen=True)
class ClassLoss(_Reduced):
    """cross_entropy and nll on an (N, C) output against class ids (y one column) or class
    probabilities (y with C columns, cross_entropy only)."""

    def helpers(self, units: int, targets: int) -> list[Helper]:
        form = self.spec.target_form(targets, units)
        found = []
        if self.spec.kind == "cross_entropy":
            found.append(
                Helper(
                    "logp",
                    "log p = (ŷ − m) − ln Σₖ e^(ŷₖ − m), m = maxₖ ŷₖ (log-softmax of the logits ŷ)",
                    units,
                )
            )
        smoothing = f", ε = {number(self.spec.label_smoothing)}" if self.spec.label_smoothing else ""
        if form == "index":
            t_text = (
                "T_c = (1−ε)·w_c·[c = t] + (ε/C)·w_c, 0 on an ignored row"
                if smoothing
                else "T_c = w_c·[c = t]"
            )
            found.append(Helper("T", f"{t_text}{smoothing}{self._weights_text()}", units))
            found.append(
                Helper("wt", f"w_t: the target class's weight (0 if t = {self.spec.ignore_index})", 1)
            )
        else:
            found.append(Helper("T", f"T_c = w_c·((1−ε)·q_c + ε/C){smoothing}{self._weights_text()}", units))
        log_p = "log p_c" if self.spec.kind == "cross_entropy" else "ŷ_c (nll: ŷ = log p)"
        found.append(Helper("ell", f"ℓ = −Σ_c T_c·{log_p} (a row)", 1, self.ell_term()))
        return found

    def _weights_text(self) -> str:
        weights = self.spec.weight
        return "" if weights is None else f", w = ({', '.join(map(number, weights))})"

    def _weight(self, c: int) -> float:
        return 1.0 if self.spec.weight is None else float(self.spec.weight[c])

    def helper(self, key: str, cells: LossCells, i: int) -> list[str]:
        spec, z = self.spec, cells.yhat[i]
        classes = len(z)
        if key == "logp":  # (z − m) − ln Σ e^(z − m)
            m = f"MAX({','.join(z)})"
            lse = f"LN({'+'.join(f'EXP({zk}-{m})' for zk in z)})"
            return [f"({zc}-{m})-{lse}" for zc in z]
        eps = spec.label_smoothing
        if key == "T" and len(cells.y[i]) == 1:  # class ids: as hand/losses.py's _class_targets
            t, ignore = cells.y[i][0], spec.ignore_index
            bodies = []
            for c in range(classes):
                w = self._weight(c)
                if eps > 0:
                    on = f"IF({t}={c},{number((1 - eps) * w)},0)+{number(eps / classes * w)}"
                else:
                    on = f"IF({t}={c},{number(w)},0)"
                bodies.append(f"IF({t}={ignore},0,{on})")
            return bodies
        if key == "T":  # class probabilities q: w·((1 − ε)q + ε/C)
            q = cells.y[i]
            smoothed = [f"({qc}*{number(1 - eps)}+{number(eps / classes)})" if eps > 0 else qc for qc in q]
            if spec.weight is None:
                return smoothed
            return [f"{number(self._weight(c))}*{smoothed[c]}" for c in range(classes)]
        if key == "wt":  # w_{t}, 0 on an ignored row
            t = cells.y[i][0]
            if spec.weight is None:
                return [f"IF({t}={spec.ignore_index},0,1)"]
            return [f"IF({t}={spec.ignore_index},0,CHOOSE({t}+1,{','.join(map(number, spec.weight))}))"]
        # key == "ell": −Σ_c T_c·log p_c
        T, logp = cells.helpers["T"][i], self._logp(cells, i)
        return [f"-({'+'.join(f'{T[c]}*{logp[c]}' for c in range(classes))})"]

    def _logp(self, cells: LossCells, i: int) -> Sequence[str]:
        return cells.helpers["logp"][i] if self.spec.kind == "cross_entropy" else cells.yhat[i]

    def _divisor(self, cells: LossCells) -> str:
        """D: Σ w_t over the rows not ignored (class ids), N (class probabilities)."""
        return _sum(cells.ranges["wt"]) if "wt" in cells.ranges else str(len(cells.yhat))

    def total(self, cells: LossCells) -> str:
        summed = _sum(cells.ranges["ell"])
        return f"{summed}/{self._divisor(cells)}" if self.mean else summed

    def gradient(self, cells: LossCells, i: int, j: int) -> str:
        T = cells.helpers["T"][i]
        if self.mean:
            c = f"(1/{self._divisor(cells)})"
            dlogp = [f"(-({c}*{Tk}))" for Tk in T]  # ∂L/∂log p = −c·T
        else:
            dlogp = [f"(-{Tk})" for Tk in T]
        if self.spec.kind == "nll":
            return dlogp[j]
        logp = cells.helpers["logp"][i][j]
        return f"{dlogp[j]}-EXP({logp})*({'+'.join(dlogp)})"  # ∂L/∂log p − p·Σₖ ∂L/∂log pₖ

    def equations(self) -> tuple[str, str]:
        reduce = {"mean": "(1/D)·Σᵢ ℓᵢ", "sum": "Σᵢ ℓᵢ", "none": "Σᵢ ℓᵢ (reduction none: ℓ per row)"}
        c = "c = 1/D" if self.mean else "c = 1"
        ell = "ℓᵢ = −Σ_c T_ic·log p_ic"
        if self.spec.kind == "nll":
            return f"L = {reduce[self.spec.reduction]},  {ell}, log p = ŷ", f"∂L/∂ŷ = −c·T, {c}"
        return (
            f"L = {reduce[self.spec.reduction]},  {ell}",
            f"∂L/∂ŷ = c·(p·Σₖ Tₖ − T), p = e^(log p) = softmax(ŷ), {c}",
        )

    def count_note(self, cells: LossCells) -> str:
        rows = len(cells.yhat)
        if self.mean and "wt" in cells.ranges:
            return f"D = Σᵢ w_tᵢ over the rows not ignored, N = {rows}"
        return f"N = {rows}"


LossFormulas = ElementLoss | ClassLoss


def loss_formulas(spec: Loss) -> LossFormulas:
    """The live formulas of ``spec``, or a SpecError naming what has none."""
    if spec.kind in CLASS_LOSSES:
        return ClassLoss(spec)
    if spec.kind in LOSSES:
        return ElementLoss(spec)
    raise SpecError("loss", f"no live spreadsheet formulas for loss {spec.kind!r}")
