"""The manual's copyable test for a user's own layer runs as written: it passes with the correct
layer and fails, with the full mismatch message, with the classic slip planted."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from handgrad import check_layer
from handgrad.testing import assert_matches_torch

PAGE = Path(__file__).resolve().parent.parent / "manual" / "your-own-layer.md"
CORRECT = "dz = dout * (1 - cache.a * cache.a)"
SLIP = "dz = dout * (1 - cache.z * cache.z)"


def manual_block() -> str:
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(encoding="utf-8"), flags=re.S)
    runnable = [block for block in blocks if "def test_" in block]
    assert len(runnable) == 1, "the page must hold exactly one copyable test"
    return runnable[0]


def run_block(source: str, path: Path) -> None:
    path.write_text(source, encoding="utf-8")
    namespace: dict[str, object] = {"__name__": "test_my_layer"}
    exec(compile(source, str(path), "exec"), namespace)
    tests = [value for key, value in namespace.items() if key.startswith("test_") and callable(value)]
    assert tests
    for test in tests:
        test()


def test_copyable_test_passes_with_the_correct_layer(tmp_path, capsys) -> None:
    run_block(manual_block(), tmp_path / "test_my_layer.py")
    assert "all 4 terms agree with torch" in capsys.readouterr().out


def test_copyable_test_fails_with_the_planted_slip(tmp_path) -> None:
    source = manual_block()
    assert CORRECT in source
    with pytest.raises(AssertionError) as caught:
        run_block(source.replace(CORRECT, SLIP), tmp_path / "test_my_layer.py")
    message = str(caught.value)
    assert "MISMATCH at example 1, dense_tanh.dL_dx" in message
    assert "elements differ" in message and "tolerance atol 1e-10·max|torch| + rtol 1e-10·|torch|" in message
    assert "The term before, dense_tanh.out, agreed" in message


# --- the API beyond the page: simple callables, params read from the module, the report ---------


def _simple_forward(x, params):
    return x @ params["weight"].T + params["bias"]


def _simple_backward(dout, x, params):
    return dout @ params["weight"], {"weight": dout.T @ x, "bias": dout.sum(axis=0)}


def _simple_backward_ones_blind(dout, x, params):
    # bug: ∂L/∂W = Gᵀ X with G's rows summed first: right only for a G of equal rows
    g = np.broadcast_to(dout.mean(axis=0), dout.shape)
    return dout @ params["weight"], {"weight": g.T @ x, "bias": dout.sum(axis=0)}


@pytest.mark.parametrize(
    ("backward", "ok", "term"),
    [
        (_simple_backward, True, None),
        (_simple_backward_ones_blind, False, "lin.dL_dweight"),  # caught only by a random G
    ],
)
def test_simple_callables_with_params_from_the_module(backward, ok, term) -> None:
    torch.manual_seed(0)
    report = check_layer(
        _simple_forward, backward, torch.nn.Linear(3, 2), np.arange(12.0).reshape(4, 3) / 7, name="lin"
    )
    assert report.ok is ok, report.message()
    assert (report.first.term if report.first else None) == term


def test_parameterless_layer_and_several_inputs() -> None:
    inputs = [np.array([[-1.0, 0.0, 2.0]]), np.array([[0.0, 0.0], [3.0, -4.0]])]  # ReLU exactly at 0

    def forward(x, params):
        return np.maximum(x, 0)

    def backward(dout, x, params):
        return dout * (x > 0)  # relu′(0) = 0, as torch

    report = assert_matches_torch(forward, backward, torch.nn.ReLU(), inputs, name="relu")
    assert len(report.checks) == 4 and report.ok


def test_unknown_parameter_name_is_refused() -> None:
    from handgrad.contract.spec import SpecError

    with pytest.raises(SpecError, match="param_names"):
        check_layer(
            _simple_forward,
            _simple_backward,
            torch.nn.Linear(3, 2),
            np.ones((1, 3)),
            params={"W": np.ones((2, 3))},
        )


def test_param_names_are_honoured_when_params_come_from_the_module() -> None:
    def forward(x, params):
        return x @ params["W"].T + params["b"]

    def backward(dout, x, params):
        return dout @ params["W"], {"W": dout.T @ x, "b": dout.sum(axis=0)}

    torch.manual_seed(0)
    report = check_layer(
        forward, backward, torch.nn.Linear(3, 2), np.ones((2, 3)), param_names={"W": "weight", "b": "bias"}
    )
    assert report.ok, report.message()
    assert {check.name for _, check in report.checks} >= {"layer.dL_dW", "layer.dL_db"}


def test_the_callers_module_is_left_as_it_was() -> None:
    torch.manual_seed(0)
    module = torch.nn.Linear(3, 2)  # float32, no gradients yet
    before = {key: value.detach().clone() for key, value in module.named_parameters()}
    check_layer(
        _simple_forward,
        _simple_backward,
        module,
        np.ones((2, 3)),
        params={"weight": np.full((2, 3), 0.5), "bias": np.array([1.0, -1.0])},
    )
    for key, value in module.named_parameters():
        assert value.dtype == torch.float32 and value.grad is None
        assert torch.equal(value.detach(), before[key]), key


def test_a_missing_gradient_is_named() -> None:
    from handgrad.contract.spec import SpecError

    def backward(dout, x, params):
        return dout @ params["weight"], {"weight": dout.T @ x}

    with pytest.raises(SpecError, match="returned no gradient for parameter 'bias'"):
        check_layer(_simple_forward, backward, torch.nn.Linear(3, 2), np.ones((2, 3)))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"inputs": np.ones((0, 3))}, "inputs"),
        ({"inputs": []}, "inputs"),
        ({"inputs": np.float64(1.0)}, "inputs"),
        ({"dtype": "float16"}, "dtype"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"seed": True}, "seed"),
        ({"torch_module": "Linear"}, "torch_module"),
    ],
)
def test_bad_arguments_name_the_field(kwargs, field) -> None:
    from handgrad.contract.spec import SpecError

    arguments = {"torch_module": torch.nn.Linear(3, 2), "inputs": np.ones((2, 3)), **kwargs}
    with pytest.raises(SpecError) as caught:
        check_layer(_simple_forward, _simple_backward, **arguments)
    assert caught.value.field == field, caught.value
