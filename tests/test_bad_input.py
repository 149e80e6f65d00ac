"""The bad-input catalog: every entry gets one stderr line naming the field, exit code 2, no
traceback, and the output paths untouched (an existing file there keeps its bytes)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from openpyxl import Workbook

from handgrad import inputs
from handgrad.cli import main
from handgrad.contract import spec, training
from handgrad.contract.spec import SpecError

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


def npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # object arrays are pickled here; loading them must be refused
    return buffer.getvalue()


GOOD_NPZ = {key.replace(".", "__"): np.array(value) for key, value in GOOD_WEIGHTS.items()}
XOR = ["compare", "xor", "--steps", "3"]
MLP = ["compare", "mlp", "--sizes", "2,3,1", "--steps", "3"]

CATALOG = [
    # the command line
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
    Case("compare all with options", ["compare", "all", "--steps", "3"], "arguments"),
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
    Case("npz object array (allow_pickle=False)", [*XOR, "--weights", "{npz}"], "weights",
         {"npz": npz(**{"dense1.W": np.array([[0.1, 0.2]] * 3), "dense1.b": np.array([0.1, {}, 0.3]),
                        "dense2.W": np.array([[0.1, 0.2, 0.3]]), "dense2.b": np.array([0.4])})}),
    Case("npz wrong shape", [*XOR, "--weights", "{npz}"], "weights.dense2.W",
         {"npz": npz(**{"dense1.W": np.zeros((3, 2)), "dense1.b": np.zeros(3),
                        "dense2.W": np.zeros((3, 1)), "dense2.b": np.zeros(1)})}),
    Case("npz string array", [*XOR, "--weights", "{npz}"], "weights.dense2.b",
         {"npz": npz(**{"dense1.W": np.zeros((3, 2)), "dense1.b": np.zeros(3),
                        "dense2.W": np.zeros((1, 3)), "dense2.b": np.array(["x"])})}),
    Case("npz inf", [*XOR, "--weights", "{npz}"], "weights.dense1.b",
         {"npz": npz(**{"dense1.W": np.zeros((3, 2)), "dense1.b": np.array([0, np.inf, 0]),
                        "dense2.W": np.zeros((1, 3)), "dense2.b": np.zeros(1)})}),
    Case("npz not a zip", [*XOR, "--weights", "{npz}"], "weights", {"npz": b"not a zip archive"}),
    # option combinations torch itself refuses
    Case("nesterov without momentum", [*XOR, "--nesterov"], "momentum"),
    Case("nesterov with dampening", [*XOR, "--nesterov", "--momentum", "0.9", "--dampening", "0.1"],
         "dampening"),
    Case("dampening above 1", [*XOR, "--momentum", "0.9", "--dampening", "1.5"], "dampening"),
    Case("momentum negative", [*XOR, "--momentum", "-0.5"], "momentum"),
    Case("adam beta2 of 1", [*XOR, "--optimizer", "adam", "--betas", "0.9,1.0"], "betas"),
    Case("adam eps negative", [*XOR, "--optimizer", "adam", "--eps", "-1e-8"], "eps"),
    Case("rmsprop alpha above 1", [*XOR, "--optimizer", "rmsprop", "--alpha", "1.5"], "alpha"),
    Case("weight decay nan", [*XOR, "--weight-decay", "nan"], "weight_decay"),
    Case("clip norm zero", [*XOR, "--clip-norm", "0"], "clip_norm"),
    Case("clip norm and value together", [*XOR, "--clip-norm", "1", "--clip-value", "1"], "clip"),
    Case("label smoothing with mse", [*XOR, "--label-smoothing", "0.1"], "label_smoothing"),
    # output paths
    Case("xlsx is a directory", [*XOR, "--xlsx", "{dir}"], "--xlsx"),
    Case("xlsx under a regular file (unwritable)", [*XOR, "--xlsx", "{afile}/x.xlsx"], "--xlsx"),
    Case("json under a regular file (unwritable)", [*XOR, "--json", "{afile}/r.json"], "--json"),
    Case("xlsx walkthrough past the last step", [*XOR, "--xlsx", "{xlsx}", "--walkthrough", "9"],
         "walkthrough"),
    Case("xlsx live steps zero", [*XOR, "--xlsx", "{xlsx}", "--live-steps", "0"], "live_steps"),
    Case("xlsx live steps past the row limit", [*XOR, "--xlsx", "{xlsx}", "--live-steps", "2000000"],
         "live_steps"),
    Case("json into missing directory", [*XOR, "--json", "/nonexistent/dir/r.json"], "--json"),
    Case("json is a directory", [*XOR, "--json", "{dir}"], "--json"),
]


SUFFIX = {"weights": "json", "data": "csv", "npz": "npz"}


def materialise(case: Case, tmp_path: Path) -> list[str]:
    afile = tmp_path / "afile"
    afile.write_text("a regular file, not a directory")
    paths = {"dir": str(tmp_path), "json": str(tmp_path / "report.json"), "afile": str(afile),
             "xlsx": str(tmp_path / "existing.xlsx")}
    for name, content in case.files.items():
        path = tmp_path / f"{name}.{SUFFIX[name]}"
        if isinstance(content, dict):
            content = json.dumps(content)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        paths[name] = str(path)
    return [part.format(**paths) for part in case.argv]


def test_catalog_size(capsys):
    with capsys.disabled():
        print(f"\nbad-input catalog: {len(CATALOG)} command-line cases + {len(API_CATALOG)} Python API cases"
              f" = {len(CATALOG) + len(API_CATALOG)}")
    assert len(CATALOG) + len(API_CATALOG) >= 40


def old_workbook(path: Path) -> bytes:
    book = Workbook()
    book.active["A1"] = "the old workbook"
    book.save(path)
    return path.read_bytes()


@pytest.mark.parametrize("case", CATALOG, ids=[case.id for case in CATALOG])
def test_bad_input_gets_one_line_naming_the_field(case, tmp_path, capsys):
    argv = materialise(case, tmp_path)
    existing = tmp_path / "existing.json"
    existing.write_bytes(b"old bytes")
    workbook = old_workbook(tmp_path / "existing.xlsx")
    outputs = []
    if argv[:1] == ["compare"] and len(argv) > 1 and argv[1] != "all":
        outputs += [] if "--json" in argv else ["--json", str(existing)]
        outputs += [] if "--xlsx" in argv else ["--xlsx", str(tmp_path / "existing.xlsx")]
    status = main(argv + outputs)
    out, err = capsys.readouterr()
    assert status == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert case.field in lines[0], lines[0]
    assert "Traceback" not in err
    assert existing.read_bytes() == b"old bytes"
    assert (tmp_path / "existing.xlsx").read_bytes() == workbook  # an existing workbook keeps its bytes
    assert not (tmp_path / "report.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no stray temp file


# --- the Python API: the same rule, as a SpecError whose .field names what was wrong -------------

XOR_SHAPES = [("dense1.W", (3, 2)), ("dense1.b", (3,)), ("dense2.W", (1, 3)), ("dense2.b", (1,))]


def load_with_few_allowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inputs, "MAX_VALUES", 5)  # the 13 values of xor stand in for a huge file
    path = tmp_path / "w.json"
    path.write_text(json.dumps(GOOD_WEIGHTS))
    inputs.load_weights(path, XOR_SHAPES)


def load_csv_with_few_allowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inputs, "MAX_VALUES", 5)
    path = tmp_path / "d.csv"
    path.write_text("a,b,y\n0,0,0\n0,1,1\n")
    inputs.load_csv(path, 1)


def load_npz_pickle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "w.npz"
    path.write_bytes(npz(**{"dense1.W": np.array([None, {"x": 1}], dtype=object)}))
    inputs.load_weights(path, XOR_SHAPES)


def api(call):
    return lambda tmp_path, monkeypatch: call()


API_CATALOG = [
    ("Dense zero inputs", api(lambda: spec.Dense(0, 3)), "in_features"),
    ("Dense float outputs", api(lambda: spec.Dense(2, 2.5)), "out_features"),
    ("Dense string inputs", api(lambda: spec.Dense("2", 3)), "in_features"),
    ("Dense folded bias without bias", api(lambda: spec.Dense(2, 3, bias=False, fold_bias=True)),
     "fold_bias"),
    ("mlp one size", api(lambda: spec.Network.mlp([2])), "sizes"),
    ("mlp zero size", api(lambda: spec.Network.mlp([2, 0, 1])), "sizes"),
    ("mlp unknown activation", api(lambda: spec.Network.mlp([2, 3, 1], activation="swish")), "activation"),
    ("Network no layers", api(lambda: spec.Network(())), "layers"),
    ("Loss unknown kind", api(lambda: training.Loss("hinge")), "loss"),
    ("Loss bad reduction", api(lambda: training.Loss("mse", reduction="avg")), "reduction"),
    ("Loss half not a bool", api(lambda: training.Loss("mse", half=1)), "half"),
    ("Loss option of another kind", api(lambda: training.Loss("mse", beta=0.5)), "beta"),
    ("Loss label smoothing above 1", api(lambda: training.Loss("cross_entropy", label_smoothing=2.0)),
     "label_smoothing"),
    ("Schedule batch size zero", api(lambda: spec.Schedule("online", batch_size=0)), "batch_size"),
    ("Schedule unknown mode", api(lambda: spec.Schedule("stochastic")), "mode"),
    ("Schedule negative seed", api(lambda: spec.Schedule(seed=-1)), "seed"),
    ("Optimizer unknown kind", api(lambda: training.Optimizer("lbfgs")), "optimizer"),
    ("Optimizer lr inf", api(lambda: training.Optimizer("sgd", lr=float("inf"))), "lr"),
    ("Optimizer foreign option",
     api(lambda: training.Optimizer("adam", options={"momentum": 0.9})), "momentum"),
    ("Optimizer nesterov with dampening",
     api(lambda: training.Optimizer("sgd", options={"momentum": 0.9, "dampening": 0.5, "nesterov": True})),
     "dampening"),
    ("Optimizer betas not a pair",
     api(lambda: training.Optimizer("adam", options={"betas": (0.9,)})), "betas"),
    ("Clip neither norm nor value", api(lambda: training.Clip()), "clip_norm"),
    ("Data NaN in x", api(lambda: spec.Data(np.array([[np.nan]]), np.array([[0.0]]))), "data.x"),
    ("Data inf in y", api(lambda: spec.Data(np.array([[0.0]]), np.array([[-np.inf]]))), "data.y"),
    ("Data 1-D y", api(lambda: spec.Data(np.zeros((2, 1)), np.zeros(2))), "data.y"),
    ("Data row counts differ", api(lambda: spec.Data(np.zeros((2, 1)), np.zeros((3, 1)))), "data"),
    ("load_weights huge value count", load_with_few_allowed, "weights"),
    ("load_csv huge value count", load_csv_with_few_allowed, "data"),
    ("load_weights npz object array", load_npz_pickle, "weights"),
]


@pytest.mark.parametrize(
    "build, field",
    [(build, field) for _, build, field in API_CATALOG],
    ids=[name for name, _, _ in API_CATALOG],
)
def test_python_api_refuses_with_the_field_named(build, field, tmp_path, monkeypatch):
    with pytest.raises(SpecError) as refused:
        build(tmp_path, monkeypatch)
    assert refused.value.field == field, str(refused.value)
    assert str(refused.value).startswith(f"{field}: ") and "\n" not in str(refused.value)


def test_the_real_entry_point_prints_one_line_and_exits_2(tmp_path):
    result = subprocess.run([sys.executable, "-m", "handgrad", "compare", "xor", "--lr", "-1"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["handgrad: error: lr: expected a number > 0, got -1"]
