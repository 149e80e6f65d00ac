r"""The makemore MLP (makemore part 4, "becoming a backprop ninja"), by hand. Pure NumPy; never
imports torch.

The model, for a batch of N contexts Xb (N, 3) and next characters Yb (N,) (torch's modules in
brackets; weights in torch's (out, in) layout):

    emb     = C[Xb]                              N,3,10     [nn.Embedding]
    embcat  = emb.view(N, 30)                    N,30
    hprebn  = embcat W1ᵀ                         N,H        [nn.Linear, bias=False]
    bnmean  = (1/N) Σₙ hprebn                    1,H        [nn.BatchNorm1d, training mode]
    bnvar   = (1/N) Σₙ (hprebn − bnmean)²         1,H        (biased: the normalization's)
    bnraw   = (hprebn − bnmean)(bnvar + ε)^{-1/2} N,H
    hpreact = γ bnraw + β                        N,H
    h       = tanh(hpreact)                      N,H        [nn.Tanh]
    logits  = h W2ᵀ + b2                         N,27       [nn.Linear]
    logprobs = log_softmax(logits), probs = exp(logprobs)
    L       = −(1/N) Σₙ logprobs[n, Yb[n]]                  [F.cross_entropy]

Backward (δ_x = ∂L/∂x; Y the one-hot of Yb):

.. math::

    \delta_{logits} = (probs - Y)/N \qquad
    \delta_{W2} = \delta_{logits}^\top h \quad \delta_{b2} = 1^\top\delta_{logits} \quad
    \delta_h = \delta_{logits} W2

    \delta_{hpreact} = \delta_h \odot (1 - h^2) \qquad
    \delta_\gamma = 1^\top(\delta_{hpreact}\odot bnraw) \quad \delta_\beta = 1^\top\delta_{hpreact}

    \delta_{hprebn} = \frac{(bnvar+\varepsilon)^{-1/2}}{N}\Big(N\,\gamma\delta_{hpreact}
        - 1^\top\gamma\delta_{hpreact} - bnraw\;1^\top(\gamma\delta_{hpreact}\odot bnraw)\Big)

    \delta_{W1} = \delta_{hprebn}^\top embcat \quad
    \delta_{embcat} = \delta_{hprebn} W1 \quad \delta_{emb} = \delta_{embcat}\text{.view}(N,3,10)

    \delta_C[r] = \sum_{(n,j):\,Xb[n,j]=r} \delta_{emb}[n,j,:]   \quad(\text{scatter-add})

The running statistics (state terms): μ̂ ← (1−f)μ̂ + f·bnmean, σ̂² ← (1−f)σ̂² + f·N/(N−1)·bnvar
(the *unbiased* variance), t ← t + 1 (f = momentum = 0.1). BatchNorm's three-term backward is
derived in manual/normalization.md (hand/normalization.py computes it).

bnmean, bnvar, bnraw, probs and logprobs (and ∂L/∂bnraw, ∂L/∂logprobs) are inside torch's fused
kernels, so they are not in the compared trace: the hand side keeps the last step's in
:attr:`HandMakemore.internals` (contract.makemore.HAND_ONLY).
"""

from __future__ import annotations

import numpy as np

from handgrad.contract.makemore import BUFFERS, Makemore, param_table
from handgrad.contract.trace import StepTrace
from handgrad.contract.training import Loss, Optimizer
from handgrad.hand import activations, dense, embedding, losses, normalization, optim

CROSS_ENTROPY = Loss("cross_entropy")


def init_params(model: Makemore, seed: int, dtype: str = "float64") -> dict[str, np.ndarray]:
    """C ~ N(0, 1) (nn.Embedding), W and b ~ U(±1/√fan_in) (nn.Linear), and γ = 1 + 0.1·N(0, 1),
    β = 0.1·N(0, 1): not torch's (1, 0), so that a bug that confuses γ with 1 or β with 0 shows (the
    exercise does the same). Another generator than torch's."""
    rng = np.random.default_rng(seed)
    fan_in = {"hidden": model.fan_in, "output": model.hidden}
    params: dict[str, np.ndarray] = {}
    for name, shape, _ in param_table(model):
        layer = name.split(".")[0]
        if layer == "emb":
            value = rng.normal(size=shape)
        elif name == "bn.gamma":
            value = 1.0 + 0.1 * rng.normal(size=shape)
        elif name == "bn.beta":
            value = 0.1 * rng.normal(size=shape)
        else:
            bound = 1.0 / np.sqrt(fan_in[layer])
            value = rng.uniform(-bound, bound, size=shape)
        params[name] = np.asarray(value, dtype=dtype)
    return params


def initial_buffers(model: Makemore, dtype: str = "float64") -> dict[str, np.ndarray]:
    """BatchNorm1d's buffers as torch creates them: μ̂ = 0, σ̂² = 1, t = 0."""
    return {
        "running_mean": np.zeros(model.hidden, dtype=dtype),
        "running_var": np.ones(model.hidden, dtype=dtype),
        "num_batches_tracked": np.asarray(0, dtype=np.int64),
    }


class HandMakemore:
    """The hand side of a makemore run: its own parameters and BatchNorm buffers."""

    def __init__(
        self,
        model: Makemore,
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
        self.X = np.asarray(X, dtype=np.int64)  # not ``x``: the inputs are indices, not variables
        self.Y = np.asarray(Y, dtype=np.int64)
        self.batches = batches
        self.buffers = initial_buffers(model, dtype)
        self.state = optim.init_state(optimizer, self._params)
        self.symbols = {name: symbol for name, _, symbol in param_table(model)}
        self.internals: dict[str, np.ndarray] = {}  # the last step's HAND_ONLY terms

    def params(self) -> dict[str, np.ndarray]:
        return dict(self._params)

    def load_params(self, params: dict[str, np.ndarray]) -> None:
        self._params = {name: np.asarray(value, dtype=self.dtype) for name, value in params.items()}

    def step(self, step: int) -> StepTrace:
        """Run training step ``step`` (1-based) and return its terms."""
        m, p = self.model, self._params
        trace = StepTrace(step)
        rows = np.asarray(self.batches[step - 1])  # type: ignore[index]
        Xb, Yb = self.X[rows], self.Y[rows]
        n = Xb.shape[0]

        # forward (the terms up to the buffers are new arrays of this step, never written to: uncopied)
        emb, emb_cache = embedding.forward(Xb, {"weight": p["emb.C"]})  # C[Xb]   N,3,10
        embcat = emb.reshape(n, -1)  # N,30
        hprebn, hidden_cache = dense.forward(embcat, {"W": p["hidden.W1"]})  # N,H
        bn_params = {"weight": p["bn.gamma"], "bias": p["bn.beta"], **self.buffers}
        hpreact, bn_cache = normalization.batchnorm_forward(
            hprebn, bn_params, dims=1, training=True, eps=m.eps, momentum=m.momentum
        )  # γ bnraw + β   N,H
        h, act_cache = activations.forward("tanh", hpreact)  # N,H
        logits, output_cache = dense.forward(h, {"W": p["output.W2"], "b": p["output.b2"]})  # N,27
        trace.add("emb.emb", "emb = C[Xb]", "forward", emb, copy=False)
        trace.add("emb.embcat", "embcat", "forward", embcat, copy=False)
        trace.add("hidden.hprebn", "hprebn = embcat W1ᵀ", "forward", hprebn, copy=False)
        trace.add("bn.hpreact", "hpreact = γ bnraw + β", "forward", hpreact, copy=False)
        trace.add("act.h", "h = tanh(hpreact)", "forward", h, copy=False)
        trace.add("output.logits", "logits = h W2ᵀ + b2", "forward", logits, copy=False)

        # loss
        targets = Yb.astype(self.dtype)[:, None]  # class ids as one float column (spec.Loss)
        L, loss_cache = losses.forward(CROSS_ENTROPY, logits, targets)
        trace.add("loss.L", "L = −mean logprobs[Yb]", "loss", L, copy=False)

        # backward
        dlogits = losses.backward(CROSS_ENTROPY, loss_cache)  # (probs − Y)/N   N,27
        trace.add("output.dL_dlogits", "∂L/∂logits", "backward", dlogits, copy=False)
        dh, output_grads = dense.backward(dlogits, output_cache)  # ∂L/∂h = ∂L/∂logits W2   N,H
        grads = {"output.W2": output_grads["W"], "output.b2": output_grads["b"]}
        trace.add("output.dL_dW2", "∂L/∂W2", "backward", grads["output.W2"], copy=False)
        trace.add("output.dL_db2", "∂L/∂b2", "backward", grads["output.b2"], copy=False)
        trace.add("act.dL_dh", "∂L/∂h", "backward", dh, copy=False)
        dhpreact = activations.backward("tanh", dh, act_cache)  # ∂L/∂h ⊙ (1 − h²)   N,H
        trace.add("bn.dL_dhpreact", "∂L/∂hpreact", "backward", dhpreact, copy=False)
        dhprebn, bn_grads = normalization.batchnorm_backward(dhpreact, bn_cache)  # three terms   N,H
        grads["bn.gamma"], grads["bn.beta"] = bn_grads["weight"], bn_grads["bias"]
        trace.add("bn.dL_dgamma", "∂L/∂γ", "backward", grads["bn.gamma"], copy=False)
        trace.add("bn.dL_dbeta", "∂L/∂β", "backward", grads["bn.beta"], copy=False)
        trace.add("hidden.dL_dhprebn", "∂L/∂hprebn", "backward", dhprebn, copy=False)
        dembcat, hidden_grads = dense.backward(dhprebn, hidden_cache, has_bias=False)  # ∂L/∂hprebn W1
        grads["hidden.W1"] = hidden_grads["W"]
        trace.add("hidden.dL_dW1", "∂L/∂W1", "backward", grads["hidden.W1"], copy=False)
        trace.add("emb.dL_dembcat", "∂L/∂embcat", "backward", dembcat, copy=False)
        demb = dembcat.reshape(emb.shape)  # N,3,10
        trace.add("emb.dL_demb", "∂L/∂emb", "backward", demb, copy=False)
        _, emb_grads = embedding.backward(demb, emb_cache)  # scatter-add over Xb   27,10
        grads["emb.C"] = emb_grads["weight"]
        trace.add("emb.dL_dC", "∂L/∂C", "backward", grads["emb.C"], copy=False)

        self.internals = self._internals(bn_cache, loss_cache, dhpreact, n)
        self.buffers = dict(bn_cache.state)  # the running statistics after this forward
        for (name, symbol), key in zip(
            BUFFERS, ("running_mean", "running_var", "num_batches_tracked"), strict=True
        ):
            trace.add(name, symbol, "state", self.buffers[key])
        self._update(trace, grads)
        return trace

    def _internals(
        self,
        bn_cache: normalization.BatchNormCache,
        loss_cache: losses.LossCache,
        dhpreact: np.ndarray,
        n: int,
    ) -> dict[str, np.ndarray]:
        """The HAND_ONLY terms of this step (torch computes them inside fused kernels)."""
        logprobs = loss_cache.logp  # N,27
        dlogprobs = -loss_cache.T / n  # ∂L/∂logprobs: −1/N at each target, 0 elsewhere   N,27
        return {
            "bnmean": bn_cache.bnmean.reshape(-1),
            "bnvar": bn_cache.bnvar.reshape(-1),
            "bnraw": bn_cache.bnraw,
            "logprobs": logprobs,
            "probs": np.exp(logprobs),
            "dL_dlogprobs": dlogprobs,
            "dL_dbnraw": dhpreact * self._params["bn.gamma"],  # ∂L/∂bnraw = γ ∂L/∂hpreact
        }

    def _update(self, trace: StepTrace, grads: dict[str, np.ndarray]) -> None:
        """Clip, step and trace the optimizer, as the dense stack does it (hand/network.py)."""
        grads = {name: grads[name] for name in self._params}  # the parameters' order
        grads = optim.clip_and_trace(trace, self.optimizer, grads, self.symbols)
        self._params, self.state = optim.step_and_trace(
            trace, self.optimizer, self._params, grads, self.state, self.symbols
        )  # the lr of the next step
