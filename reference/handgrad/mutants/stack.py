"""Planted bugs of the dense stack: Linear, the activations and the losses (and the norm layers
inside a small stack, check_model's). Each broken copy is a textbook slip: a missing transpose,
ReLU′(0) = 1, σ′ from z instead of a, a factor 2 lost from the squared error, softmax without the
max shift on huge logits, a bias gradient summed over the wrong axis.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from handgrad.hand import activations, dense, losses
from handgrad.hand import normalization as nm
from handgrad.mutants.layers import batchnorm_forward_unbiased_var, layernorm_backward_without_mean_term
from handgrad.mutants.registry import ALEX, MLP_SQUARE, XOR, Mutant

# The shipped functions, kept before any patching: the broken copies call them for the parts
# they do not break.
_DENSE_FORWARD, _DENSE_BACKWARD = dense.forward, dense.backward
_DERIVATIVE = activations.derivative
_LOSS_FORWARD, _LOSS_BACKWARD = losses.forward, losses.backward


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


def loss_forward_mse_without_half(spec, yhat, y):  # noqa: ANN001, ANN201
    """Bug: Σ(ŷ − y)²/n where ½·Σ(ŷ − y)²/n was asked (first shows at loss.L)."""
    L, cache = _LOSS_FORWARD(spec, yhat, y)
    return (L / 0.5 if spec.half else L), cache


def loss_backward_mse_without_half(spec, cache, upstream=None):  # noqa: ANN001, ANN201
    """Bug: 2(ŷ − y)/n where (ŷ − y)/n is ∂(½·MSE)/∂ŷ (first shows at the last layer's dL_da)."""
    grad = _LOSS_BACKWARD(spec, cache, upstream)
    return grad / 0.5 if spec.half else grad


def log_softmax_without_shift(x, axis=-1):  # noqa: ANN001, ANN201
    """Bug: log p = x − log Σ eˣ, without the max shift: e^1000 = inf."""
    with np.errstate(over="ignore"):
        return x - np.log(np.sum(np.exp(x), axis=axis, keepdims=True))


def loss_backward_ce_without_softmax(spec, cache, upstream=None):  # noqa: ANN001, ANN201
    """Bug: ∂L/∂x = −c·T, the gradient w.r.t. log p passed off as the logits' (no softmax term)."""
    if spec.kind == "cross_entropy" and spec.reduction == "mean" and upstream is None:
        return -(cache.T / cache.divisor)  # ∂L/∂log p, not ∂L/∂x
    return _LOSS_BACKWARD(spec, cache, upstream)


def _relu_on_the_kink() -> Any:
    """A 2-3-2 ReLU net whose hidden pre-activations hit 0 exactly on some rows."""
    from handgrad.contract.spec import Data, Network, Schedule
    from handgrad.contract.training import Loss, Optimizer
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
    from handgrad.contract.spec import Data, Network, Schedule
    from handgrad.contract.training import Loss, Optimizer
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
    from handgrad.contract.spec import Activation, Data, Dense, Network, Schedule
    from handgrad.contract.training import Loss, Optimizer
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


MUTANTS: tuple[Mutant, ...] = (
    # dense
    Mutant(
        "dense-dW-missing-transpose",
        "dense",
        ((dense, "backward", dense_backward_dW_transposed),),
        "mlp",
        MLP_SQUARE,
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
        MLP_SQUARE,
        "dense1.dL_da",
    ),
    Mutant(
        "dense-forward-no-bias",
        "dense",
        ((dense, "forward", dense_forward_without_bias),),
        "xor",
        XOR,
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
        XOR,
        "dense2.dL_dz",
    ),
    Mutant(
        "tanh-prime-from-z",
        "activations",
        ((activations, "derivative", derivative_tanh_from_z),),
        "mlp",
        (*MLP_SQUARE, "--activation", "tanh"),
        "dense1.dL_dz",
    ),
    Mutant(
        "leaky-relu-prime-zero-below",
        "activations",
        ((activations, "derivative", derivative_leaky_zero_below),),
        "mlp",
        (*MLP_SQUARE, "--activation", "leaky_relu"),
        "dense1.dL_dz",
    ),
    # losses
    Mutant(
        "mse-lost-factor-2",
        "losses",
        ((losses, "backward", loss_backward_mse_lost_two),),
        "xor",
        XOR,
        "dense2.dL_da",
    ),
    Mutant(
        "mse-sum-for-mean",
        "losses",
        ((losses, "forward", loss_forward_mse_sum_for_mean),),
        "xor",
        XOR,
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
        ALEX,
        "dense2.dL_dz",
    ),
)

NORM_STACK_MUTANTS: tuple[Mutant, ...] = (
    Mutant(
        "stack-batchnorm-unbiased-var", "normalization",
        ((nm, "batchnorm_forward", batchnorm_forward_unbiased_var),), "batchnorm-stack", (), "bn1.y",
        build=lambda: normed_stack("batchnorm"),
    ),
    Mutant(
        "stack-layernorm-backward-without-mean", "normalization",
        ((nm, "layernorm_backward", layernorm_backward_without_mean_term),), "layernorm-stack", (),
        "dense1.dL_dz", build=lambda: normed_stack("layernorm"),
    ),
)  # fmt: skip
