r"""A shared trunk with two heads trained jointly, by hand. Pure NumPy; never imports torch.

The model (torch's modules in brackets):

    z⁽trunk⁾ = x W⁽trunk⁾ᵀ + b⁽trunk⁾,   a⁽trunk⁾ = f(z⁽trunk⁾)          [nn.Linear, activation]
    head 1 (regression):     ŷ₁ = z⁽head1⁾ = a⁽trunk⁾ W⁽head1⁾ᵀ + b⁽head1⁾   [nn.Linear]
    head 2 (classification): z⁽head2⁾ = a⁽trunk⁾ W⁽head2⁾ᵀ + b⁽head2⁾       [nn.Linear], logits

    L₁ = loss₁(ŷ₁, y₁)          squared error (nn.MSELoss; or l1, smooth_l1, huber)
    L₂ = loss₂(z⁽head2⁾, t)     cross-entropy on the logits against class ids (nn.CrossEntropyLoss)
    L  = w₁L₁ + w₂L₂

Backward. Each head sees only its own loss, scaled by its weight:

.. math::

    \frac{\partial L}{\partial z^{(h1)}} = w_1 \frac{\partial L_1}{\partial \hat y_1}, \qquad
    \frac{\partial L}{\partial z^{(h2)}} = w_2 \frac{\partial L_2}{\partial z^{(h2)}}

and the trunk's activation feeds both heads, so its gradient is the **sum** of what flows back
from each (the multivariate chain rule over the two paths a⁽trunk⁾ → L):

.. math::

    \underbrace{\frac{\partial L}{\partial a^{(t)}}}_{\texttt{trunk.dL\_da}}
    = \underbrace{w_1 \frac{\partial L_1}{\partial a^{(t)}}}_{\texttt{trunk.dL1\_da}}
    + \underbrace{w_2 \frac{\partial L_2}{\partial a^{(t)}}}_{\texttt{trunk.dL2\_da}}
    = \frac{\partial L}{\partial z^{(h1)}} W^{(h1)} + \frac{\partial L}{\partial z^{(h2)}} W^{(h2)}

then the trunk's own backward (∂L/∂z⁽trunk⁾ = ∂L/∂a⁽trunk⁾ ⊙ f′(z⁽trunk⁾), ∂L/∂W⁽trunk⁾, ...).
A trunk that received only one head's gradient would train the shared layer for one task and
leave the other head to fend for itself: the harness names that at ``trunk.dL_da``.

Terms, in computation order:

    forward   trunk.z, trunk.a, head1.z (= ŷ₁), head2.z (logits)
    loss      loss.L1, loss.L2, loss.L
    backward  head1.dL_dz, head1.dL_dW, head1.dL_db, trunk.dL1_da,
              head2.dL_dz, head2.dL_dW, head2.dL_db, trunk.dL2_da,
              trunk.dL_da, trunk.dL_dz, trunk.dL_dW, trunk.dL_db, input.dL_dx
    update    clip.* (with clipping), <param>_next ..., the optimizer's state terms

Targets: ``y`` holds head 1's ``outputs`` columns, then one column of class ids for head 2.
"""

from __future__ import annotations

import numpy as np

from handgrad.contract.multitask import Multitask, param_table
from handgrad.contract.trace import StepTrace
from handgrad.contract.training import Optimizer
from handgrad.hand import activations, dense, losses, optim


def init_params(model: Multitask, seed: int, dtype: str = "float64") -> dict[str, np.ndarray]:
    """U(−1/√fan_in, 1/√fan_in) for every weight and bias, as torch's nn.Linear (another generator)."""
    rng = np.random.default_rng(seed)
    params: dict[str, np.ndarray] = {}
    for name, shape, _ in param_table(model):
        n_in = model.sizes()[name.split(".")[0]][1]
        bound = 1.0 / np.sqrt(n_in)
        params[name] = rng.uniform(-bound, bound, size=shape).astype(dtype)
    return params


def join_heads(dL1_da: np.ndarray, dL2_da: np.ndarray) -> np.ndarray:
    """∂L/∂a⁽trunk⁾ = w₁∂L₁/∂a⁽trunk⁾ + w₂∂L₂/∂a⁽trunk⁾: the trunk feeds both heads, so both flow back."""
    return dL1_da + dL2_da  # N,H


class HandMultitask:
    """The hand side of a multitask run: its own parameters, stepped by hand-derived NumPy."""

    def __init__(
        self,
        model: Multitask,
        optimizer: Optimizer,
        params: dict[str, np.ndarray],
        x: np.ndarray,
        y: np.ndarray,
        batches: list[np.ndarray],
        dtype: str = "float64",
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.dtype = np.dtype(dtype)
        self._params = {name: np.asarray(value, dtype=self.dtype) for name, value in params.items()}
        self.x = np.asarray(x, dtype=self.dtype)
        self.y = np.asarray(y, dtype=self.dtype)
        self.batches = batches
        self.state = optim.init_state(optimizer, self._params)
        self.symbols = {name: symbol for name, _, symbol in param_table(model)}

    def params(self) -> dict[str, np.ndarray]:
        return dict(self._params)

    def load_params(self, params: dict[str, np.ndarray]) -> None:
        self._params = {name: np.asarray(value, dtype=self.dtype) for name, value in params.items()}

    def _part(self, part: str) -> dict[str, np.ndarray]:
        return {"W": self._params[f"{part}.W"], "b": self._params[f"{part}.b"]}

    def step(self, step: int) -> StepTrace:
        """Run training step ``step`` (1-based) and return its terms."""
        m = self.model
        w1, w2 = m.weights
        trace = StepTrace(step)
        rows = self.batches[step - 1]
        x, y = self.x[rows], self.y[rows]
        y1, y2 = y[:, : m.outputs], y[:, m.outputs :]  # N,R  N,1 (class ids)

        # forward (every term below is a new array of this step, never written to: added uncopied)
        z_t, trunk_cache = dense.forward(x, self._part("trunk"))  # N,H
        a_t, act_cache = activations.forward(m.activation, z_t, m.slope)  # N,H
        z_1, head1_cache = dense.forward(a_t, self._part("head1"))  # N,R
        z_2, head2_cache = dense.forward(a_t, self._part("head2"))  # N,C
        trace.add("trunk.z", "z⁽trunk⁾", "forward", z_t, copy=False)
        trace.add("trunk.a", "a⁽trunk⁾", "forward", a_t, copy=False)
        trace.add("head1.z", "ŷ₁", "forward", z_1, copy=False)
        trace.add("head2.z", "z⁽head2⁾", "forward", z_2, copy=False)

        # loss
        L1, loss1_cache = losses.forward(m.loss1, z_1, y1)
        L2, loss2_cache = losses.forward(m.loss2, z_2, y2)
        L = w1 * L1 + w2 * L2  # L = w₁L₁ + w₂L₂
        trace.add("loss.L1", "L₁", "loss", L1, copy=False)
        trace.add("loss.L2", "L₂", "loss", L2, copy=False)
        trace.add("loss.L", "L = w₁L₁ + w₂L₂", "loss", L, copy=False)

        # backward: each head from its own weighted loss, then the trunk from both
        grads: dict[str, np.ndarray] = {}
        dz_1 = losses.backward(m.loss1, loss1_cache, w1)  # ∂L/∂z⁽h1⁾ = w₁ ∂L₁/∂ŷ₁   N,R
        trace.add("head1.dL_dz", "∂L/∂z⁽head1⁾", "backward", dz_1, copy=False)
        dL1_da, head1_grads = dense.backward(dz_1, head1_cache)  # w₁∂L₁/∂a = ∂L/∂z⁽h1⁾ W⁽h1⁾   N,H
        self._add_param_grads(trace, grads, "head1", head1_grads)
        trace.add("trunk.dL1_da", "w₁·∂L₁/∂a⁽trunk⁾", "backward", dL1_da, copy=False)

        dz_2 = losses.backward(m.loss2, loss2_cache, w2)  # ∂L/∂z⁽h2⁾ = w₂ ∂L₂/∂z⁽h2⁾   N,C
        trace.add("head2.dL_dz", "∂L/∂z⁽head2⁾", "backward", dz_2, copy=False)
        dL2_da, head2_grads = dense.backward(dz_2, head2_cache)  # w₂∂L₂/∂a = ∂L/∂z⁽h2⁾ W⁽h2⁾   N,H
        self._add_param_grads(trace, grads, "head2", head2_grads)
        trace.add("trunk.dL2_da", "w₂·∂L₂/∂a⁽trunk⁾", "backward", dL2_da, copy=False)

        dL_da = join_heads(dL1_da, dL2_da)  # ∂L/∂a⁽trunk⁾ = w₁∂L₁/∂a + w₂∂L₂/∂a   N,H
        trace.add("trunk.dL_da", "∂L/∂a⁽trunk⁾", "backward", dL_da, copy=False)
        dz_t = activations.backward(m.activation, dL_da, act_cache)  # ∂L/∂z = ∂L/∂a ⊙ f′(z)   N,H
        trace.add("trunk.dL_dz", "∂L/∂z⁽trunk⁾", "backward", dz_t, copy=False)
        dx, trunk_grads = dense.backward(dz_t, trunk_cache)  # ∂L/∂x = ∂L/∂z W   N,in
        self._add_param_grads(trace, grads, "trunk", trunk_grads)
        trace.add("input.dL_dx", "∂L/∂x", "backward", dx, copy=False)

        # update, as the dense stack does it (hand/network.py)
        grads = {name: grads[name] for name in self._params}  # the parameters' order
        grads = optim.clip_and_trace(trace, self.optimizer, grads, self.symbols)
        self._params, self.state = optim.step_and_trace(
            trace, self.optimizer, self._params, grads, self.state, self.symbols
        )  # the lr of the next step
        return trace

    def _add_param_grads(
        self, trace: StepTrace, grads: dict[str, np.ndarray], part: str, part_grads: dict[str, np.ndarray]
    ) -> None:
        for short in ("W", "b"):
            grads[f"{part}.{short}"] = part_grads[short]
            symbol = f"∂L/∂{self.symbols[f'{part}.{short}']}"
            trace.add(f"{part}.dL_d{short}", symbol, "backward", part_grads[short], copy=False)
