"""handgrad: backprop by hand, checked by PyTorch, laid out in a spreadsheet."""

from __future__ import annotations

from typing import Any

from handgrad.version import __version__

__all__ = ["__version__", "check_layer", "check_model"]


def check_layer(*args: Any, **kwargs: Any) -> Any:
    """Check a hand-written layer against a torch module; see :func:`handgrad.layercheck.check_layer`.

    Imported lazily so that ``import handgrad`` (and the hand side) never pulls in torch.
    """
    from handgrad.layercheck import check_layer as check

    return check(*args, **kwargs)


def check_model(*args: Any, **kwargs: Any) -> Any:
    """Check a user's own torch model against its hand twin over training steps; see
    :func:`handgrad.modelcheck.check_model`. Imported lazily, as :func:`check_layer`."""
    from handgrad.modelcheck import check_model as check

    return check(*args, **kwargs)
