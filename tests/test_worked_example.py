"""Reproducing a published worked example from files, to the last printed digit.

Matt Mazur's "A Step by Step Backpropagation Example" (2015): a 2-2-2 sigmoid network, inputs
0.05, 0.10, targets 0.01, 0.99, E = Σ ½(target − out)², η = 0.5. The expected numbers below are
(a) the ones printed in that post and (b) recomputed here with plain scalar Python, independently
of handgrad's code.
"""

from __future__ import annotations

import json
import math

import pytest

from handgrad import harness
from handgrad.cli import main, scenario_parser
from handgrad.scenarios import SCENARIOS

WEIGHTS = {
    "dense1.W": [[0.15, 0.20], [0.25, 0.30]],
    "dense1.b": [0.35, 0.35],
    "dense2.W": [[0.40, 0.45], [0.50, 0.55]],
    "dense2.b": [0.60, 0.60],
}
CSV = "x1,x2,y1,y2\n0.05,0.10,0.01,0.99\n"

# Printed in the post (E_total and the updated weights w1..w8, rounded as printed there).
PUBLISHED_LOSS = 0.298371109
PUBLISHED_W2 = [[0.35891648, 0.408666186], [0.511301270, 0.561370121]]
PUBLISHED_W1 = [[0.149780716, 0.19956143], [0.24975114, 0.29950229]]


def scalar_reference():
    """One SGD step of the 2-2-2 net in plain scalar Python (no numpy, no handgrad)."""

    def sigma(v):
        return 1 / (1 + math.exp(-v))

    x, y = [0.05, 0.10], [0.01, 0.99]
    W1, b1 = WEIGHTS["dense1.W"], WEIGHTS["dense1.b"]
    W2, b2 = WEIGHTS["dense2.W"], WEIGHTS["dense2.b"]
    h = [sigma(W1[j][0] * x[0] + W1[j][1] * x[1] + b1[j]) for j in range(2)]
    o = [sigma(W2[k][0] * h[0] + W2[k][1] * h[1] + b2[k]) for k in range(2)]
    loss = sum(0.5 * (y[k] - o[k]) ** 2 for k in range(2))
    delta_o = [(o[k] - y[k]) * o[k] * (1 - o[k]) for k in range(2)]
    delta_h = [sum(delta_o[k] * W2[k][j] for k in range(2)) * h[j] * (1 - h[j]) for j in range(2)]
    W2_next = [[W2[k][j] - 0.5 * delta_o[k] * h[j] for j in range(2)] for k in range(2)]
    W1_next = [[W1[j][i] - 0.5 * delta_h[j] * x[i] for i in range(2)] for j in range(2)]
    return loss, W1_next, W2_next


@pytest.fixture
def example_files(tmp_path):
    weights = tmp_path / "mazur_weights.json"
    weights.write_text(json.dumps(WEIGHTS))
    data = tmp_path / "mazur.csv"
    data.write_text(CSV)
    return weights, data


def test_mazur_first_step_from_files(example_files, tmp_path, capsys):
    weights, data = example_files
    report_path = tmp_path / "report.json"
    argv = ["compare", "mlp", "--sizes", "2,2,2", "--activation", "sigmoid", "--output-activation",
            "sigmoid", "--loss", "mse", "--reduction", "sum", "--half", "--lr", "0.5", "--steps", "1",
            "--weights", str(weights), "--data", str(data), "--json", str(report_path)]
    assert main(argv) == 0
    loss, W1_next, W2_next = scalar_reference()
    assert loss == pytest.approx(PUBLISHED_LOSS, abs=5e-10)
    computed = sum(W2_next, []) + sum(W1_next, [])
    printed = sum(PUBLISHED_W2, []) + sum(PUBLISHED_W1, [])
    assert computed == pytest.approx(printed, abs=5e-9)

    # handgrad's hand side and torch agree with the independent numbers.
    captured = {}
    experiment = SCENARIOS["mlp"].build(scenario_parser("mlp").parse_args(argv[2:-2]))
    harness.run(experiment, observers=[lambda step, hand, torch, _: captured.update(hand=hand, torch=torch)])
    for trace in (captured["hand"], captured["torch"]):
        assert float(trace.value("loss.L")) == pytest.approx(loss, rel=1e-14)
        assert trace.value("dense2.W_next").ravel().tolist() == pytest.approx(sum(W2_next, []), rel=1e-14)
        assert trace.value("dense1.W_next").ravel().tolist() == pytest.approx(sum(W1_next, []), rel=1e-14)
    report = json.loads(report_path.read_text())
    assert report["ok"] and report["steps_run"] == 1
