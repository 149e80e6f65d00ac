"""The transformer family's model spec: a character-level model of pre-LN blocks predicting the
next character of the shipped names written as one text (``name.name.…``).

    x = tok[X] + pos[0..L−1] → block1 … blockK → lnf → logits = h Wᵀ + b → cross-entropy

Each block is hand/attention.py's ``block_forward`` (LN₁, causal MultiheadAttention, residual, LN₂,
fc1, GELU, fc2, residual). Parameters are named as the twin's ``named_parameters()``. No torch here.

The attention has no biases (``nn.MultiheadAttention(bias=False)``): the key part of ``in_proj_bias``
shifts every score of a row by the same q·b_k, which softmax ignores, so its gradient is zero in
exact arithmetic and rounding noise in practice; Adam divides that noise by its own root mean
square and moves the bias by about lr per step in a direction no two implementations share
(measured in float32: step 1, in_proj_bias[31], hand −0.020879 vs torch −0.021030). manual/transformer.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from handgrad.contract.makemore import VOCAB
from handgrad.contract.spec import SpecError, require_choice, require_float, require_int

# each block's traced intermediates (hand/attention.py BLOCK_TERMS) with their symbols, and the
# order their gradients come in the backward
FORWARD_BLOCK = (
    ("h1", "h₁ = LN₁(x)"),
    ("a", "a = MHA(h₁)"),
    ("x1", "x₁ = x + a"),
    ("h2", "h₂ = LN₂(x₁)"),
    ("u", "u = fc₁(h₂)"),
    ("g", "g = GELU(u)"),
    ("m", "m = fc₂(g)"),
    ("y", "y = x₁ + m"),
)
BACKWARD_BLOCK = ("y", "m", "g", "u", "h2", "x1", "a", "h1")
BLOCK_PARAMS = (  # (name inside a block, shape as a function of (E, F))
    ("ln1.weight", "E"),
    ("ln1.bias", "E"),
    ("attn.in_proj_weight", "3E,E"),
    ("attn.out_proj.weight", "E,E"),
    ("ln2.weight", "E"),
    ("ln2.bias", "E"),
    ("fc1.weight", "F,E"),
    ("fc1.bias", "F"),
    ("fc2.weight", "E,F"),
    ("fc2.bias", "E"),
)


@dataclass(frozen=True)
class Transformer:
    """Sizes: context L, width E, heads, MLP width F, blocks; GELU's form; LayerNorm's ε."""

    vocab: int = len(VOCAB)
    context: int = 8
    n_embd: int = 16
    heads: int = 2
    mlp: int = 64
    layers: int = 1
    approximate: str = "none"
    eps: float = 1e-5

    def __post_init__(self) -> None:
        require_int("vocab", self.vocab, 2)
        require_int("context", self.context, 1)
        require_int("n_embd", self.n_embd, 1)
        require_int("heads", self.heads, 1)
        require_int("mlp", self.mlp, 1)
        require_int("layers", self.layers, 1)
        require_choice("approximate", self.approximate, ("none", "tanh"))
        require_float("eps", self.eps)
        if self.n_embd % self.heads:
            raise SpecError("heads", f"n_embd ({self.n_embd}) must be divisible by heads ({self.heads})")


def _shape(text: str, model: Transformer) -> tuple[int, ...]:
    sizes = {"E": model.n_embd, "3E": 3 * model.n_embd, "F": model.mlp}
    return tuple(sizes[part] for part in text.split(","))


def param_table(model: Transformer) -> list[tuple[str, tuple[int, ...], str]]:
    """Every parameter as (name, shape, symbol), in the twin's ``parameters()`` order."""
    table = [
        ("tok.weight", (model.vocab, model.n_embd), "W_tok"),
        ("pos.weight", (model.context, model.n_embd), "W_pos"),
    ]
    for k in range(1, model.layers + 1):
        table += [(f"block{k}.{name}", _shape(shape, model), f"{name}⁽{k}⁾") for name, shape in BLOCK_PARAMS]
    table += [
        ("lnf.weight", (model.n_embd,), "γ_f"),
        ("lnf.bias", (model.n_embd,), "β_f"),
        ("head.weight", (model.vocab, model.n_embd), "W_head"),
        ("head.bias", (model.vocab,), "b_head"),
    ]
    return table


def build_sequences(names: list[str], context: int) -> tuple[np.ndarray, np.ndarray]:
    """X, Y (n, context): every window of the text '.'-joined names (with a leading '.'), Y the
    window shifted by one character."""
    index = {ch: i for i, ch in enumerate(VOCAB)}
    text = "." + ".".join(names) + "."
    codes = np.array([index[ch] for ch in text], dtype=np.int64)
    n = len(codes) - context
    if n < 1:
        raise SpecError("context", f"the text has {len(codes)} characters; a context of {context} needs more")
    starts = np.arange(n)[:, None] + np.arange(context)[None, :]
    return codes[starts], codes[starts + 1]
