"""The norm layers in your own model (issue 18): nn.BatchNorm1d, nn.BatchNorm2d and nn.LayerNorm in
an nn.Sequential checked by handgrad.check_model, in training and eval mode, with every optimizer.

torch's conventions are reproduced exactly (manual/normalization.md, manual/conventions.md): the
batch's biased variance in x̂, the unbiased one and ``momentum`` (or the cumulative average) in the
running statistics, which are compared every step as state terms read from the module's buffers.
The hard places: distinct non-default γ and β, non-default running statistics in eval mode,
``track_running_stats=False`` (batch statistics in both modes), ``affine=False``, an odd image size,
a bias before a training-mode BatchNorm (its gradient is 0 in exact arithmetic), a batch of one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from handgrad import check_model, harness
from handgrad.cli import main
from handgrad.contract.spec import SpecError
from handgrad.contract.training import OPTIMIZERS
from handgrad.scenarios.own_model import build_experiment

LR = {"sgd": 0.1, "adam": 0.01, "adamw": 0.01, "rmsprop": 0.01, "adagrad": 0.1}
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm)


def _distinct_affine(model: nn.Module, seed: int) -> nn.Module:
    """γ and β drawn away from torch's 1 and 0, every norm layer its own; running statistics
    away from 0 and 1 (they matter in eval mode)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, NORMS) and getattr(module, "weight", None) is not None:
                module.weight.copy_(0.5 + torch.rand(module.weight.shape, generator=generator))
                if module.bias is not None:
                    module.bias.copy_(torch.rand(module.bias.shape, generator=generator) - 0.5)
            if isinstance(module, NORMS) and getattr(module, "running_mean", None) is not None:
                module.running_mean.copy_(torch.rand(module.running_mean.shape, generator=generator) - 0.5)
                module.running_var.copy_(0.5 + torch.rand(module.running_var.shape, generator=generator))
    return model


def batchnorm_dense() -> tuple[nn.Module, np.ndarray, np.ndarray]:
    torch.manual_seed(11)
    model = nn.Sequential(
        nn.Linear(3, 5, bias=False), nn.BatchNorm1d(5), nn.Tanh(), nn.Dropout(0.2), nn.Linear(5, 2)
    )
    rng = np.random.default_rng(11)
    return _distinct_affine(model, 11), rng.normal(size=(8, 3)), rng.normal(size=(8, 2))


def batchnorm_conv() -> tuple[nn.Module, np.ndarray, np.ndarray]:
    torch.manual_seed(12)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, bias=False),  # 5×7 → 3×5: an odd, non-square image
        nn.BatchNorm2d(3, momentum=None),  # the cumulative average
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(3 * 3 * 5, 2),
    )
    rng = np.random.default_rng(12)
    return _distinct_affine(model, 12), rng.normal(size=(6, 2, 5, 7)), rng.normal(size=(6, 2))


def layernorm_dense() -> tuple[nn.Module, np.ndarray, np.ndarray]:
    torch.manual_seed(13)
    model = nn.Sequential(nn.Linear(3, 6), nn.LayerNorm(6), nn.ReLU(), nn.Linear(6, 2), nn.LayerNorm(2))
    rng = np.random.default_rng(13)
    return _distinct_affine(model, 13), rng.normal(size=(8, 3)), rng.normal(size=(8, 2))


def layernorm_conv() -> tuple[nn.Module, np.ndarray, np.ndarray]:
    """LayerNorm over a whole (C, H, W) sample: a normalized_shape of three axes."""
    torch.manual_seed(14)
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.LayerNorm([2, 3, 3]), nn.Tanh(), nn.Flatten(), nn.Linear(18, 1)
    )
    rng = np.random.default_rng(14)
    return _distinct_affine(model, 14), rng.normal(size=(4, 1, 5, 5)), rng.normal(size=(4, 1))


def batchnorm_eval() -> tuple[nn.Module, np.ndarray, np.ndarray]:
    """Eval mode: x̂ uses the running statistics (non-default ones), which stay as they are."""
    model, x, y = batchnorm_dense()
    model[1].eval()
    return model, x, y


def batchnorm_untracked() -> tuple[nn.Module, np.ndarray, np.ndarray]:
    """No running statistics: the batch's own in training and in eval mode; no buffers at all."""
    torch.manual_seed(15)
    model = nn.Sequential(
        nn.Linear(3, 4, bias=False),
        nn.BatchNorm1d(4, track_running_stats=False, eps=1e-3),
        nn.Sigmoid(),
        nn.Linear(4, 4, bias=False),
        nn.BatchNorm1d(4, affine=False).eval(),
        nn.Linear(4, 1),
    )
    rng = np.random.default_rng(15)
    return _distinct_affine(model, 15), rng.normal(size=(8, 3)), rng.normal(size=(8, 1))


MODELS = {
    "batchnorm-dense": batchnorm_dense,
    "batchnorm-conv": batchnorm_conv,
    "layernorm-dense": layernorm_dense,
    "layernorm-conv": layernorm_conv,
    "batchnorm-eval": batchnorm_eval,
    "batchnorm-untracked": batchnorm_untracked,
}
OPTIONS = {"sgd": {"momentum": 0.9}}  # sgd with momentum: a state term for every parameter


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("kind", MODELS)
def test_norm_models_agree_over_20_steps(kind: str, optimizer: str) -> None:
    model, x, y = MODELS[kind]()
    report = check_model(
        model, x, y, optimizer=optimizer, lr=LR[optimizer], steps=20, mode="minibatch", batch_size=4,
        optimizer_options=OPTIONS.get(optimizer),
    )  # fmt: skip
    assert report.ok, report.verdict()
    assert report.steps_run == 20 and report.configuration_failures == []
    gammas = [name for name in report.terms if name.endswith(".dL_dgamma")]
    assert gammas and all(report.terms[name].scale > 0 for name in gammas)


def test_the_running_statistics_are_compared_every_step() -> None:
    model, x, y = batchnorm_dense()
    experiment = build_experiment(model, x, y, steps=20, mode="minibatch", batch_size=4)
    initial = {name: value.copy() for name, value in experiment.hand.buffers().items()}
    report = harness.run(experiment)
    assert report.ok, report.verdict()
    for buffer in ("running_mean", "running_var", "num_batches_tracked"):
        stats = report.terms[f"bn1.{buffer}"]
        assert stats.phase == "state" and stats.torch_source == "torch.nn"
    hand, twin = experiment.hand.buffers(), experiment.twin.buffers()
    assert int(hand["bn1.num_batches_tracked"]) == int(twin["bn1.num_batches_tracked"]) == 20
    assert not np.allclose(hand["bn1.running_mean"], initial["bn1.running_mean"])  # they moved
    np.testing.assert_allclose(hand["bn1.running_var"], twin["bn1.running_var"], rtol=1e-12)


def test_eval_mode_leaves_the_running_statistics_and_uses_them() -> None:
    model, x, y = batchnorm_eval()
    report = check_model(model, x, y, optimizer="adam", lr=0.01, steps=5, mode="batch")
    assert report.ok, report.verdict()
    assert report.terms["bn1.running_mean"].max_abs == 0  # both sides kept them exactly


def test_the_users_model_and_buffers_are_unchanged() -> None:
    model, x, y = batchnorm_conv()
    model.train()
    before = {key: value.clone() for key, value in model.state_dict().items()}
    report = check_model(model, x, y, optimizer="adam", lr=0.05, steps=5, mode="batch")
    assert report.ok, report.verdict()
    after = model.state_dict()
    assert list(after) == list(before)
    for key, value in before.items():
        assert after[key].dtype == value.dtype and torch.equal(after[key], value), key
    assert model.training and all(param.grad is None for param in model.parameters())


# --- a bias before a training-mode BatchNorm: its gradient is 0 in exact arithmetic --------------


def _bias_before_batchnorm() -> tuple[nn.Module, np.ndarray, np.ndarray]:
    torch.manual_seed(16)
    model = nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.Linear(5, 1))
    rng = np.random.default_rng(16)
    return _distinct_affine(model, 16), rng.normal(size=(8, 3)), rng.normal(size=(8, 1))


def test_a_bias_before_batchnorm_agrees_under_plain_sgd() -> None:
    """Both sides return rounding noise for ∂L/∂b (no rule of the term's own size could call that
    agreement); judged at its summands' size (Σ|∂L/∂z|: manual/harness.md, "Sums that cancel"),
    it agrees, and so does everything after it."""
    model, x, y = _bias_before_batchnorm()
    report = check_model(model, x, y, optimizer="sgd", lr=0.1, steps=20, mode="minibatch", batch_size=4)
    assert report.ok, report.verdict()
    bias = report.terms["dense1.dL_db"]
    assert bias.max_abs < 1e-15 and bias.scale > 1e-3  # noise, judged at the summands' size


@pytest.mark.parametrize("optimizer", ["adam", "rmsprop", "adagrad"])
def test_a_bias_before_batchnorm_under_an_optimizer_with_state_is_refused(optimizer: str) -> None:
    model, x, y = _bias_before_batchnorm()
    with pytest.raises(SpecError) as caught:
        check_model(model, x, y, optimizer=optimizer, steps=2, mode="batch")
    assert caught.value.field == "model.0.bias"
    assert "0 in exact arithmetic" in str(caught.value) and "bias=False" in str(caught.value)


def test_a_bias_before_an_eval_mode_batchnorm_is_an_ordinary_bias() -> None:
    model, x, y = _bias_before_batchnorm()
    model[1].eval()
    assert check_model(model, x, y, optimizer="adam", lr=0.01, steps=10, mode="batch").ok


# --- refused, naming the module ------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "batch_size"), [("online", 1), ("minibatch", 3)])  # 8 rows: 3, 3, 2
def test_a_batch_of_one_in_training_mode_is_refused_as_torch_refuses_it(mode: str, batch_size: int) -> None:
    model, x, y = batchnorm_dense()
    x, y = (x[:7], y[:7]) if mode == "minibatch" else (x, y)  # 7 rows in threes: the last step has 1
    with pytest.raises(SpecError) as caught:
        check_model(model, x, y, steps=2, mode=mode, batch_size=batch_size)
    assert caught.value.field == "model.1" and "more than 1 value per channel" in str(caught.value)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        model.train()(torch.as_tensor(x[:1], dtype=torch.float32))  # torch's own refusal


def test_a_batch_of_one_in_eval_mode_runs() -> None:
    model, x, y = batchnorm_eval()
    assert check_model(model, x, y, steps=4, mode="online", optimizer="sgd", lr=0.05).ok


def test_batchnorm3d_is_refused_by_path() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Sequential(nn.BatchNorm3d(3)))
    with pytest.raises(SpecError) as caught:
        check_model(model, np.ones((2, 3)), np.ones((2, 3)), steps=2)
    assert caught.value.field == "model.1.0" and "nn.BatchNorm3d is not supported" in str(caught.value)


# --- the user's own hand layer inside a normalized network ---------------------------------------


class Shift(nn.Module):
    """A layer handgrad does not know: out = x + s, one shift per feature."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.shift = nn.Parameter(torch.linspace(-0.3, 0.3, features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.shift


def shift_forward(x, params):
    return x + params["shift"], None


def shift_backward(dout, cache):
    return dout, {"shift": dout.sum(axis=0)}  # ∂L/∂s = Σ_n G


def shift_backward_halved(dout, cache):
    return dout, {"shift": 0.5 * dout.sum(axis=0)}  # the planted fault


@pytest.mark.parametrize(
    ("backward", "ok"), [(shift_backward, True), (shift_backward_halved, False)], ids=["right", "fault"]
)
def test_a_users_hand_layer_between_norm_layers(backward, ok: bool) -> None:
    torch.manual_seed(17)
    model = _distinct_affine(
        nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), Shift(4), nn.Tanh(), nn.Linear(4, 4, bias=False),
                      nn.BatchNorm1d(4), nn.Linear(4, 1)),
        17,
    )  # fmt: skip
    rng = np.random.default_rng(17)
    x, y = rng.normal(size=(8, 3)), rng.normal(size=(8, 1))
    report = check_model(
        model, x, y, optimizer="adam", lr=0.01, steps=20, mode="minibatch", batch_size=4,
        custom_layers={Shift: (shift_forward, backward)},
    )  # fmt: skip
    assert report.ok is ok, report.verdict()
    if not ok:
        assert (report.first.step, report.first.term) == (1, "shift1.dL_dshift")


# --- handgrad check on the command line ----------------------------------------------------------


def test_handgrad_check_runs_a_batchnorm_factory(tmp_path: Path, capsys) -> None:
    source = tmp_path / "bn_model.py"
    source.write_text(
        "import torch\n"
        "from torch import nn\n\n\n"
        "def make():\n"
        "    torch.manual_seed(0)\n"
        "    model = nn.Sequential(\n"
        "        nn.Linear(2, 4, bias=False), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 1)\n"
        "    )\n"
        "    x = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])\n"
        "    y = torch.tensor([[0.0], [1.0], [1.0], [0.0]])\n"
        "    return model, x, y\n"
    )
    workbook = tmp_path / "bn.xlsx"
    code = main(["check", f"{source}:make", "--steps", "20", "--mode", "batch", "--optimizer", "adam",
                 "--lr", "0.01", "--xlsx", str(workbook)])  # fmt: skip
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 0, lines
    assert "agree at every one of 20 steps" in lines[-1]
    notices = [line for line in lines if line.startswith("bn_model: workbook: No live Walkthrough")]
    assert len(notices) == 1 and "bn1 is BatchNorm" in notices[0]  # the Trace holds its terms
    assert workbook.stat().st_size > 0


def test_a_conv_bias_before_batchnorm2d_agrees_under_plain_sgd() -> None:
    """The Conv2d form of the same cancellation: ∂L/∂b sums over rows and pixels, 0 in exact
    arithmetic; compared (not skipped) at its summands' size over 20 steps."""
    torch.manual_seed(17)
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Tanh(), nn.Flatten(), nn.Linear(2 * 3 * 3, 1)
    )
    rng = np.random.default_rng(17)
    x, y = rng.normal(size=(6, 1, 5, 5)), rng.normal(size=(6, 1))
    report = check_model(
        _distinct_affine(model, 17), x, y, optimizer="sgd", lr=0.1, steps=20, mode="minibatch", batch_size=3
    )
    assert report.ok, report.verdict()
    bias = [name for name in report.terms if name.endswith("dL_db") and name.startswith("conv")]
    assert bias, sorted(report.terms)
    assert report.terms[bias[0]].max_abs < 1e-14 and report.terms[bias[0]].scale > 1e-3
