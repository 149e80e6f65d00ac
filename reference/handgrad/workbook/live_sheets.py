"""Which module writes a run's live formulas: one provider per family of run spec.

The writer asks :func:`provider` for the run's family and either gets its sheets (the walkthrough
of each chosen step, and for a dense stack the Training sheet) or the provider's own reason, in
the run's terms, why there are none. A family without a provider has a reason too."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from handgrad.contract.conv_layers import Conv2d
from handgrad.contract.runs import MakemoreRun, MultitaskRun, RecurrentRun, RunSpec, StackRun, TransformerRun
from handgrad.harness import Experiment
from handgrad.workbook.blocks import Captured
from handgrad.workbook.grid import Grid


@dataclass(frozen=True)
class Provider:
    """A family's live sheets: ``reason`` (None when they can be written), ``grids`` (one per
    walkthrough step) and whether a Training sheet follows them. The family's module (named by
    ``module``, its functions by ``reason_name`` and ``grids_name``) is imported when first asked:
    a run imports only its own family's layout."""

    module: str
    reason_name: str
    grids_name: str
    training: bool = False

    @property
    def reason(self) -> Callable[[Experiment], str | None]:
        return getattr(importlib.import_module(self.module), self.reason_name)  # type: ignore[no-any-return]

    @property
    def grids(self) -> Callable[[Experiment, Captured, Iterable[int] | None], list[Grid]]:
        return getattr(importlib.import_module(self.module), self.grids_name)  # type: ignore[no-any-return]


_PACKAGE = "handgrad.workbook"
DENSE = Provider(f"{_PACKAGE}.walkthrough", "unsupported_reason", "walkthrough_grids", training=True)
CONV = Provider(f"{_PACKAGE}.conv_walkthrough", "conv_unsupported_reason", "conv_walkthrough_grids")
RECURRENT = Provider(
    f"{_PACKAGE}.recurrent_walkthrough", "recurrent_unsupported_reason", "recurrent_walkthrough_grids"
)
MAKEMORE = Provider(
    f"{_PACKAGE}.makemore_walkthrough", "makemore_unsupported_reason", "makemore_walkthrough_grids"
)
TRANSFORMER = Provider(
    f"{_PACKAGE}.transformer_walkthrough", "transformer_unsupported_reason", "transformer_walkthrough_grids"
)
MULTITASK = Provider(
    f"{_PACKAGE}.multitask_walkthrough", "multitask_unsupported_reason", "multitask_walkthrough_grids"
)
BY_FAMILY: dict[type, Provider] = {
    RecurrentRun: RECURRENT,
    MakemoreRun: MAKEMORE,
    TransformerRun: TRANSFORMER,
    MultitaskRun: MULTITASK,
}


def provider(spec: RunSpec | None) -> Provider | None:
    """The provider of a run's family (a layer stack: the conv sheet when its first layer is a
    Conv2d, else the dense one); None for a run no provider writes."""
    if isinstance(spec, StackRun):
        stages = spec.network.stages()
        return CONV if stages and isinstance(stages[0].layer, Conv2d) else DENSE
    return BY_FAMILY.get(type(spec))


def no_provider_reason(experiment: Experiment) -> str:
    return (
        "the live sheets are written for one network (dense, convolutional or recurrent); "
        f"a {experiment.scenario} run has none yet: every term is on the Trace"
    )
