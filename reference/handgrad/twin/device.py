"""Where the torch twin runs, and the float32 precision it runs at there.

``--device cuda`` puts the twin's modules, data, masks, loss and optimizer state on the GPU; every
term still comes back to the host as a NumPy array (``.detach().cpu().numpy()``), so the harness,
the report and the workbook never see a CUDA tensor.

TF32: on Ampere and newer GPUs a float32 matmul or convolution may run on tensor cores in TF32
(the operands rounded to a 10-bit mantissa, u = 2⁻¹¹). torch's defaults disagree between the two
libraries: ``torch.backends.cuda.matmul.allow_tf32`` is False, ``torch.backends.cudnn.allow_tf32``
is True (cuDNN convolutions and recurrent modules). A float32 comparison on CUDA is a float32
comparison only with both off, so :func:`precision` sets both to the run's choice (off unless
``--tf32``) around every twin step and puts the previous values back afterwards: nothing outside
a step sees a changed flag. With ``--tf32`` both are on and the harness reads the ``tf32``
tolerance row (:mod:`handgrad.contract.tolerance`, derivation in ``manual/harness.md``). The same
holds for torch's intra-op thread count (``--threads``, default 1: :func:`_intra_op_threads`).
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from handgrad.contract.spec import SpecError

DEVICES = ("cpu", "cuda")
MAX_THREADS = 1024

StepT = TypeVar("StepT", bound=Callable[..., Any])


class Device(str):
    """A device name (``"cpu"`` or ``"cuda"``) that also says whether TF32 is allowed there.

    A ``str``, so it goes wherever a device name goes (``torch.device(Device("cuda"))``); a plain
    string means TF32 off.
    """

    tf32: bool
    threads: int | None

    def __new__(cls, name: str = "cpu", *, tf32: bool = False, threads: int | None = None) -> Device:
        if name not in DEVICES:
            raise SpecError("device", f"expected one of {', '.join(DEVICES)}, got {name!r}")
        if tf32 and name != "cuda":
            raise SpecError("tf32", f"TF32 is a CUDA tensor-core format: it needs device cuda, not {name}")
        if threads is not None and not (isinstance(threads, int) and 1 <= threads <= MAX_THREADS):
            raise SpecError("threads", f"expected a whole number from 1 to {MAX_THREADS}, got {threads!r}")
        device = super().__new__(cls, name)
        device.tf32 = bool(tf32)
        device.threads = threads
        return device

    def __repr__(self) -> str:
        return f"Device({str(self)!r}, tf32={self.tf32}, threads={self.threads})"


def cuda_unavailable() -> str | None:
    """None when torch can run on a CUDA GPU here; else why not, in one line (for the error)."""
    import torch

    with warnings.catch_warnings(record=True) as caught:  # torch warns when a driver is missing
        warnings.simplefilter("always")
        available = torch.cuda.is_available()
    if available:
        return None
    if torch.version.cuda is None:
        return f"this torch ({torch.__version__}) is built without CUDA"
    detail = str(caught[0].message).strip().splitlines()[0] if caught else "no device found"
    return f"torch {torch.__version__} (CUDA {torch.version.cuda}) finds no usable GPU ({detail})"


def threads_of(device: object) -> int | None:
    """The torch intra-op thread count a :class:`Device` asks for (None for a plain name)."""
    return getattr(device, "threads", None)


def tf32_of(device: object) -> bool:
    """Whether ``device`` (a :class:`Device`, a name or a ``torch.device``) allows TF32."""
    return bool(getattr(device, "tf32", False))


def device_type(device: object) -> str:
    """``"cpu"`` or ``"cuda"`` of a :class:`Device`, a name (``"cuda:0"``) or a ``torch.device``."""
    kind = getattr(device, "type", None)
    return str(kind) if kind is not None else str(device).split(":", 1)[0]


@contextlib.contextmanager
def precision(device: object, tf32: bool, threads: int | None = None) -> Iterator[None]:
    """While open: torch's intra-op threads set to ``threads`` (None: left as they are), and on
    CUDA TF32 in float32 matmuls (cuBLAS) and in cuDNN (convolutions, recurrent modules) exactly
    when ``tf32``; the previous values are restored on exit."""
    with _intra_op_threads(threads) if threads is not None else contextlib.nullcontext():
        if device_type(device) != "cuda":
            yield
            return
        with _tf32(tf32):
            yield


@contextlib.contextmanager
def _intra_op_threads(threads: int) -> Iterator[None]:
    """torch.set_num_threads(threads) while open. The built-in models are small: a step is many
    operations of microseconds each, where waking a second thread costs more than it saves, and on
    a machine whose cores are busy it costs far more (the transformer's 1,000 Linear calls of a
    200-step run took 2.1 s with 2 threads on 2 busy cores; `compare transformer` 8.3 s with 2,
    4.9 s with 1). Changing the count costs ~1 µs."""
    import torch

    before = torch.get_num_threads()
    if before != threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


@contextlib.contextmanager
def _tf32(tf32: bool) -> Iterator[None]:
    import torch

    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    before = (matmul.allow_tf32, cudnn.allow_tf32)
    matmul.allow_tf32 = cudnn.allow_tf32 = bool(tf32)
    try:
        yield
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = before


@functools.cache
def _torch() -> Any:
    import torch

    return torch


def under_precision(step: StepT) -> StepT:
    """Decorator for a twin's ``step(self, k)``: run it under :func:`precision` of the twin's
    ``self.device``, ``self.tf32`` and ``self.threads`` (:func:`threads_of` its device)."""

    @functools.wraps(step)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        threads = getattr(self, "threads", None)
        if (threads is None or threads == _torch().get_num_threads()) and device_type(self.device) != "cuda":
            return step(self, *args, **kwargs)  # nothing to set: without the two context managers (~5 µs)
        with precision(self.device, self.tf32, threads):
            return step(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]
