r"""Excel formula builders for the live sheets (Walkthrough, Training).

Each builder takes cell references (``"C7"``, ``"$C$7"``, a range or a defined name such as
``W_1``) and returns the body of a formula without its leading ``=``; :func:`formula` adds the
``=`` and enforces Excel's limit of 8,192 characters. The formulas follow the operation order of
the NumPy code they mirror (``handgrad.hand``), so a sheet agrees with the hand side to the last
bits or nearly so (sums and matrix products may add in another order): activations
(:func:`activation`, :func:`times_derivative`; relu′(0) = 0, leaky′(0) = s, as torch; σ takes
``EXP`` of −|z| only, so no z gives ``#NUM!``); optimizer updates by kind (:func:`update_rule`:
SGD, Adam, AdamW, RMSprop, Adagrad with their options, state read from the step before); the lr
in force under a schedule (:func:`scheduled_lr`) and gradient clipping (:func:`clip_norm`,
:func:`clipped`). The losses are in :mod:`handgrad.workbook.loss_formulas`. Only functions of
Excel 2007 are used (scripts/recalc.py checks it).

NOTE: LibreOffice rounds a difference of two numbers that agree to about 15 digits to exactly 0
(``rtl::math::approxSub``). Where NumPy keeps ~1e-16 the sheet shows 0; the absolute error stays
below 1e-15 of the operands, far inside the comparison tolerance.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from handgrad.contract.spec import SpecError
from handgrad.contract.training import Clip, LRSchedule, Optimizer

MAX_FORMULA_CHARS = 8192  # Excel's limit on the length of a formula's text
CLIP_EPS = "1e-6"  # clip_grad_norm_: coef = max_norm / (‖g‖ + 1e-6)


class TooLarge(SpecError):
    """A live sheet would break one of Excel's limits (formula length, columns, rows)."""

    def __init__(self, message: str) -> None:
        super().__init__("workbook", message)


def formula(body: str) -> str:
    """``'A1+B1' -> '=A1+B1'``; raise :class:`TooLarge` when Excel could not hold the formula."""
    text = body if body.startswith("=") else "=" + body
    if len(text) > MAX_FORMULA_CHARS:
        raise TooLarge(
            f"a live formula would be {len(text):,} characters long; Excel allows {MAX_FORMULA_CHARS:,} "
            f"(the layer or the batch is too wide for a live sheet; begins {text[:60]!r})",
        )
    return text


def number(value: float) -> str:
    """A float as a formula literal that reads back to the same double (``repr``)."""
    value = float(value)
    if not math.isfinite(value):
        raise SpecError("workbook", f"cannot write the non-finite number {value} into a formula")
    text = repr(value)
    return text[:-2] if text.endswith(".0") else text


# --- sums and products ------------------------------------------------------------------------


def mmult(left: str, right: str) -> str:
    return f"MMULT({left},{right})"


def transpose(block: str) -> str:
    return f"TRANSPOSE({block})"


def dot(pairs: Sequence[tuple[str, str]]) -> str:
    """``Σ aᵢ·bᵢ`` written out left to right (the order a naive matrix product sums in)."""
    return total([f"{a}*{b}" for a, b in pairs])


def total(terms: Sequence[str]) -> str:
    """``a+b+c`` left to right; ``0`` for nothing."""
    return "+".join(terms) if terms else "0"


def absolute_difference(hand: str, torch: str) -> str:
    return f"ABS({hand}-{torch})"


# --- activations ------------------------------------------------------------------------------


def sigmoid(z: str) -> str:
    """σ(z), taking EXP only of −|z| so that no z gives #NUM! (as the hand side's ``sigmoid``)."""
    return f"IF({z}>=0,1/(1+EXP(-{z})),EXP({z})/(1+EXP({z})))"


def activation(kind: str, z: str, slope: float = 0.01) -> str:
    """a = f(z) for one cell."""
    if kind == "sigmoid":
        return sigmoid(z)
    if kind == "tanh":
        return f"TANH({z})"
    if kind == "relu":
        return f"MAX({z},0)"
    if kind == "leaky_relu":
        return f"IF({z}>0,{z},{z}*{number(slope)})"
    if kind == "identity":
        return z
    raise SpecError("activation", f"no live formula for activation {kind!r}")


def derivative(kind: str, z: str, a: str, slope: float = 0.01) -> str:
    """f′(z) for one cell, from the output a where that is exact (σ, tanh), else from z (the
    identity has no factor: see :func:`times_derivative`)."""
    if kind == "sigmoid":
        return f"{a}*(1-{a})"  # σ'(z) = a(1 − a)
    if kind == "tanh":
        return f"1-{a}*{a}"  # tanh'(z) = 1 − a²
    if kind == "relu":
        return f"IF({z}>0,1,0)"  # NOTE: relu'(0) = 0, as torch
    if kind == "leaky_relu":
        return f"IF({z}>0,1,{number(slope)})"  # NOTE: leaky'(0) = s, as torch
    # NOTE: no identity here: f′ = 1, and times_derivative passes ∂L/∂a through unchanged
    raise SpecError("activation", f"no live formula for activation {kind!r}")


def times_derivative(kind: str, upstream: str, z: str, a: str, slope: float = 0.01) -> str:
    """∂L/∂z = ∂L/∂a ⊙ f′(z) for one cell."""
    if kind == "identity":
        return upstream  # ∂L/∂a · 1
    return f"{upstream}*({derivative(kind, z, a, slope)})"


ACTIVATION_EQUATIONS: dict[str, tuple[str, str]] = {
    # kind: (a = f(z), f′(z))
    "sigmoid": ("σ(z) = 1/(1+e^(−z))", "σ′(z) = a(1−a)"),
    "tanh": ("tanh(z)", "tanh′(z) = 1−a²"),
    "relu": ("max(z, 0)", "relu′(z) = [z > 0]  (0 at z = 0, as torch)"),
    "leaky_relu": ("z if z > 0 else s·z", "leaky′(z) = 1 if z > 0 else s  (s at z = 0, as torch)"),
    "identity": ("z", "1"),
}


# --- optimizer updates ------------------------------------------------------------------------


@dataclass(frozen=True)
class Hyper:
    """A hyper-parameter shown as an input cell: ``key`` (the spec's name), the defined name the
    formulas use (never a cell address: ``eta``, ``momentum``), its symbol and value."""

    key: str
    name: str
    symbol: str
    value: float


@dataclass(frozen=True)
class UpdateFormulas:
    """One parameter element's update: its new state (torch's state key -> formula body, in
    :attr:`UpdateRule.state_keys` order) and the updated parameter's formula body."""

    state: dict[str, str]
    next: str


UpdateBuild = Callable[..., UpdateFormulas]


@dataclass(frozen=True)
class UpdateRule:
    """How one optimizer (its kind and options) is written as live formulas, element by element.

    ``hyper(spec)`` lists the hyper-parameters that become input cells (defined names).
    ``state_keys(spec)`` lists the per-parameter state as torch's ``optimizer.state`` keys with
    symbols (:func:`handgrad.contract.spec.state_keys`): the sheets give each its own block or columns.
    ``build(param, grad, hyper, previous, step, state=None)`` returns the new state and the updated
    parameter of one element: ``param`` and ``grad`` are references to the element, ``hyper`` maps
    each hyper key to its defined name, ``previous[key]`` is a reference to the state before the
    step (``None`` at the first step, where torch creates the state), ``step`` a reference to (or
    literal of) the 1-based step count t, for bias corrections, and ``state[key]`` the cell that
    will hold the new state, for the update to read (without it the update writes the state's
    formula out again). ``scalars(hyper, step)`` gives the optimizer's scalar state terms (the hand
    side's ``optim.scalar_state``: t, the lr in force) as (key, formula body), in its order.

    An optimizer kind maps to a factory ``spec -> UpdateRule`` in :data:`UPDATE_RULES`, written in
    the operation order of the hand side's ``optim`` rule; the sheets lay out whatever state it names.
    """

    kind: str
    hyper: Callable[[Optimizer], list[Hyper]]
    state_keys: Callable[[Optimizer], list[tuple[str, str]]]
    build: UpdateBuild
    scalars: Callable[[Mapping[str, str], str], list[tuple[str, str]]]
    equation: str
    schedule: LRSchedule | None = None  # the lr in force moves by :func:`scheduled_lr`
    clip: Clip | None = None  # the gradients are clipped before the update


def _gradient(grad: str, param: str, hyper: Mapping[str, str], *, maximize: bool, decay: bool) -> str:
    """The g every rule starts from, as torch: g ← −g (maximize), then g ← g + λθ (L2 weight
    decay folded into the gradient; not AdamW's decoupled decay)."""
    g = f"(-{grad})" if maximize else grad  # g ← −g
    if decay:
        g = f"({g}+{hyper['weight_decay']}*{param})"  # g ← g + λθ
    return g


def _sgd(spec: Optimizer) -> UpdateRule:
    """``torch.optim.SGD`` as ``_single_tensor_sgd`` (and the hand side's ``optim.sgd``)::

    g ← −g (maximize);  g ← g + λθ (weight decay)
    b ← g at t = 1, else b ← μb + (1 − τ)g;  g ← g + μb (nesterov) or g ← b   (momentum μ > 0)
    θ′ = θ − η·g   (torch: θ + (−η)·g, the same number)
    """
    o = spec.options
    momentum, decay = o.get("momentum", 0.0) != 0, o.get("weight_decay", 0.0) != 0
    nesterov, maximize = bool(o.get("nesterov")), bool(o.get("maximize"))

    def hyper(spec: Optimizer) -> list[Hyper]:
        found = [Hyper("lr", "eta", "η", spec.lr)]
        if momentum:
            found += [
                Hyper("momentum", "momentum", "μ", float(spec.options["momentum"])),
                Hyper("dampening", "dampening", "τ", float(spec.options["dampening"])),
            ]
        if decay:
            found.append(Hyper("weight_decay", "weight_decay", "λ", float(spec.options["weight_decay"])))
        return found

    def build(
        param: str,
        grad: str,
        hyper: Mapping[str, str],
        previous: Mapping[str, str | None],
        step: str,
        state: Mapping[str, str] | None = None,
    ) -> UpdateFormulas:
        g = _gradient(grad, param, hyper, maximize=maximize, decay=decay)
        if not momentum:
            return UpdateFormulas({}, f"{param}-{hyper['lr']}*{g}")  # θ − η·g (= θ + (−η)·g exactly)
        before = previous.get("momentum_buffer")
        # NOTE: the first step copies g whole (no dampening), as torch creates the buffer
        buffer = g if before is None else f"{before}*{hyper['momentum']}+(1-{hyper['dampening']})*{g}"
        b = state["momentum_buffer"] if state is not None else f"({buffer})"
        step_direction = f"({g}+{hyper['momentum']}*{b})" if nesterov else b
        return UpdateFormulas({"momentum_buffer": buffer}, f"{param}-{hyper['lr']}*{step_direction}")

    with_buffer = "b = μb + (1−τ)g (b = g at t = 1), θ′ = θ − η·" + ("(g + μb)" if nesterov else "b")
    equation = with_buffer if momentum else "θ′ = θ − η·g"
    equation += ", g = " + ("−" if maximize else "") + "∂L/∂θ" + (" + λθ" if decay else "")
    return UpdateRule(
        kind="sgd",
        hyper=hyper,
        state_keys=lambda spec: [("momentum_buffer", "b")] if momentum else [],
        build=build,
        scalars=lambda hyper, step: [("lr", hyper["lr"])],  # the lr in force: η (no schedule)
        equation=equation,
    )


def _adam(spec: Optimizer) -> UpdateRule:
    """``torch.optim.Adam`` / ``AdamW`` as ``_single_tensor_adam`` (and the hand side's ``optim.adam``)::

    g ← −g (maximize);  g ← g + λθ (Adam's weight decay) or θ ← θ(1 − ηλ) (AdamW's, decoupled)
    m ← m + (1 − β₁)(g − m);  v ← β₂v + (1 − β₂)g²   (m = v = 0 before t = 1)
    v̂ᵐᵃˣ ← max(v̂ᵐᵃˣ, v) (amsgrad);  θ′ = θ − η/(1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + ε)
    """
    o = spec.options
    decoupled = spec.kind == "adamw"
    decay = o.get("weight_decay", 0.0) != 0
    maximize, amsgrad = bool(o.get("maximize")), bool(o.get("amsgrad"))
    beta1, beta2 = (float(b) for b in o["betas"])

    def hyper(spec: Optimizer) -> list[Hyper]:
        found = [
            Hyper("lr", "eta", "η", spec.lr),
            Hyper("beta1", "beta_1", "β₁", beta1),
            Hyper("beta2", "beta_2", "β₂", beta2),
            Hyper("eps", "eps", "ε", float(o["eps"])),
        ]
        if decay:
            found.append(Hyper("weight_decay", "weight_decay", "λ", float(o["weight_decay"])))
        return found

    def build(
        param: str,
        grad: str,
        hyper: Mapping[str, str],
        previous: Mapping[str, str | None],
        step: str,
        state: Mapping[str, str] | None = None,
    ) -> UpdateFormulas:
        eta, b1, b2, eps = hyper["lr"], hyper["beta1"], hyper["beta2"], hyper["eps"]
        g = _gradient(grad, param, hyper, maximize=maximize, decay=decay and not decoupled)
        theta = param
        if decay and decoupled:
            theta = f"({param}*(1-{eta}*{hyper['weight_decay']}))"  # θ ← θ(1 − ηλ)
        m0, v0 = previous.get("exp_avg"), previous.get("exp_avg_sq")
        # NOTE: torch creates m = v = 0 at t = 1, so the first step's moments are (1 − β)·g terms
        m_new = f"(1-{b1})*{g}" if m0 is None else f"{m0}+(1-{b1})*({g}-{m0})"  # lerp
        v_new = f"(1-{b2})*{g}*{g}" if v0 is None else f"{v0}*{b2}+((1-{b2})*{g})*{g}"
        new_state = {"exp_avg": m_new, "exp_avg_sq": v_new}
        m = state["exp_avg"] if state is not None else f"({m_new})"
        v = state["exp_avg_sq"] if state is not None else f"({v_new})"
        if amsgrad:
            vmax0 = previous.get("max_exp_avg_sq")
            new_state["max_exp_avg_sq"] = v if vmax0 is None else f"MAX({vmax0},{v})"
            v = state["max_exp_avg_sq"] if state is not None else f"({new_state['max_exp_avg_sq']})"
        denominator = f"(SQRT({v})/SQRT(1-{b2}^{step})+{eps})"
        return UpdateFormulas(new_state, f"{theta}+((-({eta}/(1-{b1}^{step})))*{m})/{denominator}")

    keys = [("exp_avg", "m"), ("exp_avg_sq", "v")] + ([("max_exp_avg_sq", "v̂ᵐᵃˣ")] if amsgrad else [])
    equation = "m = β₁m + (1−β₁)g, v = β₂v + (1−β₂)g², θ′ = θ − η/(1−β₁ᵗ)·m/(√v/√(1−β₂ᵗ) + ε)"
    if decay:
        equation += ", θ ← θ(1 − ηλ)" if decoupled else ", g = ∂L/∂θ + λθ"
    return UpdateRule(
        kind=spec.kind,
        hyper=hyper,
        state_keys=lambda spec: keys,
        build=build,
        scalars=lambda hyper, step: [("step", step), ("lr", hyper["lr"])],  # t, the lr in force
        equation=equation,
    )


def _rmsprop(spec: Optimizer) -> UpdateRule:
    """``torch.optim.RMSprop`` as ``_single_tensor_rmsprop`` (and the hand side's ``optim.rmsprop``)::

    g ← −g (maximize);  g ← g + λθ (weight decay)
    v ← αv + (1 − α)g²;  ḡ ← ḡ + (1 − α)(g − ḡ) (centered)   (v = ḡ = 0 before t = 1)
    s ← √(v − ḡ²) + ε (centered) or √v + ε
    b ← μb + g/s, θ′ = θ − η·b (momentum μ > 0; b = 0 before t = 1)   or   θ′ = θ − η·g/s
    """
    o = spec.options
    momentum, decay = float(o.get("momentum", 0.0)) > 0, o.get("weight_decay", 0.0) != 0
    centered, maximize = bool(o.get("centered")), bool(o.get("maximize"))

    def hyper(spec: Optimizer) -> list[Hyper]:
        found = [
            Hyper("lr", "eta", "η", spec.lr),
            Hyper("alpha", "alpha", "α", float(o["alpha"])),
            Hyper("eps", "eps", "ε", float(o["eps"])),
        ]
        if momentum:
            found.append(Hyper("momentum", "momentum", "μ", float(o["momentum"])))
        if decay:
            found.append(Hyper("weight_decay", "weight_decay", "λ", float(o["weight_decay"])))
        return found

    def build(
        param: str,
        grad: str,
        hyper: Mapping[str, str],
        previous: Mapping[str, str | None],
        step: str,
        state: Mapping[str, str] | None = None,
    ) -> UpdateFormulas:
        eta, alpha, eps = hyper["lr"], hyper["alpha"], hyper["eps"]
        g = _gradient(grad, param, hyper, maximize=maximize, decay=decay)
        v0 = previous.get("square_avg")
        # NOTE: torch creates v = 0 (and ḡ = b = 0) at t = 1; 0·α + x is x exactly
        v_new = f"((1-{alpha})*{g})*{g}" if v0 is None else f"{v0}*{alpha}+((1-{alpha})*{g})*{g}"
        new_state = {"square_avg": v_new}
        v = state["square_avg"] if state is not None else f"({v_new})"
        if centered:
            mean0 = previous.get("grad_avg")
            new_state["grad_avg"] = lerp("0" if mean0 is None else mean0, g, f"(1-{alpha})")
            mean = state["grad_avg"] if state is not None else f"({new_state['grad_avg']})"
            avg = f"(SQRT({v}+(-1*{mean})*{mean})+{eps})"  # √(v − ḡ²) + ε
        else:
            avg = f"(SQRT({v})+{eps})"  # √v + ε
        if not momentum:
            return UpdateFormulas(new_state, f"{param}+((-{eta})*{g})/{avg}")  # θ − η·g/s
        b0 = previous.get("momentum_buffer")
        new_state["momentum_buffer"] = f"{g}/{avg}" if b0 is None else f"{b0}*{hyper['momentum']}+{g}/{avg}"
        b = state["momentum_buffer"] if state is not None else f"({new_state['momentum_buffer']})"
        return UpdateFormulas(new_state, f"{param}+(-{eta})*{b}")  # θ − η·b

    keys = [("square_avg", "v")] + ([("grad_avg", "ḡ")] if centered else [])
    keys += [("momentum_buffer", "b")] if momentum else []
    s_text = "√(v − ḡ²) + ε" if centered else "√v + ε"
    equation = "v = αv + (1−α)g², " + ("ḡ = αḡ + (1−α)g, " if centered else "") + f"s = {s_text}, "
    equation += "b = μb + g/s, θ′ = θ − η·b" if momentum else "θ′ = θ − η·g/s"
    if decay:
        equation += ", g = ∂L/∂θ + λθ"
    return UpdateRule(
        kind="rmsprop",
        hyper=hyper,
        state_keys=lambda spec: keys,
        build=build,
        scalars=lambda hyper, step: [("step", step), ("lr", hyper["lr"])],
        equation=equation,
    )


def _adagrad(spec: Optimizer) -> UpdateRule:
    """``torch.optim.Adagrad`` as ``_single_tensor_adagrad`` (and the hand side's ``optim.adagrad``)::

    g ← −g (maximize);  g ← g + λθ (weight decay)
    η̃ = η / (1 + (t − 1)·lr_decay);  G ← G + g²   (G = G₀, the initial accumulator, before t = 1)
    θ′ = θ − η̃·g / (√G + ε)
    """
    o = spec.options
    decay, maximize = o.get("weight_decay", 0.0) != 0, bool(o.get("maximize"))

    def hyper(spec: Optimizer) -> list[Hyper]:
        found = [
            Hyper("lr", "eta", "η", spec.lr),
            Hyper("lr_decay", "lr_decay", "lr_decay", float(o["lr_decay"])),
            Hyper("eps", "eps", "ε", float(o["eps"])),
            Hyper("initial_accumulator_value", "G_init", "G₀", float(o["initial_accumulator_value"])),
        ]
        if decay:
            found.append(Hyper("weight_decay", "weight_decay", "λ", float(o["weight_decay"])))
        return found

    def build(
        param: str,
        grad: str,
        hyper: Mapping[str, str],
        previous: Mapping[str, str | None],
        step: str,
        state: Mapping[str, str] | None = None,
    ) -> UpdateFormulas:
        g = _gradient(grad, param, hyper, maximize=maximize, decay=decay)
        before = previous.get("sum")
        accumulated = f"{hyper['initial_accumulator_value'] if before is None else before}+{g}*{g}"
        total_cell = state["sum"] if state is not None else f"({accumulated})"
        decayed = f"({hyper['lr']}/(1+({step}-1)*{hyper['lr_decay']}))"  # η̃ = η / (1 + (t − 1)·lr_decay)
        return UpdateFormulas(
            {"sum": accumulated}, f"{param}+((-{decayed})*{g})/(SQRT({total_cell})+{hyper['eps']})"
        )

    equation = "G = G + g², θ′ = θ − η̃·g/(√G + ε), η̃ = η/(1 + (t−1)·lr_decay)"
    if decay:
        equation += ", g = ∂L/∂θ + λθ"
    return UpdateRule(
        kind="adagrad",
        hyper=hyper,
        state_keys=lambda spec: [("sum", "G")],
        build=build,
        scalars=lambda hyper, step: [("step", step), ("lr", hyper["lr"])],
        equation=equation,
    )


def lerp(start: str, end: str, weight: str) -> str:
    """``torch.lerp`` as its CPU kernel (and the hand side's ``optim.lerp``): start + w(end − start)
    for |w| < ½, else end − (end − start)(1 − w); the branch is taken on the live weight."""
    low = f"{start}+{weight}*({end}-{start})"
    high = f"{end}-({end}-{start})*(1-{weight})"
    return f"IF(ABS({weight})<0.5,{low},{high})"


UPDATE_RULES: dict[str, Callable[[Optimizer], UpdateRule]] = {
    "sgd": _sgd,
    "adam": _adam,
    "adamw": _adam,
    "rmsprop": _rmsprop,
    "adagrad": _adagrad,
}


def update_rule(spec: Optimizer) -> UpdateRule:
    """The live update of an optimizer, with its schedule's and its clipping's input cells, or a
    SpecError saying what has no live formulas."""
    factory = UPDATE_RULES.get(spec.kind)
    if factory is None:
        raise SpecError(
            "optimizer",
            f"no live spreadsheet formulas for optimizer {spec.kind!r} yet (have: {', '.join(UPDATE_RULES)})",
        )
    rule = factory(spec)
    schedule = spec.schedule if spec.schedule is not None and spec.schedule.kind != "none" else None
    clip = spec.clip
    if schedule is None and clip is None:
        return rule
    extra = schedule_hyper(schedule) + _clip_hyper(clip)

    def hyper(spec: Optimizer) -> list[Hyper]:
        return rule.hyper(spec) + extra

    equation = rule.equation
    if clip is not None:
        equation = f"g = ĝ (clipped: {clip_equation(clip)}); " + equation
    return dataclasses.replace(rule, hyper=hyper, equation=equation, schedule=schedule, clip=clip)


# --- learning-rate schedules ------------------------------------------------------------------------


def schedule_hyper(schedule: LRSchedule | None) -> list[Hyper]:
    if schedule is None:
        return []
    if schedule.kind == "step":
        return [
            Hyper("step_size", "lr_step_size", "step_size", float(schedule.step_size)),
            Hyper("gamma", "lr_gamma", "γ", float(schedule.gamma)),
        ]
    if schedule.kind == "exponential":
        return [Hyper("gamma", "lr_gamma", "γ", float(schedule.gamma))]
    if schedule.kind == "cosine":
        return [
            Hyper("t_max", "lr_T_max", "T_max", float(schedule.t_max)),
            Hyper("eta_min", "eta_min", "η_min", float(schedule.eta_min)),
        ]
    raise SpecError("schedule", f"no live spreadsheet formulas for schedule {schedule.kind!r}")


def scheduled_lr(schedule: LRSchedule, hyper: Mapping[str, str], previous: str | None, step: str) -> str:
    """η in force at step t: η at t = 1 (``previous`` None), else the scheduler's step from the
    η of step t − 1 (``previous``) at epoch e = t − 1, by the recursive formula torch's
    ``get_lr`` uses (the hand side's ``optim.next_lr``):

    StepLR ``η·γ if e mod step_size = 0 else η``; ExponentialLR ``η·γ``; CosineAnnealingLR
    ``η_min + (η − η_min)(1 + cos(πe/T))/(1 + cos(π(e − 1)/T))``, and
    ``η + (η₀ − η_min)(1 − cos(π/T))/2`` where that denominator is 0 (e − 1 − T ≡ 0 mod 2T).
    """
    base = hyper["lr"]
    if previous is None:
        return base
    epoch = f"({step}-1)"
    if schedule.kind == "step":
        return f"IF(MOD({epoch},{hyper['step_size']})=0,{previous}*{hyper['gamma']},{previous})"
    if schedule.kind == "exponential":
        return f"{previous}*{hyper['gamma']}"
    if schedule.kind == "cosine":
        t_max, eta_min = hyper["t_max"], hyper["eta_min"]
        restart = f"{previous}+({base}-{eta_min})*(1-COS(PI()/{t_max}))/2"
        ratio = f"(1+COS(PI()*{epoch}/{t_max}))/(1+COS(PI()*({epoch}-1)/{t_max}))"
        return f"IF(MOD({epoch}-1-{t_max},2*{t_max})=0,{restart},{ratio}*({previous}-{eta_min})+{eta_min})"
    raise SpecError("schedule", f"no live spreadsheet formulas for schedule {schedule.kind!r}")


def schedule_equation(schedule: LRSchedule) -> str:
    return {
        "step": "η ← γ·η every step_size steps (StepLR)",
        "exponential": "η ← γ·η every step (ExponentialLR)",
        "cosine": "η ← η_min + (η − η_min)(1 + cos(πe/T))/(1 + cos(π(e−1)/T)) (CosineAnnealingLR, recursive)",
    }[schedule.kind]


# --- gradient clipping ------------------------------------------------------------------------------


def _clip_hyper(clip: Clip | None) -> list[Hyper]:
    if clip is None:
        return []
    if clip.max_norm is not None:
        return [Hyper("max_norm", "max_norm", "max_norm", float(clip.max_norm))]
    return [Hyper("clip_value", "clip_value", "c", float(clip.value))]


def clip_equation(clip: Clip) -> str:
    if clip.max_norm is not None:
        p = "∞" if math.isinf(clip.norm_type) else number(clip.norm_type)
        return f"ĝ = g·min(max_norm/(‖g‖_{p} + 10⁻⁶), 1), ‖g‖ over every parameter's gradient"
    return "ĝ = min(max(g, −c), c)"


def clip_norm(clip: Clip, cells: Sequence[str]) -> str:
    """‖g‖_p over every gradient element together, each cell written out (torch takes the norm of
    the per-tensor norms: the same number up to rounding): p = 2 ``SQRT(g₁*g₁+...)``, p = ∞ the
    largest ``ABS``, p = 1 the sum of ``ABS``, else ``(ABS(g₁)^p+...)^(1/p)``.

    NOTE: not ``SQRT(SUMSQ(range, ...))``: LibreOffice 7.4's threaded calculation of a column of
    such formulas (one per Training row) gave a wrong ‖g‖ in the first row (0.335 for 0.411,
    xor); written out cell by cell, as every other formula of the sheet, it computes right.
    """
    p = float(clip.norm_type)
    if math.isinf(p):
        return _nested("MAX", [f"ABS({c})" for c in cells])
    if p == 2:
        return "SQRT(" + "+".join(f"{c}*{c}" for c in cells) + ")"
    if p == 1:
        return "+".join(f"ABS({c})" for c in cells)
    power = number(p)
    return "(" + "+".join(f"ABS({c})^{power}" for c in cells) + f")^(1/{power})"


def _nested(function: str, arguments: Sequence[str], limit: int = 255) -> str:
    """``MAX(a, b, ...)`` within Excel's 255 arguments per call (nested beyond)."""
    if len(arguments) <= limit:
        return f"{function}({','.join(arguments)})"
    chunks = [arguments[i : i + limit] for i in range(0, len(arguments), limit)]
    return _nested(function, [_nested(function, chunk, limit) for chunk in chunks], limit)


def clip_coefficient(hyper: Mapping[str, str], norm: str) -> str:
    """min(max_norm/(‖g‖ + 10⁻⁶), 1), as ``clip_grad_norm_``."""
    return f"MIN({hyper['max_norm']}/({norm}+{CLIP_EPS}),1)"


def clipped(clip: Clip, hyper: Mapping[str, str], grad: str, coefficient: str | None) -> str:
    """ĝ of one element: g·coef (by norm; every gradient is multiplied, also when coef = 1) or
    g clamped to [−c, c] (by value)."""
    if clip.max_norm is not None:
        assert coefficient is not None
        return f"{grad}*{coefficient}"
    c = hyper["clip_value"]
    return f"MIN(MAX({grad},-{c}),{c})"
