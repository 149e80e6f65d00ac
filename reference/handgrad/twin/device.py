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
tolerance row (:mod:`handgrad.contract.tolerance`, derivation in ``manual/harness.md``).

:class:`Device` carries the TF32 choice along with the device name, so that it travels wherever a
device name goes (``device=`` of every twin and experiment builder). This module imports torch only
to look for a GPU or to set the CUDA flags, so a CPU build of the hand side alone stays torch-free.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from handgrad.contract.spec import SpecError

DEVICES = ("cpu", "cuda")

StepT = TypeVar("StepT", bound=Callable[..., Any])


class Device(str):
    """A device name (``"cpu"`` or ``"cuda"``) that also says whether TF32 is allowed there.

    A ``str``, so it goes wherever a device name goes (``torch.device(Device("cuda"))``); a plain
    string means TF32 off.
    """

    tf32: bool

    def __new__(cls, name: str = "cpu", *, tf32: bool = False) -> Device:
        if name not in DEVICES:
            raise SpecError("device", f"expected one of {', '.join(DEVICES)}, got {name!r}")
        if tf32 and name != "cuda":
            raise SpecError("tf32", f"TF32 is a CUDA tensor-core format: it needs device cuda, not {name}")
        device = super().__new__(cls, name)
        device.tf32 = bool(tf32)
        return device

    def __repr__(self) -> str:
        return f"Device({str(self)!r}, tf32={self.tf32})"


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


def tf32_of(device: object) -> bool:
    """Whether ``device`` (a :class:`Device`, a name or a ``torch.device``) allows TF32."""
    return bool(getattr(device, "tf32", False))


def device_type(device: object) -> str:
    """``"cpu"`` or ``"cuda"`` of a :class:`Device`, a name (``"cuda:0"``) or a ``torch.device``."""
    kind = getattr(device, "type", None)
    return str(kind) if kind is not None else str(device).split(":", 1)[0]


@contextlib.contextmanager
def precision(device: object, tf32: bool) -> Iterator[None]:
    """While open on CUDA: TF32 in float32 matmuls (cuBLAS) and in cuDNN (convolutions, recurrent
    modules) exactly when ``tf32``; the previous flags are restored on exit. On CPU: nothing."""
    if device_type(device) != "cuda":
        yield
        return
    import torch

    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    before = (matmul.allow_tf32, cudnn.allow_tf32)
    matmul.allow_tf32 = cudnn.allow_tf32 = bool(tf32)
    try:
        yield
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = before


def under_precision(step: StepT) -> StepT:
    """Decorator for a twin's ``step(self, k)``: run it under :func:`precision` of the twin's
    ``self.device`` and ``self.tf32``."""

    @functools.wraps(step)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        with precision(self.device, self.tf32):
            return step(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]
