"""hand/attention.py against real torch: softmax, F.scaled_dot_product_attention,
nn.MultiheadAttention, nn.GELU, a residual, and a pre-LN block stacked from torch's modules.

Each case runs both sides on the same input and parameters (non-zero and distinct, biases
included: torch initializes in_proj_bias and out_proj.bias to zero, which would hide a bias bug),
drives both backwards with one seeded random upstream gradient and compares every term torch lets
us read, in computation order, with the harness's one comparison (compare_traces /
first_divergence). The block's torch side is nn.LayerNorm, nn.MultiheadAttention, nn.Linear and
nn.GELU called one after another (never nn.TransformerEncoderLayer's fused fast path), with
``retain_grad`` on every intermediate. The planted bugs of handgrad.mutants.layers (family
"attention") must each fail at their expected term while the shipped functions pass.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from handgrad import mutants
from handgrad.contract.spec import SpecError
from handgrad.contract.trace import StepTrace
from handgrad.hand import attention as at
from handgrad.harness import Divergence, compare_traces, compare_values, first_divergence, tolerance_for

TORCH_DTYPE = {"float64": torch.float64, "float32": torch.float32}


# --- the layer test machinery (as in test_normalization_layers.py) -------------------------------


class Terms:
    """The terms of one case for both sides (torch's values are what torch computed)."""

    def __init__(self, dtype: str) -> None:
        self.tol = tolerance_for(dtype)
        self.dtype = np.dtype(dtype)
        self.hand, self.torch = StepTrace(1), StepTrace(1)

    def add(self, name: str, phase: str, hand: object, ref: object) -> None:
        if isinstance(ref, torch.Tensor):
            ref = ref.detach().to(torch.float64).numpy()
        kind = np.asarray(hand).dtype
        assert kind == self.dtype or not np.issubdtype(kind, np.floating), f"{name}: hand dtype {kind}"
        self.hand.add(name, name, phase, np.asarray(hand, dtype=np.float64))
        self.torch.add(name, name, phase, np.asarray(ref, dtype=np.float64), source="torch")

    def first(self) -> Divergence | None:
        return first_divergence(1, self.hand, compare_traces(self.hand, self.torch, self.tol), self.tol)

    def assert_agree(self) -> None:
        divergence = self.first()
        assert divergence is None, divergence.message()


def tensor(a: np.ndarray, grad: bool = True) -> torch.Tensor:
    return torch.tensor(a, requires_grad=grad)


def randomize(module: nn.Module, rng: np.random.Generator, dtype: str) -> dict[str, np.ndarray]:
    """Every parameter drawn afresh (weights ~ N(0, 1/fan_in), biases and LayerNorm's γ, β non-zero
    and distinct), copied into the module; returns them by torch's names for the hand side."""
    params = {}
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim >= 2:
                value = rng.standard_normal(tuple(p.shape)) / np.sqrt(p.shape[-1])
            else:
                value = rng.uniform(0.5, 1.5, tuple(p.shape)) * rng.choice([-1.0, 1.0], tuple(p.shape))
                value = value * (0.3 if name.endswith("bias") else 1.0)
            params[name] = value.astype(dtype)
            p.copy_(torch.as_tensor(params[name]))
    return params


# --- softmax -------------------------------------------------------------------------------------

TIES = np.array(
    [
        [1.0, 3.0, 3.0, -2.0, 0.5],  # two equal maxima
        [2.0, 2.0, 2.0, 2.0, 2.0],  # all equal: p = 1/5 each
        [-np.inf, 0.0, 1.0, -np.inf, 1.0],  # masked entries next to a tie
        [700.0, 700.0, -700.0, 0.0, 699.0],  # huge: the max shift keeps it finite
    ]
)


def run_softmax(x: np.ndarray, dtype: str = "float64", seed: int = 0) -> Terms:
    x = x.astype(dtype)
    p, cache = at.softmax_forward(x)
    G = np.random.default_rng(seed).standard_normal(x.shape).astype(dtype)
    dx = at.softmax_backward(G, cache)
    xt = tensor(x)
    pt = nn.Softmax(dim=-1)(xt)
    pt.backward(torch.tensor(G))
    terms = Terms(dtype)
    terms.add("softmax1.out", "forward", p, pt)
    terms.add("softmax1.dL_dx", "backward", dx, xt.grad)
    return terms


@pytest.mark.parametrize(
    ("x", "dtype"),
    [
        (np.random.default_rng(1).standard_normal((3, 7)), "float64"),
        (np.random.default_rng(2).standard_normal((2, 3, 5)) * 4, "float64"),
        (TIES, "float64"),
        (TIES, "float32"),
        (np.random.default_rng(3).standard_normal((3, 7)), "float32"),
    ],
)
def test_softmax_matches_torch(x, dtype) -> None:
    run_softmax(x, dtype).assert_agree()


def test_softmax_gradient_is_exactly_zero_where_masked() -> None:
    """p = 0 at a −inf score, so ∂L/∂s = p(g − Σgp) = 0 exactly, whatever g is."""
    p, cache = at.softmax_forward(TIES)
    dx = at.softmax_backward(np.random.default_rng(0).standard_normal(TIES.shape) * 1e3, cache)
    assert np.all(dx[np.isneginf(TIES)] == 0.0)
    assert np.all(p[np.isneginf(TIES)] == 0.0)


# --- scaled dot-product attention ----------------------------------------------------------------


def run_sdpa(
    L: int,
    S: int,
    d: int,
    dv: int,
    *,
    causal: bool = False,
    mask: str | None = None,
    scale: float | None = None,
    lead: tuple[int, ...] = (2, 3),
    dtype: str = "float64",
    seed: int = 0,
) -> Terms:
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal(lead + shape).astype(dtype) for shape in ((L, d), (S, d), (S, dv)))
    attn_mask = None
    if mask == "bool":  # random, with the diagonal kept so no row is fully masked
        attn_mask = (rng.uniform(size=(L, S)) < 0.6) | np.eye(L, S, dtype=bool)
        attn_mask[0] = np.eye(L, S, dtype=bool)[0]  # row 0: everything masked but the diagonal
    elif mask == "float":
        attn_mask = rng.standard_normal((L, S)).astype(dtype)
    out, cache = at.sdpa_forward(q, k, v, causal=causal, attn_mask=attn_mask, scale=scale)
    G = rng.standard_normal(out.shape).astype(dtype)
    dq, dk, dv_ = at.sdpa_backward(G, cache)
    qt, kt, vt = tensor(q), tensor(k), tensor(v)
    mask_t = None if attn_mask is None else torch.as_tensor(attn_mask)
    out_t = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask_t, is_causal=causal, scale=scale)
    out_t.backward(torch.tensor(G))
    terms = Terms(dtype)
    terms.add("sdpa1.out", "forward", out, out_t)
    terms.add("sdpa1.dL_dq", "backward", dq, qt.grad)
    terms.add("sdpa1.dL_dk", "backward", dk, kt.grad)
    terms.add("sdpa1.dL_dv", "backward", dv_, vt.grad)
    return terms


@pytest.mark.parametrize(
    ("L", "S", "d", "dv", "options"),
    [
        (5, 5, 4, 4, {}),
        (3, 7, 5, 2, {}),  # L ≠ S, d ≠ d_v, odd sizes
        (5, 5, 4, 3, {"causal": True}),  # row 0 sees only the diagonal
        (3, 5, 4, 3, {"causal": True}),  # torch's is_causal is top-left: tril(ones(L, S))
        (5, 5, 4, 4, {"mask": "bool"}),  # row 0 fully masked except the diagonal
        (4, 6, 3, 5, {"mask": "float"}),  # additive mask
        (5, 5, 4, 4, {"scale": 0.3}),
        (5, 5, 8, 4, {"lead": (3,)}),
        (5, 5, 4, 3, {"causal": True, "dtype": "float32"}),
    ],
)
def test_sdpa_matches_torch(L, S, d, dv, options) -> None:
    run_sdpa(L, S, d, dv, **options).assert_agree()


def test_causal_mask_makes_masked_score_gradients_exactly_zero() -> None:
    """Above the diagonal P = 0, so ∂L/∂S = P ⊙ (∂L/∂P − rowsum) is 0 there exactly; in row 0
    (only the diagonal) P = 1 and ∂L/∂S = 1·(g₀ − g₀) = 0 too: the first query passes no
    gradient to its score at all."""
    rng = np.random.default_rng(5)
    q, k, v = (rng.standard_normal((2, 5, 4)) for _ in range(3))
    out, cache = at.sdpa_forward(q, k, v, causal=True)
    p = cache.softmax.p
    dp = rng.standard_normal(out.shape) @ v.swapaxes(-1, -2)
    ds = at.softmax_backward(dp, cache.softmax)
    above = ~at.causal_mask(5, 5)
    assert np.all(p[:, above] == 0.0) and np.all(ds[:, above] == 0.0)
    assert np.all(p[:, 0, 0] == 1.0) and np.all(ds[:, 0, :] == 0.0)


# --- MultiheadAttention --------------------------------------------------------------------------


def run_mha(
    N: int,
    L: int,
    E: int,
    H: int,
    *,
    causal: bool = False,
    batch_first: bool = True,
    bias: bool = True,
    need_weights: bool = True,
    average: bool = True,
    dtype: str = "float64",
    seed: int = 0,
) -> Terms:
    rng = np.random.default_rng(seed)
    module = nn.MultiheadAttention(E, H, bias=bias, batch_first=batch_first).to(TORCH_DTYPE[dtype])
    params = randomize(module, rng, dtype)
    x = rng.standard_normal((N, L, E) if batch_first else (L, N, E)).astype(dtype)
    out, cache = at.mha_forward(
        x, params, num_heads=H, causal=causal, batch_first=batch_first,
        need_weights=need_weights, average_attn_weights=average,
    )  # fmt: skip
    G = rng.standard_normal(out.shape).astype(dtype)
    dx, grads = at.mha_backward(G, cache)
    xt = tensor(x)
    mask = torch.triu(torch.ones(L, L, dtype=torch.bool), 1) if causal else None  # True = masked out
    out_t, weights_t = module(
        xt, xt, xt, attn_mask=mask, need_weights=need_weights, average_attn_weights=average
    )
    out_t.backward(torch.tensor(G))
    terms = Terms(dtype)
    if need_weights:
        terms.add("mha1.weights", "forward", cache.weights, weights_t)
    else:
        assert cache.weights is None and weights_t is None
    terms.add("mha1.out", "forward", out, out_t)
    terms.add("mha1.dL_dx", "backward", dx, xt.grad)
    assert set(grads) == set(params)
    for name, p in module.named_parameters():
        terms.add(f"mha1.dL_d{name}", "backward", grads[name], p.grad)
    return terms


@pytest.mark.parametrize(
    ("N", "L", "E", "H", "options"),
    [
        (2, 5, 6, 2, {}),
        (3, 7, 12, 3, {"causal": True}),
        (1, 5, 8, 4, {"causal": True, "average": False}),  # per-head weights (N, H, L, S)
        (2, 5, 6, 1, {}),  # one head
        (2, 5, 6, 6, {}),  # head width 1
        (2, 5, 6, 2, {"batch_first": False}),  # (L, N, E)
        (2, 5, 6, 3, {"bias": False}),
        (2, 5, 6, 2, {"need_weights": False}),  # torch takes its SDPA path
        (2, 5, 6, 2, {"causal": True, "need_weights": False}),
        (2, 5, 8, 2, {"causal": True, "dtype": "float32"}),
    ],
)
def test_mha_matches_torch(N, L, E, H, options) -> None:
    run_mha(N, L, E, H, **options).assert_agree()


def test_mha_bad_heads_names_the_field() -> None:
    with pytest.raises(SpecError) as info:
        at.mha_forward(np.ones((2, 3, 6)), {"in_proj_weight": np.ones((18, 6))}, num_heads=4)
    assert info.value.field == "num_heads"
    with pytest.raises(AssertionError, match="divisible"):
        nn.MultiheadAttention(6, 4)


# --- GELU ----------------------------------------------------------------------------------------

GELU_X = np.concatenate(
    [np.linspace(-6, 6, 49), [0.0, -0.0, 1e-8, -1e-8, 10.0, -10.0, 30.0, -30.0, 0.7071067811865476]]
)


def run_gelu(approximate: str, x: np.ndarray = GELU_X, dtype: str = "float64", seed: int = 0) -> Terms:
    x = x.astype(dtype)
    y, cache = at.gelu_forward(x, approximate)
    G = np.random.default_rng(seed).standard_normal(x.shape).astype(dtype)
    dx = at.gelu_backward(G, cache)
    xt = tensor(x)
    yt = nn.GELU(approximate)(xt)
    yt.backward(torch.tensor(G))
    terms = Terms(dtype)
    terms.add("gelu1.out", "forward", y, yt)
    terms.add("gelu1.dL_dx", "backward", dx, xt.grad)
    return terms


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_matches_torch(approximate, dtype) -> None:
    run_gelu(approximate, dtype=dtype).assert_agree()


def test_erf_matches_torch() -> None:
    x = np.concatenate([np.linspace(-7, 7, 2001), [0.0, -0.0, 1e-300, -1e-300, 1e-8, 6.0, 40.0]])
    check = compare_values("erf", at.erf(x), torch.erf(torch.tensor(x)).numpy(), tolerance_for("float64"))
    assert check.ok and check.max_abs <= 2.3e-16, check  # one ulp of 1
    special = np.array([np.inf, -np.inf, np.nan])
    np.testing.assert_array_equal(at.erf(special), torch.erf(torch.tensor(special)).numpy())
    assert at.erf(np.ones(3, dtype=np.float32)).dtype == np.float32


def test_hand_layers_import_and_run_without_torch() -> None:
    """hand/ is the reference a reader studies: it must run where torch is not installed."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import numpy as np\n"
        "from handgrad.hand import attention, embedding, normalization\n"
        "import handgrad.mutants\n"
        "x = np.random.default_rng(0).standard_normal((2, 3, 4))\n"
        "p = {'ln1.weight': np.ones(4), 'ln1.bias': np.zeros(4), 'ln2.weight': np.ones(4),\n"
        "     'ln2.bias': np.zeros(4), 'attn.in_proj_weight': np.eye(12, 4),\n"
        "     'attn.in_proj_bias': np.zeros(12),\n"
        "     'attn.out_proj.weight': np.eye(4), 'attn.out_proj.bias': np.zeros(4),\n"
        "     'fc1.weight': np.ones((5, 4)), 'fc1.bias': np.zeros(5), 'fc2.weight': np.ones((4, 5)),\n"
        "     'fc2.bias': np.zeros(4)}\n"
        "y, c = attention.block_forward(x, p, num_heads=2)\n"
        "attention.block_backward(np.ones_like(y), c)\n"
        "assert 'torch' not in sys.modules or sys.modules['torch'] is None\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_gelu_rejects_unknown_form() -> None:
    with pytest.raises(SpecError) as info:
        at.gelu_forward(np.ones(3), "sigmoid")
    assert info.value.field == "approximate"


# --- residual ------------------------------------------------------------------------------------


def run_residual(dtype: str = "float64", seed: int = 0) -> Terms:
    """y = x + fc(x): ∂L/∂x is δ through the skip plus δ W through the branch."""
    rng = np.random.default_rng(seed)
    fc = nn.Linear(5, 5).to(TORCH_DTYPE[dtype])
    params = randomize(fc, rng, dtype)
    x = rng.standard_normal((3, 4, 5)).astype(dtype)
    fx, c_fc = at.linear_forward(x, params)
    y, c_res = at.residual_forward(x, fx)
    G = rng.standard_normal(y.shape).astype(dtype)
    dx_skip, dfx = at.residual_backward(G, c_res)
    dx_branch, grads = at.linear_backward(dfx, c_fc)
    dx = dx_skip + dx_branch
    xt = tensor(x)
    yt = xt + fc(xt)
    yt.backward(torch.tensor(G))
    terms = Terms(dtype)
    terms.add("res1.out", "forward", y, yt)
    terms.add("res1.dL_dx", "backward", dx, xt.grad)
    for name, p in fc.named_parameters():
        terms.add(f"res1.dL_dfc.{name}", "backward", grads[name], p.grad)
    return terms


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_residual_matches_torch(dtype) -> None:
    run_residual(dtype).assert_agree()


# --- the pre-LN transformer block ----------------------------------------------------------------


class PreLNBlock(nn.Module):
    """torch's modules, stacked as the hand block composes its layers (no fused fast path)."""

    def __init__(self, E: int, H: int, hidden: int, approximate: str) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(E)
        self.attn = nn.MultiheadAttention(E, H, batch_first=True)
        self.ln2 = nn.LayerNorm(E)
        self.fc1 = nn.Linear(E, hidden)
        self.act = nn.GELU(approximate)
        self.fc2 = nn.Linear(hidden, E)


def run_block(
    N: int = 2,
    L: int = 5,
    E: int = 6,
    H: int = 2,
    hidden: int = 10,
    *,
    causal: bool = True,
    approximate: str = "none",
    dtype: str = "float64",
    seed: int = 0,
) -> Terms:
    rng = np.random.default_rng(seed)
    block = PreLNBlock(E, H, hidden, approximate).to(TORCH_DTYPE[dtype])
    params = randomize(block, rng, dtype)
    x = rng.standard_normal((N, L, E)).astype(dtype)
    y, cache = at.block_forward(x, params, num_heads=H, causal=causal, approximate=approximate)
    G = rng.standard_normal(y.shape).astype(dtype)
    dx, grads, dterms = at.block_backward_terms(G, cache)
    # torch: the same modules in the same order, every intermediate kept with its gradient
    xt = tensor(x)
    mask = torch.triu(torch.ones(L, L, dtype=torch.bool), 1) if causal else None
    h1 = block.ln1(xt)
    a, weights_t = block.attn(h1, h1, h1, attn_mask=mask, need_weights=True)
    x1 = xt + a
    h2 = block.ln2(x1)
    u = block.fc1(h2)
    g = block.act(u)
    m = block.fc2(g)
    yt = x1 + m
    inter = {"h1": h1, "a": a, "x1": x1, "h2": h2, "u": u, "g": g, "m": m, "y": yt}
    for t in inter.values():
        t.retain_grad()
    yt.backward(torch.tensor(G))
    terms = Terms(dtype)
    terms.add("block1.attn.weights", "forward", cache.attn.weights, weights_t)
    for name in at.BLOCK_TERMS:
        terms.add(f"block1.{name}", "forward", cache.terms[name], inter[name])
    for name in ("m", "g", "u", "h2", "x1", "a", "h1"):
        terms.add(f"block1.dL_d{name}", "backward", dterms[f"dL_d{name}"], inter[name].grad)
    terms.add("block1.dL_dx", "backward", dx, xt.grad)
    assert set(grads) == set(params)
    for name, p in block.named_parameters():
        terms.add(f"block1.dL_d{name}", "backward", grads[name], p.grad)
    return terms


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"approximate": "tanh"},
        {"causal": False},
        {"N": 3, "L": 7, "E": 12, "H": 3, "hidden": 9},
        {"N": 1, "L": 1, "E": 4, "H": 2, "hidden": 5},  # one token: attention is the identity mix
        {"dtype": "float32"},
        {"dtype": "float32", "approximate": "tanh", "N": 3, "L": 7, "E": 12, "H": 3, "hidden": 9},
    ],
)
def test_preln_block_matches_torch(options) -> None:
    run_block(**options).assert_agree()


# --- the planted bugs: each caught at its term, the shipped function passes ----------------------

CASES = {
    "softmax": lambda: run_softmax(TIES),
    "sdpa": lambda: run_sdpa(5, 5, 4, 4),
    "sdpa_causal": lambda: run_sdpa(5, 5, 4, 3, causal=True),
    "mha": lambda: run_mha(2, 5, 6, 2, causal=True),
    "gelu": lambda: run_gelu("none"),
    "block": lambda: run_block(),
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


def test_every_layer_mutant_has_a_case() -> None:
    from test_normalization_layers import CASES as NORMALIZATION_CASES

    families = {"attention": CASES, "normalization": NORMALIZATION_CASES}
    assert len(mutants.LAYER_MUTANTS) >= 10
    for mutant in mutants.LAYER_MUTANTS:
        assert mutant.case in families[mutant.family], mutant.id
