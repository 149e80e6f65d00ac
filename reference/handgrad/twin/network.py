"""The torch twin of a layer stack: real ``torch.nn`` modules in an ``nn.Sequential``.

Every term is read from what torch computed: module outputs from forward hooks (with
``retain_grad`` so their ``.grad`` holds ∂L/∂out after ``backward()``), parameter gradients from
``.grad``, updated parameters after ``optimizer.step()``, state from ``optimizer.state``. Names and
order are the hand side's (see :mod:`handgrad.contract.stack`); the only transformation is layout
(a folded bias is shown as ``[weight | bias]``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from handgrad.contract.conv_layers import (
    AvgPool2d,
    Conv2d,
    Dropout,
    Flatten,
    LocalResponseNorm,
    MaxPool2d,
    UserLayer,
)
from handgrad.contract.normalization import BatchNorm, LayerNorm
from handgrad.contract.spec import Activation, Dense, Network, Stage
from handgrad.contract.stack import LAYER_SHAPES, param_table, shape_of, stage_terms
from handgrad.contract.trace import StepTrace
from handgrad.contract.training import Loss, Optimizer
from handgrad.twin import configuration, diagnostics, losses, optim
from handgrad.twin.device import tf32_of, threads_of, under_precision

SOURCE = "torch.nn"


@dataclass(frozen=True)
class TwinOps:
    """How the twin builds one layer kind and maps its parameters to the hand side's names.

    ``to_torch(stage, hand)`` maps hand short names (``W``, ``b``, ``Wt``) to the module's
    ``state_dict`` keys; ``from_torch(stage, tensors)`` maps a dict of the module's parameter
    tensors (or their ``.grad``) back to hand short names.
    """

    build: Callable[[Stage], torch.nn.Module]
    to_torch: Callable[[Stage, dict[str, np.ndarray]], dict[str, np.ndarray]]
    from_torch: Callable[[Stage, dict[str, torch.Tensor]], dict[str, np.ndarray]]


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    """The tensor's numbers on the host; a view of a CPU tensor: the trace copies what torch may
    write to later (``StepTrace.add``), and :meth:`TwinNetwork.params` copies what it hands out."""
    return tensor.numpy(force=True)  # = .detach().cpu().numpy() for a real tensor, in one call


def _held(tensor: torch.Tensor) -> bool:
    """Whether torch may write to ``tensor`` after this step: a leaf (the batch, a parameter, a
    buffer) or a view of one. A module's output computed this step is not: autograd made it, and
    its retained ``.grad`` is a clone; the trace keeps those uncopied."""
    if tensor.grad_fn is None:
        return True
    base = tensor._base
    return base is not None and base.grad_fn is None


def _dense_to_torch(stage: Stage, hand: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if "Wt" in hand:
        return {"weight": hand["Wt"][:, :-1], "bias": hand["Wt"][:, -1]}
    return {"weight": hand["W"], **({"bias": hand["b"]} if "b" in hand else {})}


def _dense_from_torch(stage: Stage, tensors: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    if stage.layer.fold_bias:  # W̃ = [weight | bias]: a layout of torch's numbers, not a recomputation
        return {"Wt": np.concatenate([_numpy(tensors["weight"]), _numpy(tensors["bias"])[:, None]], 1)}
    result = {"W": _numpy(tensors["weight"])}
    if "bias" in tensors:
        result["b"] = _numpy(tensors["bias"])
    return result


def _activation_module(stage: Stage) -> torch.nn.Module:
    layer: Activation = stage.layer  # type: ignore[assignment]
    return {
        "sigmoid": torch.nn.Sigmoid,
        "tanh": torch.nn.Tanh,
        "relu": torch.nn.ReLU,
        "identity": torch.nn.Identity,
        "leaky_relu": lambda: torch.nn.LeakyReLU(layer.slope),
    }[layer.kind]()


def _no_params(stage: Stage, _: dict) -> dict:
    return {}


TWIN_OPS: dict[type, TwinOps] = {
    Dense: TwinOps(
        build=lambda stage: torch.nn.Linear(
            stage.layer.in_features, stage.layer.out_features, bias=stage.layer.bias
        ),
        to_torch=_dense_to_torch,
        from_torch=_dense_from_torch,
    ),
    Activation: TwinOps(build=_activation_module, to_torch=_no_params, from_torch=_no_params),
}


# --- the convolution family: real torch.nn modules (Dropout: torch's arithmetic, a shared mask) --


def _conv_to_torch(stage: Stage, hand: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"weight": hand["W"], **({"bias": hand["b"]} if "b" in hand else {})}


def _conv_from_torch(stage: Stage, tensors: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    result = {"W": _numpy(tensors["weight"])}
    if "bias" in tensors:
        result["b"] = _numpy(tensors["bias"])
    return result


class SharedMaskDropout(torch.nn.Module):
    """Inverted dropout with a keep mask given from outside (one per step, the hand side's too).

    ``forward`` is what ``torch.nn.functional.dropout`` computes on CPU once its mask is drawn
    (``noise = bernoulli(1−p) / (1−p); x · noise``; ``x · 0`` at p = 1); only the draw is moved
    out, so that both sides see the same mask. The masks come from torch's own generator
    (:func:`handgrad.scenarios.stack.dropout_masks`), the same draw ``F.dropout`` makes under
    that seed.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p
        self.mask: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mask is None:
            raise RuntimeError("SharedMaskDropout needs its mask for this step")
        if self.p == 1:
            return x * torch.zeros((), dtype=x.dtype, device=x.device)
        return x * self.mask.div(1 - self.p)


TWIN_OPS.update(
    {
        Conv2d: TwinOps(
            build=lambda stage: torch.nn.Conv2d(
                stage.layer.in_channels,
                stage.layer.out_channels,
                stage.layer.kernel_size,
                stride=stage.layer.stride,
                padding=stage.layer.padding,
                dilation=stage.layer.dilation,
                groups=stage.layer.groups,
                bias=stage.layer.bias,
            ),
            to_torch=_conv_to_torch,
            from_torch=_conv_from_torch,
        ),
        MaxPool2d: TwinOps(
            build=lambda stage: torch.nn.MaxPool2d(
                stage.layer.kernel_size,
                stride=stage.layer.stride,
                padding=stage.layer.padding,
                dilation=stage.layer.dilation,
            ),
            to_torch=_no_params,
            from_torch=_no_params,
        ),
        AvgPool2d: TwinOps(
            build=lambda stage: torch.nn.AvgPool2d(
                stage.layer.kernel_size,
                stride=stage.layer.stride,
                padding=stage.layer.padding,
                count_include_pad=stage.layer.count_include_pad,
            ),
            to_torch=_no_params,
            from_torch=_no_params,
        ),
        LocalResponseNorm: TwinOps(
            build=lambda stage: torch.nn.LocalResponseNorm(
                stage.layer.size, alpha=stage.layer.alpha, beta=stage.layer.beta, k=stage.layer.k
            ),
            to_torch=_no_params,
            from_torch=_no_params,
        ),
        Flatten: TwinOps(build=lambda stage: torch.nn.Flatten(), to_torch=_no_params, from_torch=_no_params),
        Dropout: TwinOps(
            build=lambda stage: SharedMaskDropout(stage.layer.p), to_torch=_no_params, from_torch=_no_params
        ),
    }
)


def _batchnorm_module(stage: Stage) -> torch.nn.Module:
    layer: BatchNorm = stage.layer  # type: ignore[assignment]
    kind = torch.nn.BatchNorm1d if layer.dims == 1 else torch.nn.BatchNorm2d
    module = kind(
        layer.num_features,
        eps=layer.eps,
        momentum=layer.momentum,
        affine=layer.affine,
        track_running_stats=layer.track_running_stats,
    )
    return module.train(layer.training)


def _layernorm_module(stage: Stage) -> torch.nn.Module:
    layer: LayerNorm = stage.layer  # type: ignore[assignment]
    return torch.nn.LayerNorm(
        layer.normalized_shape, eps=layer.eps, elementwise_affine=layer.elementwise_affine, bias=layer.bias
    )


def _norm_to_torch(stage: Stage, hand: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {{"gamma": "weight", "beta": "bias"}[short]: value for short, value in hand.items()}


def _norm_from_torch(stage: Stage, tensors: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {{"weight": "gamma", "bias": "beta"}[key]: _numpy(tensor) for key, tensor in tensors.items()}


TWIN_OPS[BatchNorm] = TwinOps(build=_batchnorm_module, to_torch=_norm_to_torch, from_torch=_norm_from_torch)
TWIN_OPS[LayerNorm] = TwinOps(build=_layernorm_module, to_torch=_norm_to_torch, from_torch=_norm_from_torch)


def _user_module(stage: Stage) -> torch.nn.Module:
    raise ValueError(f"{stage.name}: a user layer runs the user's own module; pass it in modules=")


TWIN_OPS[UserLayer] = TwinOps(  # the module's own parameter names on both sides
    build=_user_module,
    to_torch=lambda stage, hand: dict(hand),
    from_torch=lambda stage, tensors: {name: _numpy(tensor) for name, tensor in tensors.items()},
)


def build_sequential(network: Network, dtype: torch.dtype) -> torch.nn.Sequential:
    modules = [TWIN_OPS[type(stage.layer)].build(stage) for stage in network.stages()]
    return torch.nn.Sequential(*modules).to(dtype)


def state_dict_keys(network: Network) -> dict[str, list[str]]:
    """Hand parameter name → the torch ``state_dict`` keys it maps onto (for the workbook).

    Each stage's parameters go through its ``to_torch`` together (a layer's mapping may need all of
    them: dense reads W and b at once); a torch key belongs to the hand parameter whose array its
    value is, or is a slice of (a folded W̃ = [W | b] gives both ``weight`` and ``bias``)."""
    mapping: dict[str, list[str]] = {}
    for index, stage in enumerate(network.stages()):
        hand = {short: np.zeros(shape) for short, shape, _ in shape_of(stage).params(stage)}
        torch_side = TWIN_OPS[type(stage.layer)].to_torch(stage, hand)
        for short, array in hand.items():
            keys = [f"{index}.{key}" for key, value in torch_side.items() if np.shares_memory(value, array)]
            if not keys:
                raise KeyError(f"{stage.name}.{short}: no torch parameter holds it")
            mapping[f"{stage.name}.{short}"] = keys
    return mapping


def _stage_reading(
    stage: Stage, params: dict[str, torch.nn.Parameter]
) -> tuple[Stage, dict[str, torch.nn.Parameter], list[tuple[str, torch.nn.Parameter]] | None]:
    """How :meth:`TwinNetwork._read_params` reads a stage: (stage, its parameters by torch name,
    ``direct``). ``direct``, (hand name, parameter) in ``from_torch``'s order, when every array
    ``from_torch`` gives is one of the tensors exactly as it lies (its host view: ``W``, ``b``, γ,
    β, a user layer's own names), found by asking ``from_torch`` once; then a step reads the same
    views without building ``from_torch``'s dicts. None otherwise (a folded W̃ = [W | b] is a new
    array; a tensor off the host is copied over): ``from_torch`` each time."""
    hand = TWIN_OPS[type(stage.layer)].from_torch(stage, dict(params))
    direct = []
    for short, value in hand.items():
        same = [
            param
            for param in params.values()
            if param.is_cpu
            and value.ctypes.data == param.data_ptr()
            and value.shape == tuple(param.shape)
            and value.strides == tuple(stride * param.element_size() for stride in param.stride())
        ]
        if len(same) != 1:
            return stage, params, None
        direct.append((f"{stage.name}.{short}", same[0]))
    return stage, params, direct


class TwinNetwork:
    """The torch side of a run: its own ``nn.Sequential``, loss module and ``torch.optim``."""

    def __init__(
        self,
        network: Network,
        loss: Loss,
        optimizer: Optimizer,
        params: dict[str, np.ndarray],
        x: np.ndarray,
        y: np.ndarray,
        batches: list[np.ndarray],
        dtype: str = "float64",
        device: str = "cpu",
        masks: dict[str, list[np.ndarray]] | None = None,
        diagnostics: bool = False,
        modules: list[torch.nn.Module] | None = None,
    ) -> None:
        self.network = network
        self.stages = network.stages()
        self.diagnostics = diagnostics  # add phase-"diagnostic" terms (twin/diagnostics.py) each step
        self.torch_dtype = getattr(torch, dtype)
        self.device = torch.device(device)
        self.tf32 = tf32_of(device)  # TF32 in float32 matmuls/convolutions on cuda (twin/device.py)
        self.threads = threads_of(device)  # torch's intra-op threads per step
        # dropout keep masks: stage name -> one per step, the hand side's arrays (drawn on the CPU by
        # torch's generator, scenarios/stack.py), moved to the device as data
        self.masks = {
            name: [torch.as_tensor(np.asarray(m), dtype=self.torch_dtype, device=self.device) for m in ms]
            for name, ms in (masks or {}).items()
        }
        # ``modules``: the user's own modules, one per stage (copies: check_model), run instead of
        # modules built from the spec, so an option the spec does not carry shows as a mismatch
        self.model = (
            build_sequential(network, self.torch_dtype)
            if modules is None
            else torch.nn.Sequential(*modules).to(self.torch_dtype)
        ).to(self.device)
        self.loss_spec = loss
        target_form = (  # class ids travel as floats in one column; the loss module takes them as long
            loss.target_form(np.asarray(y).shape[1], network.output_shape[0])
            if len(network.output_shape) == 1
            else "value"
        )
        self.loss_module = losses.build(
            loss, self.torch_dtype, index_targets=target_form == "index", device=self.device
        )
        self.optimizer_spec = optimizer
        self.x = torch.as_tensor(np.asarray(x), dtype=self.torch_dtype, device=self.device)
        self.y = torch.as_tensor(np.asarray(y), dtype=self.torch_dtype, device=self.device)
        self.batches = batches  # rows of step k, produced when step k asks (a run may be 10⁹ steps)
        self._host_data = (self.x.numpy(), self.y.numpy()) if self.device.type == "cpu" else None
        self.symbols = {name: symbol for name, _, symbol in param_table(network)}
        self.load_params(params)
        self._parameters = list(self.model.parameters())
        self.optimizer = optim.build(optimizer, self._parameters)
        self.scheduler = optim.build_scheduler(optimizer, self.optimizer)  # stepped after optimizer.step()
        self.terms = stage_terms(self.stages)
        self._forward_names = [(terms.output, terms.output_symbol) for terms in self.terms]
        self._backward_names = [  # per stage, last first: its output's gradient, then its parameters'
            (
                terms.output_grad,
                terms.output_grad_symbol,
                [(name, grad, symbol, terms.summands.get(grad)) for _, name, grad, symbol in terms.params],
            )
            for terms in reversed(self.terms)
        ]
        self._module_params = [dict(module.named_parameters()) for module in self.model]  # read each step
        self._reading = [
            _stage_reading(stage, params)
            for stage, params in zip(self.stages, self._module_params, strict=True)
        ]
        self._dropouts = [  # (stage name, module): the modules that take a keep mask each step
            (stage.name, module)
            for stage, module in zip(self.stages, self.model, strict=True)
            if isinstance(module, SharedMaskDropout)
        ]
        self._buffer_terms = [  # (module, buffer, term name, symbol): BatchNorm's running statistics
            (module, short, f"{stage.name}.{short}", symbol)
            for stage, module in zip(self.stages, self.model, strict=True)
            for short, _, symbol, _ in LAYER_SHAPES[type(stage.layer)].buffers(stage)
        ]
        self.configuration = {  # read back from the torch objects (twin/configuration.py)
            **configuration.tensor_configuration(self.model.parameters()),
            **{
                key: value
                for stage, module in zip(self.stages, self.model, strict=True)
                for key, value in configuration.layer_configuration(stage.name, module).items()
            },
            **configuration.loss_configuration(self.loss_module),
            **configuration.training_configuration(self.optimizer, self.scheduler, optimizer),
        }

    def _batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) of step k: the rows of the data, x a leaf of its own that requires grad. On the host
        the rows are picked by NumPy from the data's own memory (the same numbers, a new array, in
        a few µs where a tensor index takes more); on a device by indexing there."""
        rows = self.batches[step - 1]
        if self._host_data is not None:
            x_host, y_host = self._host_data
            return torch.from_numpy(x_host[rows]).requires_grad_(True), torch.from_numpy(y_host[rows])
        index = torch.as_tensor(rows, device=self.device)
        return self.x[index].requires_grad_(True), self.y[index]  # indexing copies: a leaf of its own

    def _load_masks(self, step: int) -> None:
        """Hand each dropout module its keep mask for this step (data, like the batch rows)."""
        for name, module in self._dropouts:
            module.mask = self.masks[name][step - 1] if name in self.masks else None

    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Run the ``nn.Sequential``'s modules in its order (what ``self.model(x)`` does), keeping
        each module's output with ``retain_grad`` so that backward fills its ``.grad``. A loop
        rather than forward hooks: a module with a hook takes torch's slow call path."""
        outputs = []
        out = x
        for module in self.model:
            out = module(out)
            out.retain_grad()
            outputs.append(out)
        return outputs

    def load_params(self, params: dict[str, np.ndarray]) -> None:
        with torch.no_grad():
            for stage, module in zip(self.stages, self.model, strict=True):
                short_names = [short for short, _, _ in shape_of(stage).params(stage)]
                hand = {short: params[f"{stage.name}.{short}"] for short in short_names}
                for key, value in TWIN_OPS[type(stage.layer)].to_torch(stage, hand).items():
                    module.get_parameter(key).copy_(torch.as_tensor(np.asarray(value)))

    def state_dict_keys(self) -> dict[str, list[str]]:
        """Hand parameter name → the torch ``state_dict`` keys (the workbook's Parameters sheet)."""
        return state_dict_keys(self.network)

    @under_precision  # the steps' precision and threads
    def predict(self) -> np.ndarray:
        """ŷ for every row of the data at the current parameters: the modules in order under
        ``torch.no_grad()`` in eval mode (dropout left out, BatchNorm with its running statistics,
        which eval mode leaves as they are), each module's own mode put back after."""
        out = self.x
        modes = [module.training for module in self.model]
        try:
            with torch.no_grad():
                for module in self.model:
                    module.eval()
                    if not isinstance(module, SharedMaskDropout):
                        out = module(out)
        finally:
            for module, mode in zip(self.model, modes, strict=True):
                module.train(mode)
        return _numpy(out).copy()

    def buffers(self) -> dict[str, np.ndarray]:
        """A copy of every buffer the run compares (BatchNorm's running statistics)."""
        return {name: _numpy(getattr(module, short)).copy() for module, short, name, _ in self._buffer_terms}

    def params(self) -> dict[str, np.ndarray]:
        """A copy of every parameter (the optimizer later updates the tensors in place)."""
        return {name: value.copy() for name, value in self._read_params(lambda param: param).items()}

    def _read_params(self, pick: Callable[[torch.nn.Parameter], torch.Tensor]) -> dict[str, np.ndarray]:
        result: dict[str, np.ndarray] = {}
        for stage, params, direct in self._reading:
            if direct is not None:  # the hand arrays are the tensors as they are: a view each
                for name, param in direct:
                    result[name] = pick(param).numpy(force=True)
                continue
            tensors = {name: pick(param) for name, param in params.items()}
            for short, value in TWIN_OPS[type(stage.layer)].from_torch(stage, tensors).items():
                result[f"{stage.name}.{short}"] = value
        return result

    @under_precision  # on cuda: TF32 off unless --tf32, the previous flags restored after the step
    def step(self, step: int) -> StepTrace:
        trace = StepTrace(step)
        add = trace.add
        x, y = self._batch(step)

        optim.zero_grad(self.optimizer)
        if self._dropouts:
            self._load_masks(step)
        outputs = self._forward(x)
        L = self.loss_module(outputs[-1], y)
        per_element = None
        if self.loss_spec.reduction == "none":  # ℓ per element (row); the run trains on L = Σℓ
            per_element, L = L, L.sum()
        L.backward()

        # What this step made (outputs, ℓ, L, the retained .grad clones, x.grad) goes into the trace
        # uncopied (copy=False); on the host, what torch writes to later is copied: buffers, a
        # leaf's or a leaf's view's values, .grad before clip_grad_*_ scales it in place, the
        # parameters and the optimizer state (optim.step_and_trace). Off the host every array is
        # a host copy already.
        host = self._host_data is not None
        for (term, symbol), output in zip(self._forward_names, outputs, strict=True):
            add(term, symbol, "forward", _numpy(output), SOURCE, copy=host and _held(output))
        for module, short, name, symbol in self._buffer_terms:  # the module's buffers after forward
            add(name, symbol, "state", _numpy(getattr(module, short)), SOURCE, copy=host)
        if per_element is not None:
            add("loss.l", "ℓ", "loss", _numpy(per_element), SOURCE, copy=False)
        add("loss.L", "L", "loss", _numpy(L), SOURCE, copy=False)

        grads = self._read_params(lambda param: param.grad)
        clipped = host and self.optimizer_spec.clip is not None  # clip_grad_*_ scales .grad in place
        for (term, symbol, params), output in zip(self._backward_names, reversed(outputs), strict=True):
            add(term, symbol, "backward", _numpy(output.grad), SOURCE, copy=host and _held(output))
            for name, grad, grad_symbol, summands in params:
                add(grad, grad_symbol, "backward", grads[name], SOURCE, summands=summands, copy=clipped)
        add("input.dL_dx", "∂L/∂x", "backward", _numpy(x.grad), SOURCE, copy=False)

        optim.clip_and_trace(trace, self.optimizer_spec, self._parameters, self._read_params, self.symbols)
        params_before = self.params() if self.diagnostics else {}  # for the diagnostics' ‖ΔW‖
        optim.step_and_trace(
            trace,
            self.optimizer_spec,
            self.optimizer,
            self.scheduler,
            self._read_params,
            self.symbols,
            SOURCE,
        )
        # --- diagnostics (issue 8): grad norm, saturated/dead fraction, update ratio per layer ---
        if self.diagnostics:
            after = self.params()
            terms = diagnostics.step_terms(
                self.stages, list(self.model), outputs, trace, params_before, after, self.symbols
            )
            for name, symbol, value in terms:
                add(name, symbol, "diagnostic", value, diagnostics.SOURCE)
        return trace
