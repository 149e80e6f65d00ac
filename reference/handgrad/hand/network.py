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
from dataclasses import dataclass
from typing import Any

import numpy as np

from handgrad.hand import activations, dense, losses, optim
from handgrad.spec import Activation, Dense, Loss, Network, Optimizer, Stage
from handgrad.trace import StepTrace

SUPERSCRIPTS = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")


def sup(k: int) -> str:
    """``3 -> '⁽³⁾'``: the layer index as the manual prints it."""
    return f"⁽{str(k).translate(SUPERSCRIPTS)}⁾"


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


def _dense_params(stage: Stage) -> list[tuple[str, tuple[int, ...], str]]:
    layer: Dense = stage.layer  # type: ignore[assignment]
    if layer.fold_bias:
        return [("Wt", (layer.out_features, layer.in_features + 1), f"W̃{sup(stage.k)}")]
    shapes = [("W", (layer.out_features, layer.in_features), f"W{sup(stage.k)}")]
    if layer.bias:
        shapes.append(("b", (layer.out_features,), f"b{sup(stage.k)}"))
    return shapes


DENSE = LayerOps(
    params=_dense_params,
    forward=lambda stage, x, params: dense.forward(x, params),
    backward=lambda stage, dout, cache: dense.backward(dout, cache, has_bias=stage.layer.bias),
    output=lambda stage: ("z", f"z{sup(stage.k)}"),
    fan_in=lambda stage: stage.layer.in_features,
)

ACTIVATION = LayerOps(
    params=lambda stage: [],
    forward=lambda stage, x, params: activations.forward(stage.layer.kind, x, stage.layer.slope),
    backward=lambda stage, dout, cache: (
        activations.backward(stage.layer.kind, dout, cache),
        {},
    ),
    output=lambda stage: ("a", f"a{sup(stage.k)}"),
)

LAYER_OPS: dict[type, LayerOps] = {Dense: DENSE, Activation: ACTIVATION}


def ops_for(stage: Stage) -> LayerOps:
    return LAYER_OPS[type(stage.layer)]


def param_table(network: Network) -> list[tuple[str, tuple[int, ...], str]]:
    """Every parameter of the network as (full name ``dense1.W``, shape, symbol), in order."""
    return [
        (f"{stage.name}.{short}", shape, symbol)
        for stage in network.stages()
        for short, shape, symbol in ops_for(stage).params(stage)
    ]


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
        for short, shape, _ in ops.params(stage):
            bound = 1.0 / np.sqrt(ops.fan_in(stage))
            params[f"{stage.name}.{short}"] = rng.uniform(-bound, bound, size=shape).astype(dtype)
    return params


def _gradient_symbol(symbol: str) -> str:
    return f"∂L/∂{symbol}"


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
    ) -> None:
        self.network = network
        self.stages = network.stages()
        self.loss = loss
        self.optimizer = optimizer
        self.dtype = np.dtype(dtype)
        self._params = {name: np.asarray(value, dtype=self.dtype) for name, value in params.items()}
        self.x = np.asarray(x, dtype=self.dtype)
        self.y = np.asarray(y, dtype=self.dtype)
        self.batches = batches
        self.state = optim.init_state(optimizer, self._params)
        self.symbols = {name: symbol for name, _, symbol in param_table(network)}

    def params(self) -> dict[str, np.ndarray]:
        return dict(self._params)

    def load_params(self, params: dict[str, np.ndarray]) -> None:
        self._params = {name: np.asarray(value, dtype=self.dtype) for name, value in params.items()}

    def step(self, step: int) -> StepTrace:
        """Run training step ``step`` (1-based) and return its terms."""
        trace = StepTrace(step)
        rows = self.batches[step - 1]
        x, y = self.x[rows], self.y[rows]

        caches = []
        out = x
        for stage in self.stages:
            ops = ops_for(stage)
            stage_params = self._stage_params(stage)
            out, cache = ops.forward(stage, out, stage_params)
            suffix, symbol = ops.output(stage)
            trace.add(f"{stage.name}.{suffix}", symbol, "forward", out)
            caches.append(cache)

        L, loss_cache = losses.forward(self.loss, out, y)
        trace.add("loss.L", "L", "loss", L)

        grads: dict[str, np.ndarray] = {}
        dout = losses.backward(self.loss, loss_cache)
        for stage, cache in zip(reversed(self.stages), reversed(caches), strict=True):
            ops = ops_for(stage)
            suffix, symbol = ops.output(stage)
            trace.add(f"{stage.name}.dL_d{suffix}", _gradient_symbol(symbol), "backward", dout)
            dout, stage_grads = ops.backward(stage, dout, cache)
            for short, _, param_symbol in ops.params(stage):
                name = f"{stage.name}.{short}"
                grads[name] = stage_grads[short]
                trace.add(
                    f"{stage.name}.dL_d{short}",
                    _gradient_symbol(param_symbol),
                    "backward",
                    stage_grads[short],
                )
        trace.add("input.dL_dx", "∂L/∂x", "backward", dout)

        self._params, self.state = optim.step(self.optimizer, self._params, grads, self.state)
        for name, value in self._params.items():
            trace.add(f"{name}_next", f"{self.symbols[name]}′", "update", value)
        kind = self.optimizer.kind
        for key, symbol in optim.state_keys(self.optimizer):
            for name in self._params:
                trace.add(
                    f"{kind}.{key}.{name}", f"{symbol}[{self.symbols[name]}]", "state", self.state[name][key]
                )
        for key, symbol, value in optim.scalar_state(self.optimizer, self.state):
            trace.add(f"{kind}.{key}", symbol, "state", value)
        return trace

    def _stage_params(self, stage: Stage) -> dict[str, np.ndarray]:
        prefix = stage.name + "."
        return {short: self._params[prefix + short] for short, _, _ in ops_for(stage).params(stage)}
