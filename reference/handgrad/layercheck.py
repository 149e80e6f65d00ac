"""Check your own layer: a NumPy forward/backward against the torch module that should match.

:func:`check_layer` loads the same parameters into the module, runs both forwards on each example
input, drives both backwards with one seeded random upstream gradient G (not ones: ones hide a
missing transpose) and compares, term by term with :func:`handgrad.harness.compare_values`,

    out, dL_dx, dL_d<param> for every parameter

in that order. The result is a :class:`LayerReport`; ``raise_on_mismatch=True`` (or
:func:`handgrad.testing.assert_matches_torch`) raises ``AssertionError`` with the full mismatch
message (term, element index, both values, |Δ|, rel, tolerance, the term before it).

Two forms of the user's functions are accepted:

* the layer style: ``forward(x, params) -> (out, cache)`` and ``backward(dout, cache) -> (dx, grads)``;
* simple callables: ``forward(x, params) -> out`` and ``backward(dout, x, params) -> (dx, grads)``
  (or ``-> dx`` for a layer without parameters).

Which form is meant is told by what ``forward`` returns: a 2-tuple whose first item is an array is
the layer style; an array alone is the simple form.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from handgrad.contract.spec import SpecError
from handgrad.contract.tolerance import Tolerance, tolerance_for
from handgrad.contract.trace import StepTrace
from handgrad.harness import Divergence, TermCheck, compare_values, first_divergence


@dataclass
class LayerReport:
    """Every term of every example input, and the first mismatch (in computation order) if any."""

    name: str
    tolerance: Tolerance
    checks: list[tuple[int, TermCheck]] = field(default_factory=list)  # (example number from 1, check)
    first: Divergence | None = None

    @property
    def ok(self) -> bool:
        return self.first is None

    def message(self) -> str:
        if self.first is None:
            worst = max((check.max_abs for _, check in self.checks), default=0.0)
            terms = len({check.name for _, check in self.checks})
            examples = len({example for example, _ in self.checks})
            return (
                f"{self.name}: all {terms} terms agree with torch on {examples} example input(s); "
                f"max |Δ| {worst:.1e}"
            )
        text = self.first.message().replace(f"step {self.first.step},", f"example {self.first.step},", 1)
        return f"{self.name}: MISMATCH at {text}"

    def __str__(self) -> str:
        return self.message()


def _to_numpy(tensor: Any) -> np.ndarray:
    return tensor.detach().cpu().numpy().astype(np.float64)


def check_layer(
    forward: Callable[..., Any],
    backward: Callable[..., Any],
    torch_module: Any,
    inputs: np.ndarray | Sequence[np.ndarray],
    params: Mapping[str, np.ndarray] | None = None,
    *,
    param_names: Mapping[str, str] | None = None,
    seed: int = 0,
    dtype: str = "float64",
    tolerance: Tolerance | None = None,
    name: str = "layer",
    raise_on_mismatch: bool = False,
) -> LayerReport:
    """Compare a hand-written layer with ``torch_module`` on each example input.

    ``params``: the hand side's parameters by name; they are copied into the module (by the same
    name, or ``param_names[hand_name]`` = the module's parameter name). Without ``params`` the
    module's own parameters are read and given to the hand side. ``inputs``: one array (a batch)
    or a list of arrays, each checked on its own. The upstream gradient G is drawn from a
    seeded standard normal, the same for both sides. Every comparison is in ``dtype`` with its
    tolerance row (``tolerance`` overrides it).
    """
    import torch

    if str(dtype) not in ("float64", "float32"):
        raise SpecError("dtype", f"expected float64 or float32, got {dtype!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**63:
        raise SpecError("seed", f"expected an integer in [0, 2⁶³), got {seed!r}")
    if not isinstance(torch_module, torch.nn.Module):
        raise SpecError("torch_module", f"expected a torch.nn.Module, got {type(torch_module).__name__}")
    tol = tolerance or tolerance_for(dtype)
    if isinstance(inputs, (np.ndarray, np.generic, int, float)):
        examples = [inputs]
    elif isinstance(inputs, Sequence):
        examples = list(inputs)
    else:
        raise SpecError("inputs", f"expected an array or a list of arrays, got {type(inputs).__name__}")
    if not examples:
        raise SpecError("inputs", "expected at least one example input")
    for number, example in enumerate(examples, start=1):
        if np.size(example) == 0 or np.ndim(example) == 0:
            raise SpecError("inputs", f"example {number} is empty (shape {np.shape(example)}); give a batch")
    torch_dtype = {"float64": torch.float64, "float32": torch.float32}[str(np.dtype(dtype))]
    module = copy.deepcopy(torch_module).to(torch_dtype)  # the caller's module is never changed
    torch_params = dict(module.named_parameters())
    mapping = dict(param_names or {})
    if params is None:
        inverse = {torch_name: hand_name for hand_name, torch_name in mapping.items()}
        for torch_name in inverse:
            if torch_name not in torch_params:
                raise SpecError("param_names", f"the module has no parameter {torch_name!r}")
        hand_params = {
            inverse.get(key, key): _to_numpy(value).astype(dtype) for key, value in torch_params.items()
        }
        mapping = {inverse.get(key, key): key for key in torch_params}
    else:
        hand_params = {key: np.array(value, dtype=dtype) for key, value in params.items()}
        for key in hand_params:
            mapping.setdefault(key, key)
            if mapping[key] not in torch_params:
                raise SpecError(
                    "params",
                    f"{key!r} has no parameter {mapping[key]!r} in the module (it has "
                    f"{', '.join(torch_params) or 'none'}); pass param_names={{hand: torch}}",
                )
        with torch.no_grad():
            for key, value in hand_params.items():
                target = torch_params[mapping[key]]
                if tuple(target.shape) != value.shape:
                    raise SpecError(
                        "params", f"{key}: shape {value.shape}, the module's is {tuple(target.shape)}"
                    )
                target.copy_(torch.as_tensor(value))

    report = LayerReport(name, tol)
    rng = np.random.default_rng(seed)
    for number, x in enumerate(examples, start=1):
        x = np.array(x, dtype=dtype)
        # --- hand side
        result = forward(x, {key: value.copy() for key, value in hand_params.items()})
        layer_style = isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], np.ndarray)
        out = np.asarray(result[0] if layer_style else result)
        G = rng.standard_normal(out.shape).astype(dtype)  # the random upstream gradient ∂L/∂out
        back = backward(G, result[1]) if layer_style else backward(G, x, hand_params)
        dx, grads = back if isinstance(back, tuple) else (back, {})
        # --- torch side: what torch computed, nothing recomputed
        for p in module.parameters():
            p.grad = None
        xt = torch.tensor(x, requires_grad=True)
        out_t = module(xt)
        out_t.backward(torch.as_tensor(G))
        trace = StepTrace(number)
        checks = []

        def add(
            term: str,
            hand_value: Any,
            torch_value: np.ndarray,
            symbol: str,
            phase: str,
            trace: StepTrace = trace,
            checks: list[TermCheck] = checks,
        ) -> None:
            trace.add(f"{name}.{term}", symbol, phase, np.asarray(hand_value, dtype=np.float64))
            checks.append(compare_values(f"{name}.{term}", hand_value, torch_value, tol))

        add("out", out, _to_numpy(out_t), "out", "forward")
        add("dL_dx", dx, _to_numpy(xt.grad), "∂L/∂x", "backward")
        for key in hand_params:
            grad_t = torch_params[mapping[key]].grad
            torch_grad = np.zeros(hand_params[key].shape) if grad_t is None else _to_numpy(grad_t)
            if key not in grads:
                raise SpecError(
                    "backward",
                    f"returned no gradient for parameter {key!r} (it returned {', '.join(grads) or 'none'})",
                )
            add(f"dL_d{key}", grads[key], torch_grad, f"∂L/∂{key}", "backward")
        report.checks.extend((number, check) for check in checks)
        if report.first is None:
            report.first = first_divergence(number, trace, checks, tol)
    if raise_on_mismatch and not report.ok:
        raise AssertionError(report.message())
    return report
