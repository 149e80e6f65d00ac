"""``handgrad gradcheck``: the hand pass agrees with central finite differences in every scenario,
and the oracle catches a planted bug in a process where torch cannot be imported at all."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from handgrad import cli
from handgrad.scenarios import SCENARIOS

REFERENCE = Path(__file__).resolve().parent.parent / "reference"


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_gradcheck_passes_for_every_scenario(name, capsys) -> None:
    code = cli.main(["gradcheck", name])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"{name} gradcheck: all" in out


@pytest.mark.parametrize(("name", "options"), [("xor", ["--at-step", "5"]), ("parity", ["--cell", "gru"])])
def test_gradcheck_at_a_later_step_and_other_cells(name, options, capsys) -> None:
    assert cli.main(["gradcheck", name, *options]) == 0, capsys.readouterr().out


def test_gradcheck_bad_input_is_exit_2(capsys) -> None:
    assert cli.main(["gradcheck", "nope"]) == 2
    assert "scenario" in capsys.readouterr().err


SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["torch"] = None  # any `import torch` now raises ImportError
    import numpy as np
    from handgrad.gradcheck import gradcheck_side
    from handgrad.hand.network import HandNetwork, init_params
    from handgrad.mutants import MUTANTS
    from handgrad.spec import Loss, Network, Optimizer, Schedule

    x = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    y = np.array([[0.0], [1.0], [1.0], [0.0]])
    network = Network.mlp([2, 3, 1])
    hand = HandNetwork(network, Loss(), Optimizer("sgd", 0.5), init_params(network, 0), x, y,
                       Schedule("batch").batches(4, 1))
    plant = sys.argv[1]
    mutant = {m.id: m for m in MUTANTS}.get(plant)
    if mutant is None:
        checks = gradcheck_side(hand, 1)
    else:
        with mutant.planted():
            checks = gradcheck_side(hand, 1)
    for check in checks:
        print(check.message())
    assert sys.modules["torch"] is None
    sys.exit(0 if all(check.ok for check in checks) else 1)
    """
)


@pytest.mark.parametrize(
    ("plant", "code", "first_bad"),
    [
        ("none", 0, None),
        ("sigmoid-prime-from-z", 1, "dense1.W"),
        ("mse-lost-factor-2", 1, "dense1.W"),
    ],
)
def test_oracle_catches_a_planted_bug_without_torch(plant, code, first_bad) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, plant],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(REFERENCE), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert result.returncode == code, result.stdout + result.stderr
    assert "No module named" not in result.stderr and "import of torch" not in result.stderr
    if first_bad is not None:
        failing = [line for line in result.stdout.splitlines() if "disagree" in line]
        assert failing and failing[0].startswith(first_bad), result.stdout
