"""``handgrad gradcheck``: the hand pass agrees with central finite differences in every scenario,
and the oracle catches a planted bug, each in a process where torch cannot be imported at all."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from handgrad import cli
from handgrad.scenarios import SCENARIOS

REFERENCE = Path(__file__).resolve().parent.parent / "reference"
BLOCKED = "import of torch attempted"


@pytest.fixture(scope="module")
def no_torch(tmp_path_factory) -> dict[str, str]:
    """An environment whose first path entry holds a fake ``torch`` that refuses to import."""
    fake = tmp_path_factory.mktemp("no_torch") / "torch"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        f"import sys\nprint({BLOCKED!r}, file=sys.stderr)\nraise ImportError('torch is blocked here')\n"
    )
    return {"PYTHONPATH": f"{fake.parent}:{REFERENCE}", "PATH": "/usr/bin:/bin"}


def run_without_torch(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env, timeout=120)
    assert BLOCKED not in result.stderr, result.stderr
    return result


def test_cli_imports_no_torch(no_torch) -> None:
    code = "import sys,handgrad.cli, handgrad.gradcheck; sys.exit('torch' in sys.modules)"
    result = run_without_torch(no_torch, "-c", code)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_gradcheck_passes_for_every_scenario_without_torch(name, no_torch) -> None:
    result = run_without_torch(no_torch, "-m", "handgrad", "gradcheck", name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{name} gradcheck: all" in result.stdout
    if name == "alexnet-mini":  # its dropout masks come from NumPy here, and the output says so
        assert "dropout masks: drawn with NumPy" in result.stdout


PLANTED = textwrap.dedent(
    """
    import sys
    from handgrad.cli import main
    from handgrad.mutants import MUTANTS

    with {m.id: m for m in MUTANTS}[sys.argv[1]].planted():
        code = main(["gradcheck", *sys.argv[2:]])
    sys.exit(code)
    """
)


@pytest.mark.parametrize(
    ("plant", "argv", "first_bad"),
    [
        ("sigmoid-prime-from-z", ["xor", "--mode", "batch"], "dense1.W"),
        ("dropout-backward-no-scale", ["alexnet-mini", "--samples", "8"], "conv1.W"),
        ("lstm-bptt-no-carry", ["parity"], "lstm1.W_ih"),
    ],
)
def test_gradcheck_command_catches_a_planted_bug_without_torch(plant, argv, first_bad, no_torch) -> None:
    result = run_without_torch(no_torch, "-c", PLANTED, plant, *argv)
    assert result.returncode == 1, result.stdout + result.stderr
    verdict = result.stdout.splitlines()[-1]
    assert "gradcheck: MISMATCH" in verdict and f"first: {first_bad} (" in verdict, result.stdout


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
    from handgrad.contract.spec import Network, Schedule
    from handgrad.contract.training import Loss, Optimizer

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


def test_compare_without_torch_says_so_in_one_line(tmp_path: Path) -> None:
    """compare needs the torch twin: where torch is not installed, one line naming it and exit 2
    (gradcheck, above, runs there)."""
    missing = tmp_path / "torch"
    missing.mkdir()
    (missing / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'torch'\", name='torch')\n"  # as if not installed
    )
    env = {"PYTHONPATH": f"{tmp_path}:{REFERENCE}", "PATH": "/usr/bin:/bin"}
    out = tmp_path / "r.json"
    result = subprocess.run(
        [sys.executable, "-m", "handgrad", "compare", "xor", "--steps", "2", "--json", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("handgrad: error: torch: handgrad compare needs PyTorch")
    assert not out.exists()
