"""manual/your-own-model.md's example runs as written: the model file, its check from the command
line and from a test; and with the slip the page describes planted, the test fails at that term."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest

from handgrad.cli import main

PAGE = Path(__file__).resolve().parent.parent / "manual" / "your-own-model.md"
CORRECT = "dscale = (dout * t).sum(axis=0)"
SLIP = "dscale = dout.sum(axis=0)"


def blocks() -> dict[str, str]:
    text = PAGE.read_text(encoding="utf-8")
    found = {}
    for source in re.findall(r"```python\n(.*?)```", text, flags=re.S):
        first = source.splitlines()[0]
        assert first.startswith("# ") and first.endswith(".py"), first
        found[first[2:]] = source
    commands = [line for line in re.findall(r"```sh\n(.*?)```", text, flags=re.S)]
    assert len(commands) == 1 and set(found) == {"my_model.py", "test_my_model.py"}
    found["command"] = commands[0].strip()
    return found


def run_test_block(source: str, folder: Path) -> None:
    namespace: dict[str, object] = {"__name__": "test_my_model"}
    exec(compile(source, str(folder / "test_my_model.py"), "exec"), namespace)
    tests = [value for key, value in namespace.items() if key.startswith("test_") and callable(value)]
    assert len(tests) == 1
    tests[0]()


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("my_model", None)


def test_the_command_on_the_page_agrees(folder, capsys) -> None:
    page = blocks()
    (folder / "my_model.py").write_text(page["my_model.py"])
    argv = shlex.split(page["command"])
    assert argv[:2] == ["handgrad", "check"]
    assert main(argv[1:]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("my_model: all 30 terms agree at every one of 20 steps; "), last


def test_the_test_on_the_page_passes(folder, capsys) -> None:
    page = blocks()
    (folder / "my_model.py").write_text(page["my_model.py"])
    run_test_block(page["test_my_model.py"], folder)
    assert "all 30 terms agree at every one of 20 steps" in capsys.readouterr().out


def test_the_test_on_the_page_fails_at_the_planted_slip(folder) -> None:
    page = blocks()
    assert CORRECT in page["my_model.py"]
    (folder / "my_model.py").write_text(page["my_model.py"].replace(CORRECT, SLIP))
    with pytest.raises(AssertionError) as caught:
        run_test_block(page["test_my_model.py"], folder)
    message = str(caught.value)
    assert "MISMATCH: 28 of 30 terms disagree; first: step 1, scaledtanh1.dL_dscale" in message, message
    assert "4 / 4 elements differ" in message
