"""The torch twin of :mod:`handgrad.hand.multitask`: a small ``nn.Module`` with a trunk and two heads.

Built from real modules (``nn.Linear`` trunk, the activation module, two ``nn.Linear`` heads,
``nn.MSELoss`` and ``nn.CrossEntropyLoss``). Every term is what torch computed:

* forward terms: the modules' outputs (``retain_grad()`` on each, so ``.grad`` holds ∂L/∂out);
* ``loss.L`` = ``w1 * L1 + w2 * L2`` as torch tensors; ``L.backward()`` fills every ``.grad``;
* each head's contribution to the trunk's gradient, ``trunk.dL1_da`` and ``trunk.dL2_da``:
  ``torch.autograd.grad(w1 * L1, a_trunk, retain_graph=True)`` (and for ``w2 * L2``) on the same
  graph, before ``backward()`` (``autograd.grad`` leaves every ``.grad`` untouched);
* ``trunk.dL_da``: ``a_trunk.grad`` after ``L.backward()``, the sum autograd accumulated itself;
* parameters and optimizer state as the dense twin reads them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from handgrad.contract.multitask import PARTS, Multitask, param_table
from handgrad.contract.spec import Activation, Stage
from handgrad.contract.trace import StepTrace
from handgrad.contract.training import Optimizer
from handgrad.twin import configuration, losses, optim
from handgrad.twin.device import tf32_of, threads_of, under_precision
from handgrad.twin.network import _activation_module

SOURCE = "torch.nn"


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    """A C-ordered host copy of its own: the trace keeps it as it is (``copy=False``)."""
    return tensor.detach().cpu().numpy().copy()


class MultitaskModule(torch.nn.Module):
    """trunk (Linear + activation) → head1 (Linear) and head2 (Linear); returns every output."""

    def __init__(self, model: Multitask) -> None:
        super().__init__()
        sizes = model.sizes()
        self.trunk = torch.nn.Linear(sizes["trunk"][1], sizes["trunk"][0])
        self.act = _activation_module(Stage("trunk", Activation(model.activation, model.slope), 1))
        self.head1 = torch.nn.Linear(sizes["head1"][1], sizes["head1"][0])
        self.head2 = torch.nn.Linear(sizes["head2"][1], sizes["head2"][0])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        z_t = self.trunk(x)
        a_t = self.act(z_t)
        return z_t, a_t, self.head1(a_t), self.head2(a_t)


def state_dict_keys(model: Multitask) -> dict[str, list[str]]:
    """Hand parameter name → the torch ``state_dict`` key (``trunk.W`` → ``trunk.weight``)."""
    return {name: [name.replace(".W", ".weight").replace(".b", ".bias")] for name, _, _ in param_table(model)}


class TwinMultitask:
    """The torch side of a multitask run: its own module, loss modules and ``torch.optim``."""

    def __init__(
        self,
        model: Multitask,
        optimizer: Optimizer,
        params: dict[str, np.ndarray],
        x: np.ndarray,
        y: np.ndarray,
        batches: list[np.ndarray],
        dtype: str = "float64",
        device: str = "cpu",
    ) -> None:
        self.spec = model
        self.torch_dtype = getattr(torch, dtype)
        self.device = torch.device(device)
        self.tf32 = tf32_of(device)  # TF32 in float32 matmuls on cuda (twin/device.py)
        self.threads = threads_of(device)  # torch's intra-op threads per step
        self.module = MultitaskModule(model).to(self.torch_dtype).to(self.device)
        self.loss1 = losses.build(model.loss1, self.torch_dtype, device=self.device)
        self.loss2 = losses.build(model.loss2, self.torch_dtype, index_targets=True, device=self.device)
        self.optimizer_spec = optimizer
        self.x = torch.as_tensor(np.asarray(x), dtype=self.torch_dtype, device=self.device)
        self.y = torch.as_tensor(np.asarray(y), dtype=self.torch_dtype, device=self.device)
        self.batches = batches  # rows of step k, produced when step k asks (a run may be 10⁹ steps)
        self.symbols = {name: symbol for name, _, symbol in param_table(model)}
        self.load_params(params)
        self.optimizer = optim.build(optimizer, list(self.module.parameters()))
        self.scheduler = optim.build_scheduler(optimizer, self.optimizer)
        module = self.module
        self.configuration = {  # read back from the torch objects (twin/configuration.py)
            **configuration.tensor_configuration(module.parameters()),
            **configuration.layer_configuration("trunk", module.trunk),
            **configuration.layer_configuration("trunk", module.act),
            **configuration.layer_configuration("head1", module.head1),
            **configuration.layer_configuration("head2", module.head2),
            **configuration.loss_configuration(self.loss1, "loss1"),
            **configuration.loss_configuration(self.loss2, "loss2"),
            **configuration.training_configuration(self.optimizer, self.scheduler, optimizer),
        }

    def _named(self) -> dict[str, torch.nn.Parameter]:
        """Hand name → the module's parameter, in ``parameters()`` order."""
        named: dict[str, torch.nn.Parameter] = {}
        for part in PARTS:
            linear = getattr(self.module, part)
            named[f"{part}.W"], named[f"{part}.b"] = linear.weight, linear.bias
        return named

    def load_params(self, params: dict[str, np.ndarray]) -> None:
        with torch.no_grad():
            for name, param in self._named().items():
                param.copy_(torch.as_tensor(np.asarray(params[name])))

    def state_dict_keys(self) -> dict[str, list[str]]:
        """Hand parameter name → the torch ``state_dict`` key (the workbook's Parameters sheet)."""
        return state_dict_keys(self.spec)

    def params(self) -> dict[str, np.ndarray]:
        return {name: _numpy(param) for name, param in self._named().items()}

    @under_precision  # on cuda: TF32 off unless --tf32, the previous flags restored after the step
    def step(self, step: int) -> StepTrace:
        trace = StepTrace(step)
        w1, w2 = self.spec.weights
        rows = torch.as_tensor(self.batches[step - 1], device=self.device)
        x = self.x[rows].clone().requires_grad_(True)
        y = self.y[rows]
        y1, y2 = y[:, : self.spec.outputs], y[:, self.spec.outputs :]

        optim.zero_grad(self.optimizer)
        z_t, a_t, z_1, z_2 = self.module(x)
        L1 = self.loss1(z_1, y1)
        L2 = self.loss2(z_2, y2)
        weighted1, weighted2 = w1 * L1, w2 * L2
        L = weighted1 + weighted2
        (dL1_da,) = torch.autograd.grad(weighted1, a_t, retain_graph=True)  # w₁∂L₁/∂a, by torch
        (dL2_da,) = torch.autograd.grad(weighted2, a_t, retain_graph=True)  # w₂∂L₂/∂a, by torch
        # NOTE: retain_grad() only now: its hook also fires inside autograd.grad, so a .grad retained
        # before the two calls above would hold w₁∂L₁/∂z once more on top of backward's ∂L/∂z.
        for output in (z_t, a_t, z_1, z_2):
            output.retain_grad()
        L.backward()

        trace.add("trunk.z", "z⁽trunk⁾", "forward", _numpy(z_t), SOURCE, copy=False)
        trace.add("trunk.a", "a⁽trunk⁾", "forward", _numpy(a_t), SOURCE, copy=False)
        trace.add("head1.z", "ŷ₁", "forward", _numpy(z_1), SOURCE, copy=False)
        trace.add("head2.z", "z⁽head2⁾", "forward", _numpy(z_2), SOURCE, copy=False)
        trace.add("loss.L1", "L₁", "loss", _numpy(L1), SOURCE, copy=False)
        trace.add("loss.L2", "L₂", "loss", _numpy(L2), SOURCE, copy=False)
        trace.add("loss.L", "L = w₁L₁ + w₂L₂", "loss", _numpy(L), SOURCE, copy=False)

        named = self._named()
        trace.add("head1.dL_dz", "∂L/∂z⁽head1⁾", "backward", _numpy(z_1.grad), SOURCE, copy=False)
        self._add_param_grads(trace, named, "head1")
        trace.add(
            "trunk.dL1_da", "w₁·∂L₁/∂a⁽trunk⁾", "backward", _numpy(dL1_da), "torch.autograd", copy=False
        )
        trace.add("head2.dL_dz", "∂L/∂z⁽head2⁾", "backward", _numpy(z_2.grad), SOURCE, copy=False)
        self._add_param_grads(trace, named, "head2")
        trace.add(
            "trunk.dL2_da", "w₂·∂L₂/∂a⁽trunk⁾", "backward", _numpy(dL2_da), "torch.autograd", copy=False
        )
        trace.add("trunk.dL_da", "∂L/∂a⁽trunk⁾", "backward", _numpy(a_t.grad), SOURCE, copy=False)
        trace.add("trunk.dL_dz", "∂L/∂z⁽trunk⁾", "backward", _numpy(z_t.grad), SOURCE, copy=False)
        self._add_param_grads(trace, named, "trunk")
        trace.add("input.dL_dx", "∂L/∂x", "backward", _numpy(x.grad), SOURCE, copy=False)

        def read(pick: Callable[[torch.nn.Parameter], torch.Tensor]) -> dict[str, np.ndarray]:
            return {name: _numpy(pick(param)) for name, param in named.items()}

        spec, parameters = self.optimizer_spec, list(self.module.parameters())
        optim.clip_and_trace(trace, spec, parameters, read, self.symbols)
        optim.step_and_trace(trace, spec, self.optimizer, self.scheduler, read, self.symbols, SOURCE)
        return trace

    def _add_param_grads(self, trace: StepTrace, named: dict[str, torch.nn.Parameter], part: str) -> None:
        for short in ("W", "b"):
            name = f"{part}.{short}"
            trace.add(
                f"{part}.dL_d{short}",
                f"∂L/∂{self.symbols[name]}",
                "backward",
                _numpy(named[name].grad),
                SOURCE,
            )
