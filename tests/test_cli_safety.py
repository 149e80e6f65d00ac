"""A command line that never loses a file, never crashes, never runs away (issue 14).

Every case runs ``python -m handgrad`` in a subprocess under a memory cap (RLIMIT_AS), so a case
that would allocate without bound fails here instead of taking the machine. Each asserts: the exit
code, exactly one stderr line naming the field, no traceback, every file that was there before
byte-identical, no temporary file left, and under 5 s of wall time.
"""

# ruff: noqa: E501 (one catalog case a line reads best)
from __future__ import annotations

import io
import os
import pty
import resource
import signal
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "reference"), "OMP_NUM_THREADS": "1"}
MEMORY_CAP = 6 * 2**30  # virtual memory: torch's import maps ~2 GiB; a runaway case passes the cap

WEIGHTS = '{"dense1.W": [[0.1,0.2],[0.3,0.4],[0.5,0.6]], "dense1.b": [0.1,0.2,0.3], "dense2.W": [[0.1,0.2,0.3]], "dense2.b": [0.1]}'
DATA = "a,b,y\n0,0,0\n0,1,1\n1,0,1\n1,1,0\n"


def _cap() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def run(argv: list[str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "handgrad", *argv],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=_cap,
    )


def _npz_declaring(shape: tuple[int, ...]) -> bytes:
    """A tiny .npz whose member's header declares ``shape`` (the data is not there)."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": shape})
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("dense1.W.npy", header.getvalue() + b"\0" * 64)
    return archive.getvalue()


def _zip_bomb() -> bytes:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("dense1.W.npy", b"\0" * (200 * 2**20))
    return archive.getvalue()


@dataclass
class Case:
    id: str
    argv: list[str]
    field: str
    files: dict[str, str | bytes] = field(default_factory=dict)
    code: int = 2


X = ["compare", "xor", "--steps", "2", "--quiet"]
CASES = [
    # data loss: an output that is an input or another output
    Case("json over weights", [*X, "--weights", "w.json", "--json", "w.json"], "--json", {"w.json": WEIGHTS}),
    Case("xlsx over data", ["compare", "mlp", "--steps", "2", "--data", "d.csv", "--xlsx", "d.csv"], "--xlsx",
         {"d.csv": DATA}),
    Case("json same as xlsx", [*X, "--json", "o.out", "--xlsx", "o.out"], "--json", {"o.out": "old"}),
    Case("json via symlink to weights", [*X, "--weights", "w.json", "--json", "l.json"], "--json",
         {"w.json": WEIGHTS, "l.json": "->w.json"}),
    Case("json via ../ to weights", [*X, "--weights", "w.json", "--json", "./sub/../w.json"], "--json",
         {"w.json": WEIGHTS, "sub/keep": ""}),
    Case("gradcheck json over weights", ["gradcheck", "xor", "--weights", "w.json", "--json", "w.json"], "--json",
         {"w.json": WEIGHTS}),
    # empty and directory-like values
    Case("json empty", [*X, "--json", ""], "json"),
    Case("xlsx empty", [*X, "--xlsx", ""], "xlsx"),
    Case("targets empty", ["compare", "mlp", "--data", "d.csv", "--targets", ""], "targets", {"d.csv": DATA}),
    Case("json new dir", [*X, "--json", "newdir/"], "--json"),
    Case("xlsx existing dir", [*X, "--xlsx", "sub"], "--xlsx", {"sub/keep": ""}),
    Case("weights empty", [*X, "--weights", ""], "weights"),
    # numbers out of range
    Case("seed 2**64", [*X, "--seed", str(2**64)], "seed"),
    Case("seed negative", [*X, "--seed", "-1"], "seed"),
    Case("steps 2**63 batch", ["compare", "xor", "--steps", str(2**63), "--mode", "batch"], "steps"),
    Case("steps negative", ["compare", "xor", "--steps", "-5"], "steps"),
    Case("fd-seed negative", ["gradcheck", "xor", "--fd-seed", "-1"], "fd_seed"),
    Case("at-step 2**63", ["gradcheck", "xor", "--at-step", str(2**63)], "at_step"),
    Case("max-memory zero", [*X, "--max-memory", "0"], "max_memory"),
    Case("walkthrough too many", [*X, "--xlsx", "o.xlsx", "--walkthrough", ",".join(map(str, range(1, 30)))],
         "walkthrough"),
    # unbounded sizes
    Case("sizes huge", ["compare", "mlp", "--sizes", "2,100000,100000,1"], "sizes"),
    Case("sizes over limit", ["compare", "mlp", "--sizes", "2,1000000,1"], "sizes"),
    Case("hidden 1e9", ["compare", "xor", "--hidden", str(10**9)], "hidden"),
    Case("image size 1e5", ["compare", "alexnet-mini", "--image-size", "100000"], "image_size"),
    Case("length 1e9", ["compare", "parity", "--length", str(10**9)], "length"),
    # within SIZE_LIMITS, but each time step's records (~88 KiB) would pass 4 GiB: 10 GB measured
    Case("length 1e5 records", ["compare", "parity", "--length", "100000"], "length"),
    Case("echo length 1e5 two layers", ["compare", "echo", "--length", "50000", "--layers", "2"], "length"),
    Case("depth 1e4", ["compare", "deep", "--depth", "10000"], "depth"),
    Case("deep wide", ["compare", "deep", "--width", "100000", "--depth", "100"], "depth"),
    Case("recurrent product", ["compare", "parity", "--hidden", "100000", "--length", "1000"], "length"),
    Case("multitask product", ["compare", "multitask", "--rows", "1000000", "--hidden", "100000"], "hidden"),
    Case("dropout masks for 1e9 steps", ["compare", "alexnet-mini", "--steps", str(10**9)], "steps"),
    Case("gradcheck sizes huge", ["gradcheck", "mlp", "--sizes", "2,100000,100000,1"], "sizes"),
    Case("channels over limit", ["compare", "alexnet-mini", "--channels", "4,1000000"], "channels"),
    # input files: streams, size, structure
    Case("weights /dev/zero", [*X, "--weights", "/dev/zero"], "weights"),
    Case("data /dev/zero", ["compare", "mlp", "--data", "/dev/zero"], "data"),
    Case("npz declaring 1e7x1e7", [*X, "--weights", "w.npz"], "weights", {"w.npz": _npz_declaring((10**7, 10**7))}),
    Case("npz zip bomb", [*X, "--weights", "w.npz"], "weights", {"w.npz": _zip_bomb()}),
    Case("NPZ upper case read as npz", [*X, "--weights", "w.NPZ"], "weights",
         {"w.NPZ": _npz_declaring((10**7, 10**7))}),
    Case("json 401-digit integer", [*X, "--weights", "w.json"], "weights",
         {"w.json": WEIGHTS.replace("0.1]", "1" + "0" * 400 + "]")}),
    Case("json nested 100000 deep", [*X, "--weights", "w.json"], "weights",
         {"w.json": '{"dense1.W": ' + "[" * 100_000 + "]" * 100_000 + "}"}),
    Case("json duplicated key", [*X, "--weights", "w.json"], "weights.dense2.b",
         {"w.json": WEIGHTS[:-1] + ', "dense2.b": [0.2]}'}),
    Case("json 1e400", [*X, "--weights", "w.json"], "weights", {"w.json": WEIGHTS.replace("0.1]", "1e400]")}),
    Case("csv only commas", ["compare", "mlp", "--data", "d.csv"], "data", {"d.csv": ",,\n,,\n"}),
    Case("csv huge cell", ["compare", "mlp", "--data", "d.csv"], "data", {"d.csv": "a,b,y\n" + "1" * 200_000 + ",0,0\n"}),
    Case("csv quoted newline", ["compare", "mlp", "--data", "d.csv"], "data line 2",
         {"d.csv": 'a,b,y\n"1\n0",0,1\n0,1,1\n'}),
    Case("csv underscore", ["compare", "mlp", "--data", "d.csv"], "data line 2", {"d.csv": "a,b,y\n1_0,0,1\n0,1,1\n"}),
    Case("csv hex", ["compare", "mlp", "--data", "d.csv"], "data line 2", {"d.csv": "a,b,y\n0x10,0,1\n0,1,1\n"}),
    Case("csv without header", ["compare", "mlp", "--data", "d.csv"], "data", {"d.csv": "0,0,0\n0,1,1\n1,0,1\n"}),
    Case("csv empty header name", ["compare", "mlp", "--data", "d.csv"], "data", {"d.csv": "a,,y\n0,0,0\n"}),
    Case("csv infinity", ["compare", "mlp", "--data", "d.csv"], "data line 2", {"d.csv": "a,b,y\ninf,0,0\n"}),
    Case("csv not utf-8", ["compare", "mlp", "--data", "d.csv"], "data", {"d.csv": b"a,b,y\n\xff,0,0\n"}),
    # options
    Case("negative list is a value", ["compare", "multitask", "--loss-weights", "-1,1"], "loss_weights"),
    Case("class weight empty", [*X, "--loss", "cross_entropy", "--class-weight", ""], "class_weight"),
    Case("unknown option", [*X, "--frobnicate"], "arguments"),
    Case("compare all unknown option", ["compare", "all", "--steps", "3"], "arguments"),
    Case("compare all no jobs", ["compare", "all", "--jobs", "0"], "jobs"),
    Case("gradcheck all unknown option", ["gradcheck", "all", "--lr", "3"], "arguments"),
    Case("gradcheck unknown scenario", ["gradcheck", "nope"], "scenario"),
    Case("list with options", ["list", "--all"], "list"),
    Case("unknown command", ["frobnicate"], "command"),
    Case("compare without scenario", ["compare"], "scenario"),
    Case("gradcheck json dir", ["gradcheck", "xor", "--json", "sub/"], "--json", {"sub/keep": ""}),
]


def _lay_out(folder: Path, files: dict[str, str | bytes]) -> dict[Path, bytes]:
    before = {}
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str) and content.startswith("->"):
            path.symlink_to(content[2:])
            continue
        data = content.encode() if isinstance(content, str) else content
        path.write_bytes(data)
        before[path] = data
    return before


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_catalog_case(case: Case, tmp_path: Path) -> None:
    before = _lay_out(tmp_path, case.files)
    listing = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    start = time.monotonic()
    done = run(case.argv, tmp_path)
    seconds = time.monotonic() - start
    lines = done.stderr.strip().splitlines()
    assert done.returncode == case.code, (done.returncode, done.stderr[-2000:])
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert lines[0].startswith("handgrad: error: ") and case.field in lines[0], lines[0]
    for path, data in before.items():
        assert path.read_bytes() == data, f"{path.name} changed"
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == listing  # nothing new, no .tmp
    assert seconds < 5 + 3, f"{seconds:.1f} s"  # 5 s, with room for torch's import on a loaded machine


def test_catalog_size() -> None:
    assert len(CASES) >= 60, len(CASES)


def test_special_files_are_written_through_and_symlinks_kept(tmp_path: Path) -> None:
    (tmp_path / "target.json").write_text("old")
    (tmp_path / "link.json").symlink_to("target.json")
    done = run([*X, "--json", "link.json", "--xlsx", "/dev/null"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "link.json").is_symlink() and (tmp_path / "target.json").read_text().startswith("{")
    assert Path("/dev/null").is_char_device()  # written through, not replaced by a regular file


def test_a_full_disk_is_one_line_and_leaves_no_file(tmp_path: Path) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this machine")
    done = run([*X, "--json", "/dev/full"], tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "json" in done.stderr, done.stderr


def test_stdout_to_a_full_disk_is_one_line(tmp_path: Path) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this machine")
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "handgrad", *X], env=ENV, stdout=full, stderr=subprocess.PIPE, text=True, timeout=60
        )
    assert done.returncode == 2 and done.stderr.strip().splitlines() == ["handgrad: error: output: No space left on device"]


def test_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    done = subprocess.run(
        f"{sys.executable} -m handgrad compare deep --steps 3 | head -1",
        shell=True, env=ENV, capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert done.returncode == 0 and done.stdout.count("\n") == 1 and done.stderr == "", done.stderr


def test_an_internal_error_is_exit_3_with_one_line(monkeypatch, capsys) -> None:
    from handgrad import cli, harness

    def broken(*args, **kwargs):
        raise ZeroDivisionError("planted")

    monkeypatch.setattr(harness, "run", broken)
    assert cli.main(["compare", "xor", "--steps", "2"]) == cli.EXIT_INTERNAL
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "handgrad: internal error: ZeroDivisionError: planted (rerun with --debug for the traceback)"
    ]
    assert cli.main(["compare", "xor", "--steps", "2", "--debug"]) == cli.EXIT_INTERNAL
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("handgrad: internal error")


@pytest.mark.parametrize(
    "argv",
    [[], ["--help"], ["--version"], ["compare", "--help"], ["gradcheck", "--help"], ["compare", "xor", "--help"],
     ["gradcheck", "xor", "--help"], ["compare", "all", "--help"], ["gradcheck", "all", "--help"], ["list", "--help"]],
    ids=lambda argv: " ".join(argv) or "bare",
)
def test_help_everywhere(argv, tmp_path: Path) -> None:
    done = run(argv, tmp_path)
    assert done.returncode == 0 and done.stdout and not done.stderr, done.stderr


def test_scripts_compare_help(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "compare.py"), "--help"], env=ENV,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "usage" in done.stdout, done.stderr


def test_gradcheck_help_shows_no_steps_and_every_default(tmp_path: Path) -> None:
    text = run(["gradcheck", "xor", "--help"], tmp_path).stdout
    assert "--steps STEPS" not in text and "--at-step" in text
    assert "learning rate η (default 2.0)" in text and "(default: 2.0)" in text  # xor's η; --norm-type's


def test_compare_all_json_is_one_document(tmp_path: Path) -> None:
    done = run(["compare", "all", "--jobs", "1", "--json", "all.json"], tmp_path, timeout=600)
    import json

    document = json.loads((tmp_path / "all.json").read_text())
    assert done.returncode == 0 and document["ok"] is True
    assert [report["scenario"] for report in document["scenarios"]] == [
        "xor", "mlp", "alexnet-mini", "parity", "echo", "deep", "multitask", "makemore", "transformer"
    ]
    # --jobs 2: the same lines in the same order, the same reports (wall times aside)
    parallel = run(["compare", "all", "--jobs", "2", "--json", "all2.json"], tmp_path, timeout=600)
    assert parallel.returncode == done.returncode and parallel.stdout == done.stdout
    assert _without_seconds(json.loads((tmp_path / "all2.json").read_text())) == _without_seconds(document)


def _without_seconds(value: object) -> object:
    if isinstance(value, dict):
        return {key: _without_seconds(item) for key, item in value.items() if key != "seconds"}
    if isinstance(value, list):
        return [_without_seconds(item) for item in value]
    return value


def test_a_billion_steps_start_at_once_and_stop_on_ctrl_c(tmp_path: Path) -> None:
    """--steps 10⁹: progress within 5 s on a terminal, flat memory, Ctrl-C → 130."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "handgrad", "compare", "xor", "--steps", str(10**9)],
        stdout=follower, stderr=subprocess.PIPE, env=ENV, cwd=tmp_path, preexec_fn=_cap,
    )
    os.close(follower)
    os.set_blocking(leader, False)
    seen, start, rss, first = b"", time.monotonic(), [], None
    while time.monotonic() - start < 12:
        try:
            seen += os.read(leader, 65536)
        except (BlockingIOError, OSError):
            pass
        if first is None and b"/1,000,000,000" in seen:
            first = time.monotonic() - start
        if b"/1,000,000,000" in seen and time.monotonic() - start > 4:
            status = Path(f"/proc/{process.pid}/status").read_text()
            rss.append(int(status.split("VmRSS:")[1].split()[0]))
            if len(rss) >= 5:
                break
        time.sleep(0.4)
    assert first is not None and first < 5 + 3, (first, seen[-500:])  # 5 s, room for a loaded machine
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    os.close(leader)
    assert process.returncode == 130 and b"interrupted" in err
    assert len(rss) >= 2 and rss[-1] - rss[0] < 20_000, rss  # kB: flat while stepping
