"""hand/conv.py against real torch.nn.functional, float64, every term (forward, dx, dW, db).

Backward is driven with a random upstream gradient. Max-pool inputs are built with exact ties
inside windows and across overlapping windows; the four planted bugs (no kernel flip, padding
off by one, max-pool gradient to every tie, LRN's β exponent) are test-only variants defined
here and each must make the comparison fail.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from handgrad.contract.spec import SpecError
from handgrad.hand import conv
from handgrad.harness import assert_values_match, tolerance_for
from handgrad.mutants.conv import (
    HELPER_BUGS,
    lrn_backward_beta_exponent,
    lrn_forward_alpha_not_averaged,
    maxpool_backward_to_every_tie,
)

TOL = tolerance_for("float64")


def close(name: str, hand: np.ndarray, ref: torch.Tensor | np.ndarray) -> None:
    """The harness's one comparison (handgrad.contract.tolerance's rule, float64 row), shapes equal.

    The pooling tests feed -inf and NaN on purpose: those must sit in the same places with the
    same values on both sides; the finite rest is compared by the rule."""
    ref = ref.detach().numpy() if isinstance(ref, torch.Tensor) else np.asarray(ref)
    assert hand.shape == ref.shape, f"{name}: hand shape {hand.shape} != torch shape {ref.shape}"
    special = ~np.isfinite(ref)
    np.testing.assert_array_equal(hand[special], ref[special], err_msg=f"{name}: non-finite values")
    assert_values_match(name, np.where(special, 0.0, hand), np.where(special, 0.0, ref), TOL)


def t64(a: np.ndarray, grad: bool = True) -> torch.Tensor:
    return torch.tensor(a, dtype=torch.float64, requires_grad=grad)


# --- Conv2d --------------------------------------------------------------------------------------

# groups name -> (C_in, C_out, groups); "depthwise" has groups = C_in and a channel multiplier 2
CHANNELS = {"g1": (3, 4, 1), "g2": (4, 6, 2), "depthwise": (3, 6, 3)}


def _valid(size: int, k: int, s: int, p: int, d: int) -> bool:
    return d * (k - 1) + 1 <= size + 2 * p


CONV_CASES = [
    pytest.param(k, s, p, d, g, size, bias, id=f"k{k}-s{s}-p{p}-d{d}-{g}-{size}px-{bias_id}")
    for k, s, p, d, g, size, (bias, bias_id) in itertools.product(
        (1, 2, 3, 5), (1, 2), (0, 1, 2), (1, 2), CHANNELS, (7, 8), ((True, "bias"), (False, "nob"))
    )
    if _valid(size, k, s, p, d)
]


def run_conv(
    x: np.ndarray,
    W: np.ndarray,
    b: np.ndarray | None,
    dout_seed: int,
    **options: object,
) -> tuple[dict[str, np.ndarray], dict[str, torch.Tensor]]:
    """Hand and torch forward + backward of one conv; returns {term: value} for each side."""
    params = {"W": W} if b is None else {"W": W, "b": b}
    z, cache = conv.conv2d_forward(x, params, **options)
    dout = np.random.default_rng(dout_seed).standard_normal(z.shape)
    dx, grads = conv.conv2d_backward(dout, cache)
    hand = {"z": z, "dL_dx": dx, "dL_dW": grads["W"]}
    xt, Wt = t64(x), t64(W)
    bt = None if b is None else t64(b)
    zt = F.conv2d(xt, Wt, bt, **options)
    zt.backward(torch.tensor(dout))
    ref = {"z": zt, "dL_dx": xt.grad, "dL_dW": Wt.grad}
    if b is not None:
        hand["dL_db"], ref["dL_db"] = grads["b"], bt.grad
    else:
        assert "b" not in grads
    return hand, ref


def conv_inputs(
    c_in: int, c_out: int, groups: int, k: int | tuple[int, int], hw: tuple[int, int], seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    kh, kw = (k, k) if isinstance(k, int) else k
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, c_in, *hw))
    W = rng.standard_normal((c_out, c_in // groups, kh, kw))
    b = rng.uniform(0.5, 1.5, c_out) * rng.choice([-1.0, 1.0], c_out)  # non-zero, distinct
    return x, W, b


@pytest.mark.parametrize(("k", "s", "p", "d", "g", "size", "bias"), CONV_CASES)
def test_conv2d_matches_torch(k: int, s: int, p: int, d: int, g: str, size: int, bias: bool) -> None:
    c_in, c_out, groups = CHANNELS[g]
    x, W, b = conv_inputs(c_in, c_out, groups, k, (size, size), seed=k * 100 + s * 10 + p)
    hand, ref = run_conv(x, W, b if bias else None, 7, stride=s, padding=p, dilation=d, groups=groups)
    for name in ref:
        close(f"conv1.{name}", hand[name], ref[name])


@pytest.mark.parametrize(
    ("k", "s", "p", "d", "hw"),
    [
        ((2, 3), (1, 2), (0, 1), (2, 1), (7, 8)),
        ((3, 1), (2, 1), (1, 0), (1, 2), (8, 5)),
        ((5, 2), (2, 3), (2, 1), (1, 1), (9, 6)),
        (3, 3, 1, 1, (10, 11)),  # stride 3: the last padded rows/cols are read by no window
    ],
)
def test_conv2d_rectangular_matches_torch(k, s, p, d, hw) -> None:
    x, W, b = conv_inputs(4, 6, 2, k, hw, seed=3)
    hand, ref = run_conv(x, W, b, 11, stride=s, padding=p, dilation=d, groups=2)
    for name in ref:
        close(f"conv1.{name}", hand[name], ref[name])


# --- dL/dx as the full correlation with the flipped kernel (the manual's formula) ---------------


def dx_by_full_correlation(
    dout: np.ndarray,
    W: np.ndarray,
    x_hw: tuple[int, int],
    s: int,
    p: int,
    d: int,
    groups: int,
    *,
    flip: bool = True,
) -> np.ndarray:
    """∂L/∂x̃ = full correlation of (δ dilated by s, zero-padded by d(k−1)) with rot180(W),
    in/out channels swapped per group; then crop p. ``flip=False`` is the planted bug."""
    n, c_out, ho, wo = dout.shape
    _, c_g, kh, kw = W.shape
    o_g = c_out // groups
    up = np.zeros((n, c_out, (ho - 1) * s + 1, (wo - 1) * s + 1))  # δ dilated by the stride
    up[:, :, ::s, ::s] = dout
    full = np.pad(up, ((0, 0), (0, 0), (d * (kh - 1),) * 2, (d * (kw - 1),) * 2))
    W_t = W.reshape(groups, o_g, c_g, kh, kw).transpose(0, 2, 1, 3, 4)  # G,C_g,O_g,kH,kW
    W_t = W_t.reshape(groups * c_g, o_g, kh, kw)  # C_in,O_g,kH,kW
    if flip:
        W_t = W_t[:, :, ::-1, ::-1]
    core, _ = conv.conv2d_forward(full, {"W": np.ascontiguousarray(W_t)}, dilation=d, groups=groups)
    dxp = np.zeros((n, groups * c_g, x_hw[0] + 2 * p, x_hw[1] + 2 * p))
    dxp[:, :, : core.shape[2], : core.shape[3]] = core  # rows no window read get 0
    return dxp[:, :, p : p + x_hw[0], p : p + x_hw[1]]


@pytest.mark.parametrize(
    ("k", "s", "p", "d", "g"),
    [(3, 1, 1, 1, "g1"), (3, 2, 1, 1, "g2"), (2, 1, 0, 2, "depthwise"), (5, 2, 2, 1, "g1")],
)
def test_dx_is_full_correlation_with_flipped_kernel(k, s, p, d, g) -> None:
    c_in, c_out, groups = CHANNELS[g]
    x, W, b = conv_inputs(c_in, c_out, groups, k, (8, 8), seed=5)
    hand, ref = run_conv(x, W, b, 13, stride=s, padding=p, dilation=d, groups=groups)
    dout = np.random.default_rng(13).standard_normal(hand["z"].shape)
    args = (dout, W, (8, 8), s, p, d, groups)
    close("conv1.dL_dx (flipped)", dx_by_full_correlation(*args), ref["dL_dx"])
    with pytest.raises(AssertionError):  # planted bug: backward without the kernel flip
        close("conv1.dL_dx (no flip)", dx_by_full_correlation(*args, flip=False), ref["dL_dx"])


# --- planted conv bugs, monkeypatched into the shipped backward/forward -------------------------


@pytest.mark.parametrize(("helper", "bug", "term"), HELPER_BUGS, ids=[helper for helper, _, _ in HELPER_BUGS])
def test_planted_conv_bug_is_caught(monkeypatch, helper, bug, term) -> None:
    x, W, b = conv_inputs(3, 4, 1, 3, (7, 8), seed=21)
    hand, ref = run_conv(x, W, b, 17, stride=1, padding=1)
    close(f"conv1.{term}", hand[term], ref[term])  # the shipped code passes ...
    monkeypatch.setattr(conv, helper, bug)
    hand, ref = run_conv(x, W, b, 17, stride=1, padding=1)
    with pytest.raises(AssertionError):  # ... and the planted bug fails the same comparison
        close(f"conv1.{term}", hand[term], ref[term])


# --- MaxPool2d: ties -----------------------------------------------------------------------------


def test_maxpool_tie_rule_by_hand() -> None:
    """Overlapping 2×2 windows, stride 1, every window tied: the first maximum in row-major order
    wins, each window routes to its one winner, and a pixel winning two windows gets the sum."""
    x = np.array([[[[1.0, 3.0, 3.0], [3.0, 2.0, 3.0], [0.0, 3.0, 1.0]]]])
    dout = np.array([[[[1.0, 10.0], [100.0, 1000.0]]]])
    z, cache = conv.maxpool2d_forward(x, kernel_size=2, stride=1)
    dx, _ = conv.maxpool2d_backward(dout, cache)
    np.testing.assert_array_equal(cache.index, [[[[1, 1], [3, 5]]]])
    np.testing.assert_array_equal(dx, [[[[0, 11, 0], [100, 0, 1000], [0, 0, 0]]]])
    xt = t64(x)
    zt, idx = F.max_pool2d(xt, 2, stride=1, return_indices=True)
    zt.backward(torch.tensor(dout))
    np.testing.assert_array_equal(cache.index, idx.numpy())
    close("pool1.dL_dx", dx, xt.grad)


def tie_input(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Values from {0, 1, 2}: most windows hold exact ties, and overlapping windows share them."""
    return np.random.default_rng(seed).integers(0, 3, shape).astype(np.float64)


def special_input(kind: str) -> np.ndarray:
    x = tie_input((2, 3, 7, 8), seed=4)
    if kind == "neg_inf":
        x[0, 0, :3, :3] = -np.inf  # a padded corner window whose real pixels are all -inf
    if kind == "nan":
        x[1, 2, 2, 2:4] = np.nan  # two NaNs in one window: torch routes to the last one
    if kind == "all_equal":
        x[:] = 1.5
    return x


POOL_CASES = [
    pytest.param(k, s, p, d, size, id=f"k{k}-s{s}-p{p}-d{d}-{size}px")
    for k, s, p, d, size in itertools.product((2, 3), (1, 2, None), (0, 1), (1, 2), (7, 8))
    if 2 * p <= k
]


def run_maxpool(x: np.ndarray, **options: object) -> None:
    z, cache = conv.maxpool2d_forward(x, **options)
    dout = np.random.default_rng(3).standard_normal(z.shape)
    dx, grads = conv.maxpool2d_backward(dout, cache)
    xt = t64(x)
    zt, idx = F.max_pool2d(xt, return_indices=True, **options)
    zt.backward(torch.tensor(dout))
    assert grads == {}
    close("pool1.z", z, zt)
    np.testing.assert_array_equal(cache.index, idx.numpy(), err_msg="pool1.argmax (tie rule)")
    close("pool1.dL_dx", dx, xt.grad)


@pytest.mark.parametrize(("k", "s", "p", "d", "size"), POOL_CASES)
def test_maxpool_with_ties_matches_torch(k, s, p, d, size) -> None:
    x = tie_input((2, 3, size, size + 1), seed=k + 10 * p + 100 * d)
    run_maxpool(x, kernel_size=k, stride=s, padding=p, dilation=d)


@pytest.mark.parametrize("kind", ["neg_inf", "nan", "all_equal"])
def test_maxpool_special_values_match_torch(kind) -> None:
    run_maxpool(special_input(kind), kernel_size=3, stride=2, padding=1)


@pytest.mark.parametrize(("ties", "caught"), [(True, True), (False, False)])
def test_planted_maxpool_every_tie_bug(ties, caught) -> None:
    """The bug is caught on tied input, and is invisible without ties (so ties must be tested)."""
    shape = (2, 3, 7, 8)
    x = tie_input(shape, 8) if ties else np.random.default_rng(8).standard_normal(shape)
    z, cache = conv.maxpool2d_forward(x, kernel_size=3, stride=1, padding=1)
    dout = np.random.default_rng(9).standard_normal(z.shape)
    xt = t64(x)
    F.max_pool2d(xt, 3, stride=1, padding=1).backward(torch.tensor(dout))
    close("pool1.dL_dx", conv.maxpool2d_backward(dout, cache)[0], xt.grad)
    buggy, _ = maxpool_backward_to_every_tie(dout, (cache, x))
    if caught:
        with pytest.raises(AssertionError):
            close("pool1.dL_dx", buggy, xt.grad)
    else:
        close("pool1.dL_dx", buggy, xt.grad)


# --- AvgPool2d -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("k", "s", "p", "size", "include"),
    [
        pytest.param(k, s, p, size, inc, id=f"k{k}-s{s}-p{p}-{size}px-incl{inc}")
        for k, s, p, size, inc in itertools.product((1, 2, 3), (1, 2), (0, 1), (7, 8), (True, False))
        if 2 * p <= k
    ],
)
def test_avgpool_matches_torch(k, s, p, size, include) -> None:
    x = np.random.default_rng(k + s + p).standard_normal((2, 3, size, size + 1))
    z, cache = conv.avgpool2d_forward(x, kernel_size=k, stride=s, padding=p, count_include_pad=include)
    dout = np.random.default_rng(5).standard_normal(z.shape)
    dx, _ = conv.avgpool2d_backward(dout, cache)
    xt = t64(x)
    zt = F.avg_pool2d(xt, k, stride=s, padding=p, count_include_pad=include)
    zt.backward(torch.tensor(dout))
    close("pool1.z", z, zt)
    close("pool1.dL_dx", dx, xt.grad)


# --- LocalResponseNorm ---------------------------------------------------------------------------

LRN_HYPER = {
    "torch_default": (1e-4, 0.75, 1.0),
    "strong": (0.9, 0.75, 2.0),
    "beta2": (0.5, 2.0, 1.5),
}


@pytest.mark.parametrize(
    ("size", "channels", "hyper", "ndim"),
    [
        pytest.param(n, c, h, nd, id=f"n{n}-C{c}-{h}-{nd}d")
        for n, c, h, nd in itertools.product((1, 2, 3, 5), (1, 2, 3, 6), LRN_HYPER, (3, 4))
    ],
)
def test_lrn_matches_torch(size, channels, hyper, ndim) -> None:
    alpha, beta, k = LRN_HYPER[hyper]
    shape = (2, channels, 5, 4)[:ndim]
    x = np.random.default_rng(size * 10 + channels).standard_normal(shape) * 1.5
    z, cache = conv.local_response_norm_forward(x, size=size, alpha=alpha, beta=beta, k=k)
    dout = np.random.default_rng(6).standard_normal(z.shape)
    dx, _ = conv.local_response_norm_backward(dout, cache)
    xt = t64(x)
    zt = F.local_response_norm(xt, size, alpha=alpha, beta=beta, k=k)
    zt.backward(torch.tensor(dout))
    close("lrn1.z", z, zt)
    close("lrn1.dL_dx", dx, xt.grad)


@pytest.mark.parametrize("bug", ["beta_exponent", "alpha_not_divided_by_size"])
def test_planted_lrn_bug_is_caught(bug) -> None:
    alpha, beta, k, size = 0.9, 0.75, 2.0, 3
    x = np.random.default_rng(31).standard_normal((2, 6, 4, 4))
    dout = np.random.default_rng(32).standard_normal(x.shape)
    xt = t64(x)
    zt = F.local_response_norm(xt, size, alpha=alpha, beta=beta, k=k)
    zt.backward(torch.tensor(dout))
    z, cache = conv.local_response_norm_forward(x, size=size, alpha=alpha, beta=beta, k=k)
    close("lrn1.dL_dx", conv.local_response_norm_backward(dout, cache)[0], xt.grad)
    with pytest.raises(AssertionError):
        if bug == "beta_exponent":
            close("lrn1.dL_dx", lrn_backward_beta_exponent(dout, cache)[0], xt.grad)
        else:
            z_bad, _ = lrn_forward_alpha_not_averaged(x, size=size, alpha=alpha, beta=beta, k=k)
            close("lrn1.z", z_bad, zt)


# --- Flatten and Dropout -------------------------------------------------------------------------


def test_flatten_matches_torch() -> None:
    x = np.random.default_rng(1).standard_normal((2, 3, 4, 5))
    z, cache = conv.flatten_forward(x)
    dout = np.random.default_rng(2).standard_normal(z.shape)
    xt = t64(x)
    zt = torch.nn.Flatten()(xt)
    zt.backward(torch.tensor(dout))
    close("flatten1.z", z, zt)
    close("flatten1.dL_dx", conv.flatten_backward(dout, cache)[0], xt.grad)


@pytest.mark.parametrize("p", [0.0, 0.3, 0.5, 1.0])
def test_dropout_with_torchs_mask_matches_torch(p) -> None:
    """The mask is data: torch draws it once (native_dropout reports it) and the hand side reuses
    it. Re-seeding and calling F.dropout (what nn.Dropout runs) reproduces the same draw."""
    x = np.random.default_rng(4).standard_normal((4, 3, 5, 5))
    torch.manual_seed(1234)
    _, mask_t = torch.native_dropout(torch.tensor(x), p, True)
    mask = mask_t.numpy()
    torch.manual_seed(1234)
    xt = t64(x)
    zt = F.dropout(xt, p, training=True)
    dout = np.random.default_rng(5).standard_normal(x.shape)
    zt.backward(torch.tensor(dout))
    z, cache = conv.dropout_forward(x, mask, p=p)
    close("dropout1.z", z, zt)
    close("dropout1.dL_dx", conv.dropout_backward(dout, cache)[0], xt.grad)


# --- bad input: SpecError naming the field (and torch refuses it too) ---------------------------

X = np.zeros((1, 3, 4, 4))
W3 = np.zeros((2, 3, 3, 3))
ONES = np.ones_like(X)

HAND = {
    "conv": lambda x=X, W=W3, **kw: conv.conv2d_forward(x, {"W": W}, **kw),
    "maxpool": lambda x=X, **kw: conv.maxpool2d_forward(x, **kw),
    "avgpool": lambda x=X, **kw: conv.avgpool2d_forward(x, **kw),
    "lrn": lambda x=X, **kw: conv.local_response_norm_forward(x, **kw),
    "dropout": lambda x=X, mask=ONES, **kw: conv.dropout_forward(x, mask, **kw),
}
TORCH = {
    "conv": lambda x=X, W=W3, **kw: F.conv2d(t64(x), t64(W), **kw),
    "maxpool": lambda x=X, **kw: F.max_pool2d(t64(x), **kw),
    "avgpool": lambda x=X, **kw: F.avg_pool2d(t64(x), **kw),
    "lrn": lambda x=X, **kw: F.local_response_norm(t64(x), **kw),
    "dropout": lambda x=X, mask=None, **kw: F.dropout(t64(x), **kw),
}


@pytest.mark.parametrize(
    ("op", "kwargs", "field", "torch_refuses"),
    [
        ("conv", {"W": np.zeros((2, 3, 5, 5))}, "kernel_size", True),  # kernel > padded input
        ("conv", {"dilation": 3}, "kernel_size", True),  # dilated extent 7 > 4
        ("conv", {"W": np.zeros((2, 1, 3, 3)), "groups": 2}, "groups", True),  # C_in 3 % 2
        ("conv", {"W": np.zeros((4, 1, 3, 3)), "groups": 3}, "groups", True),  # C_out 4 % 3
        ("conv", {"groups": 0}, "groups", True),
        ("conv", {"stride": 0}, "stride", True),
        ("conv", {"stride": (1, -1)}, "stride", True),
        ("conv", {"padding": -1}, "padding", True),
        ("conv", {"dilation": 0}, "dilation", True),
        ("conv", {"W": np.zeros((2, 2, 3, 3))}, "W", True),  # C_in/groups mismatch
        ("conv", {"x": np.zeros((3, 4, 4))}, "x", False),  # torch takes unbatched 3-D; we don't
        ("maxpool", {"kernel_size": 5}, "kernel_size", True),
        ("maxpool", {"kernel_size": 2, "stride": 0}, "stride", True),
        ("maxpool", {"kernel_size": 2, "padding": 2}, "padding", True),  # pad > k/2
        ("maxpool", {"kernel_size": 2, "dilation": 0}, "dilation", True),
        ("avgpool", {"kernel_size": 5}, "kernel_size", True),
        ("avgpool", {"kernel_size": 3, "padding": 2}, "padding", True),
        ("lrn", {"size": 0}, "size", True),
        ("dropout", {"p": 1.5}, "p", True),
        ("dropout", {"mask": np.ones((2, 2)), "p": 0.5}, "mask", False),
    ],
)
def test_bad_input_names_the_field(op, kwargs, field, torch_refuses) -> None:
    with pytest.raises(SpecError) as info:
        HAND[op](**kwargs)
    assert info.value.field == field, str(info.value)
    if torch_refuses:
        with pytest.raises((RuntimeError, ValueError)):
            TORCH[op](**kwargs)
