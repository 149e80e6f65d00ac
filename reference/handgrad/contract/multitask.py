"""The multitask family's model spec: a shared trunk and two heads (regression, classes), each
with its loss, summed with weights (w₁, w₂); the parameter table both sides name.

The derivations are in handgrad.hand.multitask and manual/multitask.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from handgrad.contract.spec import ACTIVATIONS, SpecError, require_choice, require_float, require_int
from handgrad.contract.training import Loss

REGRESSION_LOSSES = ("mse", "l1", "smooth_l1", "huber")
PARTS = ("trunk", "head1", "head2")


@dataclass(frozen=True)
class Multitask:
    """The trunk's size and activation, each head's size and loss, and the loss weights (w₁, w₂)."""

    in_features: int
    hidden: int
    outputs: int = 1  # head 1: regression outputs
    classes: int = 3  # head 2: classes
    activation: str = "tanh"
    slope: float = 0.01
    loss1: Loss = Loss("mse")
    loss2: Loss = Loss("cross_entropy")
    weights: tuple[float, float] = (1.0, 1.0)

    def __post_init__(self) -> None:
        require_int("in_features", self.in_features, 1)
        require_int("hidden", self.hidden, 1)
        require_int("outputs", self.outputs, 1)
        require_int("classes", self.classes, 2)
        require_choice("activation", self.activation, ACTIVATIONS)
        require_float("slope", self.slope)
        require_choice("loss", self.loss1.kind, REGRESSION_LOSSES)
        if self.loss2.kind != "cross_entropy":
            raise SpecError("loss2", f"head 2 is a cross_entropy head, got {self.loss2.kind!r}")
        for field_name, loss in (("reduction", self.loss1), ("reduction", self.loss2)):
            if loss.reduction == "none":
                raise SpecError(field_name, "the heads' losses are summed as scalars: expected mean or sum")
        if len(self.weights) != 2:
            raise SpecError("loss_weights", f"expected two weights w1,w2, got {list(self.weights)}")
        weights = tuple(require_float("loss_weights", w, non_negative=True) for w in self.weights)
        object.__setattr__(self, "weights", weights)

    def sizes(self) -> dict[str, tuple[int, int]]:
        """(out, in) of each part's Linear."""
        return {
            "trunk": (self.hidden, self.in_features),
            "head1": (self.outputs, self.hidden),
            "head2": (self.classes, self.hidden),
        }


def param_table(model: Multitask) -> list[tuple[str, tuple[int, ...], str]]:
    """Every parameter as (name, shape, symbol), in the twin's ``parameters()`` order."""
    table: list[tuple[str, tuple[int, ...], str]] = []
    for part, (n_out, n_in) in model.sizes().items():
        table.append((f"{part}.W", (n_out, n_in), f"W⁽{part}⁾"))
        table.append((f"{part}.b", (n_out,), f"b⁽{part}⁾"))
    return table
