"""Every option has an effect: it reaches torch, and it changes the run (issue 21).

The lock-step cannot see an option lost while the spec is built: both sides read the same spec and
agree on the wrong run. So, for every option of every scenario's parser (enumerated from argparse
itself: a new option is covered at once, and fails :func:`test_every_option_has_a_case` until it is
given a case here) and of gradcheck's parser, a short run with a legal non-default value must

(a) report, in the configuration read back from the torch objects, the value this table states
    (written here by hand, not taken from the code under test), with the run agreeing and every
    option as asked; and
(b) produce a trace that differs from the run without the option (same context), in some term.

An option that configures no torch object (data, weights, the step schedule) states why in its
case and is held to (b) alone; an option that changes nothing by design is listed in
:data:`NO_EFFECT` with the reason. Runs are 2 steps on small sizes.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

import numpy as np
import pytest

from handgrad import harness
from handgrad.cli import scenario_parser
from handgrad.gradcheck import check_scenario, gradcheck_parser
from handgrad.scenarios import SCENARIOS


@dataclass(frozen=True)
class Case:
    """``args`` on top of ``context`` (both on top of the scenario's small base run); ``torch``: the
    configuration torch must report, or None with ``why`` no torch object holds the option."""

    args: tuple[str, ...]
    torch: dict[str, object] | None
    context: tuple[str, ...] = ()
    why: str = ""


@dataclass(frozen=True)
class Skip:
    """The option cannot be given a legal non-default value in this scenario."""

    why: str


def case(
    *args: str, torch: dict[str, object] | None = None, context: tuple[str, ...] = (), why: str = ""
) -> Case:
    return Case(tuple(args), torch, context, why)


DATA = "data, not an option of a torch object"
WEIGHTS = "the initial weights are values, compared term by term"
SCHEDULE = "the step schedule (which rows each step sees), not an option of a torch object"

# small, fast runs: every case adds to these
BASE: dict[str, tuple[str, ...]] = {
    "xor": ("--steps", "2"),
    "mlp": ("--steps", "2"),
    "deep": ("--steps", "2", "--depth", "2", "--width", "3", "--rows", "4"),
    "alexnet-mini": (
        "--steps",
        "2",
        "--samples",
        "4",
        "--image-size",
        "8",
        "--channels",
        "2,4",
        "--hidden",
        "4",
        "--batch-size",
        "2",
    ),  # fmt: skip
    "parity": ("--steps", "2", "--length", "3", "--sequences", "2", "--hidden", "2"),
    "echo": ("--steps", "2", "--length", "3", "--sequences", "2", "--hidden", "2", "--delay", "1"),
    "multitask": ("--steps", "2", "--rows", "4", "--hidden", "3"),
    "makemore": ("--steps", "2", "--hidden", "4", "--batch-size", "4", "--n-embd", "3"),
    "transformer": ("--steps", "2", "--n-embd", "4", "--mlp", "6", "--context", "4", "--batch-size", "2"),
}

# options that change nothing in the trace by design, with the reason
NO_EFFECT = {
    "--json": "an output file",
    "--xlsx": "an output file",
    "--walkthrough": "which steps the workbook shows as live formulas (with --xlsx)",
    "--trace-steps": "which steps the Trace sheet keeps (with --xlsx); every step is still compared",
    "--live-steps": "how many Training-sheet rows are live formulas (with --xlsx)",
    "--quiet": "console output only",
    "--all-terms": "console output only (every row of the term table)",
    "--gradcheck": "adds the finite-difference column beside the trace (tests/test_compare_gradcheck.py)",
    "--resync": "copies the hand weights into torch before each step: the same numbers while both agree",
    "--max-memory": "a bound on the estimated memory: it refuses a run or lets it run unchanged",
    "--device": "cuda needs a GPU; tests/test_device.py checks where the twin runs",
    "--tf32": "cuda only (needs --device cuda); tests/test_device.py",
    "--threads": "torch's intra-op threads during each twin step: speed, the numbers only within rounding; "
    "tests/test_threads.py checks the count each step runs with",
}

# one case per option name; CASES_BY_SCENARIO overrides it where a scenario needs other values
CASES: dict[str, Case | Skip] = {
    "--steps": case("--steps", "3", why="the run's length"),
    "--seed": case("--seed", "1", why="seeds the initial weights, the data and the order"),
    "--dtype": case("--dtype", "float32", torch={"dtype": "float32"}),
    "--lr": case("--lr", "0.3", torch={"optimizer.lr": 0.3}),
    "--loss": case("--loss", "l1", torch={"loss": "l1"}),
    "--reduction": case("--reduction", "sum", torch={"loss.reduction": "sum"}, context=("--mode", "batch")),
    "--half": case("--half", torch={"loss.half": True}),
    "--beta": case("--beta", "0.5", torch={"loss.beta": 0.5}, context=("--loss", "smooth_l1")),
    "--delta": case("--delta", "0.01", torch={"loss.delta": 0.01}, context=("--loss", "huber")),
    "--pos-weight": case(
        "--pos-weight", "2", torch={"loss.pos_weight": [2.0]}, context=("--loss", "bce_logits")
    ),
    "--class-weight": Skip("one output: no classes to weight"),
    "--ignore-index": Skip("the targets are not class ids"),
    "--label-smoothing": Skip("one output: no classes to smooth"),
    "--optimizer": case("--optimizer", "adam", torch={"optimizer": "adam"}),
    "--momentum": case("--momentum", "0.9", torch={"optimizer.momentum": 0.9}),
    "--dampening": case(
        "--dampening", "0.5", torch={"optimizer.dampening": 0.5}, context=("--momentum", "0.9")
    ),
    "--nesterov": case("--nesterov", torch={"optimizer.nesterov": True}, context=("--momentum", "0.9")),
    "--weight-decay": case("--weight-decay", "0.1", torch={"optimizer.weight_decay": 0.1}),
    "--maximize": case("--maximize", torch={"optimizer.maximize": True}),
    "--betas": case(
        "--betas", "0.5,0.9", torch={"optimizer.betas": [0.5, 0.9]}, context=("--optimizer", "adam")
    ),
    "--eps": case("--eps", "0.1", torch={"optimizer.eps": 0.1}, context=("--optimizer", "adam")),
    "--amsgrad": case("--amsgrad", torch={"optimizer.amsgrad": True}, context=("--optimizer", "adam")),
    "--alpha": case("--alpha", "0.5", torch={"optimizer.alpha": 0.5}, context=("--optimizer", "rmsprop")),
    "--centered": case("--centered", torch={"optimizer.centered": True}, context=("--optimizer", "rmsprop")),
    "--lr-decay": case(
        "--lr-decay", "0.5", torch={"optimizer.lr_decay": 0.5}, context=("--optimizer", "adagrad")
    ),
    "--initial-accumulator-value": case(
        "--initial-accumulator-value",
        "0.5",
        torch={"optimizer.initial_accumulator_value": 0.5},
        context=("--optimizer", "adagrad"),
    ),
    "--schedule": case("--schedule", "step", torch={"schedule": "step"}),
    "--step-size": case("--step-size", "2", torch={"schedule.step_size": 2}, context=("--schedule", "step")),
    "--gamma": case("--gamma", "0.5", torch={"schedule.gamma": 0.5}, context=("--schedule", "step")),
    "--t-max": case("--t-max", "5", torch={"schedule.t_max": 5}, context=("--schedule", "cosine")),
    "--eta-min": case(
        "--eta-min", "0.01", torch={"schedule.eta_min": 0.01}, context=("--schedule", "cosine")
    ),
    "--clip-norm": case("--clip-norm", "0.01", torch={"clip": "norm", "clip.max_norm": 0.01}),
    "--norm-type": case("--norm-type", "1", torch={"clip.norm_type": 1.0}, context=("--clip-norm", "0.01")),
    "--clip-value": case("--clip-value", "0.001", torch={"clip": "value", "clip.value": 0.001}),
    "--mode": case("--mode", "batch", why=SCHEDULE),
    "--batch-size": case("--batch-size", "3", context=("--mode", "minibatch"), why=SCHEDULE),
    "--order": case("--order", "shuffle", why=SCHEDULE),
    "--weights": case("--weights", "{weights}", why=WEIGHTS),
    "--data": case("--data", "{data}", why=DATA),
    "--targets": case("--targets", "c0", context=("--data", "{data}"), why=DATA),
    "--activation": case("--activation", "tanh", torch={"dense1.activation": "tanh"}),
    "--output-activation": case("--output-activation", "tanh", torch={"dense2.activation": "tanh"}),
    "--slope": case("--slope", "0.2", torch={"dense1.slope": 0.2}, context=("--activation", "leaky_relu")),
    "--fold-bias": case(
        "--fold-bias", why="a layout of the hand side (W̃ = [W | b]); torch keeps weight and bias"
    ),
    "--hidden": case("--hidden", "4", torch={"dense1.out_features": 4}),
}

_CLASS_IDS = "alexnet-mini's targets are class ids, which this loss does not take"
_CLASS_MLP = ("--loss", "cross_entropy")
CASES_BY_SCENARIO: dict[tuple[str, str], Case | Skip] = {
    ("mlp", "--sizes"): case("--sizes", "2,3,2", torch={"dense1.out_features": 3}),
    ("mlp", "--class-weight"): case(
        "--class-weight", "1,3", torch={"loss.weight": [1.0, 3.0]}, context=_CLASS_MLP
    ),
    ("mlp", "--label-smoothing"): case(
        "--label-smoothing", "0.1", torch={"loss.label_smoothing": 0.1}, context=_CLASS_MLP
    ),
    ("mlp", "--ignore-index"): Skip("mlp's seeded targets are class probabilities (torch: no ignore_index)"),
    ("mlp", "--targets"): case("--targets", "c0,c1", context=("--data", "{data}"), why=DATA),
    ("deep", "--output-activation"): case("--output-activation", "tanh", torch={"dense3.activation": "tanh"}),
    ("deep", "--depth"): case("--depth", "3", torch={"dense4.out_features": 1}),
    ("deep", "--width"): case("--width", "4", torch={"dense1.out_features": 4}),
    ("deep", "--inputs"): case("--inputs", "3", torch={"dense1.in_features": 3}),
    ("deep", "--rows"): case("--rows", "5", why=DATA),
    ("deep", "--mode"): case("--mode", "online", why=SCHEDULE),
    ("deep", "--order"): case("--order", "shuffle", context=("--mode", "online"), why=SCHEDULE),
    ("deep", "--init"): case("--init", "he", why=WEIGHTS),
    ("deep", "--init-gain"): case("--init-gain", "2", why=WEIGHTS),
    # alexnet-mini: cross-entropy on class ids, minibatches of a shuffled order
    ("alexnet-mini", "--loss"): case("--loss", "nll", torch={"loss": "nll"}),
    ("alexnet-mini", "--half"): Skip(_CLASS_IDS + " (--half is mse's)"),
    ("alexnet-mini", "--beta"): Skip(_CLASS_IDS),
    ("alexnet-mini", "--delta"): Skip(_CLASS_IDS),
    ("alexnet-mini", "--pos-weight"): Skip(_CLASS_IDS),
    ("alexnet-mini", "--class-weight"): case("--class-weight", "1,3", torch={"loss.weight": [1.0, 3.0]}),
    ("alexnet-mini", "--ignore-index"): case(  # a whole batch: a minibatch may hold ignored rows only
        "--ignore-index", "1", torch={"loss.ignore_index": 1}, context=("--mode", "batch")
    ),
    ("alexnet-mini", "--label-smoothing"): case(
        "--label-smoothing", "0.1", torch={"loss.label_smoothing": 0.1}
    ),
    ("alexnet-mini", "--mode"): case("--mode", "batch", why=SCHEDULE),
    ("alexnet-mini", "--batch-size"): case("--batch-size", "3", why=SCHEDULE),
    ("alexnet-mini", "--order"): case("--order", "fixed", why=SCHEDULE),
    ("alexnet-mini", "--samples"): case("--samples", "6", why=DATA),
    ("alexnet-mini", "--image-size"): case("--image-size", "12", torch={"dense1.in_features": 36}),
    ("alexnet-mini", "--channels"): case(
        "--channels", "3,4", torch={"conv1.out_channels": 3, "conv2.in_channels": 3}
    ),
    ("alexnet-mini", "--kernel"): case(
        "--kernel", "1", torch={"conv1.kernel_size": [1, 1], "conv2.kernel_size": [1, 1]}
    ),
    ("alexnet-mini", "--stride"): case(
        "--stride", "2,1", torch={"conv1.stride": [2, 2], "conv2.stride": [1, 1]}
    ),
    ("alexnet-mini", "--padding"): case("--padding", "1,0", torch={"conv2.padding": [0, 0]}),
    ("alexnet-mini", "--dilation"): case("--dilation", "2,1", torch={"conv1.dilation": [2, 2]}),
    ("alexnet-mini", "--groups"): case("--groups", "1,2", torch={"conv2.groups": 2}),
    ("alexnet-mini", "--lrn-size"): case("--lrn-size", "1", torch={"lrn1.size": 1, "lrn2.size": 1}),
    ("alexnet-mini", "--lrn-alpha"): case("--lrn-alpha", "0.1", torch={"lrn1.alpha": 0.1, "lrn2.alpha": 0.1}),
    ("alexnet-mini", "--lrn-beta"): case("--lrn-beta", "0.5", torch={"lrn1.beta": 0.5, "lrn2.beta": 0.5}),
    ("alexnet-mini", "--lrn-k"): case("--lrn-k", "1", torch={"lrn1.k": 1.0, "lrn2.k": 1.0}),
    ("alexnet-mini", "--hidden"): case("--hidden", "5", torch={"dense1.out_features": 5}),
    ("alexnet-mini", "--dropout"): case("--dropout", "0.25", torch={"dropout1.p": 0.25}),
    # multitask: head 1 takes --loss and the value-loss options, head 2 the class options
    ("multitask", "--loss"): case("--loss", "l1", torch={"loss1": "l1"}),
    ("multitask", "--reduction"): case(
        "--reduction", "sum", torch={"loss1.reduction": "sum", "loss2.reduction": "sum"}
    ),
    ("multitask", "--half"): case("--half", torch={"loss1.half": True}),
    ("multitask", "--beta"): case(
        "--beta", "0.5", torch={"loss1.beta": 0.5}, context=("--loss", "smooth_l1")
    ),
    ("multitask", "--delta"): case(
        "--delta", "0.01", torch={"loss1.delta": 0.01}, context=("--loss", "huber")
    ),
    ("multitask", "--pos-weight"): Skip("head 1 takes mse, l1, smooth_l1 or huber, not bce_logits"),
    ("multitask", "--class-weight"): case("--class-weight", "1,2,3", torch={"loss2.weight": [1.0, 2.0, 3.0]}),
    ("multitask", "--ignore-index"): case("--ignore-index", "0", torch={"loss2.ignore_index": 0}),
    ("multitask", "--label-smoothing"): case(
        "--label-smoothing", "0.1", torch={"loss2.label_smoothing": 0.1}
    ),
    ("multitask", "--mode"): case("--mode", "online", why=SCHEDULE),
    ("multitask", "--order"): case("--order", "shuffle", context=("--mode", "online"), why=SCHEDULE),
    ("multitask", "--loss-weights"): case(
        "--loss-weights",
        "1,2",
        why="w₁, w₂ scale torch's two loss tensors in the twin's own sum: no torch option",
    ),
    ("multitask", "--inputs"): case("--inputs", "2", torch={"trunk.in_features": 2}),
    ("multitask", "--outputs"): case("--outputs", "2", torch={"head1.out_features": 2}),
    ("multitask", "--classes"): case("--classes", "4", torch={"head2.out_features": 4}),
    ("multitask", "--rows"): case("--rows", "5", why=DATA),
    ("multitask", "--hidden"): case("--hidden", "4", torch={"trunk.out_features": 4}),
    ("multitask", "--activation"): case("--activation", "relu", torch={"trunk.activation": "relu"}),
    ("multitask", "--slope"): case(
        "--slope", "0.2", torch={"trunk.slope": 0.2}, context=("--activation", "leaky_relu")
    ),
}
for _name in ("parity", "echo"):  # the recurrent scenarios: float64 only, full batch by default
    CASES_BY_SCENARIO.update(
        {
            (_name, "--dtype"): Skip("the recurrent hand side computes in float64 only"),
            (_name, "--mode"): case("--mode", "online", why=SCHEDULE),
            (_name, "--order"): case(
                "--order", "shuffle", context=("--mode", "online", "--sequences", "4"), why=SCHEDULE
            ),
            (_name, "--batch-size"): case("--batch-size", "1", context=("--mode", "minibatch"), why=SCHEDULE),
            (_name, "--cell"): case("--cell", "gru", torch={"rnn.cell": "gru"}),
            (_name, "--hidden"): case("--hidden", "3", torch={"rnn.hidden_size": 3, "dense1.in_features": 3}),
            (_name, "--layers"): case("--layers", "2", torch={"rnn.num_layers": 2}),
            (_name, "--batch-first"): case("--batch-first", torch={"rnn.batch_first": True}),
            (_name, "--length"): case("--length", "4", why=DATA),
            (_name, "--sequences"): case("--sequences", "3", why=DATA),
            (_name, "--lengths"): case("--lengths", "ragged", why=DATA + " (packed sequences)"),
            (_name, "--h0"): case("--h0", "random", why="the initial state is data, given to both sides"),
            (_name, "--output-activation"): case(
                "--output-activation", "tanh", torch={"dense1.activation": "tanh"}
            ),
        }
    )
CASES_BY_SCENARIO[("parity", "--head")] = case(
    "--head", "many-to-many", why="the targets and the loss's rows"
)
CASES_BY_SCENARIO[("echo", "--delay")] = case("--delay", "2", why=DATA)
_MAKEMORE_REFUSED = "makemore trains on cross_entropy with torch's defaults on drawn batches: refused, exit 2"
for _option in ("--loss", "--reduction", "--half", "--beta", "--delta", "--pos-weight", "--class-weight"):
    CASES_BY_SCENARIO[("makemore", _option)] = Skip(_MAKEMORE_REFUSED)
for _option in ("--ignore-index", "--label-smoothing", "--mode", "--order"):
    CASES_BY_SCENARIO[("makemore", _option)] = Skip(_MAKEMORE_REFUSED)
for _option in ("--loss", "--reduction", "--half", "--beta", "--delta", "--pos-weight", "--class-weight"):
    CASES_BY_SCENARIO[("transformer", _option)] = Skip(_MAKEMORE_REFUSED)
for _option in ("--ignore-index", "--label-smoothing", "--mode", "--order"):
    CASES_BY_SCENARIO[("transformer", _option)] = Skip(_MAKEMORE_REFUSED)
CASES_BY_SCENARIO.update(
    {
        ("transformer", "--optimizer"): case("--optimizer", "sgd", torch={"optimizer": "sgd"}),
        ("transformer", "--momentum"): case(
            "--momentum", "0.9", torch={"optimizer.momentum": 0.9}, context=("--optimizer", "sgd")
        ),
        ("transformer", "--dampening"): case(
            "--dampening", "0.5", torch={"optimizer.dampening": 0.5},
            context=("--optimizer", "sgd", "--momentum", "0.9"),
        ),
        ("transformer", "--nesterov"): case(
            "--nesterov", torch={"optimizer.nesterov": True},
            context=("--optimizer", "sgd", "--momentum", "0.9"),
        ),
        ("transformer", "--batch-size"): case("--batch-size", "3", why=SCHEDULE),
        ("transformer", "--layers"): case("--layers", "2", torch={"layers": 2}),
        ("transformer", "--context"): case("--context", "3", torch={"pos.num_embeddings": 3}),
        ("transformer", "--n-embd"): case("--n-embd", "6", torch={"tok.embedding_dim": 6}),
        ("transformer", "--heads"): case("--heads", "1", torch={"attn.num_heads": 1}),
        ("transformer", "--mlp"): case("--mlp", "5", torch={"fc1.out_features": 5}),
        ("transformer", "--approximate"): case("--approximate", "tanh", torch={"gelu.approximate": "tanh"}),
    }
)  # fmt: skip
CASES_BY_SCENARIO.update(
    {
        ("makemore", "--batch-size"): case("--batch-size", "5", why=SCHEDULE),
        ("makemore", "--hidden"): case(
            "--hidden", "5", torch={"hidden.out_features": 5, "bn.num_features": 5}
        ),
        ("makemore", "--n-embd"): case(
            "--n-embd", "2", torch={"emb.embedding_dim": 2, "hidden.in_features": 6}
        ),
        ("makemore", "--block-size"): case("--block-size", "2", torch={"hidden.in_features": 6}),
    }
)

GRADCHECK_CASES: dict[str, tuple[str, ...] | str] = {
    "--at-step": ("--at-step", "2"),
    "--no-input": ("--no-input",),
    "--fd-seed": ("--fd-seed", "1"),
    "--json": "an output file",
    "--steps": "hidden: --at-step sets the steps (check_scenario overwrites it)",
}


def _options(parser: argparse.ArgumentParser) -> list[str]:
    """Every option of a parser, by its long name, from argparse itself."""
    return [
        next(s for s in action.option_strings if s.startswith("--"))
        for action in parser._actions
        if action.option_strings and action.dest != "help"
    ]


def case_for(scenario: str, option: str) -> Case | Skip | None:
    return CASES_BY_SCENARIO.get((scenario, option), CASES.get(option))


PAIRS = [(name, option) for name in SCENARIOS for option in _options(scenario_parser(name))]
RUNS = [pair for pair in PAIRS if pair[1] not in NO_EFFECT and isinstance(case_for(*pair), Case)]


def test_every_option_has_a_case() -> None:
    """A new option fails here until it gets a value, a Skip or a NO_EFFECT reason."""
    missing = [
        f"{name} {option}"
        for name, option in PAIRS
        if option not in NO_EFFECT and case_for(name, option) is None
    ]
    assert not missing, f"options with no case in tests/test_option_reach.py: {', '.join(missing)}"
    unexplained = [
        f"{name} {option}"
        for name, option in RUNS
        if case_for(name, option).torch is None and not case_for(name, option).why  # type: ignore[union-attr]
    ]
    assert not unexplained, f"cases that reach no torch option must say why: {', '.join(unexplained)}"
    stale = [f"{s} {o}" for s, o in CASES_BY_SCENARIO if (s, o) not in PAIRS]
    assert not stale, f"cases for options the parser no longer has: {', '.join(stale)}"


def test_every_gradcheck_option_has_a_case() -> None:
    """gradcheck's parser: the scenario's options (the cases above, the same builder) plus its own."""
    for name in SCENARIOS:
        compare_options = set(_options(scenario_parser(name)))
        own = [option for option in _options(gradcheck_parser(name)) if option not in compare_options]
        missing = [option for option in own if option not in GRADCHECK_CASES]
        assert not missing, f"gradcheck {name}: options with no case: {', '.join(missing)}"


_FILES: dict[str, dict[str, str]] = {}


def _files(name: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A weights file (the seeded weights, halved) and a CSV of the data's shape, per scenario."""
    if name not in _FILES:
        folder = tmp_path_factory.mktemp(name)
        experiment = SCENARIOS[name].build(
            scenario_parser(name).parse_args(list(BASE[name])), with_twin=False
        )
        weights = folder / "weights.npz"
        np.savez(weights, **{key: value / 2 for key, value in experiment.initial_params.items()})
        files = {"weights": str(weights)}
        data = getattr(getattr(experiment.spec, "data", None), "x", None)
        if data is not None and data.ndim == 2:
            y = experiment.spec.data.y
            rng = np.random.default_rng(7)
            columns = data.shape[1] + y.shape[1]
            rows = rng.uniform(0.1, 0.9, size=(6, columns))
            path = folder / "data.csv"
            header = ",".join(f"c{i}" for i in range(columns))
            path.write_text(
                header + "\n" + "\n".join(",".join(f"{v:.6f}" for v in row) for row in rows) + "\n"
            )
            files["data"] = str(path)
        _FILES[name] = files
    return _FILES[name]


_RUNS: dict[tuple[str, tuple[str, ...]], tuple[harness.Report, list[object]]] = {}


def _run(name: str, argv: tuple[str, ...]) -> tuple[harness.Report, list[object]]:
    """The report and the twin's trace of every step of a short run (cached: baselines repeat)."""
    key = (name, argv)
    if key not in _RUNS:
        traces: list[object] = []
        experiment = SCENARIOS[name].build(scenario_parser(name).parse_args(list(argv)))
        report = harness.run(experiment, observers=[lambda step, hand, twin, checks: traces.append(twin)])
        _RUNS[key] = (report, traces)
    return _RUNS[key]


def _differs(first: list[object], second: list[object]) -> bool:
    """Some term of some step differs: a step, a name, a shape or a value."""
    if len(first) != len(second):
        return True
    for a, b in zip(first, second, strict=True):
        names_a, names_b = [t.name for t in a], [t.name for t in b]  # type: ignore[attr-defined]
        if names_a != names_b:
            return True
        for name in names_a:
            va, vb = np.asarray(a.value(name)), np.asarray(b.value(name))  # type: ignore[attr-defined]
            if va.shape != vb.shape or not np.array_equal(va, vb):
                return True
    return False


@pytest.mark.parametrize(("name", "option"), RUNS, ids=[f"{n}{o}" for n, o in RUNS])
def test_option_reaches_torch_and_changes_the_run(
    name: str, option: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    the_case = case_for(name, option)
    assert isinstance(the_case, Case)
    files = _files(name, tmp_path_factory)
    if any("{data}" in a for a in the_case.args + the_case.context) and "data" not in files:
        pytest.fail(f"{name} {option}: the case needs --data, but {name} has no CSV data")
    fill = lambda args: tuple(a.format(**files) for a in args)  # noqa: E731
    context = BASE[name] + fill(the_case.context)
    baseline_report, baseline = _run(name, context)
    report, traces = _run(name, context + fill(the_case.args))
    assert baseline_report.ok, f"{name} {' '.join(context)}: {baseline_report.verdict()}"
    assert report.ok, f"{name} {option}: {report.verdict()}"
    if the_case.torch is not None:
        ran = {check.option: check.torch for check in report.configuration or ()}
        for key, value in the_case.torch.items():
            assert key in ran, f"{name} {option}: torch reports no {key} (it has {', '.join(ran)})"
            assert ran[key] == value, (
                f"{name} {option}: {key} should reach torch as {value!r}, torch ran with {ran[key]!r}"
            )
    assert _differs(baseline, traces), f"{name} {option} {' '.join(the_case.args)}: the trace did not change"


@pytest.mark.parametrize("option", [o for o, c in GRADCHECK_CASES.items() if not isinstance(c, str)])
def test_gradcheck_option_changes_the_check(option: str) -> None:
    """gradcheck's own options change its checks (no torch: the oracle is torch-free)."""
    argv = GRADCHECK_CASES[option]
    assert not isinstance(argv, str)

    def document(args: tuple[str, ...]) -> str:  # dense1.W of 40×2: checked along seeded directions
        parsed = gradcheck_parser("xor").parse_args(["--hidden", "40", "--mode", "batch", *args])
        ok, _, result, _ = check_scenario("xor", parsed)
        assert ok, result["verdict"]
        return json.dumps(result["checks"], sort_keys=True)

    assert document(argv) != document(())
