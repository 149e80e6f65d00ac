"""hand/normalization.py and hand/embedding.py against the real torch.nn modules, every term.

Each case runs the hand layer and the torch module side by side on the same input, parameters
and buffers, drives both backwards with one seeded random upstream gradient, and compares, in
computation order with the harness's one comparison (compare_traces / first_divergence):

* BatchNorm: the batch mean and (σ² + ε)^{-1/2} that torch's ``native_batch_norm`` reports,
  out, running_mean, running_var, num_batches_tracked (the module's buffers after its forward),
  ∂L/∂x, ∂L/∂weight, ∂L/∂bias — over several steps, so the running statistics compound;
* LayerNorm: the per-sample rstd torch's ``native_layer_norm`` reports, out, ∂L/∂x, ∂L/∂weight,
  ∂L/∂bias;
* Embedding: out and ∂L/∂weight.

Affine parameters are non-zero and distinct per channel; sizes are odd. The planted bugs of
handgrad.mutants.layers (family "normalization") must each fail at their expected term while the
shipped functions pass.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from handgrad import mutants
from handgrad.contract.spec import SpecError
from handgrad.contract.trace import StepTrace
from handgrad.hand import embedding as emb
from handgrad.hand import normalization as nm
from handgrad.harness import Divergence, compare_traces, compare_values, first_divergence, tolerance_for

TORCH_DTYPE = {"float64": torch.float64, "float32": torch.float32}


# --- the layer test machinery: one StepTrace per side per step -----------------------------------


class Steps:
    """The terms of a case, step by step, for both sides (torch's values are what torch computed)."""

    def __init__(self, dtype: str) -> None:
        self.tol = tolerance_for(dtype)
        self.dtype = np.dtype(dtype)
        self.pairs: list[tuple[StepTrace, StepTrace]] = []

    def step(self) -> None:
        n = len(self.pairs) + 1
        self.pairs.append((StepTrace(n), StepTrace(n)))

    def add(self, name: str, phase: str, hand: object, ref: object) -> None:
        if isinstance(ref, torch.Tensor):
            ref = ref.detach().to(torch.float64).numpy()
        kind = np.asarray(hand).dtype
        assert kind == self.dtype or not np.issubdtype(kind, np.floating), f"{name}: hand dtype {kind}"
        hand_trace, torch_trace = self.pairs[-1]
        hand_trace.add(name, name, phase, np.asarray(hand, dtype=np.float64))
        torch_trace.add(name, name, phase, np.asarray(ref, dtype=np.float64), source="torch.nn")

    def first(self) -> Divergence | None:
        for hand, ref in self.pairs:
            divergence = first_divergence(hand.step, hand, compare_traces(hand, ref, self.tol), self.tol)
            if divergence is not None:
                return divergence
        return None

    def assert_agree(self) -> None:
        divergence = self.first()
        assert divergence is None, divergence.message()


def _distinct(rng: np.random.Generator, n: int) -> np.ndarray:
    """Non-zero, distinct values of both signs (a swapped or dropped parameter cannot hide)."""
    return rng.uniform(0.5, 1.5, n) * rng.choice([-1.0, 1.0], n)


# --- BatchNorm -----------------------------------------------------------------------------------


def run_batchnorm(
    dims: int,
    shape: tuple[int, ...],
    *,
    training: bool = True,
    affine: bool = True,
    track: bool = True,
    momentum: float | None = 0.1,
    eps: float = 1e-5,
    dtype: str = "float64",
    steps: int = 3,
    seed: int = 0,
) -> Steps:
    rng = np.random.default_rng(seed)
    c = shape[1]
    module_type = nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d
    module = module_type(c, eps=eps, momentum=momentum, affine=affine, track_running_stats=track)
    module = module.to(TORCH_DTYPE[dtype]).train(training)
    params: dict[str, np.ndarray] = {}
    if affine:
        params["weight"], params["bias"] = _distinct(rng, c), _distinct(rng, c)
    if track:
        params["running_mean"] = rng.standard_normal(c) * 0.3
        params["running_var"] = rng.uniform(0.5, 2.0, c)
        params["num_batches_tracked"] = np.asarray(2)
    params = {k: v.astype(dtype) if k != "num_batches_tracked" else v for k, v in params.items()}
    with torch.no_grad():
        for key, value in params.items():
            getattr(module, key).copy_(torch.as_tensor(value))
    out_steps = Steps(dtype)
    batch_stats = training or not track  # torch's bn_training
    shift = rng.standard_normal((1, c) + (1,) * (len(shape) - 2)) * 2  # channel means far from 0
    for _ in range(steps):
        out_steps.step()
        x = (rng.standard_normal(shape) * rng.uniform(0.5, 3.0) + shift).astype(dtype)
        # hand
        out, cache = nm.batchnorm_forward(x, params, dims=dims, training=training, eps=eps, momentum=momentum)
        G = rng.standard_normal(out.shape).astype(dtype)
        dx, grads = nm.batchnorm_backward(G, cache)
        # torch: the module, and the batch statistics its kernel saved for backward
        if batch_stats:
            stats = torch.native_batch_norm(
                torch.tensor(x), None, None, None, None, True, 0.0, eps
            )  # (out, save_mean, save_invstd)
        xt = torch.tensor(x, requires_grad=True)
        out_t = module(xt)
        out_t.backward(torch.tensor(G))
        if batch_stats:
            out_steps.add("bn1.bnmean", "forward", cache.bnmean.reshape(-1), stats[1])
            out_steps.add("bn1.bnvar_inv", "forward", cache.bnvar_inv.reshape(-1), stats[2])
        out_steps.add("bn1.out", "forward", out, out_t)
        for key in ("running_mean", "running_var", "num_batches_tracked") if track else ():
            out_steps.add(f"bn1.{key}", "state", cache.state[key], getattr(module, key))
        out_steps.add("bn1.dL_dx", "backward", dx, xt.grad)
        for key in ("weight", "bias") if affine else ():
            out_steps.add(f"bn1.dL_d{key}", "backward", grads[key], getattr(module, key).grad)
            getattr(module, key).grad = None
        if not affine:
            assert grads == {}
        params.update(cache.state)  # the new buffers are the next step's (no hidden state)
    return out_steps


@pytest.mark.parametrize(
    ("dims", "shape", "options"),
    [
        (1, (7, 5), {}),
        (1, (5, 3, 7), {}),
        (1, (2, 4), {}),  # m = 2: the smallest batch that trains
        (1, (1, 3, 2), {}),  # N = 1 but N·L = 2 values per channel: trains
        (1, (7, 5), {"momentum": None}),  # cumulative moving average 1/num_batches_tracked
        (1, (7, 5), {"momentum": 0.7}),
        (1, (7, 5), {"momentum": 1.0}),  # running stats = the last batch's (unbiased var)
        (1, (7, 5), {"momentum": 0.0}),  # running stats frozen, counter still counts
        (1, (7, 5), {"affine": False}),
        (1, (7, 5), {"track": False}),
        (1, (7, 5), {"affine": False, "track": False}),
        (1, (7, 5), {"eps": 0.5}),
        (1, (7, 5), {"training": False}),  # eval: the running statistics
        (1, (1, 5), {"training": False}),  # eval: a batch of one is fine
        (1, (1, 5, 1), {"training": False}),
        (1, (7, 5), {"training": False, "track": False}),  # eval without buffers: batch stats
        (2, (3, 4, 5, 3), {}),
        (2, (1, 3, 2, 1), {}),  # N = 1, H·W = 2
        (2, (3, 4, 5, 3), {"momentum": None}),
        (2, (3, 4, 5, 3), {"affine": False, "track": False}),
        (2, (3, 4, 5, 3), {"training": False}),
        (2, (1, 3, 1, 1), {"training": False}),
        (1, (7, 5), {"dtype": "float32"}),
        (2, (3, 4, 5, 3), {"dtype": "float32", "momentum": None}),
        (2, (3, 4, 5, 3), {"dtype": "float32", "training": False}),
    ],
)
def test_batchnorm_matches_torch(dims, shape, options) -> None:
    run_batchnorm(dims, shape, **options).assert_agree()


@pytest.mark.parametrize(
    ("dims", "shape", "options"),
    [
        (1, (1, 3), {}),
        (1, (1, 3, 1), {}),
        (2, (1, 3, 1, 1), {}),
        (1, (1, 3), {"training": False, "track": False}),  # eval without buffers uses the batch too
    ],
)
def test_batchnorm_one_value_per_channel_is_torchs_error(dims, shape, options) -> None:
    training = options.get("training", True)
    track = options.get("track", True)
    params = {"weight": np.ones(3), "bias": np.zeros(3)}
    if track:
        params |= {"running_mean": np.zeros(3), "running_var": np.ones(3), "num_batches_tracked": 0}
    with pytest.raises(SpecError, match="Expected more than 1 value per channel when training") as info:
        nm.batchnorm_forward(np.ones(shape), params, dims=dims, training=training)
    assert info.value.field == "x"
    module = (nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d)(3, track_running_stats=track)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        module.train(training)(torch.ones(shape))


@pytest.mark.parametrize(
    ("dims", "x_shape", "params", "field"),
    [
        (1, (4,), {}, "x"),
        (1, (2, 3, 4, 5), {}, "x"),
        (2, (2, 3, 4), {}, "x"),
        (3, (2, 3, 4), {}, "dims"),
        (1, (4, 3), {"weight": np.ones(2), "bias": np.ones(2)}, "weight"),
    ],
)
def test_batchnorm_bad_input_names_the_field(dims, x_shape, params, field) -> None:
    with pytest.raises(SpecError) as info:
        nm.batchnorm_forward(np.ones(x_shape), params, dims=dims)
    assert info.value.field == field


def test_batchnorm_forward_writes_no_input() -> None:
    params = {"weight": np.ones(3), "bias": np.zeros(3), "running_mean": np.zeros(3),
              "running_var": np.ones(3), "num_batches_tracked": np.asarray(0)}  # fmt: skip
    before = {k: np.array(v, copy=True) for k, v in params.items()}
    _, cache = nm.batchnorm_forward(np.arange(12.0).reshape(4, 3), params)
    for key, value in before.items():
        assert np.array_equal(params[key], value), key
    assert int(cache.state["num_batches_tracked"]) == 1


# --- LayerNorm -----------------------------------------------------------------------------------


def run_layernorm(
    x_shape: tuple[int, ...],
    normalized_shape: tuple[int, ...],
    *,
    affine: bool = True,
    bias: bool = True,
    eps: float = 1e-5,
    dtype: str = "float64",
    seed: int = 0,
) -> Steps:
    rng = np.random.default_rng(seed)
    module = nn.LayerNorm(normalized_shape, eps=eps, elementwise_affine=affine, bias=bias)
    module = module.to(TORCH_DTYPE[dtype])
    size = int(np.prod(normalized_shape))
    params = {}
    if affine:
        params["weight"] = _distinct(rng, size).reshape(normalized_shape).astype(dtype)
        if bias:
            params["bias"] = _distinct(rng, size).reshape(normalized_shape).astype(dtype)
    with torch.no_grad():
        for key, value in params.items():
            getattr(module, key).copy_(torch.as_tensor(value))
    x = (rng.standard_normal(x_shape) * 2 + rng.standard_normal(x_shape[:-1] + (1,))).astype(dtype)
    out, cache = nm.layernorm_forward(x, params, normalized_shape=normalized_shape, eps=eps)
    G = rng.standard_normal(out.shape).astype(dtype)
    dx, grads = nm.layernorm_backward(G, cache)
    stats = torch.native_layer_norm(torch.tensor(x), list(normalized_shape), None, None, eps)
    xt = torch.tensor(x, requires_grad=True)
    out_t = module(xt)
    out_t.backward(torch.tensor(G))
    steps = Steps(dtype)
    steps.step()
    steps.add("ln1.rstd", "forward", cache.rstd, stats[2])
    steps.add("ln1.out", "forward", out, out_t)
    steps.add("ln1.dL_dx", "backward", dx, xt.grad)
    assert set(grads) == set(params)
    for key in params:
        steps.add(f"ln1.dL_d{key}", "backward", grads[key], getattr(module, key).grad)
    return steps


@pytest.mark.parametrize(
    ("x_shape", "normalized_shape", "options"),
    [
        ((5, 7), (7,), {}),
        ((3, 5, 7), (7,), {}),
        ((3, 5, 7), (5, 7), {}),
        ((2, 3, 4, 5), (3, 4, 5), {}),
        ((7,), (7,), {}),  # no leading axis
        ((3, 5, 7), (7,), {"affine": False}),
        ((3, 5, 7), (7,), {"bias": False}),
        ((3, 5, 7), (7,), {"eps": 0.3}),
        ((3, 5, 7), (5, 7), {"dtype": "float32"}),
    ],
)
def test_layernorm_matches_torch(x_shape, normalized_shape, options) -> None:
    run_layernorm(x_shape, normalized_shape, **options).assert_agree()


def test_layernorm_over_one_value_has_zero_input_gradient() -> None:
    """D = 1: x̂ = 0, y = β, ∂L/∂x = 0 and ∂L/∂γ = 0 exactly (the three terms cancel). torch's
    fused kernel leaves rounding noise of order ε^{-1/2}·2⁻⁵² there (≈1e-13), which no relative
    rule can compare with an exact 0; the other terms are compared as usual."""
    steps = run_layernorm((3, 5, 1), (1,))
    hand, ref = steps.pairs[0]
    for name in ("ln1.dL_dx", "ln1.dL_dweight"):  # exact zeros by hand, rounding noise in torch
        assert not hand[name].value.any(), name
        assert np.abs(ref[name].value).max() < 1e-11, name
    for name in ("ln1.rstd", "ln1.out", "ln1.dL_dbias"):
        check = compare_values(name, hand[name].value, ref[name].value, steps.tol)
        assert check.ok, check


@pytest.mark.parametrize(
    ("x_shape", "normalized_shape", "params", "field"),
    [
        ((3, 5), (4,), {}, "x"),
        ((3, 5), (3, 5, 1), {}, "x"),
        ((3, 5), (5,), {"weight": np.ones(4)}, "weight"),
    ],
)
def test_layernorm_bad_input_names_the_field(x_shape, normalized_shape, params, field) -> None:
    with pytest.raises(SpecError) as info:
        nm.layernorm_forward(np.ones(x_shape), params, normalized_shape=normalized_shape)
    assert info.value.field == field


# --- Embedding -----------------------------------------------------------------------------------


def run_embedding(
    idx: list, num: int, dim: int, *, padding_idx: int | None = None, dtype: str = "float64", seed: int = 0
) -> Steps:
    rng = np.random.default_rng(seed)
    module = nn.Embedding(num, dim, padding_idx=padding_idx).to(TORCH_DTYPE[dtype])
    weight = rng.standard_normal((num, dim)).astype(dtype)  # the padding row non-zero too
    with torch.no_grad():
        module.weight.copy_(torch.as_tensor(weight))
    idx = np.asarray(idx, dtype=np.int64)
    out, cache = emb.forward(idx, {"weight": weight}, padding_idx=padding_idx)
    G = rng.standard_normal(out.shape).astype(dtype)
    dx, grads = emb.backward(G, cache)
    assert dx is None
    out_t = module(torch.as_tensor(idx))
    out_t.backward(torch.tensor(G))
    steps = Steps(dtype)
    steps.step()
    steps.add("emb1.out", "forward", out, out_t)
    steps.add("emb1.dL_dweight", "backward", grads["weight"], module.weight.grad)
    return steps


@pytest.mark.parametrize(
    ("idx", "num", "dim", "options"),
    [
        ([0, 3, 4, 1], 5, 3, {}),
        ([2, 2, 2, 0, 2], 5, 3, {}),  # one row read four times: the gradients add up
        ([[1, 4, 1], [4, 4, 0]], 7, 5, {}),  # 2-D indices, repeats across rows; rows 2,3,5,6 unused
        ([[1, 0, 1], [0, 0, 3]], 4, 3, {"padding_idx": 0}),  # padding row read: still no gradient
        ([[1, 3, 1], [3, 2, 3]], 4, 3, {"padding_idx": -1}),  # negative padding_idx = 3
        ([[[1, 2], [2, 2]], [[0, 1], [1, 1]]], 3, 2, {}),  # 3-D indices
        ([2, 2, 1, 0, 2], 5, 3, {"dtype": "float32", "padding_idx": 1}),
    ],
)
def test_embedding_matches_torch(idx, num, dim, options) -> None:
    run_embedding(idx, num, dim, **options).assert_agree()


@pytest.mark.parametrize(
    ("idx", "options", "field"),
    [
        ([0, 5], {}, "idx"),
        ([0, -1], {}, "idx"),
        ([0.0, 1.0], {}, "idx"),
        ([0, 1], {"padding_idx": 5}, "padding_idx"),
    ],
)
def test_embedding_bad_input_names_the_field(idx, options, field) -> None:
    with pytest.raises(SpecError) as info:
        emb.forward(np.asarray(idx), {"weight": np.ones((5, 2))}, **options)
    assert info.value.field == field


# --- the planted bugs: each caught at its term, the shipped function passes ----------------------

CASES = {
    "bn1d_train": lambda: run_batchnorm(1, (7, 5)),
    "bn1d_eval": lambda: run_batchnorm(1, (7, 5), training=False),
    "bn2d_train": lambda: run_batchnorm(2, (3, 4, 5, 3)),
    "ln": lambda: run_layernorm((3, 5, 7), (7,)),
    "emb_repeats": lambda: run_embedding([[1, 4, 1], [4, 4, 0]], 7, 5),
}


@pytest.mark.parametrize("mutant", [m for m in mutants.LAYER_MUTANTS if m.case in CASES], ids=lambda m: m.id)
def test_planted_bug_is_caught_at_its_term(mutant) -> None:
    assert CASES[mutant.case]().first() is None, "the shipped function must pass this case"
    with mutant.planted():
        divergence = CASES[mutant.case]().first()
    assert divergence is not None, f"{mutant.id} ({mutant.bug}) was not caught"
    assert (divergence.term, divergence.step) == (mutant.expected_term, mutant.expected_step), (
        divergence.message()
    )
