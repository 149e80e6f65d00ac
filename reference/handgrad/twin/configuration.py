"""The configuration torch ran with, read back from the torch objects themselves.

The lock-step compares what both sides computed; it cannot see an option that never reached
either side, because both sides read the same spec. So each twin, once its modules, loss module,
optimizer and scheduler are built, reads their hyperparameters back from torch (an optimizer's
``param_groups``, a loss module's attributes, a scheduler's ``state_dict()``, a layer module's
attributes) and the harness compares them with what the user asked for
(:mod:`handgrad.harness.configuration`). Nothing here looks at the spec: every value is the one a
torch object holds, or, for clipping, which keeps no object, the arguments the twin passes to
``torch.nn.utils`` (:func:`handgrad.twin.optim.clip_call`).

One function per kind of object; each returns a flat dict keyed as the report names the option
(``optimizer.momentum``, ``loss.reduction``, ``dense1.bias``); values are plain Python (a tensor
or a tuple becomes a list of numbers), so they compare exactly and go into JSON as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from handgrad.contract.training import Optimizer

Configuration = dict[str, object]

# torch.optim classes -> the spec's optimizer kind
OPTIMIZER_KINDS = {"SGD": "sgd", "Adam": "adam", "AdamW": "adamw", "RMSprop": "rmsprop", "Adagrad": "adagrad"}
# param_groups keys that are torch's own switches, not options a user sets (handgrad fixes them)
NOT_OPTIONS = (
    "params",
    "foreach",
    "fused",
    "differentiable",
    "capturable",
    "decoupled_weight_decay",
    "initial_lr",
)
LOSS_KINDS = {
    "MSELoss": "mse",
    "L1Loss": "l1",
    "SmoothL1Loss": "smooth_l1",
    "HuberLoss": "huber",
    "BCELoss": "bce",
    "BCEWithLogitsLoss": "bce_logits",
    "CrossEntropyLoss": "cross_entropy",
    "NLLLoss": "nll",
}
# each loss module's attributes beyond ``reduction``, as torch names them (= the spec's names)
LOSS_ATTRIBUTES = {
    "SmoothL1Loss": ("beta",),
    "HuberLoss": ("delta",),
    "BCEWithLogitsLoss": ("pos_weight",),
    "CrossEntropyLoss": ("weight", "ignore_index", "label_smoothing"),
    "NLLLoss": ("weight", "ignore_index"),
}
SCHEDULER_KINDS = {"StepLR": "step", "ExponentialLR": "exponential", "CosineAnnealingLR": "cosine"}
# scheduler state_dict() key -> the spec's name
SCHEDULER_STATE = {"step_size": "step_size", "gamma": "gamma", "T_max": "t_max", "eta_min": "eta_min"}
ACTIVATION_KINDS = {
    "Sigmoid": "sigmoid",
    "Tanh": "tanh",
    "ReLU": "relu",
    "LeakyReLU": "leaky_relu",
    "Identity": "identity",
}
# layer modules: the attributes read back, by class name
LAYER_ATTRIBUTES = {
    "Linear": ("in_features", "out_features"),
    "Conv2d": ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups"),
    "MaxPool2d": ("kernel_size", "stride", "padding", "dilation"),
    "AvgPool2d": ("kernel_size", "stride", "padding", "count_include_pad"),
    "LocalResponseNorm": ("size", "alpha", "beta", "k"),
    "SharedMaskDropout": ("p",),
    "BatchNorm1d": ("num_features", "eps", "momentum", "affine", "track_running_stats", "training"),
    "BatchNorm2d": ("num_features", "eps", "momentum", "affine", "track_running_stats", "training"),
    "LayerNorm": ("normalized_shape", "eps", "elementwise_affine"),
}
RECURRENT_MODES = {"RNN_TANH": "rnn_tanh", "RNN_RELU": "rnn_relu", "GRU": "gru", "LSTM": "lstm"}


def plain(value: object) -> object:
    """A torch or Python value as plain Python: tensors and tuples become lists of numbers."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    if isinstance(value, (tuple, list)):
        return [plain(item) for item in value]
    return value


def optimizer_configuration(optimizer: torch.optim.Optimizer, prefix: str = "optimizer") -> Configuration:
    """The optimizer's class and every hyperparameter of its (single) param group."""
    group = optimizer.param_groups[0]
    result: Configuration = {prefix: OPTIMIZER_KINDS.get(type(optimizer).__name__, type(optimizer).__name__)}
    for key, value in group.items():
        if key not in NOT_OPTIONS:
            result[f"{prefix}.{key}"] = plain(value)
    return result


def loss_configuration(module: torch.nn.Module, prefix: str = "loss") -> Configuration:
    """The loss module's class, reduction and own attributes; ``half`` when the twin wraps it in
    its ½·loss module (``twin/losses.py``). The class-id wrapper only moves data and is looked through."""
    half = type(module).__name__ == "_Half"
    while type(module).__name__ in ("_Half", "_IndexTargets"):
        module = module.inner  # type: ignore[assignment]
    name = type(module).__name__
    result: Configuration = {
        prefix: LOSS_KINDS.get(name, name),
        f"{prefix}.reduction": module.reduction,
        f"{prefix}.half": half,
    }
    for attribute in LOSS_ATTRIBUTES.get(name, ()):
        result[f"{prefix}.{attribute}"] = plain(getattr(module, attribute))
    return result


def scheduler_configuration(scheduler: object | None, prefix: str = "schedule") -> Configuration:
    """The scheduler's class and its options from ``state_dict()``; ``none`` when there is none."""
    if scheduler is None:
        return {prefix: "none"}
    name = type(scheduler).__name__
    result: Configuration = {prefix: SCHEDULER_KINDS.get(name, name)}
    for key, value in scheduler.state_dict().items():  # type: ignore[attr-defined]
        if key in SCHEDULER_STATE:
            result[f"{prefix}.{SCHEDULER_STATE[key]}"] = plain(value)
    return result


def clip_configuration(call: tuple[Callable[..., object], dict[str, object]] | None) -> Configuration:
    """Clipping keeps no torch object: the function the twin calls and the arguments it passes."""
    if call is None:
        return {"clip": "none"}
    function, arguments = call
    if function is torch.nn.utils.clip_grad_norm_:
        norm = {"clip.max_norm": arguments["max_norm"], "clip.norm_type": arguments["norm_type"]}
        return {"clip": "norm", **norm}
    return {"clip": "value", "clip.value": arguments["clip_value"]}


def layer_configuration(name: str, module: torch.nn.Module) -> Configuration:
    """A layer module's options: attributes of Linear, Conv2d, the pools, LRN, dropout, the norms
    (BatchNorm's mode ``training`` among them); for an activation module its kind (and
    LeakyReLU's slope) under its owner's name."""
    kind = type(module).__name__
    if kind in ACTIVATION_KINDS:
        result: Configuration = {f"{name}.activation": ACTIVATION_KINDS[kind]}
        if kind == "LeakyReLU":
            result[f"{name}.slope"] = module.negative_slope
        return result
    attributes = LAYER_ATTRIBUTES.get(kind, ())
    result = {f"{name}.{attribute}": plain(getattr(module, attribute)) for attribute in attributes}
    if kind in ("Linear", "Conv2d", "LayerNorm"):
        result[f"{name}.bias"] = module.bias is not None
    return result


def recurrent_configuration(module: torch.nn.RNNBase, prefix: str = "rnn") -> Configuration:
    """A fused ``nn.RNN``/``nn.GRU``/``nn.LSTM``: its mode (the cell), sizes, layers, bias, layout."""
    result: Configuration = {
        f"{prefix}.cell": RECURRENT_MODES.get(module.mode, module.mode),
        f"{prefix}.input_size": module.input_size,
        f"{prefix}.hidden_size": module.hidden_size,
        f"{prefix}.num_layers": module.num_layers,
        f"{prefix}.bias": module.bias,
        f"{prefix}.batch_first": module.batch_first,
    }
    if isinstance(module, torch.nn.RNN):
        result[f"{prefix}.nonlinearity"] = module.nonlinearity
    return result


def tensor_configuration(parameters: Iterable[torch.Tensor]) -> Configuration:
    """The dtype and device the parameters live in (the first parameter's; a module has one)."""
    first = next(iter(parameters))
    return {"dtype": str(first.dtype).removeprefix("torch."), "device": first.device.type}


def training_configuration(
    optimizer: torch.optim.Optimizer, scheduler: object | None, spec: Optimizer
) -> Configuration:
    """What every twin shares: the optimizer, its lr scheduler and the clipping call the twin
    makes for ``spec`` (:func:`handgrad.twin.optim.clip_call`)."""
    from handgrad.twin.optim import clip_call

    return {
        **optimizer_configuration(optimizer),
        **scheduler_configuration(scheduler),
        **clip_configuration(clip_call(spec)),
    }
