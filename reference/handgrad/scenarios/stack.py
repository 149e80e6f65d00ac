"""One experiment from a layer-stack spec: dense, conv family, activations, dropout.

:func:`stack_experiment` builds both sides of any :class:`~handgrad.contract.spec.Network` from one spec,
one set of initial weights and, where the stack has dropout, one set of keep masks: the engine
behind ``xor``, ``mlp``, ``deep`` and ``alexnet-mini``.

Dropout masks are data (see :func:`dropout_masks`): drawn once before the run from torch's
generator under the run's seed, and given to both sides. A hand-only build (``handgrad
gradcheck``, no torch in the process) draws them with NumPy instead (:func:`numpy_dropout_masks`):
other masks than torch's, but the finite-difference check needs only fixed masks, not torch's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from handgrad.contract.conv_layers import Dropout
from handgrad.contract.runs import StackRun
from handgrad.contract.spec import Activation, Data, Network, Schedule, SpecError
from handgrad.contract.training import Loss, Optimizer
from handgrad.hand.network import HandNetwork, init_params
from handgrad.harness import Experiment


def stage_input_shapes(network: Network) -> dict[str, tuple[int, ...]]:
    """Per-sample input shape of every stage that is not an activation, by stage name."""
    shapes: dict[str, tuple[int, ...]] = {}
    shape = tuple(network.input_shape)
    for stage in network.stages():
        if not isinstance(stage.layer, Activation):
            shapes[stage.name] = shape
        shape = stage.layer.output_shape(shape)
    return shapes


def dropout_masks(network: Network, batches: Sequence[np.ndarray], seed: int) -> dict[str, list[np.ndarray]]:
    """Keep masks for every dropout stage and step, from torch's generator seeded with ``seed``.

    Step by step, stage by stage (the order ``nn.Dropout`` modules would draw in training), each
    mask is ``torch.empty(N, *shape, dtype=float64).bernoulli_(1 − p, generator)``: the very call
    ``F.dropout`` makes on CPU, so with the global generator seeded the same ``F.dropout`` would
    drop exactly these elements (``tests/test_conv_network.py`` checks it). The masks are plain
    0/1 arrays handed to both sides; neither side draws anything.
    """
    import torch  # here, not at the top: a hand-only build never draws torch's masks

    generator = torch.Generator().manual_seed(seed)
    shapes = stage_input_shapes(network)
    drops = [stage for stage in network.stages() if isinstance(stage.layer, Dropout)]
    masks: dict[str, list[np.ndarray]] = {stage.name: [] for stage in drops}
    if not drops:  # nothing to draw: the step schedule is never walked (it may be 10⁹ steps long)
        return masks
    for rows in batches:
        for stage in drops:
            empty = torch.empty((len(rows), *shapes[stage.name]), dtype=torch.float64)
            masks[stage.name].append(empty.bernoulli_(1 - stage.layer.p, generator=generator).numpy())
    return masks


NUMPY_MASKS = (
    "drawn with NumPy (default_rng(seed), keep where U < 1 − p), not torch's generator: the hand-only "
    "build imports no torch, and the finite-difference check needs fixed masks, not torch's"
)


def numpy_dropout_masks(
    network: Network, batches: Sequence[np.ndarray], seed: int
) -> dict[str, list[np.ndarray]]:
    """Keep masks as :func:`dropout_masks` lays them out, drawn from ``numpy.random.default_rng(seed)``
    in the same order (step by step, stage by stage): for a hand-only build, where torch is not
    imported. They are other masks than torch's; a compare run never uses them."""
    rng = np.random.default_rng(seed)
    shapes = stage_input_shapes(network)
    drops = [stage for stage in network.stages() if isinstance(stage.layer, Dropout)]
    masks: dict[str, list[np.ndarray]] = {stage.name: [] for stage in drops}
    if not drops:  # nothing to draw: the step schedule is never walked (it may be 10⁹ steps long)
        return masks
    for rows in batches:
        for stage in drops:
            draw = rng.random((len(rows), *shapes[stage.name]))  # N,*shape
            masks[stage.name].append((draw < 1 - stage.layer.p).astype(np.float64))
    return masks


# --- one experiment from a network spec ----------------------------------------------------------


def check_data(network: Network, loss: Loss, data: Data) -> None:
    """The data fit the stack: samples of the input shape, targets the loss takes for the
    output (a vector per sample)."""
    shape = tuple(network.input_shape)
    if len(shape) == 1 and (data.x.ndim != 2 or data.x.shape[1] != shape[0]):
        got = data.x.shape[1] if data.x.ndim == 2 else f"samples of shape {data.x.shape[1:]}"
        raise SpecError("data", f"expected {shape[0]} input columns, got {got}")
    if data.x.shape[1:] != shape:
        raise SpecError("data.x", f"expected samples of shape {shape}, got {data.x.shape[1:]}")
    out = network.output_shape
    if len(out) != 1:
        raise SpecError("layers", f"the network must end in one vector per sample (Flatten), not {out}")
    loss.check_targets(data.y, out[0])


def stack_experiment(
    scenario: str,
    network: Network,
    loss: Loss,
    optimizer: Optimizer,
    data: Data,
    schedule: Schedule,
    *,
    steps: int,
    seed: int,
    dtype: str = "float64",
    params: dict[str, np.ndarray] | None = None,
    device: str = "cpu",
    config: dict[str, object] | None = None,
    diagnostics: bool = False,
    with_twin: bool = True,
    modules: list[Any] | None = None,
    buffers: dict[str, np.ndarray] | None = None,
) -> Experiment:
    """Both sides of a layer stack, from one spec, one set of initial weights (``params``, else
    seeded by ``seed``) and one set of dropout masks; ``diagnostics`` adds the per-layer diagnostic
    terms (:mod:`handgrad.hand.diagnostics`). ``with_twin=False``: the hand side alone (``twin``
    None), no torch imported, the dropout masks drawn by :func:`numpy_dropout_masks`. ``modules``:
    the twin runs these (a user's own modules, one per stage: :mod:`handgrad.scenarios.own_model`),
    whose buffers (BatchNorm's running statistics) the hand side starts from (``buffers``)."""
    check_data(network, loss, data)
    initial = params if params is not None else init_params(network, seed, "float64")
    initial = {name: np.asarray(value, dtype=dtype) for name, value in initial.items()}
    batches = schedule.batches(data.n, steps)
    masks = (dropout_masks if with_twin else numpy_dropout_masks)(network, batches, seed)  # {}: no dropout
    hand = HandNetwork(
        network,
        loss,
        optimizer,
        initial,
        data.x,
        data.y,
        batches,
        dtype,
        masks=masks,
        diagnostics=diagnostics,
        buffers=buffers,
    )
    twin = None
    if with_twin:
        from handgrad.twin.network import TwinNetwork

        twin = TwinNetwork(
            network,
            loss,
            optimizer,
            initial,
            data.x,
            data.y,
            batches,
            dtype,
            device,
            masks=masks,
            diagnostics=diagnostics,
            modules=modules,
        )
    elif masks:
        config = {**(config or {}), "dropout_masks": NUMPY_MASKS}
    return Experiment(
        scenario=scenario,
        hand=hand,
        twin=twin,
        steps=steps,
        dtype=dtype,
        config=config or {},
        spec=StackRun(network, loss, optimizer, data, schedule, batches, masks),
        initial_params=initial,
    )
