"""The hand side of a layer stack: forward, loss, backward and update, emitting every term.

One training step is

1. forward, stage by stage: ``dense1.z``, ``dense1.a``, ``dense2.z``, ...
2. loss: ``loss.L``
3. backward in reverse: ``dense2.dL_da``, ``dense2.dL_dz``, ``dense2.dL_dW``, ``dense2.dL_db``, ...
   and the input's gradient ``input.dL_dx``
4. update: ``dense1.W_next``, ... ; then the optimizer's state terms.

Each layer kind is a :class:`LayerOps`; the stack only strings them together.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
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
from handgrad.contract.normalization import BatchNorm, LayerNorm
from handgrad.contract.spec import Activation, Dense, Network, SpecError, Stage
from handgrad.contract.stack import LAYER_SHAPES, StageTerms, param_table, stage_terms
from handgrad.contract.trace import StepTrace
from handgrad.contract.training import Loss, Optimizer
from handgrad.hand import activations, conv, dense, diagnostics, losses, normalization, optim


@dataclass(frozen=True)
class LayerOps:
    """How the hand side runs one layer kind.

    ``params(stage)`` lists (short name, shape, symbol); ``forward(stage, x, params)`` returns
    (out, cache); ``backward(stage, dout, cache)`` returns (dx, grads by short name);
    ``output`` names the output term (suffix, symbol); ``fan_in`` feeds the default init.
    """

    params: Callable[[Stage], list[tuple[str, tuple[int, ...], str]]]
    forward: Callable[[Stage, np.ndarray, dict[str, np.ndarray]], tuple[np.ndarray, Any]]
    backward: Callable[[Stage, np.ndarray, Any], tuple[np.ndarray, dict[str, np.ndarray]]]
    output: Callable[[Stage], tuple[str, str]]
    fan_in: Callable[[Stage], int] = lambda stage: 1
    state: Callable[[Any], dict[str, np.ndarray]] = lambda cache: {}  # buffers after a forward


def _ops(
    kind: type,
    forward: Callable[..., Any],
    backward: Callable[..., Any],
    state: Callable[[Any], dict[str, np.ndarray]] | None = None,
) -> LayerOps:
    """A kind's hand forward and backward beside the names the contract gives it; ``state(cache)``:
    the layer's buffers as its forward left them (BatchNorm's running statistics)."""
    shape = LAYER_SHAPES[kind]
    return LayerOps(shape.params, forward, backward, shape.output, shape.fan_in, state or (lambda cache: {}))


DENSE = _ops(
    Dense,
    forward=lambda stage, x, params: dense.forward(x, params),
    backward=lambda stage, dout, cache: dense.backward(dout, cache, has_bias=stage.layer.bias),
)

ACTIVATION = _ops(
    Activation,
    forward=lambda stage, x, params: activations.forward(stage.layer.kind, x, stage.layer.slope),
    backward=lambda stage, dout, cache: (
        activations.backward(stage.layer.kind, dout, cache),
        {},
    ),
)

LAYER_OPS: dict[type, LayerOps] = {Dense: DENSE, Activation: ACTIVATION}


# --- the convolution family (hand/conv.py); symbols carry the stage name: z⁽conv1⁾, W⁽conv1⁾ ---
# The lambdas look ``conv.<function>`` up at call time, so a test can monkeypatch a planted bug.


def _dropout_forward(stage: Stage, x: np.ndarray, params: dict[str, np.ndarray]) -> tuple[np.ndarray, Any]:
    if "mask" not in params:
        raise SpecError("masks", f"{stage.name} needs its keep mask for every step (masks={{name: [...]}})")
    return conv.dropout_forward(x, params["mask"], p=stage.layer.p)


CONV_OPS: dict[type, LayerOps] = {
    Conv2d: _ops(
        Conv2d,
        forward=lambda stage, x, params: conv.conv2d_forward(
            x,
            params,
            stride=stage.layer.stride,
            padding=stage.layer.padding,
            dilation=stage.layer.dilation,
            groups=stage.layer.groups,
        ),
        backward=lambda stage, dout, cache: conv.conv2d_backward(dout, cache),
    ),
    MaxPool2d: _ops(
        MaxPool2d,
        forward=lambda stage, x, params: conv.maxpool2d_forward(
            x,
            kernel_size=stage.layer.kernel_size,
            stride=stage.layer.stride,
            padding=stage.layer.padding,
            dilation=stage.layer.dilation,
        ),
        backward=lambda stage, dout, cache: conv.maxpool2d_backward(dout, cache),
    ),
    AvgPool2d: _ops(
        AvgPool2d,
        forward=lambda stage, x, params: conv.avgpool2d_forward(
            x,
            kernel_size=stage.layer.kernel_size,
            stride=stage.layer.stride,
            padding=stage.layer.padding,
            count_include_pad=stage.layer.count_include_pad,
        ),
        backward=lambda stage, dout, cache: conv.avgpool2d_backward(dout, cache),
    ),
    LocalResponseNorm: _ops(
        LocalResponseNorm,
        forward=lambda stage, x, params: conv.local_response_norm_forward(
            x, size=stage.layer.size, alpha=stage.layer.alpha, beta=stage.layer.beta, k=stage.layer.k
        ),
        backward=lambda stage, dout, cache: conv.local_response_norm_backward(dout, cache),
    ),
    Flatten: _ops(
        Flatten,
        forward=lambda stage, x, params: conv.flatten_forward(x),
        backward=lambda stage, dout, cache: conv.flatten_backward(dout, cache),
    ),
    Dropout: _ops(
        Dropout,
        forward=_dropout_forward,
        backward=lambda stage, dout, cache: conv.dropout_backward(dout, cache),
    ),
}
LAYER_OPS.update(CONV_OPS)


# --- a user's own layer (check_model(custom_layers=...)): their hand pair, either form of
# handgrad.layercheck: forward(x, params) -> (out, cache) with backward(dout, cache) -> (dx, grads),
# or forward(x, params) -> out with backward(dout, x, params) -> (dx, grads) or dx.


def _user_forward(stage: Stage, x: np.ndarray, params: dict[str, np.ndarray]) -> tuple[np.ndarray, Any]:
    result = stage.layer.forward(x, {name: value.copy() for name, value in params.items()})
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], np.ndarray):
        return result[0], ("layer", result[1])
    return np.asarray(result), ("simple", (x, params))


def _user_backward(stage: Stage, dout: np.ndarray, cache: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    form, inner = cache
    back = stage.layer.backward(dout, inner) if form == "layer" else stage.layer.backward(dout, *inner)
    dx, grads = back if isinstance(back, tuple) else (back, {})
    missing = [name for name, _ in stage.layer.params if name not in grads]
    if missing:
        returned = ", ".join(grads) or "none"
        raise SpecError(
            "backward", f"{stage.name}: returned no gradient for {missing[0]!r} (it returned {returned})"
        )
    return np.asarray(dx), {name: np.asarray(value) for name, value in grads.items()}


LAYER_OPS[UserLayer] = _ops(UserLayer, forward=_user_forward, backward=_user_backward)


# --- normalization (hand/normalization.py): γ and β are torch's ``weight`` and ``bias`` ---------
# The lambdas look ``normalization.<function>`` up at call time, so a mutant can swap one in.


def _torch_names(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    names = {"gamma": "weight", "beta": "bias"}
    return {names.get(short, short): value for short, value in params.items()}


def _hand_names(grads: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    names = {"weight": "gamma", "bias": "beta"}
    return {names[key]: value for key, value in grads.items()}


def _batchnorm_forward(stage: Stage, x: np.ndarray, params: dict[str, np.ndarray]) -> tuple[np.ndarray, Any]:
    layer: BatchNorm = stage.layer  # type: ignore[assignment]
    return normalization.batchnorm_forward(
        x,
        _torch_names(params),
        dims=layer.dims,
        training=layer.training,
        eps=layer.eps,
        momentum=layer.momentum,
    )


def _layernorm_forward(stage: Stage, x: np.ndarray, params: dict[str, np.ndarray]) -> tuple[np.ndarray, Any]:
    layer: LayerNorm = stage.layer  # type: ignore[assignment]
    return normalization.layernorm_forward(
        x, _torch_names(params), normalized_shape=layer.normalized_shape, eps=layer.eps
    )


LAYER_OPS[BatchNorm] = _ops(
    BatchNorm,
    forward=_batchnorm_forward,
    backward=lambda stage, dout, cache: _hand_grads(normalization.batchnorm_backward(dout, cache)),
    state=lambda cache: cache.state,
)
LAYER_OPS[LayerNorm] = _ops(
    LayerNorm,
    forward=_layernorm_forward,
    backward=lambda stage, dout, cache: _hand_grads(normalization.layernorm_backward(dout, cache)),
)


def _hand_grads(result: tuple[np.ndarray, dict[str, np.ndarray]]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    dx, grads = result
    return dx, _hand_names(grads)


def _fresh_arrays(stages: list[Stage]) -> list[tuple[bool, bool]]:
    """Per stage: (are its output and the gradient there, are its parameter gradients) arrays
    this step made and nothing writes to later, so that the trace may keep them uncopied.

    The built-in layers' forward and backward make new arrays and never write into their inputs,
    their caches or the parameters (an output may be a view of its input, Flatten's, or the input
    itself, identity's: read-only all the same). A user's own layer is not held to that: its
    output and its gradients, and what flows into it (the output of the stage before it, the
    gradient at its output), are copied.
    """
    user = [isinstance(stage.layer, UserLayer) for stage in stages] + [False]
    return [(not (user[i] or user[i + 1]), not user[i]) for i in range(len(stages))]


def ops_for(stage: Stage) -> LayerOps:
    return LAYER_OPS[type(stage.layer)]


def init_params(network: Network, seed: int, dtype: str = "float64") -> dict[str, np.ndarray]:
    """Seeded NumPy draw from torch's default ``nn.Linear`` family: U(−1/√fan_in, 1/√fan_in).

    torch draws ``weight`` by kaiming_uniform(a=√5), which is exactly U(−1/√in, 1/√in), and
    ``bias`` from the same bound; the numbers differ from torch's (another generator), the
    distribution does not. A folded W̃ draws its last column as the bias.
    """
    rng = np.random.default_rng(seed)
    params: dict[str, np.ndarray] = {}
    for stage in network.stages():
        ops = ops_for(stage)
        constants = LAYER_SHAPES[type(stage.layer)].init(stage)
        for short, shape, _ in ops.params(stage):
            if short in constants:  # torch's constant init (BatchNorm's γ = 1, β = 0)
                params[f"{stage.name}.{short}"] = np.full(shape, constants[short], dtype=dtype)
                continue
            bound = 1.0 / np.sqrt(ops.fan_in(stage))
            params[f"{stage.name}.{short}"] = rng.uniform(-bound, bound, size=shape).astype(dtype)
    return params


def init_buffers(network: Network, dtype: str = "float64") -> dict[str, np.ndarray]:
    """Every stage's buffers at torch's initial values (``stage.short``: running_mean 0,
    running_var 1, num_batches_tracked 0 as int64)."""
    buffers: dict[str, np.ndarray] = {}
    for stage in network.stages():
        for short, shape, _, value in LAYER_SHAPES[type(stage.layer)].buffers(stage):
            kind = np.int64 if isinstance(value, int) else dtype
            buffers[f"{stage.name}.{short}"] = np.full(shape, value, dtype=kind)
    return buffers


class HandNetwork:
    """The hand side of a run: its own parameters, stepped by hand-derived NumPy."""

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
        masks: dict[str, list[np.ndarray]] | None = None,
        diagnostics: bool = False,
        buffers: dict[str, np.ndarray] | None = None,
    ) -> None:
        self.network = network
        self.stages = network.stages()
        self.diagnostics = diagnostics  # add phase-"diagnostic" terms (hand/diagnostics.py) each step
        self.masks = masks or {}  # dropout keep masks: stage name -> one per step (data, like batches)
        self.loss = loss
        self.optimizer = optimizer
        self.dtype = np.dtype(dtype)
        self._params = {name: np.asarray(value, dtype=self.dtype) for name, value in params.items()}
        self.x = np.asarray(x, dtype=self.dtype)
        self.y = np.asarray(y, dtype=self.dtype)
        self.batches = batches
        if len(network.output_shape) == 1:  # the loss refuses targets it cannot take (class ids, bce range)
            self.target_form = loss.check_targets(self.y, network.output_shape[0])
        self.state = optim.init_state(optimizer, self._params)
        self.symbols = {name: symbol for name, _, symbol in param_table(network)}
        self.terms = stage_terms(self.stages)
        self._fresh = _fresh_arrays(self.stages)
        # the layers' buffers (BatchNorm's running statistics): torch's initial values unless given
        initial = init_buffers(network, dtype)
        given = buffers or {}
        self._buffers = {
            name: np.asarray(given.get(name, value), dtype=value.dtype) for name, value in initial.items()
        }
        self._buffer_terms = [
            (f"{stage.name}.{short}", symbol)
            for stage in self.stages
            for short, _, symbol, _ in LAYER_SHAPES[type(stage.layer)].buffers(stage)
        ]

    def buffers(self) -> dict[str, np.ndarray]:
        return dict(self._buffers)

    def params(self) -> dict[str, np.ndarray]:
        return dict(self._params)

    def load_params(self, params: dict[str, np.ndarray]) -> None:
        self._params = {name: np.asarray(value, dtype=self.dtype) for name, value in params.items()}

    def predict(self) -> np.ndarray:
        """ŷ for every row of the data at the current parameters (the forward pass alone, as
        ``model.eval()`` runs it: dropout left out, BatchNorm with its running statistics, which
        the prediction does not update)."""
        out = self.x
        for terms in self.terms:
            stage = terms.stage
            if isinstance(stage.layer, Dropout):
                continue
            if isinstance(stage.layer, BatchNorm):
                stage = replace(stage, layer=replace(stage.layer, training=False))
            out, _ = ops_for(stage).forward(stage, out, self._stage_params(terms))
        return out

    def step(self, step: int) -> StepTrace:
        """Run training step ``step`` (1-based) and return its terms."""
        trace = StepTrace(step)
        rows = self.batches[step - 1]
        x, y = self.x[rows], self.y[rows]

        caches = []
        out = x
        for terms, (own_output, _) in zip(self.terms, self._fresh, strict=True):
            stage = terms.stage
            ops = ops_for(stage)
            out, cache = ops.forward(stage, out, self._stage_params(terms, step))
            trace.add(terms.output, terms.output_symbol, "forward", out, copy=not own_output)
            caches.append(cache)
            for short, value in ops.state(cache).items():
                self._buffers[f"{stage.name}.{short}"] = value
        for name, symbol in self._buffer_terms:  # as this step's forward pass left them
            trace.add(name, symbol, "state", self._buffers[name])

        L, loss_cache = losses.forward(self.loss, out, y)
        if self.loss.reduction == "none":  # ℓ per element (row); the run trains on L = Σℓ
            trace.add("loss.l", "ℓ", "loss", L, copy=False)
            L = np.sum(L)
        trace.add("loss.L", "L", "loss", L, copy=False)

        grads: dict[str, np.ndarray] = {}
        dout = losses.backward(self.loss, loss_cache)  # reduction none: upstream ones, ∂Σℓ/∂ŷ
        backward = zip(reversed(self.terms), reversed(caches), reversed(self._fresh), strict=True)
        for terms, cache, (own_output, own_grads) in backward:
            trace.add(terms.output_grad, terms.output_grad_symbol, "backward", dout, copy=not own_output)
            dout, stage_grads = ops_for(terms.stage).backward(terms.stage, dout, cache)
            for short, name, grad_name, grad_symbol in terms.params:
                grads[name] = stage_grads[short]
                trace.add(
                    grad_name,
                    grad_symbol,
                    "backward",
                    stage_grads[short],
                    summands=terms.summands.get(grad_name),
                    copy=not own_grads,
                )
        trace.add("input.dL_dx", "∂L/∂x", "backward", dout, copy=not self._fresh[0][1])

        grads = optim.clip_and_trace(trace, self.optimizer, grads, self.symbols)
        params_before = self._params  # for the diagnostics' ‖ΔW‖ (optim.step never writes in place)
        self._params, self.state = optim.step_and_trace(
            trace, self.optimizer, self._params, grads, self.state, self.symbols
        )  # the lr of the next step
        # --- diagnostics (issue 8): grad norm, saturated/dead fraction, update ratio per layer ---
        if self.diagnostics:
            after = self._params
            terms = diagnostics.step_terms(self.stages, caches, trace, params_before, after, self.symbols)
            for name, symbol, value in terms:
                trace.add(name, symbol, "diagnostic", value)
        return trace

    def _stage_params(self, terms: StageTerms, step: int | None = None) -> dict[str, np.ndarray]:
        params = {short: self._params[name] for short, name, _, _ in terms.params}
        name = terms.stage.name
        for short, _, _, _ in LAYER_SHAPES[type(terms.stage.layer)].buffers(terms.stage):
            params[short] = self._buffers[f"{name}.{short}"]
        if step is not None and name in self.masks:  # data of this step, not a parameter
            params["mask"] = np.asarray(self.masks[name][step - 1], dtype=self.dtype)
        return params
