r"""The hand side of a recurrent model: recurrent layer(s), a Dense head, a loss, clipping, an
optimizer; one training step emits every term. Pure NumPy; never imports torch.

The model (torch's modules in brackets):

    h_t^{(l)}  = cell(h_{t-1}^{(l)}, x_t^{(l)})         l = 1..L   [nn.RNN / nn.GRU / nn.LSTM]
    many-to-one:   z = W_y h_n^{(L)} + b_y   ŷ = act(z)             [nn.Linear, activation]
    many-to-many:  z_t = W_y h_t^{(L)} + b_y   ŷ_t = act(z_t)        at every step t

``h_n`` is each sequence's state at its *own* last step (``lengths``), as torch's packed
sequences give it. The loss is the foundation's (``handgrad.hand.losses``):

    many-to-one:   L = loss(ŷ, y) over the N sequences of the batch
    many-to-many:  L = loss(ŷ_valid, y_valid) over the valid steps only,

where ``valid`` are the (t, b) with t ≤ lengths[b]: padded steps are not in the loss at all, so a
``mean`` reduction divides by the number of *real* steps times the output size,
``n = O · Σ_b lengths[b]``, not by ``O·N·T``. (The twin does the same through torch modules:
``loss_module(ŷ[mask], y[mask])`` with a boolean mask.)

Backward: the loss gradient flows into the head (∂L/∂ŷ, ∂L/∂z, ∂L/∂W_y, ∂L/∂b_y, ∂L/∂x of the
head = W_yᵀ ∂L/∂z), then into the recurrent stack as ∂L/∂h_n of the top layer (many-to-one) or as
∂L/∂output at every valid step (many-to-many), then BPTT (``handgrad.hand.recurrent``).

Optional gradient clipping between backward and the update, as the optimizer spec says
(``Optimizer.clip``): by norm as ``torch.nn.utils.clip_grad_norm_`` (every gradient multiplied by
``min(max_norm / (‖g‖ + 1e-6), 1)``) or by value as ``clip_grad_value_`` (``handgrad.hand.clip``).
A learning-rate schedule (``Optimizer.schedule``) steps after each update, as torch's schedulers.

Terms, in computation order (``<rec>`` is ``rnn``, ``gru`` or ``lstm``; ``dense1`` the head):

    forward   <rec>1.<gates>[t], <rec>1.h[t], ..., <rec>1.h_n, (<rec>L ...)
              dense1.z, dense1.a                    (many-to-one)
              dense1.z[t], dense1.a[t]  t = 1..T     (many-to-many; rows active at t)
    loss      loss.L
    backward  dense1.dL_da, dense1.dL_dz, dense1.dL_dW, dense1.dL_db, dense1.dL_dx  (many-to-one)
              dense1.dL_da[t], dense1.dL_dz[t], dense1.dL_dx[t]  t = T..1 (∂L/∂x_y: at the head's
              input h_t, before the part carried back from t + 1), then
              dense1.dL_dW, dense1.dL_db                                          (many-to-many)
              <rec>L...<rec>1 BPTT terms (see handgrad.hand.recurrent)
    update    clip.total_norm (clipping by norm), clip.grad.<param> ... (with clipping)
              <param>_next ..., then the optimizer's state terms (and its lr in force)

Parameters are named ``<rec><l>.W_ih``, ``.W_hh``, ``.b_ih``, ``.b_hh`` (torch's
``weight_ih_l{l-1}`` ...) and ``dense1.W``, ``dense1.b`` (the head's ``weight``, ``bias``).
"""

from __future__ import annotations

import numpy as np

from handgrad.contract import names as naming
from handgrad.contract.names import sub
from handgrad.contract.recurrent import (
    HEAD,
    SHORT_NAMES,
    Batch,
    RecurrentModel,
    SequenceData,
    check_targets,
    param_table,
    recurrent_params,
)
from handgrad.contract.trace import StepTrace
from handgrad.contract.training import Loss, Optimizer
from handgrad.hand import activations, dense, losses, optim, recurrent_sequence


def init_params(model: RecurrentModel, seed: int) -> dict[str, np.ndarray]:
    """Seeded draw from torch's default families: every recurrent weight and bias from
    U(−1/√H, 1/√H) (``nn.RNNBase.reset_parameters``), the head from U(−1/√H, 1/√H) (``nn.Linear``
    with fan-in H). Other numbers than torch's (another generator), the same distribution."""
    rng = np.random.default_rng(seed)
    bound = 1.0 / np.sqrt(model.hidden_size)
    return {name: rng.uniform(-bound, bound, size=shape) for name, shape, _ in param_table(model)}


class HandRecurrent:
    """The hand side of a recurrent run: its own parameters, stepped by hand-derived NumPy."""

    def __init__(
        self,
        model: RecurrentModel,
        loss: Loss,
        optimizer: Optimizer,
        params: dict[str, np.ndarray],
        data: SequenceData,
        batches: list[np.ndarray],
        *,
        h0: np.ndarray | None = None,
        c0: np.ndarray | None = None,
    ) -> None:
        check_targets(model, loss, data)
        self.model = model
        self.loss = loss
        self.optimizer = optimizer
        self.data = data
        self.batches = batches
        self.h0, self.c0 = h0, c0
        self.table = param_table(model)
        self.symbols = {name: symbol for name, _, symbol in self.table}
        self._params = {name: np.array(params[name], dtype=np.float64) for name, _, _ in self.table}
        self.state = optim.init_state(optimizer, self._params)

    def params(self) -> dict[str, np.ndarray]:
        return dict(self._params)

    def load_params(self, params: dict[str, np.ndarray]) -> None:
        self._params = {name: np.asarray(params[name], dtype=np.float64) for name, _, _ in self.table}

    def step(self, step: int) -> StepTrace:
        """Run training step ``step`` (1-based) and return its terms."""
        model, trace = self.model, StepTrace(step)
        batch = Batch(model, self.data, self.batches[step - 1], self.h0, self.c0)
        out, cache = recurrent_sequence.forward(
            batch.x,
            recurrent_params(model, self._params),
            cell=model.cell,
            lengths=batch.lengths,
            h0=batch.h0,
            c0=batch.c0,
            batch_first=model.batch_first,
        )
        for layer in range(model.num_layers):
            recurrent_sequence.add_forward_terms(trace, cache, layer)

        head = {"W": self._params[f"{HEAD}.W"], "b": self._params[f"{HEAD}.b"]}
        act, slope = model.output_activation, model.slope
        active = batch.active  # T,N
        if model.head == "many-to-one":
            z, dense_cache = dense.forward(out.h_n[-1], head)  # N,O   z = W_y h_n + b_y
            yhat, act_cache = activations.forward(act, z, slope)  # N,O
            trace.add(f"{HEAD}.z", "z_y", "forward", z)
            trace.add(f"{HEAD}.a", "ŷ", "forward", yhat)
            L, loss_cache = losses.forward(self.loss, yhat, batch.y)
        else:
            output = out.output.transpose(1, 0, 2) if model.batch_first else out.output  # T,N,H
            T, N, H = output.shape
            z, dense_cache = dense.forward(output.reshape(T * N, H), head)  # T·N,O
            yhat, act_cache = activations.forward(act, z, slope)  # T·N,O
            z3, yhat3 = z.reshape(T, N, -1), yhat.reshape(T, N, -1)  # T,N,O
            for t in range(1, T + 1):
                m = active[t - 1]
                if m.any():
                    # a boolean index makes a new array: the trace keeps it uncopied
                    trace.add(f"{HEAD}.z[{t}]", f"z_y{sub(t)}", "forward", z3[t - 1][m], copy=False)
                    trace.add(f"{HEAD}.a[{t}]", f"ŷ{sub(t)}", "forward", yhat3[t - 1][m], copy=False)
            # NOTE: only the valid steps enter the loss: a mean divides by O · Σ lengths
            L, loss_cache = losses.forward(self.loss, yhat3[active], batch.y[active])  # n_valid,O
        trace.add("loss.L", "L", "loss", L)

        dyhat = losses.backward(self.loss, loss_cache)  # ∂L/∂ŷ, like ŷ (or its valid rows)
        if model.head == "many-to-one":
            trace.add(f"{HEAD}.dL_da", "∂L/∂ŷ", "backward", dyhat)
            dz = activations.backward(act, dyhat, act_cache)  # N,O   ∂L/∂z = ∂L/∂ŷ ⊙ act′(z)
            trace.add(f"{HEAD}.dL_dz", "∂L/∂z_y", "backward", dz)
            dx_head, head_grads = dense.backward(dz, dense_cache)  # N,H   ∂L/∂h_n = W_yᵀ ∂L/∂z
            trace.add(f"{HEAD}.dL_dW", "∂L/∂W_y", "backward", head_grads["W"])
            trace.add(f"{HEAD}.dL_db", "∂L/∂b_y", "backward", head_grads["b"])
            trace.add(f"{HEAD}.dL_dx", "∂L/∂h_n", "backward", dx_head)
            dh_n = np.zeros((model.num_layers, *dx_head.shape))  # L,N,H
            dh_n[-1] = dx_head  # only the top layer's h_n feeds the head
            upstream = (np.zeros_like(out.output), dh_n, None)
        else:
            dyhat3 = np.zeros_like(yhat3)  # T,N,O   padded steps are not in the loss: 0
            dyhat3[active] = dyhat
            dz = activations.backward(act, dyhat3.reshape(T * N, -1), act_cache)  # T·N,O
            dx_head, head_grads = dense.backward(dz, dense_cache)  # T·N,H   ∂L/∂h_t = W_yᵀ ∂L/∂z_t
            dz3, dx3 = dz.reshape(T, N, -1), dx_head.reshape(T, N, H)
            for t in range(T, 0, -1):
                m = active[t - 1]
                if m.any():
                    trace.add(
                        f"{HEAD}.dL_da[{t}]", f"∂L/∂ŷ{sub(t)}", "backward", dyhat3[t - 1][m], copy=False
                    )
                    trace.add(f"{HEAD}.dL_dz[{t}]", f"∂L/∂z_y{sub(t)}", "backward", dz3[t - 1][m], copy=False)
                    trace.add(f"{HEAD}.dL_dx[{t}]", f"∂L/∂x_y{sub(t)}", "backward", dx3[t - 1][m], copy=False)
            trace.add(f"{HEAD}.dL_dW", "∂L/∂W_y", "backward", head_grads["W"])
            trace.add(f"{HEAD}.dL_db", "∂L/∂b_y", "backward", head_grads["b"])
            upstream = (dx3.transpose(1, 0, 2) if model.batch_first else dx3, None, None)

        seq_grads, rec_grads = recurrent_sequence.backward(upstream, cache)
        for layer in reversed(range(model.num_layers)):
            recurrent_sequence.add_backward_terms(trace, cache, seq_grads, layer)

        grads = {
            f"{model.layer_name(layer)}.{short}": rec_grads[f"{base}_l{layer}"]
            for layer in range(model.num_layers)
            for short, base in zip(SHORT_NAMES, naming.PARAM_NAMES, strict=True)
        }
        grads[f"{HEAD}.W"], grads[f"{HEAD}.b"] = head_grads["W"], head_grads["b"]
        grads = optim.clip_and_trace(trace, self.optimizer, grads, self.symbols)

        self._params, self.state = optim.step_and_trace(
            trace, self.optimizer, self._params, grads, self.state, self.symbols
        )  # the lr of the next step
        return trace
