"""Every loss, with each of its options, against the torch module of the same name: the value and
its gradient, at the awkward places (d = 0 and |d| = β on the kinks, p at 0, 1e-12 and 1 − 1e-12,
logits of ±50 and ±500, ignored rows), with a random upstream gradient. Then each loss in training.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from handgrad import cli, harness
from handgrad.contract.spec import Data, Network, Schedule, SpecError
from handgrad.contract.training import Loss, Optimizer
from handgrad.hand import losses
from handgrad.hand.network import HandNetwork, init_params
from handgrad.harness import Experiment, compare_values, tolerance_for
from handgrad.twin.network import TwinNetwork

TOL = tolerance_for("float64")
N, C = 5, 4


def torch_module(spec: Loss) -> torch.nn.Module:
    """torch's module for the spec, built here (not by the twin) so that a dropped option shows."""
    r = spec.reduction
    weight = None if spec.weight is None else torch.tensor(spec.weight, dtype=torch.float64)
    return {
        "mse": lambda: torch.nn.MSELoss(reduction=r),
        "l1": lambda: torch.nn.L1Loss(reduction=r),
        "smooth_l1": lambda: torch.nn.SmoothL1Loss(reduction=r, beta=spec.beta),
        "huber": lambda: torch.nn.HuberLoss(reduction=r, delta=spec.delta),
        "bce": lambda: torch.nn.BCELoss(reduction=r),
        "bce_logits": lambda: torch.nn.BCEWithLogitsLoss(
            reduction=r,
            pos_weight=None
            if spec.pos_weight is None
            else torch.tensor(spec.pos_weight, dtype=torch.float64),
        ),
        "cross_entropy": lambda: torch.nn.CrossEntropyLoss(
            weight=weight, ignore_index=spec.ignore_index, reduction=r, label_smoothing=spec.label_smoothing
        ),
        "nll": lambda: torch.nn.NLLLoss(weight=weight, ignore_index=spec.ignore_index, reduction=r),
    }[spec.kind]()


def check_against_torch(spec: Loss, yhat: np.ndarray, y: np.ndarray, seed: int = 0) -> None:
    form = spec.target_form(y.shape[1], yhat.shape[1])
    L, cache = losses.forward(spec, yhat, y)
    rng = np.random.default_rng(seed)
    upstream = rng.normal(size=L.shape) + 0.5  # a random upstream gradient, never all ones
    grad = losses.backward(spec, cache, upstream if upstream.ndim else float(upstream))

    x = torch.tensor(yhat, requires_grad=True)
    target = torch.tensor(y[:, 0], dtype=torch.long) if form == "index" else torch.tensor(y)
    L_torch = torch_module(spec)(x, target)
    if spec.half:
        L_torch = 0.5 * L_torch
    L_torch.backward(torch.tensor(upstream, dtype=torch.float64))
    for name, hand, ref in (("L", L, L_torch.detach().numpy()), ("dL_dyhat", grad, x.grad.numpy())):
        check = compare_values(name, hand, ref, TOL)
        assert check.ok, (
            f"{spec}: {name} {check.mismatched}/{check.total} differ; worst at {check.worst_index}: "
            f"hand {check.hand_value!r} torch {check.torch_value!r} (non-finite: {check.non_finite}, "
            f"shape: {check.shape_error})"
        )


# --- the inputs, awkward places planted -----------------------------------------------------------


def regression_pair(zone: float, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Dyadic ŷ, y (exact differences) with d = 0, +zone, −zone and ±(zone ± 1/8) planted."""
    rng = np.random.default_rng(seed)
    y = rng.integers(-16, 16, size=(N, C)) / 8
    d = rng.integers(-24, 24, size=(N, C)) / 8
    d[0] = [0.0, zone, -zone, 0.0]  # on the kinks: target equal to the prediction; |d| = β (δ)
    d[1, :2] = [zone + 0.125, -(zone - 0.125) if zone > 0.125 else -0.0625]
    d[2, 3] = 0.0
    return y + d, y


def probabilities(seed: int = 2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.01, 0.99, size=(N, C))
    p[0] = [0.0, 1e-12, 1 - 1e-12, 1.0]  # on the log clamp and the gradient clamp
    p[1] = [1e-12, 1 - 1e-12, 0.0, 1.0]
    y = rng.uniform(0, 1, size=(N, C))
    y[0] = [0.0, 1.0, 0.0, 1.0]
    y[1] = [0.3, 0.7, 1.0, 0.0]  # also: p = 0 with y = 1 and p = 1 with y = 0 (the −100 clamp)
    y[2, 0] = y[3, 0] = 0.5
    p[2, 0], p[3, 0] = 0.5, 0.5
    return p, y


def logits(seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, C)) * 2
    x[0] = [50.0, -50.0, 0.0, 50.0]  # a tie at the top, far from the rest
    x[1] = [-50.0, -50.0, -50.0, -50.0]  # all equal
    x[2] = [500.0, -500.0, 3.0, 0.0]  # exp would overflow without the max shift
    return x


def class_ids(ignore_index: int = -100, seed: int = 4) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, C, size=(N, 1)).astype(float)
    ids[0, 0], ids[1, 0], ids[2, 0] = 1.0, 2.0, 1.0  # the −50 class of row 0; the −500 class of row 2
    ids[3, 0] = ignore_index  # a row left out
    return ids


REDUCTIONS = ("mean", "sum", "none")
WEIGHTS = (None, (1.0, 2.0, 0.5, 3.0))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("half", [False, True])
def test_mse(reduction: str, half: bool) -> None:
    check_against_torch(Loss("mse", reduction, half), *regression_pair(0.5))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_l1(reduction: str) -> None:
    check_against_torch(Loss("l1", reduction), *regression_pair(0.5))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("beta", [0.0, 0.25, 1.0, 2.0])
def test_smooth_l1(reduction: str, beta: float) -> None:
    check_against_torch(Loss("smooth_l1", reduction, beta=beta), *regression_pair(beta))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("delta", [0.25, 1.0, 2.0])
def test_huber(reduction: str, delta: float) -> None:
    check_against_torch(Loss("huber", reduction, delta=delta), *regression_pair(delta))


def test_kinks_take_torch_side() -> None:
    """At d = 0 every one of l1, smooth_l1, huber has gradient 0; at |d| = β the two pieces meet."""
    yhat, y = regression_pair(1.0)
    for spec in (Loss("l1", "sum"), Loss("smooth_l1", "sum"), Loss("huber", "sum")):
        _, cache = losses.forward(spec, yhat, y)
        grad = losses.backward(spec, cache)
        assert grad[0, 0] == 0.0 and grad[0, 3] == 0.0, spec
        assert abs(grad[0, 1]) == 1.0 and abs(grad[0, 2]) == 1.0, spec


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_at_the_clamps(reduction: str) -> None:
    check_against_torch(Loss("bce", reduction), *probabilities())


def test_bce_gradient_floor_is_float32_1e_12() -> None:
    """p = 1e-12: (1 − p)p is just above torch's float32(1e-12) floor, so it is not clamped."""
    spec = Loss("bce", "sum")
    _, cache = losses.forward(spec, np.array([[1e-12, 0.0]]), np.array([[1.0, 0.5]]))
    grad = losses.backward(spec, cache)
    assert grad[0, 0] == (1e-12 - 1.0) / ((1 - 1e-12) * 1e-12)
    assert grad[0, 1] == -0.5 / float(np.float32(1e-12))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("pos_weight", [None, (3.0,), (0.5, 2.0, 1.0, 4.0)])
def test_bce_with_logits_at_plus_minus_50(reduction: str, pos_weight) -> None:
    _, y = probabilities()
    check_against_torch(Loss("bce_logits", reduction, pos_weight=pos_weight), logits(), y)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weight", WEIGHTS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("ignore_index", [-100, 3])
def test_cross_entropy_class_ids(reduction: str, weight, label_smoothing: float, ignore_index: int) -> None:
    spec = Loss(
        "cross_entropy", reduction, weight=weight, ignore_index=ignore_index, label_smoothing=label_smoothing
    )
    check_against_torch(spec, logits(), class_ids(ignore_index))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weight", WEIGHTS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_cross_entropy_class_probabilities(reduction: str, weight, label_smoothing: float) -> None:
    q = losses.softmax(np.random.default_rng(5).normal(size=(N, C)))
    q[0] = [0.0, 1.0, 0.0, 0.0]  # one-hot on the −50 class
    check_against_torch(
        Loss("cross_entropy", reduction, weight=weight, label_smoothing=label_smoothing), logits(), q
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weight", WEIGHTS)
@pytest.mark.parametrize("ignore_index", [-100, 2])
def test_nll(reduction: str, weight, ignore_index: int) -> None:
    log_p = losses.log_softmax(logits())
    check_against_torch(
        Loss("nll", reduction, weight=weight, ignore_index=ignore_index), log_p, class_ids(ignore_index)
    )


@pytest.mark.parametrize("kind", ["cross_entropy", "nll"])
def test_every_row_ignored_mean_is_nan_as_torch(kind: str) -> None:
    spec = Loss(kind, ignore_index=1)
    y = np.ones((N, 1))
    L, _ = losses.forward(spec, logits(), y)
    L_torch = torch_module(spec)(torch.tensor(logits()), torch.ones(N, dtype=torch.long))
    assert np.isnan(L) and torch.isnan(L_torch)


@pytest.mark.parametrize("scale", [1.0, 50.0, 1000.0])
def test_softmax_and_log_softmax_match_torch(scale: float) -> None:
    x = logits() * scale / 50
    for name, hand, ref in (
        ("log_softmax", losses.log_softmax(x), torch.log_softmax(torch.tensor(x), 1)),
        ("softmax", losses.softmax(x), torch.softmax(torch.tensor(x), 1)),
    ):
        check = compare_values(name, hand, ref.numpy(), TOL)
        assert check.ok and np.isfinite(hand).all(), (name, check)
    dlogp = np.random.default_rng(6).normal(size=x.shape)
    xt = torch.tensor(x, requires_grad=True)
    torch.log_softmax(xt, 1).backward(torch.tensor(dlogp))
    check = compare_values(
        "dx", losses.log_softmax_backward(dlogp, losses.log_softmax(x)), xt.grad.numpy(), TOL
    )
    assert check.ok, check


# --- the spec refuses what torch refuses (and options that do not belong) -------------------------


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: Loss("mse", beta=0.5), "beta"),
        (lambda: Loss("bce", half=True), "half"),
        (lambda: Loss("mse", label_smoothing=0.1), "label_smoothing"),
        (lambda: Loss("bce", weight=(1.0, 2.0)), "weight"),
        (lambda: Loss("mse", pos_weight=(2.0,)), "pos_weight"),
        (lambda: Loss("smooth_l1", beta=-1.0), "beta"),
        (lambda: Loss("huber", delta=0.0), "delta"),
        (lambda: Loss("cross_entropy", label_smoothing=1.5), "label_smoothing"),
        (lambda: Loss("cross_entropy", weight=(1.0, -2.0)), "weight"),
        (lambda: Loss("bce_logits", pos_weight=()), "pos_weight"),
        (lambda: Loss("nll", ignore_index=1.5), "ignore_index"),
        (lambda: Loss("mae"), "loss"),
        (lambda: Loss("mse", "avg"), "reduction"),
        (lambda: Loss("cross_entropy").check_targets(np.array([[0.0], [3.0]]), 3), "data.y"),
        (lambda: Loss("cross_entropy").check_targets(np.array([[0.0], [0.5]]), 3), "data.y"),
        (lambda: Loss("nll").check_targets(np.full((2, 3), 1 / 3), 3), "data.y"),
        (
            lambda: Loss("cross_entropy", ignore_index=1).check_targets(np.full((2, 3), 1 / 3), 3),
            "ignore_index",
        ),
        (lambda: Loss("cross_entropy", weight=(1.0, 2.0)).check_targets(np.zeros((2, 1)), 3), "weight"),
        (lambda: Loss("bce_logits", pos_weight=(1.0, 2.0)).check_targets(np.zeros((2, 3)), 3), "pos_weight"),
        (lambda: Loss("bce").check_targets(np.array([[1.5]]), 1), "loss"),
        (lambda: Loss("cross_entropy").check_targets(np.zeros((2, 1)), 1), "loss"),
    ],
)
def test_bad_loss_options_name_their_field(make, field: str) -> None:
    with pytest.raises(SpecError) as error:
        make()
    assert error.value.field == field


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["--loss", "huber", "--delta", "0"], "delta"),
        (["--loss", "mse", "--beta", "2"], "beta"),
        (["--loss", "cross_entropy"], "loss"),  # XOR has one output: no classes
        (["--loss", "mse", "--class-weight", "1,2"], "class_weight"),
        (["--loss", "hinge"], "--loss"),
    ],
)
def test_cli_bad_loss_option_one_line_exit_2(argv: list[str], field: str, capsys) -> None:
    code = cli.main(["compare", "xor", "--steps", "2", *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"handgrad: error: {field}:"), err


# --- each loss in training: the network's terms, ℓ for reduction none, class ids as floats --------


def run(network: Network, loss: Loss, data: Data, steps: int = 40, lr: float = 0.1) -> harness.Report:
    params = init_params(network, 2)
    batches = Schedule("minibatch", batch_size=3).batches(data.n, steps)
    optimizer = Optimizer("sgd", lr, {"momentum": 0.9})
    hand = HandNetwork(network, loss, optimizer, params, data.x, data.y, batches)
    twin = TwinNetwork(network, loss, optimizer, params, data.x, data.y, batches)
    return harness.run(Experiment("losses", hand, twin, steps))


_rng = np.random.default_rng(9)
X = _rng.uniform(-1, 1, size=(7, 3))
CLASSES = Network.mlp([3, 4, 3], activation="tanh", output_activation="identity")
VALUES = Network.mlp([3, 4, 3], activation="tanh", output_activation="sigmoid")
IDS = np.array([[0.0], [2.0], [1.0], [2.0], [0.0], [1.0], [1.0]])

TRAINING = [
    ("mse-none", VALUES, Loss("mse", "none", half=True), _rng.uniform(0, 1, (7, 3))),
    ("l1-sum", VALUES, Loss("l1", "sum"), _rng.uniform(0, 1, (7, 3))),
    ("smooth_l1", VALUES, Loss("smooth_l1", beta=0.1), _rng.uniform(0, 1, (7, 3))),
    ("huber-none", VALUES, Loss("huber", "none", delta=0.1), _rng.uniform(0, 1, (7, 3))),
    ("bce", VALUES, Loss("bce"), _rng.uniform(0, 1, (7, 3))),
    (
        "bce_logits",
        CLASSES,
        Loss("bce_logits", pos_weight=(1.0, 2.0, 3.0)),
        _rng.integers(0, 2, (7, 3)) * 1.0,
    ),
    ("ce-ids", CLASSES, Loss("cross_entropy", weight=(1.0, 2.0, 0.5), label_smoothing=0.1), IDS),
    ("ce-ignore-none", CLASSES, Loss("cross_entropy", "none", ignore_index=1), IDS),
    ("ce-probabilities", CLASSES, Loss("cross_entropy", "sum", label_smoothing=0.1), losses.softmax(X)),
    ("nll", CLASSES, Loss("nll", weight=(1.0, 2.0, 0.5), ignore_index=0), IDS),
]


@pytest.mark.parametrize(("name", "network", "loss", "y"), TRAINING, ids=[case[0] for case in TRAINING])
def test_loss_in_training_every_term(name: str, network: Network, loss: Loss, y: np.ndarray) -> None:
    report = run(network, loss, Data(X, y))
    assert report.ok, report.verdict()
    assert ("loss.l" in report.terms) == (loss.reduction == "none")
    assert report.terms["dense2.dL_dz"].scale > 0


def test_every_row_ignored_gives_nan_as_torch() -> None:
    """A mean over zero kept rows: torch's cross-entropy is 0/0 = NaN, its gradient exactly 0 (the
    ignored rows' gradient is zeroed); the hand side says the same, never a ZeroDivisionError."""
    from handgrad.contract.training import Loss
    from handgrad.hand import losses as hand_losses

    logits = np.array([[0.3, -1.2, 0.5], [1.0, 0.2, -0.4]])
    ids = np.array([[1.0], [1.0]])
    spec = Loss("cross_entropy", ignore_index=1)
    L, cache = hand_losses.forward(spec, logits, ids)
    grad = hand_losses.backward(spec, cache)
    x = torch.tensor(logits, requires_grad=True)
    torch_L = torch.nn.functional.cross_entropy(x, torch.tensor([1, 1]), ignore_index=1)
    torch_L.backward()
    assert np.isnan(L) and torch.isnan(torch_L)
    assert np.array_equal(grad, x.grad.numpy()) and not np.any(grad)
