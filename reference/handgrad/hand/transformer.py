r"""A character-level transformer of pre-LN blocks, by hand. Pure NumPy; never imports torch.

For a batch of N windows X (N, L) of character indices and their next characters Y (N, L):

    x = tok[X] + pos[0..L−1]                         N,L,E   [two nn.Embedding]
    blockk: h1 = LN₁(x), a = MHA(h1, causal), x1 = x + a,
            h2 = LN₂(x1), u = fc1(h2), g = GELU(u), m = fc2(g), y = x1 + m
                                                      N,L,E   [nn.LayerNorm, nn.MultiheadAttention,
                                                               nn.Linear, nn.GELU]
    h = LN_f(y of the last block)                     N,L,E   [nn.LayerNorm]
    logits = h Wᵀ + b                                 N,L,27  [nn.Linear]
    L = −(1/(N·L)) Σ log softmax(logits)[n, t, Y[n, t]]       [F.cross_entropy on (N·L, 27)]

Backward: cross-entropy and the head as in every family; LN_f by the LayerNorm three-term form;
each block by hand/attention.py's ``block_backward_terms`` (residuals add their two paths,
attention's softmax backward with its row-sum term, the causal mask's zero gradient); the
embeddings scatter-add over repeated characters, and ∂L/∂pos = Σₙ ∂L/∂x[n]. Derivations:
manual/attention.md, manual/normalization.md.
"""

from __future__ import annotations

import numpy as np

from handgrad.contract.trace import StepTrace
from handgrad.contract.training import Loss, Optimizer
from handgrad.contract.transformer import BACKWARD_BLOCK, FORWARD_BLOCK, Transformer, param_table
from handgrad.hand import attention, embedding, losses, optim
from handgrad.hand import normalization as nm

CROSS_ENTROPY = Loss("cross_entropy")


def init_params(model: Transformer, seed: int, dtype: str = "float64") -> dict[str, np.ndarray]:
    """Embeddings ~ N(0, 1), weights ~ U(±1/√fan_in), every bias and LayerNorm's γ, β non-zero and
    distinct (0.1·N(0, 1), γ = 1 + 0.1·N(0, 1)): a slip that confuses them with 0 or 1 shows."""
    rng = np.random.default_rng(seed)
    params: dict[str, np.ndarray] = {}
    for name, shape, _ in param_table(model):
        if name in ("tok.weight", "pos.weight"):
            value = rng.normal(size=shape)
        elif len(shape) == 2:
            value = rng.uniform(-1.0, 1.0, size=shape) / np.sqrt(shape[1])
        elif name.endswith("ln1.weight") or name.endswith("ln2.weight") or name == "lnf.weight":
            value = 1.0 + 0.1 * rng.normal(size=shape)
        else:
            value = 0.1 * rng.normal(size=shape)
        params[name] = np.asarray(value, dtype=dtype)
    return params


class HandTransformer:
    """The hand side of a transformer run: its own parameters, stepped by hand-derived NumPy."""

    def __init__(
        self,
        model: Transformer,
        optimizer: Optimizer,
        params: dict[str, np.ndarray],
        X: np.ndarray,
        Y: np.ndarray,
        batches: object,
        dtype: str = "float64",
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.dtype = np.dtype(dtype)
        self._params = {name: np.asarray(value, dtype=self.dtype) for name, value in params.items()}
        self.X = np.asarray(X, dtype=np.int64)  # not ``x``: indices, not variables
        self.Y = np.asarray(Y, dtype=np.int64)
        self.batches = batches
        self.state = optim.init_state(optimizer, self._params)
        self.symbols = {name: symbol for name, _, symbol in param_table(model)}

    def params(self) -> dict[str, np.ndarray]:
        return dict(self._params)

    def load_params(self, params: dict[str, np.ndarray]) -> None:
        self._params = {name: np.asarray(value, dtype=self.dtype) for name, value in params.items()}

    def _sub(self, prefix: str) -> dict[str, np.ndarray]:
        return {k[len(prefix) + 1 :]: v for k, v in self._params.items() if k.startswith(prefix + ".")}

    def step(self, step: int) -> StepTrace:
        """Run training step ``step`` (1-based) and return its terms: new arrays of this step that
        nothing writes to later (hand/attention.py, embedding, layernorm, losses make new arrays and
        write into none they are given), so the trace keeps them uncopied."""
        m, p = self.model, self._params
        trace = StepTrace(step)
        rows = np.asarray(self.batches[step - 1])  # type: ignore[index]
        Xb, Yb = self.X[rows], self.Y[rows]
        n, L = Xb.shape

        # forward
        tok, tok_cache = embedding.forward(Xb, {"weight": p["tok.weight"]})  # N,L,E
        positions = np.arange(L)
        pos, pos_cache = embedding.forward(positions, {"weight": p["pos.weight"]})  # L,E
        x = tok + pos  # N,L,E
        trace.add("emb.x", "x = tok[X] + pos", "forward", x, copy=False)
        caches = []
        for k in range(1, m.layers + 1):
            x, cache = attention.block_forward(
                x,
                self._sub(f"block{k}"),
                num_heads=m.heads,
                causal=True,
                eps=m.eps,
                approximate=m.approximate,
            )
            caches.append(cache)
            weights = cache.attn.weights
            trace.add(f"block{k}.attn.weights", f"P̄⁽{k}⁾ (mean over heads)", "forward", weights, copy=False)
            for short, symbol in FORWARD_BLOCK:
                trace.add(f"block{k}.{short}", f"{symbol}  ⁽{k}⁾", "forward", cache.terms[short], copy=False)
        h, lnf_cache = nm.layernorm_forward(x, self._sub("lnf"), normalized_shape=m.n_embd, eps=m.eps)
        logits, head_cache = attention.linear_forward(h, self._sub("head"))  # N,L,27
        trace.add("lnf.h", "h = LN_f(y)", "forward", h, copy=False)
        trace.add("head.logits", "logits = h Wᵀ + b", "forward", logits, copy=False)

        # loss over the N·L positions
        flat = logits.reshape(n * L, m.vocab)
        L_value, loss_cache = losses.forward(CROSS_ENTROPY, flat, Yb.reshape(-1, 1).astype(self.dtype))
        trace.add("loss.L", "L = cross-entropy", "loss", L_value, copy=False)

        # backward
        grads: dict[str, np.ndarray] = {}
        dlogits = losses.backward(CROSS_ENTROPY, loss_cache).reshape(logits.shape)  # N,L,27
        trace.add("head.dL_dlogits", "∂L/∂logits", "backward", dlogits, copy=False)
        dh, head_grads = attention.linear_backward(dlogits, head_cache)
        self._add_grads(trace, grads, "head", head_grads)
        trace.add("lnf.dL_dh", "∂L/∂h", "backward", dh, copy=False)
        dx, lnf_grads = nm.layernorm_backward(dh, lnf_cache)
        self._add_grads(trace, grads, "lnf", lnf_grads)
        for k in range(m.layers, 0, -1):
            dx, block_grads, dterms = attention.block_backward_terms(dx, caches[k - 1])
            for short in BACKWARD_BLOCK:
                value = dterms[f"dL_d{short}"]
                trace.add(f"block{k}.dL_d{short}", f"∂L/∂{short}⁽{k}⁾", "backward", value, copy=False)
            self._add_grads(trace, grads, f"block{k}", block_grads)
        trace.add("emb.dL_dx", "∂L/∂x", "backward", dx, copy=False)
        _, pos_grads = embedding.backward(dx.sum(axis=0), pos_cache)  # ∂L/∂pos = Σₙ ∂L/∂x[n]
        _, tok_grads = embedding.backward(dx, tok_cache)  # scatter-add over X
        self._add_grads(trace, grads, "tok", tok_grads)
        self._add_grads(trace, grads, "pos", pos_grads)
        self._update(trace, grads)
        return trace

    def _add_grads(
        self, trace: StepTrace, grads: dict[str, np.ndarray], prefix: str, sub: dict[str, np.ndarray]
    ) -> None:
        names = [name for name in self._params if name.startswith(prefix + ".")]  # parameters' order
        for name in names:
            short = name[len(prefix) + 1 :]
            grads[name] = sub[short]
            symbol = f"∂L/∂{self.symbols[name]}"
            trace.add(f"{prefix}.dL_d{short}", symbol, "backward", sub[short], copy=False)

    def _update(self, trace: StepTrace, grads: dict[str, np.ndarray]) -> None:
        """Clip, step and trace the optimizer, as the dense stack does it (hand/network.py)."""
        grads = {name: grads[name] for name in self._params}
        grads = optim.clip_and_trace(trace, self.optimizer, grads, self.symbols)
        self._params, self.state = optim.step_and_trace(
            trace, self.optimizer, self._params, grads, self.state, self.symbols
        )
