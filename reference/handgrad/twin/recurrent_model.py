"""The torch twin of a recurrent model: ``nn.RNN`` / ``nn.GRU`` / ``nn.LSTM``, an ``nn.Linear``
head, the loss module, ``torch.nn.utils.clip_grad_norm_`` and ``torch.optim``.

One step is an ordinary torch training step on real modules: pack the padded batch
(``pack_padded_sequence(enforce_sorted=False)``) when it has lengths, run the fused recurrent
module, ``pad_packed_sequence(total_length=T)``, the head on h_n of the top layer (many-to-one) or
on the output at every step (many-to-many), the loss module (many-to-many: on the valid steps,
selected by a boolean mask, so a ``mean`` counts only real steps), ``backward()``, optionally
``clip_grad_norm_``, ``optimizer.step()``.

The fused module keeps its gates to itself, so the gate terms come from the ``torch-ops``
reference of :mod:`handgrad.twin.recurrent`, run on the same parameters and input and driven by
the gradients torch's own backward delivered to the module's outputs (``output.grad``,
``h_n.grad``); it is checked against what the module exposes (output, h_n, c_n, every parameter
gradient, ∂L/∂x, ∂L/∂h0, ∂L/∂c0) at every step, and a :class:`~handgrad.twin.recurrent.ReferenceMismatch`
stops the run otherwise. Every term records its source: ``torch.nn`` (module outputs, ``.grad``),
``torch-ops`` (the gates), ``torch.nn.utils`` (clipping), ``torch.optim`` (optimizer state).
Nothing is recomputed by hand: values are torch's tensors, only sliced and transposed.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from handgrad.contract.names import sub
from handgrad.contract.recurrent import (
    HEAD,
    Batch,
    RecurrentModel,
    SequenceData,
    check_targets,
    param_table,
    torch_names,
)
from handgrad.contract.tolerance import tolerance_for
from handgrad.contract.trace import StepTrace
from handgrad.contract.training import Loss, Optimizer
from handgrad.twin import configuration, losses, optim
from handgrad.twin import recurrent as tw
from handgrad.twin.device import tf32_of, threads_of, under_precision

SOURCE = "torch.nn"


def _numpy(tensor: torch.Tensor | None) -> np.ndarray | None:
    """A copy on the host (what :meth:`TwinRecurrent.params` hands out)."""
    return None if tensor is None else tensor.detach().cpu().numpy().copy()


def _view(tensor: torch.Tensor | None) -> np.ndarray | None:
    """The tensor's numbers on the host, a view of a CPU tensor (``.detach().cpu().numpy()``):
    :meth:`StepTrace.add` copies unless told that nothing writes to it later."""
    return None if tensor is None else tensor.numpy(force=True)


def _activation(model: RecurrentModel) -> nn.Module:
    return {
        "sigmoid": nn.Sigmoid,
        "tanh": nn.Tanh,
        "relu": nn.ReLU,
        "identity": nn.Identity,
        "leaky_relu": lambda: nn.LeakyReLU(model.slope),
    }[model.output_activation]()


class RecurrentNet(nn.Module):
    """The twin's model: ``rnn`` (the fused recurrent module) and ``head`` (``nn.Linear``)."""

    def __init__(self, model: RecurrentModel, dtype: torch.dtype) -> None:
        super().__init__()
        self.rnn = tw.build_module(
            model.cell, model.input_size, model.hidden_size, model.num_layers, model.batch_first, dtype
        )
        self.head = nn.Linear(model.hidden_size, model.output_size, dtype=dtype)
        self.activation = _activation(model)


def state_dict_keys(model: RecurrentModel) -> dict[str, list[str]]:
    """Hand parameter name → the torch ``state_dict`` keys it maps onto (for the workbook)."""
    return {name: [key] for name, key in torch_names(model).items()}


class TwinRecurrent:
    """The torch side of a recurrent run: its own modules, loss module and ``torch.optim``."""

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
        dtype: str = "float64",
        device: str = "cpu",
        net: nn.Module | None = None,
    ) -> None:
        form = check_targets(model, loss, data)
        self.model = model
        self.data = data
        self.batches = batches
        self.h0, self.c0 = h0, c0
        self.dtype = getattr(torch, dtype)
        self.device = torch.device(device)
        self.tf32 = tf32_of(device)  # TF32 in float32 matmuls and cuDNN RNNs on cuda (twin/device.py)
        self.threads = threads_of(device)  # torch's intra-op threads per step
        # ``net``: the user's own modules (copies, with ``rnn``, ``head``, ``activation``: check_model)
        self.net = (RecurrentNet(model, self.dtype) if net is None else net.to(self.dtype)).to(self.device)
        self.loss_module = losses.build(loss, self.dtype, index_targets=form == "index", device=self.device)
        self.optimizer_spec = optimizer
        self.names = torch_names(model)  # hand name -> torch parameter name
        self.symbols = {name: symbol for name, _, symbol in param_table(model)}
        self.load_params(params)
        self.optimizer = optim.build(optimizer, list(self.net.parameters()))
        self.scheduler = optim.build_scheduler(optimizer, self.optimizer)
        self._by_name = dict(self.net.named_parameters())
        self.configuration = {  # read back from the torch objects (twin/configuration.py)
            **configuration.tensor_configuration(self.net.parameters()),
            **configuration.recurrent_configuration(self.net.rnn),
            **configuration.layer_configuration(HEAD, self.net.head),
            **configuration.layer_configuration(HEAD, self.net.activation),
            **configuration.loss_configuration(self.loss_module),
            **configuration.training_configuration(self.optimizer, self.scheduler, optimizer),
        }

    def _tensor(self, array: np.ndarray, requires_grad: bool = False) -> torch.Tensor:
        return torch.tensor(array, dtype=self.dtype, device=self.device, requires_grad=requires_grad)

    def load_params(self, params: dict[str, np.ndarray]) -> None:
        own = dict(self.net.named_parameters())
        with torch.no_grad():
            for hand_name, key in self.names.items():
                own[key].copy_(torch.as_tensor(np.asarray(params[hand_name])))

    def params(self) -> dict[str, np.ndarray]:
        own = dict(self.net.named_parameters())
        return {hand_name: _numpy(own[key]) for hand_name, key in self.names.items()}

    def state_dict_keys(self) -> dict[str, list[str]]:
        """Hand parameter name → the torch ``state_dict`` key (the workbook's Parameters sheet)."""
        return state_dict_keys(self.model)

    def _grads(self) -> dict[str, np.ndarray]:
        """Views of the parameters' ``.grad`` (the trace copies them: clipping scales them in place)."""
        return {hand_name: _view(self._by_name[key].grad) for hand_name, key in self.names.items()}

    @under_precision  # on cuda: TF32 off unless --tf32, the previous flags restored after the step
    def step(self, step: int) -> StepTrace:
        model, net, trace = self.model, self.net, StepTrace(step)
        batch = Batch(model, self.data, self.batches[step - 1], self.h0, self.c0)
        rec_params = {  # views: run_ops copies them into leaves of its own before the update
            key[len("rnn.") :]: _view(p) for key, p in net.named_parameters() if key.startswith("rnn.")
        }

        optim.zero_grad(self.optimizer)
        x = self._tensor(batch.x, requires_grad=True)
        h0 = None if batch.h0 is None else self._tensor(batch.h0, requires_grad=True)
        c0 = None if batch.c0 is None else self._tensor(batch.c0, requires_grad=True)
        hx = None if h0 is None else ((h0, c0) if model.cell == "lstm" else h0)
        T = batch.active.shape[0]
        if batch.lengths is None:
            output, state = net.rnn(x, hx)
        else:
            packed = pack_padded_sequence(  # lengths stay on the CPU, as torch requires
                x, torch.as_tensor(batch.lengths), batch_first=model.batch_first, enforce_sorted=False
            )
            packed_out, state = net.rnn(packed, hx)
            output, _ = pad_packed_sequence(packed_out, batch_first=model.batch_first, total_length=T)
        h_n, c_n = state if model.cell == "lstm" else (state, None)
        for tensor in (output, h_n, c_n):
            if tensor is not None:
                tensor.retain_grad()
        if model.head == "many-to-one":
            z = net.head(h_n[-1])  # N,O
            yhat = net.activation(z)
            z.retain_grad()
            yhat.retain_grad()
            L = self.loss_module(yhat, self._tensor(batch.y))
        else:
            z = net.head(output)  # T,N,O or N,T,O
            yhat = net.activation(z)
            z.retain_grad()
            yhat.retain_grad()
            valid = batch.active.T if model.batch_first else batch.active  # like output's first dims
            mask = torch.as_tensor(valid, device=self.device)
            y = self._tensor(batch.y.transpose(1, 0, 2) if model.batch_first else batch.y)
            L = self.loss_module(yhat[mask], y[mask])  # the valid steps only
        L.backward()

        # the torch-ops reference, driven by the gradients torch delivered to the module's outputs,
        # on the module's device (and precision: with --tf32 both sides of the check use TF32)
        # views of what this step made; the parameter gradients are copied by the trace (clipping
        # scales them in place), the rest nothing writes to again
        fused = tw.FusedResult(
            _view(output),
            _view(h_n),
            _view(c_n),
            {key: _view(net.rnn.get_parameter(key).grad) for key in rec_params},
            _view(x.grad),
            _view(h0.grad) if h0 is not None else None,
            _view(c0.grad) if c0 is not None else None,
        )
        upstream = (_view(output.grad), _view(h_n.grad), None if c_n is None else _view(c_n.grad))
        ops = tw.run_ops(
            model.cell,
            rec_params,
            batch.x,
            upstream,
            lengths=batch.lengths,
            h0=batch.h0,
            c0=batch.c0,
            batch_first=model.batch_first,
            dtype=self.dtype,
            device=self.device,
        )
        tw.check_agreement(fused, ops, self.dtype, tolerance_for(self.dtype, tf32=self.tf32))
        lengths = batch.active.sum(axis=0)
        result = tw.TwinResult(
            model.cell, lengths, batch.active, model.batch_first, batch.h0 is not None, fused, ops
        )
        for layer in range(model.num_layers):
            tw.add_forward_terms(trace, result, layer)

        active = batch.active
        if model.head == "many-to-one":
            trace.add(f"{HEAD}.z", "z_y", "forward", _view(z), SOURCE, copy=False)
            trace.add(f"{HEAD}.a", "ŷ", "forward", _view(yhat), SOURCE, copy=False)
        else:
            z3, yhat3 = self._time_major(z), self._time_major(yhat)
            for t in range(1, T + 1):
                m = active[t - 1]
                if m.any():
                    trace.add(f"{HEAD}.z[{t}]", f"z_y{sub(t)}", "forward", z3[t - 1][m], SOURCE, copy=False)
                    trace.add(f"{HEAD}.a[{t}]", f"ŷ{sub(t)}", "forward", yhat3[t - 1][m], SOURCE, copy=False)
        trace.add("loss.L", "L", "loss", _view(L), SOURCE, copy=False)

        grads = self._grads()  # before clipping
        if model.head == "many-to-one":
            trace.add(f"{HEAD}.dL_da", "∂L/∂ŷ", "backward", _view(yhat.grad), SOURCE, copy=False)
            trace.add(f"{HEAD}.dL_dz", "∂L/∂z_y", "backward", _view(z.grad), SOURCE, copy=False)
            trace.add(f"{HEAD}.dL_dW", "∂L/∂W_y", "backward", grads[f"{HEAD}.W"], SOURCE)
            trace.add(f"{HEAD}.dL_db", "∂L/∂b_y", "backward", grads[f"{HEAD}.b"], SOURCE)
            trace.add(f"{HEAD}.dL_dx", "∂L/∂h_n", "backward", _view(h_n.grad[-1]), SOURCE, copy=False)
        else:
            da3, dz3 = self._time_major(yhat.grad), self._time_major(z.grad)
            dx3 = self._time_major(output.grad)  # ∂L/∂output: only the head reads the output
            per_step = (("da", "∂L/∂ŷ", da3), ("dz", "∂L/∂z_y", dz3), ("dx", "∂L/∂x_y", dx3))
            for t in range(T, 0, -1):
                m = active[t - 1]
                if not m.any():
                    continue
                for short, symbol, values in per_step:
                    name, at = f"{HEAD}.dL_{short}[{t}]", f"{symbol}{sub(t)}"
                    trace.add(name, at, "backward", values[t - 1][m], SOURCE, copy=False)
            trace.add(f"{HEAD}.dL_dW", "∂L/∂W_y", "backward", grads[f"{HEAD}.W"], SOURCE)
            trace.add(f"{HEAD}.dL_db", "∂L/∂b_y", "backward", grads[f"{HEAD}.b"], SOURCE)
        for layer in reversed(range(model.num_layers)):
            tw.add_backward_terms(trace, result, layer)

        def read(pick: Callable[[torch.nn.Parameter], torch.Tensor]) -> dict[str, np.ndarray]:
            return {name: _view(pick(self._by_name[torch_name])) for name, torch_name in self.names.items()}

        spec = self.optimizer_spec
        optim.clip_and_trace(trace, spec, list(net.parameters()), read, self.symbols)
        optim.step_and_trace(trace, spec, self.optimizer, self.scheduler, read, self.symbols, SOURCE)
        return trace

    def _time_major(self, tensor: torch.Tensor) -> np.ndarray:
        array = _view(tensor)
        return array.transpose(1, 0, 2) if self.model.batch_first else array
