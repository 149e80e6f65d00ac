"""The bad-input catalog: every entry gets one stderr line naming the field, exit code 2, no
traceback, and the output paths untouched (an existing file there keeps its bytes)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from handgrad.cli import main

GOOD_WEIGHTS = {
    "dense1.W": [[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]],
    "dense1.b": [0.1, 0.2, 0.3],
    "dense2.W": [[0.1, 0.2, 0.3]],
    "dense2.b": [0.4],
}


@dataclass(frozen=True)
class Case:
    """argv may name files: {weights}, {data}, {dir}, {json}; ``files`` gives their contents."""

    id: str
    argv: list[str]
    field: str  # the text the error line must contain
    files: dict[str, bytes | str | dict] = field(default_factory=dict)


def weights_with(**changes) -> dict:
    weights = json.loads(json.dumps(GOOD_WEIGHTS))
    for key, value in changes.items():
        if value is None:
            weights.pop(key.replace("_", ".", 1))
        else:
            weights[key.replace("_", ".", 1)] = value
    return weights


XOR = ["compare", "xor", "--steps", "3"]
MLP = ["compare", "mlp", "--sizes", "2,3,1", "--steps", "3"]

CATALOG = [
    # the command line
    Case("no command", [], "command"),
    Case("unknown command", ["frobnicate"], "command"),
    Case("unknown scenario", ["compare", "xnor"], "scenario"),
    Case("missing scenario", ["compare"], "scenario"),
    Case("unknown option", [*XOR, "--learning-rate", "1"], "arguments"),
    Case("unknown activation", [*XOR, "--activation", "swish"], "--activation"),
    Case("unknown output activation", [*XOR, "--output-activation", "softmax"], "--output-activation"),
    Case("unknown loss", [*XOR, "--loss", "hinge"], "--loss"),
    Case("unknown mode", [*XOR, "--mode", "stochastic"], "--mode"),
    Case("unknown dtype", [*XOR, "--dtype", "float16"], "--dtype"),
    Case("steps zero", [*XOR, "--steps", "0"], "steps"),
    Case("steps negative", [*XOR, "--steps", "-5"], "steps"),
    Case("steps not a number", [*XOR, "--steps", "ten"], "--steps"),
    Case("lr zero", [*XOR, "--lr", "0"], "lr"),
    Case("lr negative", [*XOR, "--lr", "-0.1"], "lr"),
    Case("lr nan", [*XOR, "--lr", "nan"], "lr"),
    Case("lr inf", [*XOR, "--lr", "inf"], "lr"),
    Case("lr not a number", [*XOR, "--lr", "fast"], "--lr"),
    Case("hidden zero", [*XOR, "--hidden", "0"], "sizes"),
    Case("batch size zero", [*XOR, "--mode", "minibatch", "--batch-size", "0"], "batch_size"),
    Case("negative seed", [*XOR, "--seed", "-1"], "seed"),
    Case("sizes not integers", [*MLP[:2], "--sizes", "2,x,1"], "sizes"),
    Case("sizes too short", [*MLP[:2], "--sizes", "2"], "sizes"),
    Case("half with bce", [*XOR, "--loss", "bce", "--half"], "half"),
    Case("compare all with options", ["compare", "all", "--steps", "3"], "compare all"),
    # weights files
    Case("weights missing key", [*XOR, "--weights", "{weights}"], "weights.dense2.b",
         {"weights": weights_with(dense2_b=None)}),
    Case("weights extra key", [*XOR, "--weights", "{weights}"], "weights.dense3.W",
         {"weights": {**GOOD_WEIGHTS, "dense3.W": [[1.0]]}}),
    Case("weights wrong shape", [*XOR, "--weights", "{weights}"], "weights.dense1.W",
         {"weights": weights_with(dense1_W=[[0.1, 0.2, 0.3]])}),
    Case("weights ragged rows", [*XOR, "--weights", "{weights}"], "weights.dense1.W",
         {"weights": weights_with(dense1_W=[[0.1, 0.2], [0.3], [0.5, 0.6]])}),
    Case("weights non-number", [*XOR, "--weights", "{weights}"], "weights.dense1.b[1]",
         {"weights": weights_with(dense1_b=[0.1, "two", 0.3])}),
    Case("weights boolean", [*XOR, "--weights", "{weights}"], "weights.dense2.b[0]",
         {"weights": weights_with(dense2_b=[True])}),
    Case("weights NaN", [*XOR, "--weights", "{weights}"], "weights.dense1.b",
         {"weights": '{"dense1.W": [[0,0],[0,0],[0,0]], "dense1.b": [NaN, 0, 0], '
                     '"dense2.W": [[0,0,0]], "dense2.b": [0]}'}),
    Case("weights Infinity", [*XOR, "--weights", "{weights}"], "weights.dense2.b",
         {"weights": '{"dense1.W": [[0,0],[0,0],[0,0]], "dense1.b": [0, 0, 0], '
                     '"dense2.W": [[0,0,0]], "dense2.b": [-Infinity]}'}),
    Case("weights not an object", [*XOR, "--weights", "{weights}"], "weights", {"weights": "[1, 2]"}),
    Case("weights invalid JSON", [*XOR, "--weights", "{weights}"], "weights", {"weights": "{oops"}),
    Case("weights empty file", [*XOR, "--weights", "{weights}"], "weights", {"weights": ""}),
    Case("weights not UTF-8", [*XOR, "--weights", "{weights}"], "weights", {"weights": b"\xff\xfe\x00{"}),
    Case("weights missing file", [*XOR, "--weights", "/nonexistent/w.json"], "weights"),
    Case("weights is a directory", [*XOR, "--weights", "{dir}"], "weights"),
    # data files
    Case("csv ragged row", [*MLP, "--data", "{data}"], "data line 3", {"data": "a,b,y\n1,2,0\n1,2\n"}),
    Case("csv non-numeric cell", [*MLP, "--data", "{data}"], "column 'b'", {"data": "a,b,y\n1,x,0\n"}),
    Case("csv nan cell", [*MLP, "--data", "{data}"], "column 'a'", {"data": "a,b,y\nnan,1,0\n"}),
    Case("csv inf cell", [*MLP, "--data", "{data}"], "column 'y'", {"data": "a,b,y\n1,1,-inf\n"}),
    Case("csv header only", [*MLP, "--data", "{data}"], "data", {"data": "a,b,y\n"}),
    Case("csv empty", [*MLP, "--data", "{data}"], "data", {"data": ""}),
    Case("csv not UTF-8", [*MLP, "--data", "{data}"], "data", {"data": b"a,b,y\n\xff,1,0\n"}),
    Case("csv unknown target", [*MLP, "--data", "{data}", "--targets", "z"], "targets",
         {"data": "a,b,y\n1,2,0\n"}),
    Case("csv wrong column count", [*MLP, "--data", "{data}"], "data", {"data": "a,y\n1,0\n"}),
    Case("csv bce target outside [0,1]", [*MLP, "--loss", "bce", "--data", "{data}"], "loss",
         {"data": "a,b,y\n1,2,3\n"}),
    Case("csv repeated column", [*MLP, "--data", "{data}"], "data", {"data": "a,a,y\n1,2,0\n"}),
    # output paths
    Case("json into missing directory", [*XOR, "--json", "/nonexistent/dir/r.json"], "--json"),
    Case("json is a directory", [*XOR, "--json", "{dir}"], "--json"),
]


def materialise(case: Case, tmp_path: Path) -> list[str]:
    paths = {"dir": str(tmp_path), "json": str(tmp_path / "report.json")}
    for name, content in case.files.items():
        path = tmp_path / f"{name}.{'json' if name == 'weights' else 'csv'}"
        if isinstance(content, dict):
            content = json.dumps(content)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        paths[name] = str(path)
    return [part.format(**paths) for part in case.argv]


def test_catalog_size(capsys):
    with capsys.disabled():
        print(f"\nbad-input catalog: {len(CATALOG)} cases")
    assert len(CATALOG) >= 40


@pytest.mark.parametrize("case", CATALOG, ids=[case.id for case in CATALOG])
def test_bad_input_gets_one_line_naming_the_field(case, tmp_path, capsys):
    argv = materialise(case, tmp_path)
    existing = tmp_path / "existing.json"
    existing.write_bytes(b"old bytes")
    argv_with_output = argv + (["--json", str(existing)] if argv[:1] == ["compare"] and
                               "--json" not in argv and len(argv) > 1 and argv[1] != "all" else [])
    status = main(argv_with_output)
    out, err = capsys.readouterr()
    assert status == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert case.field in lines[0], lines[0]
    assert "Traceback" not in err
    assert existing.read_bytes() == b"old bytes"
    assert not (tmp_path / "report.json").exists()


def test_the_real_entry_point_prints_one_line_and_exits_2(tmp_path):
    result = subprocess.run([sys.executable, "-m", "handgrad", "compare", "xor", "--lr", "-1"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["handgrad: error: lr: expected a number > 0, got -1"]
