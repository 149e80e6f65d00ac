"""Recurrent models trained hand vs torch through the harness: 50 full training steps (forward,
loss, BPTT, clipping, optimizer update) per case, every term compared in float64.

Each case uses non-zero inputs (and large garbage in the padded positions, which must be
ignored), a non-zero initial state, and biases that are non-zero and distinct per gate (and
between b_ih and b_hh). Planted bugs (the GRU reset gate of the paper, two LSTM gate biases
swapped, BPTT without the gradient carried through h) are patched into the hand side one at a
time: the harness must catch each and name the first diverging term. Bad command-line input
gets one line naming the field and exit code 2.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from handgrad import cli, harness
from handgrad.contract import names
from handgrad.contract.recurrent import RecurrentModel, SequenceData, param_table
from handgrad.contract.spec import Schedule
from handgrad.contract.trace import StepTrace
from handgrad.contract.training import Clip, Loss, LRSchedule, Optimizer
from handgrad.hand import recurrent as hr
from handgrad.mutants.recurrent import gru_step_paper_reset, lstm_back_no_carry, lstm_bias_i_f_swapped
from handgrad.scenarios.recurrent import recurrent_experiment

S, T, I, H = 3, 3, 2, 2  # sequences, padded length, inputs, hidden
RAGGED = np.array([2, 3, 1])  # unsorted, max = T
MAX_NORM = 0.002  # below the gradient norm of every step of every case: clipping acts
CELLS = ("rnn_tanh", "gru", "lstm")


def distinct_params(model: RecurrentModel, seed: int) -> dict[str, np.ndarray]:
    """Weights N(0, 0.6); biases with an offset per gate, different for b_ih and b_hh."""
    rng = np.random.default_rng(seed)
    G = model.gates
    offsets = {"b_ih": np.array([0.5, -0.7, 0.3, 0.9])[:G], "b_hh": np.array([-0.2, 0.4, -0.6, 0.15])[:G]}
    params = {}
    for name, shape, _ in param_table(model):
        short = name.split(".")[1]
        if short in offsets:
            params[name] = (offsets[short][:, None] + rng.normal(0, 0.1, (G, model.hidden_size))).ravel()
        else:
            params[name] = rng.normal(0.0, 0.6, shape)
    return params


def experiment(
    cell: str,
    layers: int = 1,
    batch_first: bool = False,
    ragged: bool = False,
    head: str = "many-to-one",
    clip: Clip | None = None,
    *,
    steps: int = 50,
    loss: Loss | None = None,
    optimizer: Optimizer | None = None,
    seed: int = 0,
) -> harness.Experiment:
    rng = np.random.default_rng(seed + 100)
    lengths = RAGGED if ragged else np.full(S, T)
    x = rng.normal(0.0, 1.0, (S, T, I))
    pad = np.arange(T)[None, :] >= lengths[:, None]  # S,T
    x[pad] = rng.normal(0.0, 50.0, (int(pad.sum()), I))  # garbage that must be ignored
    y = rng.uniform(0.1, 0.9, (S, 1) if head == "many-to-one" else (S, T, 1))
    model = RecurrentModel(cell, I, H, layers, 1, head, "sigmoid", batch_first)
    h0 = rng.normal(0.0, 0.8, (layers, S, H))
    c0 = rng.normal(0.0, 0.8, (layers, S, H)) if cell == "lstm" else None
    opt = optimizer or Optimizer("sgd", 0.3, clip=clip)
    return recurrent_experiment(
        "test",
        model,
        loss or Loss("mse"),
        opt,
        SequenceData(x, y, lengths, packed=ragged),
        Schedule("batch"),
        steps=steps,
        seed=seed,
        params=distinct_params(model, seed),
        h0=h0,
        c0=c0,
    )


# --- the matrix: every term agrees at every one of 50 steps ---------------------------------------


@pytest.mark.parametrize("clip", [False, True], ids=["no-clip", "clip-norm"])
@pytest.mark.parametrize("head", ["many-to-one", "many-to-many"])
@pytest.mark.parametrize("ragged", [False, True], ids=["equal", "ragged"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["time-major", "batch-first"])
@pytest.mark.parametrize("layers", [1, 2], ids=["L1", "L2"])
@pytest.mark.parametrize("cell", CELLS)
def test_fifty_training_steps_agree(
    cell: str, layers: int, batch_first: bool, ragged: bool, head: str, clip: bool
) -> None:
    run = experiment(cell, layers, batch_first, ragged, head, Clip(max_norm=MAX_NORM) if clip else None)
    norms: list[float] = []  # clip_grad_norm_'s total norm before clipping, per step

    def observe(step: int, hand: StepTrace, twin: StepTrace, checks: object) -> None:
        if "clip.total_norm" in hand:
            norms.append(float(hand.value("clip.total_norm")))

    report = harness.run(run, observers=[observe])
    assert report.ok, report.verdict()
    assert report.steps_run == 50
    prefix = names.PREFIX[cell]
    top = f"{prefix}{layers}"
    expected = [
        f"{top}.h[{T}]",
        f"{prefix}1.dL_dh[1]",
        f"{prefix}1.dL_dW_hh",
        f"{prefix}1.W_ih_next",
        "loss.L",
    ]
    expected += (
        ["dense1.z", "dense1.dL_dx"] if head == "many-to-one" else [f"dense1.z[{T}]", "dense1.dL_dx[1]"]
    )
    if clip:
        expected += ["clip.total_norm", f"clip.grad.{prefix}1.W_ih", "clip.grad.dense1.b"]
        assert report.terms["clip.total_norm"].hand_source == "hand"
        assert report.terms["clip.total_norm"].torch_source == "torch.nn.utils"
        assert len(norms) == 50 and min(norms) > MAX_NORM  # clipping acted at every step
    for name in expected:
        assert name in report.terms, name
    assert report.terms[f"{prefix}1.dL_dh0"].torch_source == "torch.nn"  # h0 given: its .grad


@pytest.mark.parametrize(
    ("cell", "loss", "optimizer"),
    [
        (
            "rnn_relu",
            Loss("mse", "sum", half=True),
            Optimizer("sgd", 0.05, {"momentum": 0.9, "nesterov": True}),
        ),
        ("gru", Loss("bce"), Optimizer("adam", 0.02, schedule=LRSchedule("step", step_size=10, gamma=0.5))),
        ("lstm", Loss("mse"), Optimizer("sgd", 0.3, {"momentum": 0.5}, clip=Clip(value=0.02))),
        (
            "rnn_tanh",
            Loss("bce", "sum"),
            Optimizer("adamw", 0.02, clip=Clip(max_norm=0.1, norm_type=float("inf"))),
        ),
    ],
    ids=["relu-nesterov-sum-half", "gru-adam-steplr-bce", "lstm-momentum-clip-value", "rnn-adamw-clip-inf"],
)
def test_other_losses_optimizers_and_clipping_agree(cell: str, loss: Loss, optimizer: Optimizer) -> None:
    report = harness.run(experiment(cell, 2, True, True, "many-to-many", loss=loss, optimizer=optimizer))
    assert report.ok, report.verdict()
    assert any(name.startswith(f"{optimizer.kind}.") for name in report.terms)


def test_the_loss_mean_counts_real_steps_only() -> None:
    """many-to-many, ragged: L = Σ over the valid (t, b) of (ŷ − y)² / (O · Σ lengths)."""
    run = experiment("gru", ragged=True, head="many-to-many", steps=1)
    hand = run.hand.step(1)
    y = run.spec.data.y  # S,T,1
    total = 0.0
    for t in range(1, T + 1):
        active = np.flatnonzero(RAGGED >= t)
        total += float(np.sum((hand.value(f"dense1.a[{t}]") - y[active, t - 1]) ** 2))
    assert float(hand.value("loss.L")) == pytest.approx(total / RAGGED.sum(), rel=1e-14)
    assert float(hand.value("loss.L")) != pytest.approx(total / (S * T), rel=1e-3)


def test_term_list_and_sources_of_a_small_parity_run() -> None:
    args = cli.scenario_parser("parity").parse_args(["--steps", "2", "--length", "3", "--sequences", "2"])
    run = cli.SCENARIOS["parity"].build(args)
    report = harness.run(run)
    assert report.ok, report.verdict()
    names = list(report.terms)
    assert names[:7] == [
        "lstm1.i[1]",
        "lstm1.f[1]",
        "lstm1.g[1]",
        "lstm1.o[1]",
        "lstm1.c[1]",
        "lstm1.h[1]",
        "lstm1.i[2]",
    ]
    assert names[names.index("lstm1.c_n") + 1 :][:8] == [
        "dense1.z",
        "dense1.a",
        "loss.L",
        "dense1.dL_da",
        "dense1.dL_dz",
        "dense1.dL_dW",
        "dense1.dL_db",
        "dense1.dL_dx",
    ]
    assert names[-3:] == ["dense1.W_next", "dense1.b_next", "sgd.lr"]
    sources = {name: stats.torch_source for name, stats in report.terms.items()}
    assert sources["lstm1.i[2]"] == sources["lstm1.dL_dz_f[1]"] == "torch-ops"
    assert sources["lstm1.h[2]"] == sources["dense1.z"] == sources["lstm1.dL_dW_ih"] == "torch.nn"
    assert sources["sgd.lr"] == "torch.optim"
    assert {stats.hand_source for stats in report.terms.values()} == {"hand"}
    document = report.to_json()
    assert {"hand_source", "torch_source"} <= set(document["terms"][0])


# --- planted bugs: the harness catches each and names the first diverging term ------------------


@pytest.mark.parametrize(
    ("cell", "target", "variant", "first_bad"),
    [
        ("gru", "_gru_step", gru_step_paper_reset, "gru1.n[1]"),
        ("lstm", "_input_projection", lstm_bias_i_f_swapped, "lstm1.i[1]"),
        ("lstm", "_lstm_step_back", lstm_back_no_carry, f"lstm1.dL_dh[{T - 1}]"),
    ],
    ids=["gru-paper-reset", "lstm-bias-i-f-swapped", "bptt-drops-carried-dh"],
)
def test_planted_bug_is_caught_by_the_harness(
    monkeypatch: pytest.MonkeyPatch, cell: str, target: str, variant: object, first_bad: str
) -> None:
    assert harness.run(experiment(cell, steps=3)).ok  # the shipped hand side agrees
    monkeypatch.setattr(hr, target, variant)
    report = harness.run(experiment(cell, steps=3))
    assert not report.ok
    assert report.first is not None and report.first.step == 1
    assert report.first.term == first_bad
    assert f"step 1, {first_bad} " in report.verdict()
    assert report.to_json()["first_divergence"]["term"] == first_bad


# --- bad input: one line naming the field, exit code 2 -------------------------------------------


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["parity", "--sequences", "4", "--lengths", "3,0,2,4"], "lengths"),
        (["parity", "--sequences", "4", "--length", "6", "--lengths", "3,7,2,4"], "lengths"),
        (["parity", "--sequences", "4", "--lengths", "3,2"], "lengths"),
        (["echo", "--sequences", "2", "--lengths", "3,x"], "lengths"),
        (["parity", "--hidden", "0"], "hidden"),
        (["echo", "--cell", "lstm2"], "--cell"),
        (["parity", "--layers", "0"], "layers"),
        (["parity", "--head", "one-to-many"], "head"),
        (["parity", "--h0", "warm"], "h0"),
        (["echo", "--delay", "8"], "delay"),
        (["parity", "--length", "0"], "length"),
        (["parity", "--dtype", "float32"], "dtype"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv: list[str], field: str, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["compare", *argv, "--steps", "1"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"handgrad: error: {field}: "), lines[0]
    assert captured.out == ""


def test_hand_model_never_imports_torch() -> None:
    root = Path(hr.__file__).resolve().parents[2]
    code = "import sys; sys.modules['torch'] = None\nimport handgrad.hand.recurrent_model\n"
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=dict(os.environ, PYTHONPATH=str(root)),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
