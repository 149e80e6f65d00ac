"""Check your own model: a user's ``torch.nn.Module`` against its hand-derived twin, step by step.

:func:`build_experiment` walks the module, builds the spec both sides are made from (a layer stack for
an ``nn.Sequential``, nested too; the recurrent family's model for an RNN/GRU/LSTM with a Linear
head), copies the module's *current* weights into the hand network, and trains the hand side and a
copy of the user's own modules in lock-step through the one harness (:func:`handgrad.harness.run`).
The user's module is never changed: the twin trains a ``deepcopy``, converted to the run's dtype.

The twin runs the user's modules themselves, not modules rebuilt from the spec: an option the walk
does not carry shows as a mismatch (and in the configuration read back from torch), never as a
silent agreement. Two changes are made to the copies only: ``nn.Dropout`` becomes the twin's
shared-mask dropout (the same arithmetic, with the keep masks drawn once from torch's generator
and given to both sides: see :mod:`handgrad.scenarios.stack`), and ``inplace`` activations are run
out of place (the twin reads every module's output after the step).

A module type with no hand op is refused before any work, naming its path in the model
(``model.3: nn.BatchNorm3d is not supported; supported: ...``), unless ``custom_layers`` gives the
user's own hand pair for that type (the :func:`handgrad.check_layer` forms); then that hand layer
runs inside the whole network and its terms (``<name>.out``, ``<name>.dL_dout``, ``<name>.dL_d<param>``)
are compared at every step.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from handgrad.contract.conv_layers import (
    AvgPool2d,
    Conv2d,
    Dropout,
    Flatten,
    LocalResponseNorm,
    MaxPool2d,
    UserLayer,
)
from handgrad.contract.names import state_keys
from handgrad.contract.normalization import BatchNorm, LayerNorm
from handgrad.contract.recurrent import RecurrentModel, SequenceData
from handgrad.contract.spec import Activation, Data, Dense, Network, Schedule, SpecError, require_int
from handgrad.contract.stack import cancelled_gradients
from handgrad.contract.training import Loss, Optimizer
from handgrad.harness import Experiment
from handgrad.scenarios.common import loss_config

STACK_MODULES = (
    "Linear",
    "Sigmoid",
    "Tanh",
    "ReLU",
    "LeakyReLU",
    "Identity",
    "Conv2d",
    "MaxPool2d",
    "AvgPool2d",
    "LocalResponseNorm",
    "Dropout",
    "Flatten",
    "BatchNorm1d",
    "BatchNorm2d",
    "LayerNorm",
)
SUPPORTED = ", ".join(STACK_MODULES) + " in nn.Sequential (nested too); RNN, GRU, LSTM with a Linear head"
ACTIVATION_KINDS = {
    "Sigmoid": "sigmoid",
    "Tanh": "tanh",
    "ReLU": "relu",
    "LeakyReLU": "leaky_relu",
    "Identity": "identity",
}
RECURRENT_CELLS = {"RNN_TANH": "rnn_tanh", "RNN_RELU": "rnn_relu", "GRU": "gru", "LSTM": "lstm"}
CustomLayers = Mapping[type, tuple[Callable[..., Any], Callable[..., Any]]]


def _type_name(module: Any) -> str:
    kind = type(module)
    return f"nn.{kind.__name__}" if kind.__module__.startswith("torch.nn") else kind.__name__


def _refuse(path: str, module: Any) -> SpecError:
    name = type(module).__name__
    return SpecError(
        path,
        f"{_type_name(module)} is not supported; supported: {SUPPORTED}; or give its hand pair "
        f"as custom_layers={{{name}: (forward, backward)}}",
    )


def _is_torch(module: Any, name: str) -> bool:
    """Exactly torch's class: a subclass may override ``forward``, so it is the user's own layer."""
    import torch

    return type(module) is getattr(torch.nn, name, None)


def leaves(module: Any, path: str = "model") -> list[tuple[str, Any]]:
    """The modules an ``nn.Sequential`` (nested too) runs, in order, each with its path in the model."""
    if _is_torch(module, "Sequential"):
        return [item for name, child in module.named_children() for item in leaves(child, f"{path}.{name}")]
    return [(path, module)]


def _option(path: str, name: str, value: object, wanted: object) -> None:
    if value != wanted:
        raise SpecError(
            f"{path}.{name}", f"{name}={value!r} is not supported (the hand side implements {wanted!r})"
        )


def _stack_layer(path: str, module: Any) -> object:
    """The spec of one built-in module, or a SpecError naming the path and the option refused."""
    name = type(module).__name__
    if name in ACTIVATION_KINDS:
        slope = float(module.negative_slope) if name == "LeakyReLU" else 0.01
        return Activation(ACTIVATION_KINDS[name], slope)
    if name == "Linear":
        return Dense(module.in_features, module.out_features, bias=module.bias is not None)
    if name == "Conv2d":
        _option(path, "padding_mode", module.padding_mode, "zeros")
        padding = module.padding
        if isinstance(padding, str):
            _option(path, "padding", padding, "valid")  # 'same' is left to the user: give numbers
            padding = 0
        return Conv2d(
            module.in_channels,
            module.out_channels,
            tuple(module.kernel_size),
            stride=tuple(module.stride),
            padding=padding,
            dilation=tuple(module.dilation),
            groups=module.groups,
            bias=module.bias is not None,
        )
    if name == "MaxPool2d":
        _option(path, "ceil_mode", module.ceil_mode, False)
        _option(path, "return_indices", module.return_indices, False)
        return MaxPool2d(module.kernel_size, module.stride, module.padding, module.dilation)
    if name == "AvgPool2d":
        _option(path, "ceil_mode", module.ceil_mode, False)
        _option(path, "divisor_override", module.divisor_override, None)
        return AvgPool2d(module.kernel_size, module.stride, module.padding, module.count_include_pad)
    if name == "LocalResponseNorm":
        return LocalResponseNorm(module.size, module.alpha, module.beta, module.k)
    if name == "Flatten":
        _option(path, "start_dim", module.start_dim, 1)
        _option(path, "end_dim", module.end_dim, -1)
        return Flatten()
    if name == "Dropout":
        return Dropout(float(module.p))
    if name in ("BatchNorm1d", "BatchNorm2d"):
        momentum = None if module.momentum is None else float(module.momentum)
        return BatchNorm(
            module.num_features,
            dims=1 if name == "BatchNorm1d" else 2,
            eps=float(module.eps),
            momentum=momentum,
            affine=module.affine,
            track_running_stats=module.track_running_stats,
            training=module.training,
        )
    if name == "LayerNorm":
        return LayerNorm(
            tuple(module.normalized_shape),
            eps=float(module.eps),
            elementwise_affine=module.elementwise_affine,
            bias=module.bias is not None,
        )
    raise AssertionError(name)


def _prefix(kind: type) -> str:
    """A user layer's stage prefix: its type name in lower case, kept apart from built-in prefixes."""
    prefix = re.sub(r"[^a-z0-9_]", "_", kind.__name__.lower()).strip("_") or "user"
    builtin = {"dense", "conv", "pool", "avgpool", "lrn", "flatten", "dropout", "input", "loss"}
    return f"user_{prefix}" if prefix in builtin or prefix[0].isdigit() else prefix


def _user_layer(
    path: str, module: Any, pair: tuple[Any, Any], shape: tuple[int, ...], dtype: Any
) -> UserLayer:
    import torch

    if not (isinstance(pair, tuple) and len(pair) == 2):
        raise SpecError("custom_layers", f"{type(module).__name__}: expected a (forward, backward) pair")
    probe = copy.deepcopy(module).to(dtype)
    with torch.no_grad():
        out = probe(torch.zeros((1, *shape), dtype=dtype))
    if not isinstance(out, torch.Tensor):
        raise SpecError(path, f"{_type_name(module)} must return one tensor, got {type(out).__name__}")
    params = tuple((name, tuple(value.shape)) for name, value in module.named_parameters())
    return UserLayer(
        type(module).__name__,
        params,
        tuple(shape),
        tuple(out.shape[1:]),
        pair[0],
        pair[1],
        _prefix(type(module)),
    )


def _twin_copy(module: Any, dtype: Any) -> Any:
    """The copy the twin trains: the user's module, in the run's dtype; ``nn.Dropout`` as the twin's
    shared-mask dropout; activations out of place."""
    from handgrad.twin.network import SharedMaskDropout

    if _is_torch(module, "Dropout"):
        return SharedMaskDropout(float(module.p))
    twin = copy.deepcopy(module).to(dtype)
    if hasattr(twin, "inplace"):
        twin.inplace = False
    if _is_torch(twin, "Conv2d") and twin.padding == "valid":
        twin.padding = (0, 0)  # the same convolution, read back as the spec's numbers
    return twin


def _frozen(path: str, module: Any) -> None:
    for name, param in module.named_parameters():
        if not param.requires_grad:
            raise SpecError(f"{path}.{name}", "requires_grad=False (a frozen parameter) is not supported")


def _renamed(error: SpecError, paths: list[str]) -> SpecError:
    """A Network error names ``layers[i]``; the user knows the module by its path."""
    match = re.match(r"layers\[(\d+)\](?:\.(.*))?", error.field)
    if not match:
        return error
    field = paths[int(match.group(1))] + (f".{match.group(2)}" if match.group(2) else "")
    return SpecError(field, error.message)


def stack_parts(
    model: Any, input_shape: tuple[int, ...], custom: CustomLayers, dtype: str
) -> tuple[Network, list[Any], list[str]]:
    """The spec of an ``nn.Sequential`` model, the twin's copies of its modules (one per stage) and
    each stage's path in the model. Refuses, naming the path, any module with no hand op."""
    import torch

    torch_dtype = getattr(torch, dtype)
    found = leaves(model)
    for path, module in found:  # every refusal before any work
        name = type(module).__name__
        if type(module) not in custom and not (name in STACK_MODULES and _is_torch(module, name)):
            raise _refuse(path, module)
        _frozen(path, module)
    layers: list[object] = []
    shape = tuple(input_shape)
    for path, module in found:
        if type(module) in custom:
            layer: object = _user_layer(path, module, custom[type(module)], shape, torch_dtype)
        else:
            layer = _stack_layer(path, module)
        try:
            shape = layer.output_shape(shape)  # type: ignore[attr-defined]
        except SpecError as error:
            raise SpecError(f"{path}.{error.field}", error.message) from None
        layers.append(layer)
    paths = [path for path, _ in found]
    try:
        network = Network(tuple(layers), input_shape=tuple(input_shape))
    except SpecError as error:
        raise _renamed(error, paths) from None
    return network, [_twin_copy(module, torch_dtype) for _, module in found], paths


def recurrent_parts(model: Any, head: str, dtype: str) -> tuple[RecurrentModel, Any]:
    """The recurrent family's model of a module whose children are ``(rnn, head[, activation])``:
    an ``nn.RNN``/``nn.GRU``/``nn.LSTM`` with biases, one direction, no dropout or projection, then
    an ``nn.Linear`` with a bias, then optionally an activation; and the twin's copy."""
    import torch

    children = list(model.named_children())
    shape = "(rnn, head[, activation]): an nn.RNN/GRU/LSTM, an nn.Linear, optionally an activation"
    if len(children) not in (2, 3):
        raise SpecError("model", f"a recurrent model must have the children {shape}")
    (rnn_path, rnn), (head_path, linear) = children[0], children[1]
    rnn_path, head_path = f"model.{rnn_path}", f"model.{head_path}"
    if type(rnn) not in (torch.nn.RNN, torch.nn.GRU, torch.nn.LSTM):
        raise _refuse(rnn_path, rnn)
    if not _is_torch(linear, "Linear"):
        raise _refuse(head_path, linear)
    for option, wanted in (("bias", True), ("bidirectional", False), ("dropout", 0.0), ("proj_size", 0)):
        _option(rnn_path, option, getattr(rnn, option), wanted)
    _option(head_path, "bias", linear.bias is not None, True)
    if linear.in_features != rnn.hidden_size:
        raise SpecError(f"{head_path}.in_features", f"expected {rnn.hidden_size} (the rnn's hidden_size)")
    kind, slope, activation = "identity", 0.01, torch.nn.Identity()
    if len(children) == 3:
        path, activation = f"model.{children[2][0]}", children[2][1]
        if type(activation).__name__ not in ACTIVATION_KINDS or not _is_torch(
            activation, type(activation).__name__
        ):
            raise _refuse(path, activation)
        kind = ACTIVATION_KINDS[type(activation).__name__]
        slope = float(activation.negative_slope) if kind == "leaky_relu" else 0.01
    _frozen(rnn_path, rnn)
    _frozen(head_path, linear)
    spec = RecurrentModel(
        RECURRENT_CELLS[rnn.mode],
        rnn.input_size,
        rnn.hidden_size,
        rnn.num_layers,
        linear.out_features,
        head,
        kind,
        rnn.batch_first,
        slope,
    )
    net = torch.nn.Module()
    torch_dtype = getattr(torch, dtype)
    net.rnn = copy.deepcopy(rnn).to(torch_dtype)
    net.head = copy.deepcopy(linear).to(torch_dtype)
    net.activation = _twin_copy(activation, torch_dtype)
    return spec, net


def _check_recurrent_forward(model: Any, spec: RecurrentModel, x: np.ndarray) -> None:
    """The user's forward must compute the family's shape: act(head(h_n of the top layer)) for
    many-to-one, act(head(output)) at every step for many-to-many. Checked once on the data, with a
    float64 copy of the user's module, against its own children composed that way."""
    import torch

    from handgrad.contract.tolerance import tolerance_for
    from handgrad.harness import compare_values

    user = copy.deepcopy(model).to(torch.float64)
    rnn, head, *rest = [child for _, child in user.named_children()]
    act = rest[0] if rest else torch.nn.Identity()
    layout = x if spec.batch_first else x.transpose(1, 0, 2)
    tensor = torch.as_tensor(np.ascontiguousarray(layout), dtype=torch.float64)
    with torch.no_grad():
        got = user(tensor)
        output, state = rnn(tensor)
        h_n = state[0] if spec.cell == "lstm" else state
        wanted = act(head(h_n[-1] if spec.head == "many-to-one" else output))
    form = "act(head(h_n[-1]))" if spec.head == "many-to-one" else "act(head(output))"
    if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(wanted.shape):
        what = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
        raise SpecError(
            "model", f"its forward returned {what}; {form} ({spec.head}) gives {tuple(wanted.shape)}"
        )
    if not compare_values("model.forward", got.numpy(), wanted.numpy(), tolerance_for("float64")).ok:
        raise SpecError(
            "model", f"its forward does not compute {form}, the recurrent family's {spec.head} shape"
        )


def _array(field: str, value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    try:
        return np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise SpecError(field, f"expected an array of numbers, got {type(value).__name__}") from None


def _loss(loss: Loss | str) -> Loss:
    return loss if isinstance(loss, Loss) else Loss(loss)


def _optimizer(optimizer: Optimizer | str, lr: float, options: Mapping[str, object] | None) -> Optimizer:
    if isinstance(optimizer, Optimizer):
        return optimizer
    return Optimizer(optimizer, lr, dict(options or {}))


def build_experiment(
    model: Any,
    inputs: Any,
    targets: Any,
    *,
    loss: Loss | str = "mse",
    optimizer: Optimizer | str = "sgd",
    lr: float = 0.5,
    steps: int = 1000,
    optimizer_options: Mapping[str, object] | None = None,
    mode: str = "online",
    batch_size: int = 1,
    seed: int = 0,
    head: str = "many-to-one",
    custom_layers: CustomLayers | None = None,
    dtype: str = "float64",
    device: str = "cpu",
    schedule: Schedule | None = None,
    name: str = "model",
) -> Experiment:
    """Both sides of the user's model, ready for :func:`handgrad.harness.run`; the options are
    :func:`handgrad.modelcheck.check_model`'s."""
    import torch

    from handgrad.scenarios.stack import stack_experiment
    from handgrad.twin.network import TWIN_OPS

    if not isinstance(model, torch.nn.Module):
        raise SpecError("model", f"expected a torch.nn.Module, got {type(model).__name__}")
    custom = dict(custom_layers or {})
    for kind in custom:
        if not isinstance(kind, type):
            raise SpecError("custom_layers", f"expected module types as keys, got {kind!r}")
    require_int("steps", steps, 1)
    loss_spec, optimizer_spec = _loss(loss), _optimizer(optimizer, lr, optimizer_options)
    schedule = schedule if schedule is not None else Schedule(mode, batch_size, "fixed", seed)
    x, y = _array("inputs", inputs), _array("targets", targets)
    if y.ndim == 1:
        y = y[:, None]
    config: dict[str, object] = {
        "scenario": name,
        "model": type(model).__qualname__,
        **loss_config(loss_spec),
    }
    config.update({"optimizer": optimizer_spec.kind, "lr": optimizer_spec.lr, "mode": schedule.mode})
    config.update({"steps": steps, "dtype": dtype, "weights": "the module's own (state_dict)"})
    rnn = [child for child in model.children() if isinstance(child, torch.nn.RNNBase)]
    if rnn and not _is_torch(model, "Sequential") and type(model) not in custom:
        return _recurrent(
            name, model, x, y, head, loss_spec, optimizer_spec, schedule, steps, seed, dtype, config, device
        )
    if not _is_torch(model, "Sequential") and type(model) not in custom and list(model.children()):
        raise SpecError(
            "model",
            f"{_type_name(model)} is not an nn.Sequential: its forward is its own code, which handgrad "
            "does not read; build it as nn.Sequential (nested is fine), or give custom_layers for it",
        )
    if x.ndim < 2:
        raise SpecError("inputs", f"expected one row per sample, got shape {x.shape}")
    network, modules, paths = stack_parts(model, tuple(x.shape[1:]), custom, dtype)
    _refuse_amplified_noise(network, paths, optimizer_spec)
    _refuse_single_values(network, paths, schedule, len(x))
    params: dict[str, np.ndarray] = {}
    buffers: dict[str, np.ndarray] = {}
    for stage, module in zip(network.stages(), modules, strict=True):
        tensors = dict(module.named_parameters())
        for short, value in TWIN_OPS[type(stage.layer)].from_torch(stage, tensors).items():
            params[f"{stage.name}.{short}"] = np.array(value, dtype=np.float64)
        for short, value in dict(module.named_buffers()).items():  # BatchNorm's running statistics
            buffers[f"{stage.name}.{short}"] = value.detach().cpu().numpy().copy()
    data = Data(x, y, "check_model")
    return stack_experiment(
        name,
        network,
        loss_spec,
        optimizer_spec,
        data,
        schedule,
        steps=steps,
        seed=seed,
        dtype=dtype,
        params=params,
        device=device,
        config=config,
        modules=modules,
        buffers=buffers,
    )


def _smallest_batch(schedule: Schedule, n_rows: int) -> int:
    """The fewest rows a step of this schedule trains on (a minibatch epoch keeps its short last slice)."""
    if schedule.mode == "online":
        return 1
    if schedule.mode == "batch":
        return n_rows
    size = min(schedule.batch_size, n_rows)
    return n_rows % size or size


def _refuse_single_values(network: Network, paths: list[str], schedule: Schedule, n_rows: int) -> None:
    """torch's BatchNorm raises "Expected more than 1 value per channel when training" on a batch
    with one value per channel; said before any work, naming the module and the smallest batch."""
    from handgrad.scenarios.stack import stage_input_shapes

    rows = _smallest_batch(schedule, n_rows)
    shapes = stage_input_shapes(network)
    for index, stage in enumerate(network.stages()):
        layer = stage.layer
        if isinstance(layer, BatchNorm) and layer.batch_statistics:
            values = rows * int(np.prod(shapes[stage.name][1:]))
            if values <= 1:
                raise SpecError(
                    paths[index],
                    f"BatchNorm{layer.dims}d in training mode needs more than 1 value per channel; a step "
                    f"of this schedule ({schedule.mode}) has {rows} row(s), {values} value(s) per channel "
                    "(torch raises the same; use batches of 2 or more, or eval mode)",
                )


def _refuse_amplified_noise(network: Network, paths: list[str], optimizer: Optimizer) -> None:
    """A bias whose gradient is 0 in exact arithmetic (it feeds a BatchNorm normalizing with the
    batch's statistics) comes out of each side as rounding noise (~1e-17), different noise on each
    side; plain SGD moves it by lr times that noise and both sides agree, but an optimizer with
    state keeps the noise in its buffers (momentum, running averages) and an adaptive one divides
    it by √v + ε, moving it by up to lr·|g|/ε (~1e-10): a difference that is rounding, not a bug,
    and that no tolerance of the parameter's own size can judge. Refused, naming the bias."""
    if not state_keys(optimizer):
        return
    stages = network.stages()
    for name in cancelled_gradients(network):
        index = next(i for i, stage in enumerate(stages) if name.startswith(f"{stage.name}."))
        raise SpecError(
            f"{paths[index]}.bias",
            f"feeds a training-mode BatchNorm, so its gradient is 0 in exact arithmetic and each side "
            f"computes different rounding noise, which {optimizer.kind}'s state and step amplify; give "
            f"this layer bias=False (the BatchNorm's β does the bias's job), or train with plain sgd",
        )


def _recurrent(
    name: str,
    model: Any,
    x: np.ndarray,
    y: np.ndarray,
    head: str,
    loss: Loss,
    optimizer: Optimizer,
    schedule: Schedule,
    steps: int,
    seed: int,
    dtype: str,
    config: dict[str, object],
    device: str,
) -> Experiment:
    """The recurrent family's run: every sequence of full length (no packing)."""
    from handgrad.contract.recurrent import torch_names
    from handgrad.scenarios.recurrent import recurrent_experiment

    spec, net = recurrent_parts(model, head, dtype)
    if x.ndim != 3:
        raise SpecError("inputs", f"expected (sequences, length, inputs), got shape {x.shape}")
    targets = y if spec.head == "many-to-one" else y.reshape(*x.shape[:2], -1)
    data = SequenceData(x, targets, np.full(len(x), x.shape[1]), packed=False, source="check_model")
    _check_recurrent_forward(model, spec, x)
    own = dict(net.named_parameters())
    params = {
        hand: own[key].detach().cpu().numpy().astype(np.float64) for hand, key in torch_names(spec).items()
    }
    return recurrent_experiment(
        name,
        spec,
        loss,
        optimizer,
        data,
        schedule,
        steps=steps,
        seed=seed,
        dtype=dtype,
        params=params,
        device=device,
        config=config,
        net=net,
    )
