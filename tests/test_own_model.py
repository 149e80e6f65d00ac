"""Check your own model (issue 18): handgrad.check_model on a user's torch module, the user's own
hand layer inside a whole network, the module left as it was, ``handgrad check`` on the command
line, and the shipped XOR example reproducing ``handgrad compare xor`` number for number."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from handgrad import check_model, harness
from handgrad.cli import main, scenario_parser
from handgrad.contract.spec import SpecError
from handgrad.contract.training import OPTIMIZERS
from handgrad.scenarios import SCENARIOS
from handgrad.scenarios.own_model import build_experiment
from handgrad.testing import assert_model_matches_torch

ROOT = Path(__file__).resolve().parent.parent
LR = {"sgd": 0.1, "adam": 0.01, "adamw": 0.01, "rmsprop": 0.01, "adagrad": 0.1}


# --- the user's models: random weights (torch's own init under a seed), tiny sizes ---------------


def dense_model() -> tuple[nn.Module, np.ndarray, np.ndarray]:
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Linear(3, 4),
        nn.Tanh(),
        nn.Dropout(0.3),
        nn.Sequential(nn.Linear(4, 4), nn.LeakyReLU(0.2)),  # nested
        nn.Linear(4, 2),
        nn.Sigmoid(),
    )
    rng = np.random.default_rng(1)
    return model, rng.normal(size=(6, 3)), rng.uniform(0.1, 0.9, size=(6, 2))


def conv_model() -> tuple[nn.Module, np.ndarray, np.ndarray]:
    torch.manual_seed(2)
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1),
        nn.ReLU(),
        nn.LocalResponseNorm(2),
        nn.MaxPool2d(2),  # 5×5 → 2×2: the odd row and column are dropped
        nn.Flatten(),
        nn.Linear(8, 3),
    )
    rng = np.random.default_rng(2)
    return model, rng.normal(size=(4, 1, 5, 5)), rng.normal(size=(4, 3))


class Recurrent(nn.Module):
    """The recurrent family's shape: act(head(h_n of the top layer))."""

    def __init__(self, cell: type[nn.RNNBase]) -> None:
        super().__init__()
        self.rnn = cell(2, 3, num_layers=2, batch_first=True)
        self.head = nn.Linear(3, 1)
        self.act = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, state = self.rnn(x)
        h_n = state[0] if isinstance(state, tuple) else state
        return self.act(self.head(h_n[-1]))


def recurrent_model(cell: type[nn.RNNBase] = nn.LSTM) -> tuple[nn.Module, np.ndarray, np.ndarray]:
    torch.manual_seed(3)
    rng = np.random.default_rng(3)
    return Recurrent(cell), rng.normal(size=(3, 4, 2)), rng.uniform(0.1, 0.9, size=(3, 1))


MODELS = {"dense": dense_model, "conv": conv_model, "recurrent": recurrent_model}


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("kind", MODELS)
def test_user_models_agree_over_20_steps(kind: str, optimizer: str) -> None:
    model, x, y = MODELS[kind]()
    report = check_model(model, x, y, optimizer=optimizer, lr=LR[optimizer], steps=20, mode="batch")
    assert report.ok, report.verdict()
    assert report.steps_run == 20
    assert report.configuration_failures == []


@pytest.mark.parametrize("cell", [nn.RNN, nn.GRU])
def test_other_recurrent_cells_agree(cell: type[nn.RNNBase]) -> None:
    model, x, y = recurrent_model(cell)
    assert check_model(model, x, y, steps=20, lr=0.1, mode="minibatch", batch_size=2).ok


def test_dropout_masks_are_drawn_and_used() -> None:
    model, x, y = dense_model()
    experiment = build_experiment(model, x, y, steps=3, mode="batch")
    masks = experiment.spec.masks["dropout1"]
    assert len(masks) == 3 and 0 < np.mean(masks[0]) < 1  # some kept, some dropped


# --- the module is never changed ---------------------------------------------------------------


def test_the_users_module_and_weights_are_unchanged() -> None:
    model, x, y = conv_model()  # float32, as a user's module usually is
    model.train()
    before = {key: value.clone() for key, value in model.state_dict().items()}
    report = check_model(model, x, y, optimizer="adam", lr=0.05, steps=5, mode="batch")
    assert report.ok and report.final_params["hand"]["conv1.W"].dtype == np.float64
    after = model.state_dict()
    assert list(after) == list(before)
    for key, value in before.items():
        assert after[key].dtype == torch.float32 and torch.equal(after[key], value), key
    assert all(param.grad is None for param in model.parameters())
    assert model.training
    trained = report.final_params["torch"]["conv1.W"]
    assert not np.allclose(trained, before["0.weight"].double().numpy())  # the copy did train


# --- the user's own hand layer inside the network ------------------------------------------------


class ScaledTanh(nn.Module):
    """A layer handgrad does not know: out = s ⊙ tanh(x), one scale per feature."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.linspace(0.5, 1.5, features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * torch.tanh(x)


def scaled_tanh_forward(x, params):
    t = np.tanh(x)  # N,F
    return params["scale"] * t, (t, params["scale"])


def scaled_tanh_backward(dout, cache):
    t, scale = cache
    grads = {"scale": (dout * t).sum(axis=0)}  # ∂L/∂s = Σ_n G ⊙ tanh(x)
    return dout * scale * (1 - t * t), grads  # ∂L/∂x = G ⊙ s ⊙ (1 − tanh²x)


def wrong_scale_gradient(dout, cache):
    dx, grads = scaled_tanh_backward(dout, cache)
    return dx, {"scale": grads["scale"] * 0.999}  # the planted fault


def wrong_forward(x, params):
    out, cache = scaled_tanh_forward(x, params)
    return out + 1e-6, cache  # the planted fault


def custom_model() -> tuple[nn.Module, np.ndarray, np.ndarray]:
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(3, 4), ScaledTanh(4), nn.Linear(4, 1))
    rng = np.random.default_rng(4)
    return model, rng.normal(size=(5, 3)), rng.normal(size=(5, 1))


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_a_users_hand_layer_agrees_inside_the_network(optimizer: str) -> None:
    model, x, y = custom_model()
    custom = {ScaledTanh: (scaled_tanh_forward, scaled_tanh_backward)}
    report = check_model(
        model, x, y, optimizer=optimizer, lr=LR[optimizer], steps=20, mode="batch", custom_layers=custom
    )
    assert report.ok, report.verdict()
    assert {"scaledtanh1.out", "scaledtanh1.dL_dout", "scaledtanh1.dL_dscale"} <= set(report.terms)
    assert report.terms["scaledtanh1.dL_dscale"].scale > 0  # a gradient that is not zero was compared


@pytest.mark.parametrize(
    ("forward", "backward", "term"),
    [
        (scaled_tanh_forward, wrong_scale_gradient, "scaledtanh1.dL_dscale"),
        (wrong_forward, scaled_tanh_backward, "scaledtanh1.out"),
    ],
)
def test_a_planted_fault_in_the_users_hand_layer_fails_at_its_term(forward, backward, term) -> None:
    model, x, y = custom_model()
    report = check_model(model, x, y, steps=20, mode="batch", custom_layers={ScaledTanh: (forward, backward)})
    assert not report.ok
    assert report.first.step == 1 and report.first.term == term
    with pytest.raises(AssertionError, match=f"MISMATCH: .*first: step 1, {term} "):
        assert_model_matches_torch(
            model, x, y, steps=20, mode="batch", custom_layers={ScaledTanh: (forward, backward)}
        )


def test_the_simple_form_of_the_pair_is_taken_too() -> None:
    model, x, y = custom_model()

    def forward(x, params):
        return params["scale"] * np.tanh(x)

    def backward(dout, x, params):
        t = np.tanh(x)
        return dout * params["scale"] * (1 - t * t), {"scale": (dout * t).sum(axis=0)}

    assert check_model(model, x, y, steps=5, mode="batch", custom_layers={ScaledTanh: (forward, backward)}).ok


# --- refused before any work, naming the module's path -------------------------------------------


@pytest.mark.parametrize(
    ("model", "field", "text"),
    [
        (
            nn.Sequential(nn.Linear(3, 3), nn.Sequential(nn.ReLU(), nn.BatchNorm3d(3))),
            "model.1.1",
            "nn.BatchNorm3d is not supported",
        ),
        (nn.Sequential(nn.Linear(3, 3), nn.GELU()), "model.1", "nn.GELU is not supported; supported: Linear"),
        (nn.Sequential(nn.Linear(3, 3), ScaledTanh(3)), "model.1", "ScaledTanh is not supported"),
        (
            nn.Sequential(nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect")),
            "model.0.padding_mode",
            "'reflect'",
        ),
        (nn.Sequential(nn.MaxPool2d(2, ceil_mode=True)), "model.0.ceil_mode", "not supported"),
        (nn.Sequential(nn.Flatten(0)), "model.0.start_dim", "not supported"),
        (nn.Sequential(nn.ReLU(), nn.Linear(3, 1)), "model.0", "activation must follow"),
        (nn.Sequential(nn.Linear(4, 1)), "model.0.in_features", "expected an input of 4 features"),
        (nn.Bilinear(3, 3, 1), "model", "nn.Bilinear is not supported"),
        ("not a module", "model", "expected a torch.nn.Module"),
    ],
)
def test_unsupported_modules_and_options_are_refused_by_path(model, field, text) -> None:
    with pytest.raises(SpecError) as caught:
        check_model(model, np.ones((2, 3)), np.ones((2, 1)), steps=2)
    assert caught.value.field == field, caught.value
    assert text in str(caught.value)


def test_a_frozen_parameter_and_a_module_with_its_own_forward_are_refused() -> None:
    model = nn.Sequential(nn.Linear(3, 1))
    model[0].bias.requires_grad_(False)
    with pytest.raises(SpecError, match="model.0.bias: requires_grad=False"):
        check_model(model, np.ones((2, 3)), np.ones((2, 1)), steps=2)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(3, 1)

        def forward(self, x):
            return self.a(x) * 2

    with pytest.raises(SpecError, match="model: Net is not an nn.Sequential"):
        check_model(Net(), np.ones((2, 3)), np.ones((2, 1)), steps=2)


def test_a_recurrent_forward_of_another_shape_is_refused() -> None:
    class MeanHead(Recurrent):
        def forward(self, x):
            output, _ = self.rnn(x)
            return self.act(self.head(output.mean(dim=1)))

    torch.manual_seed(0)
    with pytest.raises(SpecError, match="model: its forward does not compute act\\(head\\(h_n\\[-1\\]\\)\\)"):
        check_model(MeanHead(nn.GRU), np.ones((2, 3, 2)), np.ones((2, 1)), steps=2)


# --- the shipped example reproduces compare xor ------------------------------------------------


def _traces(experiment) -> tuple[harness.Report, list]:
    kept: list = []
    report = harness.run(experiment, observers=[lambda step, hand, twin, checks: kept.append((hand, twin))])
    return report, kept


def test_the_xor_example_reproduces_compare_xor_number_for_number() -> None:
    namespace: dict = {}
    exec(compile((ROOT / "examples" / "xor_model.py").read_text(), "xor_model.py", "exec"), namespace)
    model, x, y = namespace["make"]()
    xor_lr = scenario_parser("xor").get_default("lr")  # xor's η (2: the demo learns); the check's is 0.5
    mine, my_traces = _traces(build_experiment(model, x, y, lr=xor_lr))
    theirs, their_traces = _traces(SCENARIOS["xor"].build(scenario_parser("xor").parse_args([])))
    assert mine.ok and theirs.ok and mine.steps_run == theirs.steps_run == 1000
    assert mine.verdict() == theirs.verdict()
    for (hand, twin), (hand_xor, twin_xor) in zip(my_traces, their_traces, strict=True):
        assert hand.names() == hand_xor.names() and twin.names() == twin_xor.names()
        for trace, reference in ((hand, hand_xor), (twin, twin_xor)):
            for term in reference:
                assert np.array_equal(trace.value(term.name), term.value), (trace.step, term.name)


def test_handgrad_check_on_the_example_prints_compare_xors_verdict(capsys) -> None:
    xor_lr = str(scenario_parser("xor").get_default("lr"))
    assert main(["check", str(ROOT / "examples" / "xor_model.py") + ":make", "--lr", xor_lr, "--quiet"]) == 0
    mine = capsys.readouterr().out.strip().split(": ", 1)[1]
    assert main(["compare", "xor", "--quiet"]) == 0
    assert capsys.readouterr().out.strip().split(": ", 1)[1] == mine


def test_handgrad_check_with_csv_data_and_weights(tmp_path, capsys) -> None:
    import json

    namespace: dict = {}
    exec(compile((ROOT / "examples" / "xor_model.py").read_text(), "xor_model.py", "exec"), namespace)
    factory = tmp_path / "model_only.py"
    factory.write_text(
        "import torch\n"
        "def make():\n"
        "    nn = torch.nn\n"
        "    return nn.Sequential(nn.Linear(2, 3), nn.Sigmoid(), nn.Linear(3, 1), nn.Sigmoid())\n"
    )
    weights = tmp_path / "w.json"
    weights.write_text(json.dumps(namespace["WEIGHTS"]))
    out = tmp_path / "r.json"
    argv = [
        "check",
        f"{factory}:make",
        "--data",
        str(ROOT / "examples" / "xor.csv"),
        "--weights",
        str(weights),
    ]
    xor_lr = str(scenario_parser("xor").get_default("lr"))
    assert main([*argv, "--lr", xor_lr, "--steps", "50", "--json", str(out), "--quiet"]) == 0
    reference = tmp_path / "xor.json"
    assert main(["compare", "xor", "--steps", "50", "--json", str(reference), "--quiet"]) == 0
    report, expected = json.loads(out.read_text()), json.loads(reference.read_text())
    assert report["ok"] and report["steps_run"] == 50
    assert report["terms"] == expected["terms"]  # every term's figures, the same run


# --- the four bad inputs of the command line: exit 2, one line ---------------------------------


@pytest.mark.parametrize(
    ("source", "target", "field"),
    [
        (None, "missing.py:make", "file"),
        ("def make():\n    raise ValueError('no model today')\n", "m.py:make", "factory"),
        ("def make():\n    return 42\n", "m.py:make", "factory"),
        (
            "from torch import nn\n"
            "def make():\n    return nn.Sequential(nn.Linear(2, 2), nn.BatchNorm3d(2))\n",
            "m.py:make",
            "model.1",
        ),
        ("raise RuntimeError('import-time failure')\n", "m.py:make", "file"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, monkeypatch, source, target, field) -> None:
    monkeypatch.chdir(tmp_path)
    if source is not None:
        (tmp_path / "m.py").write_text(source)
    data = tmp_path / "d.csv"
    data.write_text("a,b,y\n0,1,1\n1,0,0\n")
    assert main(["check", target, "--data", str(data), "--steps", "2"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"handgrad: error: {field}: "), captured.err
    assert "Traceback" not in captured.err and captured.out == ""


def test_check_help_says_the_file_is_run(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["check", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "this runs its code" in text and "Nothing is unpickled" in text


def test_copies_leave_the_callers_model_object_alone() -> None:
    model, x, y = dense_model()
    snapshot = copy.deepcopy(model)
    check_model(model, x, y, steps=3)
    assert str(model) == str(snapshot)
    assert type(model[2]) is nn.Dropout  # the twin's shared-mask dropout is only in its copy


class EveryStep(Recurrent):
    """many-to-many: act(head(output)) at every step."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output, _ = self.rnn(x)
        return self.act(self.head(output))


def test_a_many_to_many_recurrent_model_agrees() -> None:
    torch.manual_seed(5)
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(3, 4, 2)), rng.uniform(0.1, 0.9, size=(3, 4, 1))
    report = check_model(EveryStep(nn.GRU), x, y, head="many-to-many", steps=20, lr=0.1, mode="batch")
    assert report.ok, report.verdict()


def test_the_workbook_and_json_are_written(tmp_path) -> None:
    import json
    import zipfile

    model, x, y = custom_model()
    custom = {ScaledTanh: (scaled_tanh_forward, scaled_tanh_backward)}
    book, document = tmp_path / "m.xlsx", tmp_path / "m.json"
    report = check_model(model, x, y, steps=3, mode="batch", custom_layers=custom, xlsx=book, json=document)
    assert report.ok and zipfile.is_zipfile(book)
    assert json.loads(document.read_text())["verdict"] == report.verdict()


# --- the file is loaded as an import would load it; --max-memory is honoured ---------------------

TYPED = """from __future__ import annotations

import dataclasses

import numpy as np
import torch


@dataclasses.dataclass
class Sizes:
    n_in: int = 2


def make():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(Sizes().n_in, 1)).double()
    return model, np.eye(2), np.ones((2, 1))
"""


def test_a_file_with_a_dataclass_under_postponed_annotations_loads(tmp_path, capsys) -> None:
    """dataclasses looks the class's module up in sys.modules: the file is registered there while
    it runs, as an import would do (else: AttributeError, exit 2)."""
    (tmp_path / "typed.py").write_text(TYPED)
    assert main(["check", f"{tmp_path / 'typed.py'}:make", "--steps", "3", "--quiet"]) == 0
    assert "terms agree at every one of 3 steps" in capsys.readouterr().out


def test_max_memory_refuses_a_run_too_big_before_it_is_built(tmp_path, capsys) -> None:
    example = str(ROOT / "examples" / "xor_model.py") + ":make"
    assert main(["check", example, "--steps", "3", "--quiet", "--max-memory", "0.0000001"]) == 2
    captured = capsys.readouterr()
    line = captured.err.strip()
    assert captured.out == "" and len(line.splitlines()) == 1
    assert line.startswith("handgrad: error: max_memory: this run would need about")
    assert "13 parameters, 10 activations per step" in line  # online: a row's 2 inputs, 3+3+1+1 outputs
    big = tmp_path / "big.py"
    big.write_text(
        "import numpy as np\nimport torch\n\ndef make():\n"
        "    nn = torch.nn\n"
        "    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.Linear(4, 1))\n"
        "    return model, np.zeros((10, 4)), np.zeros((10, 1))\n"
    )
    argv = ["check", f"{big}:make", "--mode", "batch", "--steps", "1000000", "--max-memory", "0.01"]
    assert main(argv) == 2
    line = capsys.readouterr().err.strip()
    assert "40,000,000 dropout-mask values drawn before the run" in line


@pytest.mark.libreoffice
def test_the_xor_examples_workbook_recomputes_as_compare_xors(tmp_path) -> None:
    """The workbook of a user's model: its live formulas, recomputed by LibreOffice, give the hand
    values, and as many cells are live as in compare xor's workbook."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("handgrad_scripts_recalc", ROOT / "scripts" / "recalc.py")
    recalc = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = recalc  # dataclasses look their module up here
    spec.loader.exec_module(recalc)
    mine, theirs = tmp_path / "check.xlsx", tmp_path / "xor.xlsx"
    example = str(ROOT / "examples" / "xor_model.py") + ":make"
    assert main(["check", example, "--steps", "30", "--quiet", "--xlsx", str(mine)]) == 0
    assert main(["compare", "xor", "--steps", "30", "--quiet", "--xlsx", str(theirs)]) == 0
    results, _ = recalc.recalc_and_check([mine, theirs])
    assert all(result.ok for result in results), [result.problems[:5] for result in results]
    assert results[0].checked == results[1].checked > 1000


def test_the_conv_family_with_its_options_agrees() -> None:
    """A grouped, strided conv without bias, LRN with its own α β k, an average pool with padding
    that leaves the padding out of the count, sgd with momentum: every option read from the module."""
    torch.manual_seed(3)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, stride=2, groups=2, bias=False),
        nn.LocalResponseNorm(3, alpha=0.1, beta=0.75, k=2.0),
        nn.AvgPool2d(2, stride=1, padding=1, count_include_pad=False),
        nn.Flatten(),
        nn.Linear(64, 2),
    )
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(3, 2, 7, 7)), rng.uniform(0.1, 0.9, size=(3, 2))
    report = check_model(model, x, y, steps=20, lr=0.1, mode="batch", optimizer_options={"momentum": 0.9})
    assert report.ok, report.verdict()
    assert report.configuration_failures == []
    assert {"conv1.W_next", "lrn1.out", "avgpool1.out"} <= set(report.terms)
    assert "conv1.b_next" not in report.terms


def test_the_users_gradients_and_eval_mode_are_left_as_they_were() -> None:
    model, x, y = dense_model()
    model(torch.as_tensor(x, dtype=torch.float32)).sum().backward()
    grads = {name: parameter.grad.clone() for name, parameter in model.named_parameters()}
    model.eval()
    report = check_model(model, x, y, steps=5, mode="batch", optimizer="adam", lr=0.05)
    assert report.ok, report.verdict()
    assert not model.training
    for name, parameter in model.named_parameters():
        assert torch.equal(parameter.grad, grads[name]), name
