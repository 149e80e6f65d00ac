r"""Optimizers, learning-rate schedules and gradient clipping, as ``torch.optim`` implements them.

Pure functions of (params, grads, state): ``step(spec, params, grads, state) -> (params_next,
state_next)``. ``state`` is a dict holding the global ``"step"`` count t and the learning rate in
force ``"lr"`` (η), and, keyed by parameter name (``"dense1.W"``), a dict of that parameter's
buffers under torch's own names (``momentum_buffer``, ``exp_avg``, ``exp_avg_sq``,
``max_exp_avg_sq``, ``square_avg``, ``grad_avg``, ``sum``). Nothing is updated in place.

Each rule follows torch's single-tensor path (``_single_tensor_sgd``, ``_single_tensor_adam``,
...) operation by operation, so that both sides round alike: ``addcdiv_`` is (value·t₁)/t₂ on
torch's CPU kernel, and is written so here. NOTE: ``add_(x, alpha=a)``, ``addcmul_`` and ``lerp_``
are fused multiply-adds there (one rounding), two roundings in NumPy: a step agrees to ~1 ulp.

With g = ∂L/∂θ (−g when ``maximize``), λ the weight decay, t the step count (1 on the first step):

SGD (``torch.optim.SGD``)::

    g ← g + λθ                                    (L2 weight decay, folded into the gradient)
    b ← g                      at t = 1           NOTE: the first step copies g, no dampening
    b ← μb + (1 − τ)g          at t > 1           (τ = dampening)
    g ← g + μb  (nesterov)     or   g ← b
    θ ← θ − ηg

Adam / AdamW (``torch.optim.Adam``, ``torch.optim.AdamW``)::

    Adam:  g ← g + λθ                             AdamW:  θ ← θ(1 − ηλ)   (decoupled)
    m ← m + (1 − β₁)(g − m)                       (torch's lerp: the same as β₁m + (1 − β₁)g)
    v ← β₂v + (1 − β₂)g²
    v̂ᵐᵃˣ ← max(v̂ᵐᵃˣ, v)                          (amsgrad; then v̂ᵐᵃˣ replaces v below)
    θ ← θ − η/(1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + ε)   NOTE: ε is added after the square root
                                                     and after the bias correction of v

RMSprop (``torch.optim.RMSprop``)::

    g ← g + λθ
    v ← αv + (1 − α)g²
    ḡ ← ḡ + (1 − α)(g − ḡ)                        (centered: the running mean of g)
    s ← √(v − ḡ²) + ε   (centered)   or   s ← √v + ε
    b ← μb + g/s,  θ ← θ − ηb    (momentum > 0)   or   θ ← θ − η g/s

Adagrad (``torch.optim.Adagrad``)::

    g ← g + λθ
    G ← G + g²                                    (G starts at initial_accumulator_value)
    η̃ ← η / (1 + (t − 1)·lr_decay)
    θ ← θ − η̃ g / (√G + ε)

Schedules (:func:`schedule_step`), stepped after each optimizer step with e the scheduler's epoch
count (e = t): StepLR ``η ← γη`` when e is a multiple of step_size; ExponentialLR ``η ← γη``;
CosineAnnealingLR torch's *recursive* form
``η ← η_min + (η − η_min)·(1 + cos(πe/T))/(1 + cos(π(e−1)/T))`` (and
``η ← η + (η₀ − η_min)(1 − cos(π/T))/2`` where the denominator vanishes, e − 1 − T ≡ 0 mod 2T),
which equals the closed form ``η_min + ½(η₀ − η_min)(1 + cos(πe/T))`` up to rounding.

Clipping (:func:`clip_gradients`) comes from :mod:`handgrad.hand.clip`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from handgrad.contract.names import state_keys
from handgrad.contract.trace import StepTrace
from handgrad.contract.training import Optimizer
from handgrad.hand import clip as clip_grad

State = dict[str, Any]
ParamState = dict[str, np.ndarray]
Rule = Callable[
    [Mapping[str, Any], np.ndarray, np.ndarray, ParamState, int, float], tuple[np.ndarray, ParamState]
]


def lerp(start: np.ndarray, end: np.ndarray, weight: float) -> np.ndarray:
    """``torch.lerp(start, end, weight)`` in torch's CPU form: start + w(end − start) for |w| < ½,
    else end − (end − start)(1 − w) (both exact at their own end)."""
    if abs(weight) < 0.5:
        return start + weight * (end - start)
    return end - (end - start) * (1 - weight)


# --- the update rules, one parameter at a time (o: the spec's options, s: this parameter's state) --


def sgd(
    o: Mapping[str, Any], p: np.ndarray, g: np.ndarray, s: ParamState, t: int, lr: float
) -> tuple[np.ndarray, ParamState]:
    """``_single_tensor_sgd``."""
    g = -g if o["maximize"] else g
    if o["weight_decay"] != 0:
        g = g + o["weight_decay"] * p  # g ← g + λθ
    s = dict(s)
    if o["momentum"] != 0:
        if "momentum_buffer" not in s:
            buf = g.copy()  # b₁ = g₁: the first step takes g whole, no dampening
        else:
            buf = s["momentum_buffer"] * o["momentum"] + (1 - o["dampening"]) * g  # b ← μb + (1−τ)g
        s["momentum_buffer"] = buf
        g = g + o["momentum"] * buf if o["nesterov"] else buf  # nesterov looks ahead: g + μb
    return p + (-lr) * g, s  # θ ← θ − ηg


def adam(
    o: Mapping[str, Any],
    p: np.ndarray,
    g: np.ndarray,
    s: ParamState,
    t: int,
    lr: float,
    *,
    decoupled: bool = False,
) -> tuple[np.ndarray, ParamState]:
    """``_single_tensor_adam`` (``decoupled``: AdamW's weight decay)."""
    beta1, beta2 = o["betas"]
    g = -g if o["maximize"] else g
    if o["weight_decay"] != 0:
        if decoupled:
            p = p * (1 - lr * o["weight_decay"])  # AdamW: θ ← θ(1 − ηλ), outside the moments
        else:
            g = g + o["weight_decay"] * p  # Adam: g ← g + λθ, into the moments
    exp_avg = lerp(s["exp_avg"], g, 1 - beta1)  # m ← m + (1 − β₁)(g − m)
    exp_avg_sq = s["exp_avg_sq"] * beta2 + ((1 - beta2) * g) * g  # v ← β₂v + (1 − β₂)g²
    step = float(t)  # torch keeps t as a float tensor
    bias_correction1 = 1 - beta1**step  # 1 − β₁ᵗ
    bias_correction2 = 1 - beta2**step  # 1 − β₂ᵗ
    step_size = lr / bias_correction1  # η / (1 − β₁ᵗ)
    bias_correction2_sqrt = bias_correction2**0.5
    s = {**s, "exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}
    if o["amsgrad"]:
        s["max_exp_avg_sq"] = np.maximum(s["max_exp_avg_sq"], exp_avg_sq)  # v̂ᵐᵃˣ ← max(v̂ᵐᵃˣ, v)
        denom = np.sqrt(s["max_exp_avg_sq"]) / bias_correction2_sqrt + o["eps"]
    else:
        denom = np.sqrt(exp_avg_sq) / bias_correction2_sqrt + o["eps"]  # √v/√(1 − β₂ᵗ) + ε
    return p + ((-step_size) * exp_avg) / denom, s  # θ ← θ − η/(1 − β₁ᵗ) · m/denom


def adamw(
    o: Mapping[str, Any], p: np.ndarray, g: np.ndarray, s: ParamState, t: int, lr: float
) -> tuple[np.ndarray, ParamState]:
    """``torch.optim.AdamW``: Adam with ``decoupled_weight_decay=True``."""
    return adam(o, p, g, s, t, lr, decoupled=True)


def rmsprop(
    o: Mapping[str, Any], p: np.ndarray, g: np.ndarray, s: ParamState, t: int, lr: float
) -> tuple[np.ndarray, ParamState]:
    """``_single_tensor_rmsprop``."""
    alpha = o["alpha"]
    g = -g if o["maximize"] else g
    if o["weight_decay"] != 0:
        g = g + o["weight_decay"] * p  # g ← g + λθ
    s = dict(s)
    square_avg = s["square_avg"] * alpha + ((1 - alpha) * g) * g  # v ← αv + (1 − α)g²
    s["square_avg"] = square_avg
    if o["centered"]:
        grad_avg = lerp(s["grad_avg"], g, 1 - alpha)  # ḡ ← ḡ + (1 − α)(g − ḡ)
        s["grad_avg"] = grad_avg
        avg = np.sqrt(square_avg + (-1 * grad_avg) * grad_avg)  # √(v − ḡ²)
    else:
        avg = np.sqrt(square_avg)  # √v
    avg = avg + o["eps"]  # s = √· + ε
    if o["momentum"] > 0:
        buf = s["momentum_buffer"] * o["momentum"] + g / avg  # b ← μb + g/s
        s["momentum_buffer"] = buf
        return p + (-lr) * buf, s  # θ ← θ − ηb
    return p + ((-lr) * g) / avg, s  # θ ← θ − η g/s


def adagrad(
    o: Mapping[str, Any], p: np.ndarray, g: np.ndarray, s: ParamState, t: int, lr: float
) -> tuple[np.ndarray, ParamState]:
    """``_single_tensor_adagrad`` (dense gradients)."""
    g = -g if o["maximize"] else g
    if o["weight_decay"] != 0:
        g = g + o["weight_decay"] * p  # g ← g + λθ
    clr = lr / (1 + (float(t) - 1) * o["lr_decay"])  # η̃ = η / (1 + (t − 1)·lr_decay)
    state_sum = s["sum"] + (1 * g) * g  # G ← G + g²
    std = np.sqrt(state_sum) + o["eps"]  # √G + ε
    return p + ((-clr) * g) / std, {**s, "sum": state_sum}  # θ ← θ − η̃ g/(√G + ε)


# Looked up at call time, so that a test can plant a mutant (monkeypatch.setitem(RULES, ...)).
RULES: dict[str, Rule] = {"sgd": sgd, "adam": adam, "adamw": adamw, "rmsprop": rmsprop, "adagrad": adagrad}


def _init_param_state(spec: Optimizer, p: np.ndarray) -> ParamState:
    """The buffers torch creates on the first step (or, for Adagrad, in the constructor)."""
    o = spec.options
    if spec.kind == "sgd":
        return {}  # momentum_buffer appears at the first step, as a copy of g
    if spec.kind in ("adam", "adamw"):
        state = {"exp_avg": np.zeros_like(p), "exp_avg_sq": np.zeros_like(p)}
        if o["amsgrad"]:
            state["max_exp_avg_sq"] = np.zeros_like(p)
        return state
    if spec.kind == "rmsprop":
        state = {"square_avg": np.zeros_like(p)}
        if o["momentum"] > 0:
            state["momentum_buffer"] = np.zeros_like(p)
        if o["centered"]:
            state["grad_avg"] = np.zeros_like(p)
        return state
    if spec.kind == "adagrad":
        return {"sum": np.full_like(p, o["initial_accumulator_value"])}
    raise ValueError(f"unknown optimizer {spec.kind!r}")


def init_state(spec: Optimizer, params: dict[str, np.ndarray]) -> State:
    """t = 0, η = the spec's lr, and each parameter's buffers as torch initialises them."""
    state: State = {"step": 0, "lr": float(spec.lr)}
    for name, value in params.items():
        state[name] = _init_param_state(spec, value)
    return state


def step(
    spec: Optimizer,
    params: dict[str, np.ndarray],
    grads: dict[str, np.ndarray],
    state: State,
) -> tuple[dict[str, np.ndarray], State]:
    """One optimizer step at the lr in force (``state["lr"]``); the lr itself moves in
    :func:`schedule_step`."""
    rule = RULES[spec.kind]
    t = state["step"] + 1
    lr = state["lr"]
    params_next: dict[str, np.ndarray] = {}
    state_next: State = {"step": t, "lr": lr}
    for name, value in params.items():
        params_next[name], state_next[name] = rule(spec.options, value, grads[name], state[name], t, lr)
    return params_next, state_next


def next_lr(spec: Optimizer, lr: float, epoch: int) -> float:
    """The lr after the scheduler's ``epoch``-th step (``last_epoch = epoch``), from the lr in force,
    by the formula torch's ``get_lr`` uses (recursive, not the closed form)."""
    schedule = spec.schedule
    if schedule is None or schedule.kind == "none":
        return lr
    if schedule.kind == "step":
        return lr * schedule.gamma if epoch % schedule.step_size == 0 else lr  # StepLR
    if schedule.kind == "exponential":
        return lr * schedule.gamma  # ExponentialLR
    if schedule.kind == "cosine":
        t_max, eta_min, base_lr = schedule.t_max, schedule.eta_min, spec.lr
        if (epoch - 1 - t_max) % (2 * t_max) == 0:  # the recursion's denominator 1 + cos(π(e−1)/T) is 0
            return lr + (base_lr - eta_min) * (1 - math.cos(math.pi / t_max)) / 2
        return (1 + math.cos(math.pi * epoch / t_max)) / (1 + math.cos(math.pi * (epoch - 1) / t_max)) * (
            lr - eta_min
        ) + eta_min
    raise ValueError(f"unknown schedule {schedule.kind!r}")


def schedule_step(spec: Optimizer, state: State) -> State:
    """``scheduler.step()`` after ``optimizer.step()``: the lr the next step will use."""
    return {**state, "lr": next_lr(spec, state["lr"], state["step"])}


def clip_gradients(
    spec: Optimizer, grads: dict[str, np.ndarray]
) -> tuple[dict[str, np.ndarray], float | None]:
    """Clip as the spec says (between backward and the update): (clipped grads, the total norm
    before clipping for clip-by-norm, else None). Without clipping the grads come back as given."""
    clip = spec.clip
    if clip is None:
        return grads, None
    if clip.max_norm is not None:
        clipped, norm = clip_grad.clip_grad_norm(grads, clip.max_norm, clip.norm_type)
    else:
        clipped, norm = clip_grad.clip_grad_value(grads, clip.value), None
    # hand/clip computes in float64; keep each gradient's own dtype (float32 runs stay float32)
    return {name: np.asarray(value, dtype=grads[name].dtype) for name, value in clipped.items()}, norm


def scalar_state(spec: Optimizer, state: State) -> list[tuple[str, str, np.ndarray]]:
    """Scalars of the optimizer as (key, symbol, value): the step count t (torch's SGD keeps none)
    and the lr in force at this step η (``param_groups[0]["lr"]``)."""
    scalars = [] if spec.kind == "sgd" else [("step", "t", np.asarray(float(state["step"])))]
    return scalars + [("lr", "η", np.asarray(float(state["lr"])))]


# --- the step tail: one copy for every family ------------------------------------------------------


def clip_and_trace(
    trace: StepTrace, spec: Optimizer, grads: dict[str, np.ndarray], symbols: Mapping[str, str]
) -> dict[str, np.ndarray]:
    """Clipping between backward and the update, with its terms: ``clip.total_norm`` ‖g‖ (by norm)
    and ``clip.grad.<param>`` ĝ[θ] per parameter of ``symbols`` (name → symbol, in the parameters'
    order); the gradients unchanged without clipping. The clipped gradients are new arrays, never
    written to again: the trace keeps them uncopied."""
    if spec.clip is None:
        return grads
    grads, total_norm = clip_gradients(spec, grads)
    if total_norm is not None:
        trace.add("clip.total_norm", "‖g‖", "update", total_norm)
    for name in symbols:  # the parameters' order, whatever order backward filled ``grads`` in
        trace.add(f"clip.grad.{name}", f"ĝ[{symbols[name]}]", "update", grads[name], copy=False)
    return grads


def step_and_trace(
    trace: StepTrace,
    spec: Optimizer,
    params: dict[str, np.ndarray],
    grads: dict[str, np.ndarray],
    state: State,
    symbols: Mapping[str, str],
) -> tuple[dict[str, np.ndarray], State]:
    """The update and what follows it, in the order torch does it: θ′ = step(θ, g) traced as
    ``<param>_next``; the optimizer's per-parameter state ``<kind>.<key>.<param>``; its scalars
    (t, η); then the schedule moves η for the next step. Returns the new parameters and state.

    Every rule makes new arrays and never updates in place (the module's docstring), so θ′ and
    the state go into the trace uncopied: the next step reads them and makes new ones."""
    params, state = step(spec, params, grads, state)
    for name, value in params.items():
        trace.add(f"{name}_next", f"{symbols[name]}′", "update", value, copy=False)
    for key, symbol in state_keys(spec):
        for name in params:
            value = state[name][key]
            trace.add(f"{spec.kind}.{key}.{name}", f"{symbol}[{symbols[name]}]", "state", value, copy=False)
    for key, symbol, value in scalar_state(spec, state):
        trace.add(f"{spec.kind}.{key}", symbol, "state", value, copy=False)
    return params, schedule_step(spec, state)
