"""Conv stacks through the harness, hand vs real torch.nn, every term of every step, float64.

``alexnet-mini`` end to end (CLI, 20 steps); conv stacks with stride, padding, dilation, groups,
rectangular kernels, avg-pool and LRN variations; four planted bugs, each monkeypatched into the
hand side and caught by the harness at the term where it first shows (``report.first.term``);
the dropout mask as shared data; bad input from the CLI (one line naming the field, exit 2).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from handgrad import harness
from handgrad.cli import main, scenario_parser
from handgrad.contract.conv_layers import AvgPool2d, Conv2d, Dropout, Flatten, LocalResponseNorm, MaxPool2d
from handgrad.contract.spec import Activation, Data, Dense, Network, Schedule, SpecError
from handgrad.contract.training import Loss, Optimizer
from handgrad.hand import conv
from handgrad.mutants.conv import (
    conv_backward_without_flip,
    conv_forward_padding_off_by_one,
    lrn_backward_beta_exponent,
    maxpool_backward_to_every_tie,
    maxpool_forward_keeping_x,
)
from handgrad.scenarios import SCENARIOS
from handgrad.scenarios.stack import dropout_masks, stack_experiment


def alexnet(steps: int, *options: str) -> harness.Experiment:
    args = scenario_parser("alexnet-mini").parse_args(["--steps", str(steps), *options])
    return SCENARIOS["alexnet-mini"].build(args)


# --- alexnet-mini --------------------------------------------------------------------------------

ALEXNET_TERMS = [
    *("conv1.z", "conv1.a", "lrn1.out", "pool1.out", "conv2.z", "conv2.a", "lrn2.out", "pool2.out"),
    *("flatten1.out", "dense1.z", "dense1.a", "dropout1.out", "dense2.z", "loss.L"),
    *("dense2.dL_dz", "dense2.dL_dW", "dense2.dL_db", "dropout1.dL_dout", "dense1.dL_da", "dense1.dL_dz"),
    *("dense1.dL_dW", "dense1.dL_db", "flatten1.dL_dout", "pool2.dL_dout", "lrn2.dL_dout", "conv2.dL_da"),
    *("conv2.dL_dz", "conv2.dL_dW", "conv2.dL_db", "pool1.dL_dout", "lrn1.dL_dout", "conv1.dL_da"),
    *("conv1.dL_dz", "conv1.dL_dW", "conv1.dL_db", "input.dL_dx"),
    *("conv1.W_next", "conv1.b_next", "conv2.W_next", "conv2.b_next"),
    *("dense1.W_next", "dense1.b_next", "dense2.W_next", "dense2.b_next"),
]


def test_alexnet_mini_cli_agrees_on_every_term_of_20_steps(capsys) -> None:
    assert main(["compare", "alexnet-mini", "--steps", "20"]) == 0
    out = capsys.readouterr().out
    assert "alexnet-mini: all" in out and "agree at every one of 20 steps" in out, out[-500:]


def test_alexnet_mini_term_list_and_training() -> None:
    """The term contract of the scenario (forward, loss, backward, update, in order), and the
    task is learnable: the loss falls once it starts moving (80 steps)."""
    report = harness.run(alexnet(80))
    assert report.ok, report.verdict()
    names = [n for n, s in report.terms.items() if s.phase in ("forward", "loss", "backward", "update")]
    assert names == ALEXNET_TERMS
    losses = [hand for hand, _ in report.loss_history]
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:10]), losses


def test_alexnet_mini_pools_see_exact_ties() -> None:
    """The bar images make most max-pool windows tie exactly: the tie rule is exercised every step."""
    experiment = alexnet(1)
    x = experiment.spec.data.x[experiment.spec.batches[0]]
    trace = experiment.hand.step(1)
    for source, pooled in (("lrn1.out", "pool1.out"), ("lrn2.out", "pool2.out")):
        a, out = trace.value(source), trace.value(pooled)
        n, c, h, w = out.shape
        windows = a[:, :, : 2 * h, : 2 * w].reshape(n, c, h, 2, w, 2)
        ties = (windows == out[:, :, :, None, :, None]).sum(axis=(3, 5)) > 1
        assert ties.mean() > 0.3, (pooled, ties.mean())
    assert set(np.unique(x)) == {0.0, 1.0}


# --- conv stacks: stride, padding, dilation, groups, pools, LRN ----------------------------------


def stack(*layers: object, shape: tuple[int, int, int] = (2, 9, 8), classes: int = 3) -> Network:
    """``layers``, then Flatten → Dense(classes) sized from the stack's output."""
    body = Network(tuple(layers), shape)
    return Network((*layers, Flatten(), Dense(int(np.prod(body.output_shape)), classes)), shape)


def run_stack(network: Network, *, steps: int = 4, seed: int = 3) -> harness.Report:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 3, size=(6, *network.input_shape)).astype(float)  # {0,1,2}: pool ties
    x[::2] += rng.standard_normal(x[::2].shape)  # and half the samples without ties
    y = rng.integers(0, network.output_shape[0], size=(6, 1)).astype(float)
    experiment = stack_experiment(
        "stack",
        network,
        Loss("cross_entropy"),
        Optimizer("sgd", 0.1),
        Data(x, y),
        Schedule("minibatch", 3, "shuffle", seed),
        steps=steps,
        seed=seed,
    )
    return harness.run(experiment)


RELU = Activation("relu")
STACKS = {
    "stride2-pad0": (Conv2d(2, 4, 3, stride=2), RELU),
    "pad2-dilation2": (Conv2d(2, 4, 3, padding=2, dilation=2), Activation("tanh")),
    "groups2": (Conv2d(2, 4, 3, padding=1, groups=2), RELU, Conv2d(4, 6, 3, groups=2)),
    "depthwise": (Conv2d(2, 6, 3, padding=1, groups=2), RELU, Conv2d(6, 6, 2, groups=6, bias=False)),
    "rect-kernel": (Conv2d(2, 3, (3, 2), stride=(2, 1), padding=(1, 0)), Activation("leaky_relu", 0.1)),
    "stride3-leftover": (Conv2d(2, 3, 2, stride=3, padding=1), RELU),  # last rows read by no window
    "maxpool-overlap-pad": (Conv2d(2, 3, 3, padding=1), RELU, MaxPool2d(3, stride=1, padding=1)),
    "maxpool-dilated": (Conv2d(2, 3, 1), MaxPool2d(2, stride=2, dilation=2)),
    "avgpool-pad-excl": (Conv2d(2, 3, 3), AvgPool2d(3, stride=2, padding=1, count_include_pad=False)),
    "lrn-even-size": (Conv2d(2, 5, 3, padding=1), RELU, LocalResponseNorm(4, 0.5, 0.75, 1.5)),
    "no-act-chain": (Conv2d(2, 4, 3), Conv2d(4, 2, 2, stride=2), MaxPool2d(2)),
    "dropout-4d": (Conv2d(2, 3, 3), RELU, Dropout(0.3), MaxPool2d(2)),
}


@pytest.mark.parametrize("name", STACKS)
def test_conv_stack_agrees_at_every_step(name: str) -> None:
    report = run_stack(stack(*STACKS[name]))
    assert report.ok, report.verdict()


def test_network_level_spec_errors_name_the_field() -> None:
    with pytest.raises(SpecError) as info:
        Network((Conv2d(2, 4, 3), MaxPool2d(9)), (2, 9, 8))
    assert info.value.field == "layers[1].kernel_size"
    with pytest.raises(SpecError) as info:
        Network((Conv2d(3, 4, 3),), (2, 9, 8))
    assert info.value.field == "layers[0].in_channels"


@pytest.mark.parametrize(
    ("x_shape", "y_shape", "field"),
    [
        ((4, 1, 5, 5), (4, 1), None),
        ((4,), (4, 1), "data.x"),
        ((4, 2), (4, 1, 1), "data.y"),
        ((0, 3), (0, 1), "data.x"),
    ],
)
def test_data_takes_images(x_shape, y_shape, field) -> None:
    if field is None:
        assert Data(np.zeros(x_shape), np.zeros(y_shape)).n == 4
        return
    with pytest.raises(SpecError) as info:
        Data(np.zeros(x_shape), np.zeros(y_shape))
    assert info.value.field == field


# --- dropout: the mask is data --------------------------------------------------------------------


def test_masks_are_the_draw_of_torchs_own_dropout() -> None:
    """With the global generator seeded as the run's, F.dropout (what nn.Dropout runs) drops
    exactly the elements of the pre-drawn masks, step after step."""
    experiment = alexnet(3, "--seed", "11")
    masks = experiment.spec.masks["dropout1"]
    torch.manual_seed(11)
    for mask in masks:
        dropped = F.dropout(torch.ones(mask.shape, dtype=torch.float64), 0.5, training=True)
        np.testing.assert_array_equal((dropped != 0).numpy(), mask == 1)
    assert 0.2 < np.mean(masks) < 0.8


def test_a_different_twin_mask_is_caught_at_the_dropout_output() -> None:
    experiment = alexnet(1)
    network, batches = experiment.spec.network, experiment.spec.batches
    other = dropout_masks(network, batches, seed=99)["dropout1"]
    experiment.twin.masks["dropout1"] = [torch.as_tensor(m) for m in other]
    report = harness.run(experiment)
    assert report.first is not None and report.first.term == "dropout1.out"


# --- planted bugs: each caught at the term where it first shows -----------------------------------

PLANTED = {
    # bug: (patches on handgrad.hand.conv, the first term it corrupts in alexnet-mini)
    "no-kernel-flip": ({"conv2d_backward": conv_backward_without_flip}, "pool1.dL_dout"),  # conv2's ∂L/∂x
    "padding-off-by-one": ({"conv2d_forward": conv_forward_padding_off_by_one}, "conv1.z"),
    "maxpool-grad-to-every-tie": (
        {"maxpool2d_forward": maxpool_forward_keeping_x, "maxpool2d_backward": maxpool_backward_to_every_tie},
        "lrn2.dL_dout",  # pool2's ∂L/∂x, the first max-pool gradient of the backward pass
    ),
    "lrn-beta-exponent": ({"local_response_norm_backward": lrn_backward_beta_exponent}, "conv2.dL_da"),
}


@pytest.mark.parametrize("bug", PLANTED)
def test_planted_bug_is_caught_at_the_right_term(monkeypatch, bug: str) -> None:
    patches, term = PLANTED[bug]
    for name, replacement in patches.items():
        monkeypatch.setattr(conv, name, replacement)
    report = harness.run(alexnet(2))
    assert report.first is not None, f"{bug} was not caught"
    assert (report.first.step, report.first.term) == (1, term), report.first.message()
    if report.first.previous_term is not None:  # conv1.z opens the step
        assert report.first.previous_max_abs is not None  # the term just before it agreed


# --- bad input from the CLI: one line naming the field, exit 2 -----------------------------------


@pytest.mark.parametrize(
    ("options", "field"),
    [
        (["--kernel", "19"], "conv1.kernel_size"),  # larger than the padded input 16 + 2·1
        (["--kernel", "3,11"], "conv2.kernel_size"),  # conv2 sees 8 + 2·1
        (["--dilation", "9"], "conv1.kernel_size"),  # dilated extent 9·2 + 1 = 19 > 18
        (["--groups", "1,3"], "conv2.groups"),  # conv2's 4 input channels
        (["--groups", "2"], "conv1.groups"),  # conv1's 1 input channel
        (["--stride", "0"], "conv1.stride"),
        (["--stride", "1,-2"], "conv2.stride"),
        (["--padding", "-1"], "conv1.padding"),
        (["--channels", "4,0"], "conv2.out_channels"),
        (["--kernel", "three"], "kernel"),
        (["--dropout", "1.5"], "dropout1.p"),
        (["--lrn-size", "0"], "lrn1.size"),
    ],
)
def test_cli_bad_input_is_one_line_naming_the_field(capsys, options, field) -> None:
    assert main(["compare", "alexnet-mini", "--steps", "2", *options]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"handgrad: error: {field}:"), captured.err
    assert captured.out == ""
