"""Every layer kind handgrad checks, and where each of its parts lives: the registry that
``tests/test_registry_parity.py`` holds the code to.

A kind is complete when it has a hand op (``hand``: the NumPy functions, in one module of
``handgrad.hand``), a twin op (``twin``: the ``torch.nn`` module), term names (the layer stack's
:class:`~handgrad.contract.stack.LayerShape`, or the family's contract), at least one planted bug
whose patch replaces one of its hand functions, a manual page that names it, and a live formula
builder in the workbook or, in words, why its terms are on the Trace sheet only. Adding a layer
means adding its row here; the parity test then names every part still missing.

Strings only (module paths, page names): the contract imports no other part of handgrad.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LayerKind:
    """One layer kind: ``name`` as the contract knows it (a spec class name, or a recurrent cell),
    ``family`` (stack, recurrent, makemore, transformer), ``hand`` module and its ``functions``,
    ``twin`` (the ``torch.nn`` class), ``manual`` (the page that derives it) and ``live`` (``live:
    <workbook module>`` or ``trace only: <why>``); ``term``, for the families with no per-kind
    contract (makemore, transformer), a term the family's run emits for the kind."""

    name: str
    family: str
    hand: str
    functions: tuple[str, ...]
    twin: str
    manual: str
    live: str
    term: str = ""  # makemore, transformer: a term of the kind the family's run emits


_DENSE_LIVE = "live: workbook/walkthrough.py"
_CONV_LIVE = "live: workbook/conv_walkthrough.py"
_RECURRENT_LIVE = "live: workbook/recurrent_cells.py"
_STACK_TRACE = (
    "trace only: the dense Walkthrough writes Linear and activation layers, the conv Walkthrough a "
    "first Conv2d with its activation and max-pool; a stack with this layer says so and keeps its terms "
    "on the Trace"
)

LAYER_KINDS: tuple[LayerKind, ...] = (
    # the layer stack (contract/stack.py's LAYER_SHAPES)
    LayerKind(
        "Dense", "stack", "handgrad.hand.dense", ("forward", "backward"), "Linear", "dense.md", _DENSE_LIVE,
    ),
    LayerKind(
        "Activation", "stack", "handgrad.hand.activations", ("forward", "derivative", "backward"), "Sigmoid",
        "dense.md", _DENSE_LIVE,
    ),
    LayerKind(
        "Conv2d", "stack", "handgrad.hand.conv", ("conv2d_forward", "conv2d_backward"), "Conv2d",
        "convolution.md", _CONV_LIVE,
    ),
    LayerKind(
        "MaxPool2d", "stack", "handgrad.hand.conv", ("maxpool2d_forward", "maxpool2d_backward"), "MaxPool2d",
        "convolution.md", _CONV_LIVE,
    ),
    LayerKind(
        "AvgPool2d", "stack", "handgrad.hand.conv", ("avgpool2d_forward", "avgpool2d_backward"), "AvgPool2d",
        "convolution.md", _STACK_TRACE,
    ),
    LayerKind(
        "LocalResponseNorm", "stack", "handgrad.hand.conv",
        ("local_response_norm_forward", "local_response_norm_backward"), "LocalResponseNorm",
        "convolution.md", _STACK_TRACE,
    ),
    LayerKind(
        "Flatten", "stack", "handgrad.hand.conv", ("flatten_forward", "flatten_backward"), "Flatten",
        "convolution.md", _STACK_TRACE,
    ),
    LayerKind(
        "Dropout", "stack", "handgrad.hand.conv", ("dropout_forward", "dropout_backward"), "Dropout",
        "convolution.md", _STACK_TRACE,
    ),
    LayerKind(
        "BatchNorm", "stack", "handgrad.hand.normalization", ("batchnorm_forward", "batchnorm_backward"),
        "BatchNorm1d", "normalization.md", "live: workbook/makemore_walkthrough.py",
    ),
    LayerKind(
        "LayerNorm", "stack", "handgrad.hand.normalization", ("layernorm_forward", "layernorm_backward"),
        "LayerNorm", "normalization.md", "live: workbook/transformer_walkthrough.py",
    ),
    # the recurrent family (contract/names.py's CELLS)
    LayerKind(
        "rnn_tanh", "recurrent", "handgrad.hand.recurrent", ("_rnn_step", "_rnn_step_back"), "RNN",
        "recurrent.md", _RECURRENT_LIVE,
    ),
    LayerKind(
        "rnn_relu", "recurrent", "handgrad.hand.recurrent", ("_rnn_step", "_rnn_step_back"), "RNN",
        "recurrent.md", _RECURRENT_LIVE,
    ),
    LayerKind(
        "gru", "recurrent", "handgrad.hand.recurrent", ("_gru_step", "_gru_step_back"), "GRU", "recurrent.md",
        _RECURRENT_LIVE,
    ),
    LayerKind(
        "lstm", "recurrent", "handgrad.hand.recurrent",
        ("_lstm_step", "_lstm_step_back", "_input_projection"), "LSTM", "recurrent.md", _RECURRENT_LIVE,
    ),
    # the makemore and transformer families' layers
    LayerKind(
        "Embedding", "makemore", "handgrad.hand.embedding", ("forward", "backward"), "Embedding",
        "makemore.md",
        "trace only: a lookup has no arithmetic to write as formulas; the live sheets start from the "
        "looked-up rows, and ∂L/∂C's scatter-add over repeated indices is on the Trace",
        "emb.dL_dC",
    ),
    LayerKind(
        "GELU", "transformer", "handgrad.hand.attention", ("gelu_forward", "gelu_backward"), "GELU",
        "attention.md",
        "trace only: the Attention walkthrough covers LN₁ and the attention of block 1; the MLP's GELU "
        "is on the Trace",
        "block1.g",
    ),
    LayerKind(
        "MultiheadAttention", "transformer", "handgrad.hand.attention",
        ("mha_forward", "mha_backward", "sdpa_forward", "sdpa_backward", "causal_mask", "softmax_backward"),
        "MultiheadAttention", "attention.md", "live: workbook/transformer_walkthrough.py",
        "block1.attn.weights",
    ),
)  # fmt: skip

# A user's own layer (check_model(custom_layers=...)) is a stack kind with neither a hand op nor a
# mutant of handgrad's: the user brings both sides. tests/test_own_model*.py plant faults in them.
USER_BROUGHT = frozenset({"UserLayer"})
