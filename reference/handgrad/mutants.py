"""Planted bugs: proof that the checks bite.

Each :class:`Mutant` swaps one shipped hand function for a broken copy defined here (the shipped
code is never edited), runs a small experiment through the harness, and states the term where
the bug must first show. ``scripts/mutants.py`` prints the tally; ``tests/test_mutants.py``
asserts every one is caught at its expected first term.

The broken copies are the textbook slips the issue lists: a missing transpose, ReLU′(0) = 1,
σ′ from z instead of a, a factor 2 lost from the squared error, softmax without the max shift on
huge logits, a bias gradient summed over the wrong axis, the LSTM bias of one gate used for
another, BPTT dropping the carried gradient, the conv backward without the kernel flip, Adam
without bias correction, and more.

This module imports no torch itself (the hand side of a mutant is pure NumPy); building an
experiment imports the twin, and ``Scenario.build_hand`` (:mod:`handgrad.scenarios.common`)
builds the hand side alone, torch-free, for the finite-difference oracle.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from handgrad.hand import activations, conv, dense, losses, optim
from handgrad.hand import recurrent as hr

# The shipped functions, kept before any patching: the broken copies call them for the parts
# they do not break.
_DENSE_FORWARD, _DENSE_BACKWARD = dense.forward, dense.backward
_DERIVATIVE = activations.derivative
_LOSS_FORWARD, _LOSS_BACKWARD = losses.forward, losses.backward
_CONV_FORWARD, _CONV_BACKWARD = conv.conv2d_forward, conv.conv2d_backward
_MAXPOOL_FORWARD = conv.maxpool2d_forward
_COL2IM = conv._col2im
_INPUT_PROJECTION = hr._input_projection
_LSTM_BACK, _GRU_BACK, _RNN_BACK = hr._lstm_step_back, hr._gru_step_back, hr._rnn_step_back
_ADAM, _SGD, _RMSPROP, _ADAGRAD = optim.adam, optim.sgd, optim.rmsprop, optim.adagrad


# --- dense ---------------------------------------------------------------------------------------


def dense_backward_dW_transposed(dL_dz, cache, *, has_bias=True):  # noqa: ANN001, ANN201
    """Bug: ∂L/∂W = Xᵀ G (in, out) where Gᵀ X (out, in) is right — a missing transpose."""
    dx, grads = _DENSE_BACKWARD(dL_dz, cache, has_bias=has_bias)
    grads["W"] = cache.x.T @ dL_dz  # in,out
    return dx, grads


def dense_backward_bias_wrong_axis(dL_dz, cache, *, has_bias=True):  # noqa: ANN001, ANN201
    """Bug: ∂L/∂b summed over the units (axis 1) instead of over the batch (axis 0)."""
    dx, grads = _DENSE_BACKWARD(dL_dz, cache, has_bias=has_bias)
    if has_bias:
        grads["b"] = dL_dz.sum(axis=1)  # N, not out
    return dx, grads


def dense_backward_dx_with_W_transposed(dL_dz, cache, *, has_bias=True):  # noqa: ANN001, ANN201
    """Bug: ∂L/∂X = G Wᵀ where G W is right (shapes agree only for a square W)."""
    _, grads = _DENSE_BACKWARD(dL_dz, cache, has_bias=has_bias)
    return dL_dz @ cache.W.T, grads


def dense_forward_without_bias(x, params):  # noqa: ANN001, ANN201
    """Bug: the forward forgets + b."""
    return _DENSE_FORWARD(x, {"W": params["W"]}) if "W" in params else _DENSE_FORWARD(x, params)


# --- activations ---------------------------------------------------------------------------------


def derivative_relu_one_at_zero(kind, cache):  # noqa: ANN001, ANN201
    """Bug: ReLU′(0) = 1 ([z ≥ 0]); torch takes 0."""
    if kind == "relu":
        return (cache.z >= 0).astype(cache.z.dtype)
    return _DERIVATIVE(kind, cache)


def derivative_sigmoid_from_z(kind, cache):  # noqa: ANN001, ANN201
    """Bug: σ′ = z(1 − z), the formula for a applied to z."""
    if kind == "sigmoid":
        return cache.z * (1 - cache.z)
    return _DERIVATIVE(kind, cache)


def derivative_tanh_from_z(kind, cache):  # noqa: ANN001, ANN201
    """Bug: tanh′ = 1 − z² (z where a belongs)."""
    if kind == "tanh":
        return 1 - cache.z * cache.z
    return _DERIVATIVE(kind, cache)


def derivative_leaky_zero_below(kind, cache):  # noqa: ANN001, ANN201
    """Bug: leaky ReLU′ = 0 below zero (ReLU's), where the slope s belongs."""
    if kind == "leaky_relu":
        return (cache.z > 0).astype(cache.z.dtype)
    return _DERIVATIVE(kind, cache)


# --- losses --------------------------------------------------------------------------------------


def loss_backward_mse_lost_two(spec, cache, upstream=None):  # noqa: ANN001, ANN201
    """Bug: ∂(mean (ŷ − y)²)/∂ŷ = (ŷ − y)/n: the factor 2 lost."""
    grad = _LOSS_BACKWARD(spec, cache, upstream)
    return grad / 2 if spec.kind == "mse" and not spec.half else grad


def loss_forward_mse_sum_for_mean(spec, yhat, y):  # noqa: ANN001, ANN201
    """Bug: MSELoss as the sum of squares (reduction mean forgotten in the forward)."""
    L, cache = _LOSS_FORWARD(spec, yhat, y)
    if spec.kind == "mse" and spec.reduction == "mean":
        L = L * cache.divisor
    return L, cache


def log_softmax_without_shift(x, axis=-1):  # noqa: ANN001, ANN201
    """Bug: log p = x − log Σ eˣ, without the max shift: e^1000 = inf."""
    with np.errstate(over="ignore"):
        return x - np.log(np.sum(np.exp(x), axis=axis, keepdims=True))


def loss_backward_ce_without_softmax(spec, cache, upstream=None):  # noqa: ANN001, ANN201
    """Bug: ∂L/∂x = −c·T, the gradient w.r.t. log p passed off as the logits' (no softmax term)."""
    if spec.kind == "cross_entropy" and spec.reduction == "mean" and upstream is None:
        return -(cache.T / cache.divisor)  # ∂L/∂log p, not ∂L/∂x
    return _LOSS_BACKWARD(spec, cache, upstream)


# --- optimizers ----------------------------------------------------------------------------------


def adam_without_bias_correction(o, p, g, s, t, lr, *, decoupled=False):  # noqa: ANN001, ANN201
    """Bug: m and v used raw: θ ← θ − η m/(√v + ε), no 1 − βᵗ."""
    beta1, beta2 = o["betas"]
    if o["weight_decay"] != 0:
        if decoupled:
            p = p * (1 - lr * o["weight_decay"])
        else:
            g = g + o["weight_decay"] * p
    m = beta1 * s["exp_avg"] + (1 - beta1) * g
    v = beta2 * s["exp_avg_sq"] + (1 - beta2) * g * g
    return p - lr * m / (np.sqrt(v) + o["eps"]), {**s, "exp_avg": m, "exp_avg_sq": v}


def adamw_decay_coupled(o, p, g, s, t, lr):  # noqa: ANN001, ANN201
    """Bug: AdamW's weight decay added to the gradient (Adam's L2), not decoupled."""
    return _ADAM(o, p, g, s, t, lr, decoupled=False)


def sgd_weight_decay_sign(o, p, g, s, t, lr):  # noqa: ANN001, ANN201
    """Bug: g ← g − λθ (the decay pushes the weights away from 0)."""
    return _SGD({**o, "weight_decay": -o["weight_decay"]}, p, g, s, t, lr)


def rmsprop_eps_inside_sqrt(o, p, g, s, t, lr):  # noqa: ANN001, ANN201
    """Bug: θ ← θ − η g/√(v + ε) where torch has g/(√v + ε)."""
    alpha = o["alpha"]
    v = s["square_avg"] * alpha + (1 - alpha) * g * g
    return p - lr * g / np.sqrt(v + o["eps"]), {**s, "square_avg": v}


def adagrad_sum_without_square(o, p, g, s, t, lr):  # noqa: ANN001, ANN201
    """Bug: G ← G + |g| (the square forgotten)."""
    state_sum = s["sum"] + np.abs(g)
    return p - lr * g / (np.sqrt(state_sum) + o["eps"]), {**s, "sum": state_sum}


# --- convolution ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _swapped(module: Any, name: str, replacement: Any) -> Iterator[None]:
    original = getattr(module, name)
    setattr(module, name, replacement)
    try:
        yield
    finally:
        setattr(module, name, original)


def conv_backward_without_flip(dout, cache):  # noqa: ANN001, ANN201
    """Bug: ∂L/∂x correlates δ with W itself, not rot180(W): tap (u, v) goes back to (k−1−u, k−1−v)."""

    def col2im_no_flip(dwin, padded_hw, stride, dilation):  # noqa: ANN001, ANN202
        return _COL2IM(dwin[:, :, ::-1, ::-1], padded_hw, stride, dilation)

    with _swapped(conv, "_col2im", col2im_no_flip):
        return _CONV_BACKWARD(dout, cache)


def conv_backward_bias_wrong_axes(dout, cache):  # noqa: ANN001, ANN201
    """Bug: ∂L/∂b summed over (channels, H, W) instead of (batch, H, W)."""
    dx, grads = _CONV_BACKWARD(dout, cache)
    if "b" in grads:
        grads["b"] = dout.sum(axis=(1, 2, 3))  # N, equal to C_out only by accident
    return dx, grads


def conv_backward_dW_flipped(dout, cache):  # noqa: ANN001, ANN201
    """Bug: the flip put into ∂L/∂W (a convolution, not a correlation, of δ with x)."""
    dx, grads = _CONV_BACKWARD(dout, cache)
    grads["W"] = grads["W"][:, :, ::-1, ::-1].copy()
    return dx, grads


def maxpool_forward_keeping_x(x, **options):  # noqa: ANN001, ANN201
    z, cache = _MAXPOOL_FORWARD(x, **options)
    return z, (cache, x)


def maxpool_backward_to_every_tie(dout, kept):  # noqa: ANN001, ANN201
    """Bug: every element equal to its window's maximum receives the window's whole gradient."""
    cache, x = kept
    xp = conv._pad(x, cache.padding, -np.inf)
    win = conv._windows(xp, cache.kernel_size, cache.stride, cache.dilation, cache.out_hw)  # N,C,Ho,Wo,kH,kW
    top = win.max(axis=(-2, -1))[..., None, None]
    dwin = np.where(win == top, dout[..., None, None], 0.0).transpose(0, 1, 4, 5, 2, 3)  # N,C,kH,kW,Ho,Wo
    dxp = conv._col2im(dwin, cache.padded_hw, cache.stride, cache.dilation)
    return conv._unpad(dxp, cache.padding), {}


def lrn_backward_beta_exponent(dout, cache):  # noqa: ANN001, ANN201
    """Bug: the cross term uses D^{−β} where the derivative of D^{−β} gives D^{−β−1}."""
    x, D, n, alpha, beta = cache.x, cache.D, cache.size, cache.alpha, cache.beta
    back = conv._channel_window_sum(dout * x * D**-beta, (n - 1) // 2, n // 2)
    return dout * D**-beta - (2.0 * alpha * beta / n) * x * back, {}


def dropout_backward_without_scale(dout, cache):  # noqa: ANN001, ANN201
    """Bug: ∂L/∂x = δ ⊙ m, the 1/(1 − p) of inverted dropout forgotten in the backward."""
    return dout * cache.mask, {}


# --- recurrent -----------------------------------------------------------------------------------


def lstm_bias_i_f_swapped(x, W_ih, b_ih, b_hh, cell):  # noqa: ANN001, ANN201
    """Bug: the bias blocks of gates i and f swapped (read as if the order were f, i, g, o)."""
    if cell == "lstm":
        H = b_ih.shape[0] // 4
        b_ih = np.concatenate([b_ih[H : 2 * H], b_ih[:H], b_ih[2 * H :]])
    return _INPUT_PROJECTION(x, W_ih, b_ih, b_hh, cell)


def lstm_back_no_carry(*args):  # noqa: ANN002, ANN201
    """Bug: BPTT drops ∂L/∂h_{t−1} (the hidden state's carried gradient)."""
    da, dc, dh_prev, dc_prev = _LSTM_BACK(*args)
    return da, dc, np.zeros_like(dh_prev), dc_prev


def lstm_back_output_gate_from_c(dh, dc_carried, c, acts, tanh_c, W_hh):  # noqa: ANN001, ANN201
    """Bug: ∂L/∂z_o = ∂L/∂h ⊙ c' ⊙ o(1 − o): c' where tanh(c') belongs."""
    da, dc, dh_prev, dc_prev = _LSTM_BACK(dh, dc_carried, c, acts, tanh_c, W_hh)
    H = c.shape[1]
    o = acts[:, 3 * H :]
    c_new = np.arctanh(tanh_c)
    da = da.copy()
    da[:, 3 * H :] = dh * c_new * o * (1.0 - o)
    return da, dc, da @ W_hh, dc_prev


def gru_back_no_carry(*args):  # noqa: ANN002, ANN201
    """Bug: GRU BPTT drops ∂L/∂h_{t−1}."""
    da, dgh, dh_prev = _GRU_BACK(*args)
    return da, dgh, np.zeros_like(dh_prev)


def gru_step_paper_reset(xp, h, W_hh, b_hn):  # noqa: ANN001, ANN201
    """Bug: Cho et al.'s reset placement, n = tanh(W_in x + b_in + W_hn(r ⊙ h) + b_hn), not torch's."""
    H = h.shape[1]
    hh = h @ W_hh.T  # N,3H
    acts = np.empty_like(hh)
    acts[:, : 2 * H] = 1.0 / (1.0 + np.exp(-(xp[:, : 2 * H] + hh[:, : 2 * H])))
    r, z = acts[:, :H], acts[:, H : 2 * H]
    hh_n = (r * h) @ W_hh[2 * H :].T + b_hn  # N,H
    n = np.tanh(xp[:, 2 * H :] + hh_n)
    acts[:, 2 * H :] = n
    return hr.GRUStep(acts, hh_n, (1.0 - z) * n + z * h)


def rnn_back_no_carry(*args):  # noqa: ANN002, ANN201
    """Bug: Elman RNN BPTT drops ∂L/∂h_{t−1}."""
    da, dh_prev = _RNN_BACK(*args)
    return da, np.zeros_like(dh_prev)


# --- the registry --------------------------------------------------------------------------------

Patch = tuple[Any, str, Any]  # (module or dict, attribute or key, replacement)


@dataclass(frozen=True)
class Mutant:
    """One planted bug: what it swaps, the run that must catch it, and where it must first show."""

    id: str
    family: str
    patches: tuple[Patch, ...]
    scenario: str
    argv: tuple[str, ...]
    expected_term: str
    expected_step: int = 1
    build: Callable[[], Any] | None = field(default=None, compare=False)  # a custom experiment

    @property
    def bug(self) -> str:
        doc = (self.patches[0][2].__doc__ or "").strip()
        return doc.splitlines()[0] if doc else self.id

    @contextlib.contextmanager
    def planted(self) -> Iterator[None]:
        """Swap the broken copies in for the length of the block, then put the shipped code back."""
        saved = []
        try:
            for target, name, replacement in self.patches:
                if isinstance(target, dict):
                    saved.append((target, name, target[name]))
                    target[name] = replacement
                else:
                    saved.append((target, name, getattr(target, name)))
                    setattr(target, name, replacement)
            yield
        finally:
            for target, name, original in reversed(saved):
                if isinstance(target, dict):
                    target[name] = original
                else:
                    setattr(target, name, original)

    def experiment(self) -> Any:
        if self.build is not None:
            return self.build()
        from handgrad.cli import scenario_parser
        from handgrad.scenarios import SCENARIOS

        args = scenario_parser(self.scenario).parse_args(list(self.argv))
        return SCENARIOS[self.scenario].build(args)


def _relu_on_the_kink() -> Any:
    """A 2-3-2 ReLU net whose hidden pre-activations hit 0 exactly on some rows."""
    from handgrad.contract.spec import Data, Loss, Network, Optimizer, Schedule
    from handgrad.scenarios.stack import stack_experiment

    x = np.array([[1.0, -1.0], [0.5, 0.25], [-2.0, 2.0], [0.75, -0.5]])
    y = np.array([[0.2, 0.7], [0.9, 0.1], [0.4, 0.6], [0.3, 0.8]])
    params = {
        "dense1.W": np.array([[1.0, 1.0], [0.5, -0.25], [-0.3, 0.6]]),  # row 1: z = 0 at x = (1, −1)
        "dense1.b": np.array([0.0, 0.125, -0.15]),
        "dense2.W": np.array([[0.4, -0.7, 0.2], [-0.5, 0.3, 0.9]]),
        "dense2.b": np.array([0.05, -0.1]),
    }
    network = Network.mlp([2, 3, 2], "relu", "sigmoid")
    return stack_experiment(
        "relu-kink",
        network,
        Loss(),
        Optimizer("sgd", 0.1),
        Data(x, y),
        Schedule("batch"),
        steps=2,
        seed=0,
        params=params,
    )


def _huge_logits() -> Any:
    """A 2-3-3 net with logits of about ±1000 into cross-entropy."""
    from handgrad.contract.spec import Data, Loss, Network, Optimizer, Schedule
    from handgrad.scenarios.stack import stack_experiment

    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, size=(4, 2))
    y = np.eye(3)[[0, 2, 1, 2]]  # class probabilities (one-hot), N,C
    params = {
        "dense1.W": rng.uniform(-1, 1, size=(3, 2)),
        "dense1.b": rng.uniform(-0.5, 0.5, size=3),
        "dense2.W": rng.uniform(-1000, 1000, size=(3, 3)),
        "dense2.b": np.array([900.0, -400.0, 100.0]),
    }
    network = Network.mlp([2, 3, 3], "tanh", "identity")
    return stack_experiment(
        "huge-logits",
        network,
        Loss("cross_entropy"),
        Optimizer("sgd", 1e-4),
        Data(x, y),
        Schedule("batch"),
        steps=2,
        seed=0,
        params=params,
    )


def normed_stack(norm: str) -> Any:
    """A user-style stack with a norm layer (check_model's): Linear(bias=False) → BatchNorm1d or
    Linear → LayerNorm, tanh, Linear; distinct γ and β; minibatches of 4 from 8 rows."""
    from handgrad.contract.normalization import BatchNorm, LayerNorm
    from handgrad.contract.spec import Activation, Data, Dense, Loss, Network, Optimizer, Schedule
    from handgrad.scenarios.stack import stack_experiment

    rng = np.random.default_rng(5)
    first = Dense(3, 5, bias=norm == "layernorm")
    layer = BatchNorm(5) if norm == "batchnorm" else LayerNorm((5,))
    network = Network((first, layer, Activation("tanh"), Dense(5, 2)))
    params = {
        "dense1.W": rng.uniform(-1, 1, (5, 3)),
        **({"dense1.b": rng.uniform(-0.5, 0.5, 5)} if first.bias else {}),
        f"{layer.prefix}1.gamma": rng.uniform(0.5, 1.5, 5),
        f"{layer.prefix}1.beta": rng.uniform(-0.5, 0.5, 5),
        "dense2.W": rng.uniform(-1, 1, (2, 5)),
        "dense2.b": rng.uniform(-0.5, 0.5, 2),
    }
    data = Data(rng.standard_normal((8, 3)), rng.standard_normal((8, 2)))
    return stack_experiment(
        f"{norm}-stack", network, Loss(), Optimizer("sgd", 0.1), data, Schedule("minibatch", 4),
        steps=2, seed=0, params=params,
    )  # fmt: skip


def pooled_stack() -> Any:
    """Conv2d(pad 1) → ReLU → AvgPool2d(2, pad 1, count_include_pad) → Flatten → Linear on 5×5
    images: the padding enters the average's divisor, and Flatten's order reaches the Linear."""
    from handgrad.contract.spec import (
        Activation,
        AvgPool2d,
        Conv2d,
        Data,
        Dense,
        Flatten,
        Loss,
        Network,
        Optimizer,
        Schedule,
    )  # fmt: skip
    from handgrad.scenarios.stack import stack_experiment

    rng = np.random.default_rng(6)
    layers = (Conv2d(1, 2, 3, padding=1), Activation("relu"), AvgPool2d(2, 2, 1), Flatten(), Dense(18, 2))
    network = Network(layers, (1, 5, 5))
    data = Data(rng.standard_normal((4, 1, 5, 5)), rng.standard_normal((4, 2)))
    return stack_experiment(
        "pooled-stack", network, Loss(), Optimizer("sgd", 0.1), data, Schedule("batch"), steps=2, seed=6
    )


_XOR = ("--steps", "2", "--mode", "batch")
_MLP_SQUARE = ("--steps", "2", "--sizes", "3,3,3", "--mode", "batch")
_ALEX = ("--steps", "1", "--samples", "8")
_PARITY = ("--steps", "1")

MUTANTS: tuple[Mutant, ...] = (
    # dense
    Mutant(
        "dense-dW-missing-transpose",
        "dense",
        ((dense, "backward", dense_backward_dW_transposed),),
        "mlp",
        _MLP_SQUARE,
        "dense2.dL_dW",
    ),
    Mutant(
        "dense-db-wrong-axis",
        "dense",
        ((dense, "backward", dense_backward_bias_wrong_axis),),
        "mlp",
        ("--steps", "2", "--sizes", "3,4,4", "--mode", "minibatch", "--batch-size", "4"),
        "dense2.dL_db",
    ),
    Mutant(
        "dense-dx-W-transposed",
        "dense",
        ((dense, "backward", dense_backward_dx_with_W_transposed),),
        "mlp",
        _MLP_SQUARE,
        "dense1.dL_da",
    ),
    Mutant(
        "dense-forward-no-bias",
        "dense",
        ((dense, "forward", dense_forward_without_bias),),
        "xor",
        _XOR,
        "dense1.z",
    ),
    # activations
    Mutant(
        "relu-prime-at-0-is-1",
        "activations",
        ((activations, "derivative", derivative_relu_one_at_zero),),
        "relu-kink",
        (),
        "dense1.dL_dz",
        build=_relu_on_the_kink,
    ),
    Mutant(
        "sigmoid-prime-from-z",
        "activations",
        ((activations, "derivative", derivative_sigmoid_from_z),),
        "xor",
        _XOR,
        "dense2.dL_dz",
    ),
    Mutant(
        "tanh-prime-from-z",
        "activations",
        ((activations, "derivative", derivative_tanh_from_z),),
        "mlp",
        (*_MLP_SQUARE, "--activation", "tanh"),
        "dense1.dL_dz",
    ),
    Mutant(
        "leaky-relu-prime-zero-below",
        "activations",
        ((activations, "derivative", derivative_leaky_zero_below),),
        "mlp",
        (*_MLP_SQUARE, "--activation", "leaky_relu"),
        "dense1.dL_dz",
    ),
    # losses
    Mutant(
        "mse-lost-factor-2",
        "losses",
        ((losses, "backward", loss_backward_mse_lost_two),),
        "xor",
        _XOR,
        "dense2.dL_da",
    ),
    Mutant(
        "mse-sum-for-mean",
        "losses",
        ((losses, "forward", loss_forward_mse_sum_for_mean),),
        "xor",
        _XOR,
        "loss.L",
    ),
    Mutant(
        "softmax-no-max-shift",
        "losses",
        ((losses, "log_softmax", log_softmax_without_shift),),
        "huge-logits",
        (),
        "loss.L",
        build=_huge_logits,
    ),
    Mutant(
        "cross-entropy-grad-without-softmax",
        "losses",
        ((losses, "backward", loss_backward_ce_without_softmax),),
        "alexnet-mini",
        _ALEX,
        "dense2.dL_dz",
    ),
    # optimizers
    Mutant(
        "adam-no-bias-correction",
        "optim",
        ((optim.RULES, "adam", adam_without_bias_correction),),
        "xor",
        (*_XOR, "--optimizer", "adam", "--lr", "0.05"),
        "dense1.W_next",
    ),
    Mutant(
        "adamw-decay-coupled",
        "optim",
        ((optim.RULES, "adamw", adamw_decay_coupled),),
        "xor",
        (*_XOR, "--optimizer", "adamw", "--lr", "0.05", "--weight-decay", "0.1"),
        "dense1.W_next",
    ),
    Mutant(
        "sgd-weight-decay-sign",
        "optim",
        ((optim.RULES, "sgd", sgd_weight_decay_sign),),
        "xor",
        (*_XOR, "--weight-decay", "0.1"),
        "dense1.W_next",
    ),
    Mutant(
        "rmsprop-eps-inside-sqrt",
        "optim",
        ((optim.RULES, "rmsprop", rmsprop_eps_inside_sqrt),),
        "xor",
        (*_XOR, "--optimizer", "rmsprop", "--lr", "0.01", "--eps", "1e-3"),
        "dense1.W_next",
    ),
    Mutant(
        "adagrad-sum-without-square",
        "optim",
        ((optim.RULES, "adagrad", adagrad_sum_without_square),),
        "xor",
        (*_XOR, "--optimizer", "adagrad"),
        "dense1.W_next",
    ),
    # convolution
    Mutant(
        "conv-no-kernel-flip",
        "conv",
        ((conv, "conv2d_backward", conv_backward_without_flip),),
        "alexnet-mini",
        _ALEX,
        "pool1.dL_dout",
    ),  # conv2's ∂L/∂x
    Mutant(
        "conv-db-wrong-axes",
        "conv",
        ((conv, "conv2d_backward", conv_backward_bias_wrong_axes),),
        "alexnet-mini",
        (*_ALEX, "--channels", "8,8"),
        "conv2.dL_db",
    ),  # C_out = N = 8
    Mutant(
        "conv-dW-flipped",
        "conv",
        ((conv, "conv2d_backward", conv_backward_dW_flipped),),
        "alexnet-mini",
        _ALEX,
        "conv2.dL_dW",
    ),
    Mutant(
        "maxpool-grad-to-every-tie",
        "conv",
        (
            (conv, "maxpool2d_forward", maxpool_forward_keeping_x),
            (conv, "maxpool2d_backward", maxpool_backward_to_every_tie),
        ),
        "alexnet-mini",
        _ALEX,
        "lrn2.dL_dout",
    ),  # pool2's ∂L/∂x
    Mutant(
        "lrn-beta-exponent",
        "conv",
        ((conv, "local_response_norm_backward", lrn_backward_beta_exponent),),
        "alexnet-mini",
        _ALEX,
        "conv2.dL_da",
    ),  # lrn2's ∂L/∂x
    Mutant(
        "dropout-backward-no-scale",
        "conv",
        ((conv, "dropout_backward", dropout_backward_without_scale),),
        "alexnet-mini",
        _ALEX,
        "dense1.dL_da",
    ),  # dropout1's ∂L/∂x
    # recurrent
    Mutant(
        "lstm-bias-i-f-swapped",
        "recurrent",
        ((hr, "_input_projection", lstm_bias_i_f_swapped),),
        "parity",
        _PARITY,
        "lstm1.i[1]",
    ),
    Mutant(
        "lstm-bptt-no-carry",
        "recurrent",
        ((hr, "_lstm_step_back", lstm_back_no_carry),),
        "parity",
        _PARITY,
        "lstm1.dL_dh[5]",
    ),
    Mutant(
        "lstm-output-gate-from-c",
        "recurrent",
        ((hr, "_lstm_step_back", lstm_back_output_gate_from_c),),
        "parity",
        _PARITY,
        "lstm1.dL_dz_o[6]",
    ),
    Mutant(
        "gru-paper-reset",
        "recurrent",
        ((hr, "_gru_step", gru_step_paper_reset),),
        "parity",
        (*_PARITY, "--cell", "gru"),
        "gru1.n[1]",
    ),
    Mutant(
        "gru-bptt-no-carry",
        "recurrent",
        ((hr, "_gru_step_back", gru_back_no_carry),),
        "echo",
        (*_PARITY, "--cell", "gru"),
        "gru1.dL_dh[7]",
    ),
    Mutant(
        "rnn-bptt-no-carry",
        "recurrent",
        ((hr, "_rnn_step_back", rnn_back_no_carry),),
        "parity",
        (*_PARITY, "--cell", "rnn"),
        "rnn1.dL_dh[5]",
    ),
)


@dataclass(frozen=True)
class Outcome:
    """What the harness said about one mutant."""

    mutant: Mutant
    caught: bool
    step: int | None
    term: str | None
    message: str

    @property
    def as_expected(self) -> bool:
        return self.caught and (self.step, self.term) == (
            self.mutant.expected_step,
            self.mutant.expected_term,
        )


def run_mutant(mutant: Mutant) -> Outcome:
    """Plant the bug, run its experiment through the harness, and report where it was caught."""
    from handgrad import harness

    with mutant.planted():
        report = harness.run(mutant.experiment())
    first = report.first
    if first is None:
        return Outcome(mutant, not report.ok, None, None, report.verdict())
    return Outcome(mutant, True, first.step, first.term, first.message())


def run_all(mutants: Sequence[Mutant] = MUTANTS) -> list[Outcome]:
    return [run_mutant(mutant) for mutant in mutants]
