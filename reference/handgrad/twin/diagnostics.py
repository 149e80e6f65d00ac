"""The diagnostic terms of :mod:`handgrad.hand.diagnostics`, computed by torch from torch's own numbers.

* ``grad_norm``: ``torch.linalg.vector_norm`` of the weight's gradient as torch's backward left it
  in ``.grad`` (the twin's ``dense{k}.dL_dW`` term, read before ``optimizer.step()``: a gradient
  clipped afterwards does not change it).
* ``update_ratio``: ``vector_norm(W′ − W) / vector_norm(W)`` of the module's parameters before and
  after ``optimizer.step()``.
* ``saturated`` / ``dead``: f′(z) is what torch's own backward of the activation module gives
  (``torch.autograd.grad`` of the module's output at the z torch produced, against ones, which for
  an element-wise function is f′(z) element by element: ``sigmoid_backward``, ``tanh_backward``,
  ``threshold_backward`` with relu′(0) = 0); then the same thresholds, counted by torch.

The thresholds are the hand side's constants (a definition, not a computed value).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from handgrad.contract.names import DEAD_KINDS, SATURATION_THRESHOLD, Row, weight_name
from handgrad.contract.spec import Activation, Stage
from handgrad.contract.trace import StepTrace

SOURCE = "torch-ops"


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy().copy()


def derivative(module: torch.nn.Module, z: torch.Tensor) -> torch.Tensor:
    """f′(z) element-wise, by torch's backward of ``module`` at ``z`` (module hooks not run)."""
    leaf = z.detach().requires_grad_(True)
    with torch.enable_grad():
        a = module.forward(leaf)
        (f_prime,) = torch.autograd.grad(a, leaf, grad_outputs=torch.ones_like(a))
    return f_prime


def step_terms(
    stages: Sequence[Stage],
    modules: Sequence[torch.nn.Module],
    outputs: Sequence[torch.Tensor],
    trace: StepTrace,
    params_before: Mapping[str, np.ndarray],
    params_after: Mapping[str, np.ndarray],
    symbols: Mapping[str, str],
) -> list[Row]:
    """The twin's diagnostic terms, same names and order as the hand side's.

    ``outputs`` are the stage outputs torch produced this step (forward hooks), aligned with
    ``stages`` and ``modules``; ``params_before``/``params_after`` torch's parameters around
    ``optimizer.step()`` in the hand side's layout; ``trace`` the twin's terms so far.
    """
    rows: list[Row] = []
    for index, (stage, module) in enumerate(zip(stages, modules, strict=True)):
        weight = weight_name(stage, params_before)
        if weight is not None:
            short = weight.split(".", 1)[1]
            W_symbol = symbols[weight]
            dL_dW = torch.as_tensor(trace.value(f"{stage.name}.dL_d{short}"))
            W = torch.as_tensor(params_before[weight])
            W_next = torch.as_tensor(params_after[weight])
            norm = torch.linalg.vector_norm
            rows.append((f"{stage.name}.grad_norm", f"‖∂L/∂{W_symbol}‖", _numpy(norm(dL_dW))))
            ratio = norm(W_next - W) / norm(W)
            rows.append((f"{stage.name}.update_ratio", f"‖Δ{W_symbol}‖/‖{W_symbol}‖", _numpy(ratio)))
        if not isinstance(stage.layer, Activation):
            continue
        kind = stage.layer.kind
        a_symbol = trace[f"{stage.name}.a"].symbol
        if kind in SATURATION_THRESHOLD or kind in DEAD_KINDS:
            z = outputs[index - 1]  # the activation's input: the previous stage's output
            f_prime = derivative(module, z)
            if kind in SATURATION_THRESHOLD:
                saturated = (f_prime < SATURATION_THRESHOLD[kind]).to(z.dtype).mean()
                rows.append((f"{stage.name}.saturated", f"sat[{a_symbol}]", _numpy(saturated)))
            else:
                dead = (f_prime == 0).all(dim=0).to(z.dtype).mean()
                rows.append((f"{stage.name}.dead", f"dead[{a_symbol}]", _numpy(dead)))
    return rows
