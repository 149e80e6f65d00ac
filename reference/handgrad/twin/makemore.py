"""The torch twin of :mod:`handgrad.hand.makemore`: ``nn.Embedding`` → ``nn.Linear`` (no bias) →
``nn.BatchNorm1d`` (training mode) → ``nn.Tanh`` → ``nn.Linear`` → ``F.cross_entropy``.

Every term is what torch computed: the modules' outputs (``retain_grad()`` on each, so ``.grad``
holds ∂L/∂output after ``L.backward()``), the parameters' ``.grad``, BatchNorm1d's buffers
(``running_mean``, ``running_var``, ``num_batches_tracked``) as the module holds them after the
forward, and ``torch.optim``'s state. bnmean, bnvar, bnraw, probs and logprobs are computed inside
torch's fused kernels and not exposed; they are not recomputed here (contract.makemore.HAND_ONLY).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from handgrad.contract.makemore import BUFFERS, Makemore, param_table
from handgrad.contract.trace import StepTrace
from handgrad.contract.training import Optimizer
from handgrad.twin import configuration, optim
from handgrad.twin.device import tf32_of, threads_of, under_precision

SOURCE = "torch.nn"


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    """A C-ordered host copy of its own: the trace keeps it as it is (``copy=False``)."""
    return tensor.detach().cpu().numpy().copy()


class MakemoreModule(torch.nn.Module):
    """The MLP of makemore part 4; ``forward`` returns every module output."""

    def __init__(self, model: Makemore) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(model.vocab, model.n_embd)
        self.hidden = torch.nn.Linear(model.fan_in, model.hidden, bias=False)
        self.bn = torch.nn.BatchNorm1d(model.hidden, eps=model.eps, momentum=model.momentum)
        self.act = torch.nn.Tanh()
        self.output = torch.nn.Linear(model.hidden, model.vocab)

    def forward(self, Xb: torch.Tensor) -> tuple[torch.Tensor, ...]:
        emb = self.emb(Xb)  # N,3,10
        embcat = emb.view(emb.shape[0], -1)  # N,30
        hprebn = self.hidden(embcat)
        hpreact = self.bn(hprebn)
        h = self.act(hpreact)
        return emb, embcat, hprebn, hpreact, h, self.output(h)


class TwinMakemore:
    """The torch side of a makemore run: its own module and ``torch.optim``."""

    def __init__(
        self,
        model: Makemore,
        optimizer: Optimizer,
        params: dict[str, np.ndarray],
        X: np.ndarray,
        Y: np.ndarray,
        batches: object,
        dtype: str = "float64",
        device: str = "cpu",
    ) -> None:
        self.spec = model
        self.torch_dtype = getattr(torch, dtype)
        self.device = torch.device(device)
        self.tf32 = tf32_of(device)
        self.threads = threads_of(device)  # torch's intra-op threads per step
        self.module = MakemoreModule(model).to(self.torch_dtype).to(self.device)
        self.module.train()
        self.optimizer_spec = optimizer
        self.X = torch.as_tensor(np.asarray(X, dtype=np.int64), device=self.device)
        self.Y = torch.as_tensor(np.asarray(Y, dtype=np.int64), device=self.device)
        self.batches = batches
        self.symbols = {name: symbol for name, _, symbol in param_table(model)}
        self.load_params(params)
        self.optimizer = optim.build(optimizer, list(self.module.parameters()))
        self.scheduler = optim.build_scheduler(optimizer, self.optimizer)
        module = self.module
        self.configuration = {  # read back from the torch objects (twin/configuration.py)
            **configuration.tensor_configuration(module.parameters()),
            "emb.num_embeddings": module.emb.num_embeddings,
            "emb.embedding_dim": module.emb.embedding_dim,
            **configuration.layer_configuration("hidden", module.hidden),
            "bn.num_features": module.bn.num_features,
            "bn.eps": module.bn.eps,
            "bn.momentum": module.bn.momentum,
            "bn.training": module.bn.training,
            **configuration.layer_configuration("act", module.act),
            **configuration.layer_configuration("output", module.output),
            **configuration.training_configuration(self.optimizer, self.scheduler, optimizer),
        }

    def _named(self) -> dict[str, torch.nn.Parameter]:
        """Hand name → the module's parameter, in ``parameters()`` order."""
        m = self.module
        return {
            "emb.C": m.emb.weight,
            "hidden.W1": m.hidden.weight,
            "bn.gamma": m.bn.weight,
            "bn.beta": m.bn.bias,
            "output.W2": m.output.weight,
            "output.b2": m.output.bias,
        }

    def state_dict_keys(self) -> dict[str, list[str]]:
        """Hand parameter name → the module's ``state_dict`` key (the workbook's Parameters sheet)."""
        keys = {id(param): key for key, param in self.module.named_parameters()}
        return {name: [keys[id(param)]] for name, param in self._named().items()}

    def load_params(self, params: dict[str, np.ndarray]) -> None:
        with torch.no_grad():
            for name, param in self._named().items():
                param.copy_(torch.as_tensor(np.asarray(params[name])))

    def params(self) -> dict[str, np.ndarray]:
        return {name: _numpy(param) for name, param in self._named().items()}

    @under_precision  # on cuda: TF32 off unless --tf32, the previous flags restored after the step
    def step(self, step: int) -> StepTrace:
        trace = StepTrace(step)
        rows = torch.as_tensor(np.asarray(self.batches[step - 1]), device=self.device)  # type: ignore[index]
        Xb, Yb = self.X[rows], self.Y[rows]

        optim.zero_grad(self.optimizer)
        outputs = self.module(Xb)
        emb, embcat, hprebn, hpreact, h, logits = outputs
        for output in outputs:
            output.retain_grad()
        L = F.cross_entropy(logits, Yb)
        L.backward()

        trace.add("emb.emb", "emb = C[Xb]", "forward", _numpy(emb), SOURCE, copy=False)
        trace.add("emb.embcat", "embcat", "forward", _numpy(embcat), SOURCE, copy=False)
        trace.add("hidden.hprebn", "hprebn = embcat W1ᵀ", "forward", _numpy(hprebn), SOURCE, copy=False)
        trace.add("bn.hpreact", "hpreact = γ bnraw + β", "forward", _numpy(hpreact), SOURCE, copy=False)
        trace.add("act.h", "h = tanh(hpreact)", "forward", _numpy(h), SOURCE, copy=False)
        trace.add("output.logits", "logits = h W2ᵀ + b2", "forward", _numpy(logits), SOURCE, copy=False)
        trace.add("loss.L", "L = −mean logprobs[Yb]", "loss", _numpy(L), "torch.nn.functional", copy=False)

        named = self._named()
        grad = lambda name: _numpy(named[name].grad)  # noqa: E731
        trace.add("output.dL_dlogits", "∂L/∂logits", "backward", _numpy(logits.grad), SOURCE, copy=False)
        trace.add("output.dL_dW2", "∂L/∂W2", "backward", grad("output.W2"), SOURCE, copy=False)
        trace.add("output.dL_db2", "∂L/∂b2", "backward", grad("output.b2"), SOURCE, copy=False)
        trace.add("act.dL_dh", "∂L/∂h", "backward", _numpy(h.grad), SOURCE, copy=False)
        trace.add("bn.dL_dhpreact", "∂L/∂hpreact", "backward", _numpy(hpreact.grad), SOURCE, copy=False)
        trace.add("bn.dL_dgamma", "∂L/∂γ", "backward", grad("bn.gamma"), SOURCE, copy=False)
        trace.add("bn.dL_dbeta", "∂L/∂β", "backward", grad("bn.beta"), SOURCE, copy=False)
        trace.add("hidden.dL_dhprebn", "∂L/∂hprebn", "backward", _numpy(hprebn.grad), SOURCE, copy=False)
        trace.add("hidden.dL_dW1", "∂L/∂W1", "backward", grad("hidden.W1"), SOURCE, copy=False)
        trace.add("emb.dL_dembcat", "∂L/∂embcat", "backward", _numpy(embcat.grad), SOURCE, copy=False)
        trace.add("emb.dL_demb", "∂L/∂emb", "backward", _numpy(emb.grad), SOURCE, copy=False)
        trace.add("emb.dL_dC", "∂L/∂C", "backward", grad("emb.C"), SOURCE, copy=False)

        bn = self.module.bn
        buffers = (bn.running_mean, bn.running_var, bn.num_batches_tracked)
        for (name, symbol), buffer in zip(BUFFERS, buffers, strict=True):
            trace.add(name, symbol, "state", _numpy(buffer), "torch.nn.BatchNorm1d", copy=False)
        self._update(trace, named)
        return trace

    def _update(self, trace: StepTrace, named: dict[str, torch.nn.Parameter]) -> None:
        """Clip, step and trace ``torch.optim``: the twin's one step tail (handgrad.twin.optim)."""

        def read(pick: Callable[[torch.nn.Parameter], torch.Tensor]) -> dict[str, np.ndarray]:
            return {name: _numpy(pick(param)) for name, param in named.items()}

        spec, parameters = self.optimizer_spec, list(self.module.parameters())
        optim.clip_and_trace(trace, spec, parameters, read, self.symbols)
        optim.step_and_trace(trace, spec, self.optimizer, self.scheduler, read, self.symbols, SOURCE)
