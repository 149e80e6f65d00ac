"""The torch twin of :mod:`handgrad.hand.transformer`: ``nn.Embedding`` (characters, positions),
pre-LN blocks of ``nn.LayerNorm``, ``nn.MultiheadAttention(bias=False, batch_first=True)``, ``nn.Linear`` and
``nn.GELU``, a final ``nn.LayerNorm``, an ``nn.Linear`` head and ``F.cross_entropy``.

The modules are called one by one (never ``nn.TransformerEncoderLayer``'s fused fast path), so
every intermediate is a module's output: ``retain_grad()`` on each gives ∂L/∂ of it after
``L.backward()``; the attention weights are what ``MultiheadAttention`` returns
(``need_weights=True``, averaged over heads). Parameters, ``.grad`` and ``torch.optim``'s state are
read as every twin reads them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from handgrad.contract.trace import StepTrace
from handgrad.contract.training import Optimizer
from handgrad.contract.transformer import BACKWARD_BLOCK, FORWARD_BLOCK, Transformer, param_table
from handgrad.twin import configuration, optim
from handgrad.twin.device import tf32_of, threads_of, under_precision

SOURCE = "torch.nn"


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    """A C-ordered host copy of its own: the trace keeps it as it is (``copy=False``)."""
    return tensor.detach().cpu().numpy().copy()


class PreLNBlock(torch.nn.Module):
    """LN₁ → causal MHA → residual → LN₂ → fc1 → GELU → fc2 → residual, module by module."""

    def __init__(self, model: Transformer) -> None:
        super().__init__()
        E = model.n_embd
        self.ln1 = torch.nn.LayerNorm(E, eps=model.eps)
        self.attn = torch.nn.MultiheadAttention(E, model.heads, bias=False, batch_first=True)
        self.ln2 = torch.nn.LayerNorm(E, eps=model.eps)
        self.fc1 = torch.nn.Linear(E, model.mlp)
        self.act = torch.nn.GELU(model.approximate)
        self.fc2 = torch.nn.Linear(model.mlp, E)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        h1 = self.ln1(x)
        a, weights = self.attn(h1, h1, h1, attn_mask=mask, need_weights=True)
        x1 = x + a
        h2 = self.ln2(x1)
        u = self.fc1(h2)
        g = self.act(u)
        m = self.fc2(g)
        return {"weights": weights, "h1": h1, "a": a, "x1": x1, "h2": h2, "u": u, "g": g, "m": m, "y": x1 + m}


class TransformerModule(torch.nn.Module):
    def __init__(self, model: Transformer) -> None:
        super().__init__()
        self.tok = torch.nn.Embedding(model.vocab, model.n_embd)
        self.pos = torch.nn.Embedding(model.context, model.n_embd)
        for k in range(1, model.layers + 1):
            self.add_module(f"block{k}", PreLNBlock(model))
        self.lnf = torch.nn.LayerNorm(model.n_embd, eps=model.eps)
        self.head = torch.nn.Linear(model.n_embd, model.vocab)
        self.layers = model.layers


class TwinTransformer:
    """The torch side of a transformer run: its own module and ``torch.optim``."""

    def __init__(
        self,
        model: Transformer,
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
        self.module = TransformerModule(model).to(self.torch_dtype).to(self.device)
        self.optimizer_spec = optimizer
        self.X = torch.as_tensor(np.asarray(X, dtype=np.int64), device=self.device)
        self.Y = torch.as_tensor(np.asarray(Y, dtype=np.int64), device=self.device)
        self.batches = batches
        self.symbols = {name: symbol for name, _, symbol in param_table(model)}
        named = dict(self.module.named_parameters())
        if list(named) != list(self.symbols):
            raise RuntimeError(f"parameter order differs from the contract: {list(named)}")
        self.load_params(params)
        self.optimizer = optim.build(optimizer, list(self.module.parameters()))
        self.scheduler = optim.build_scheduler(optimizer, self.optimizer)
        first = self.module.block1
        self.configuration = {
            **configuration.tensor_configuration(self.module.parameters()),
            "tok.embedding_dim": self.module.tok.embedding_dim,
            "pos.num_embeddings": self.module.pos.num_embeddings,
            "attn.num_heads": first.attn.num_heads,
            "attn.batch_first": first.attn.batch_first,
            "fc1.out_features": first.fc1.out_features,
            "gelu.approximate": first.act.approximate,
            "layers": sum(1 for name, _ in self.module.named_children() if name.startswith("block")),
            **configuration.training_configuration(self.optimizer, self.scheduler, optimizer),
        }

    def _named(self) -> dict[str, torch.nn.Parameter]:
        return dict(self.module.named_parameters())

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

    @under_precision
    def step(self, step: int) -> StepTrace:
        trace = StepTrace(step)
        m, model = self.module, self.spec
        rows = torch.as_tensor(np.asarray(self.batches[step - 1]), device=self.device)  # type: ignore[index]
        Xb, Yb = self.X[rows], self.Y[rows]
        L = Xb.shape[1]
        mask = torch.triu(torch.ones(L, L, dtype=torch.bool, device=self.device), 1)  # True: masked out

        optim.zero_grad(self.optimizer)
        x = m.tok(Xb) + m.pos(torch.arange(L, device=self.device))
        kept = [x]
        blocks = []
        for k in range(1, model.layers + 1):
            out = getattr(m, f"block{k}")(x, mask)
            blocks.append(out)
            kept += [out[short] for short, _ in FORWARD_BLOCK]
            x = out["y"]
        h = m.lnf(x)
        logits = m.head(h)
        kept += [h, logits]
        for tensor in kept:
            tensor.retain_grad()
        loss = F.cross_entropy(logits.reshape(-1, model.vocab), Yb.reshape(-1))
        loss.backward()

        trace.add("emb.x", "x = tok[X] + pos", "forward", _numpy(kept[0]), SOURCE, copy=False)
        for k, out in enumerate(blocks, start=1):
            trace.add(
                f"block{k}.attn.weights",
                f"P̄⁽{k}⁾ (mean over heads)",
                "forward",
                _numpy(out["weights"]),
                SOURCE,
            )
            for short, symbol in FORWARD_BLOCK:
                trace.add(
                    f"block{k}.{short}", f"{symbol}  ⁽{k}⁾", "forward", _numpy(out[short]), SOURCE, copy=False
                )
        trace.add("lnf.h", "h = LN_f(y)", "forward", _numpy(h), SOURCE, copy=False)
        trace.add("head.logits", "logits = h Wᵀ + b", "forward", _numpy(logits), SOURCE, copy=False)
        trace.add("loss.L", "L = cross-entropy", "loss", _numpy(loss), "torch.nn.functional", copy=False)

        named = self._named()
        trace.add("head.dL_dlogits", "∂L/∂logits", "backward", _numpy(logits.grad), SOURCE, copy=False)
        self._add_grads(trace, named, "head")
        trace.add("lnf.dL_dh", "∂L/∂h", "backward", _numpy(h.grad), SOURCE, copy=False)
        self._add_grads(trace, named, "lnf")
        for k in range(model.layers, 0, -1):
            out = blocks[k - 1]
            for short in BACKWARD_BLOCK:
                trace.add(
                    f"block{k}.dL_d{short}", f"∂L/∂{short}⁽{k}⁾", "backward", _numpy(out[short].grad), SOURCE
                )
            self._add_grads(trace, named, f"block{k}")
        trace.add("emb.dL_dx", "∂L/∂x", "backward", _numpy(kept[0].grad), SOURCE, copy=False)
        self._add_grads(trace, named, "tok")
        self._add_grads(trace, named, "pos")
        self._update(trace, named)
        return trace

    def _add_grads(self, trace: StepTrace, named: dict[str, torch.nn.Parameter], prefix: str) -> None:
        for name, param in named.items():
            if name.startswith(prefix + "."):
                short = name[len(prefix) + 1 :]
                trace.add(
                    f"{prefix}.dL_d{short}",
                    f"∂L/∂{self.symbols[name]}",
                    "backward",
                    _numpy(param.grad),
                    SOURCE,
                )

    def _update(self, trace: StepTrace, named: dict[str, torch.nn.Parameter]) -> None:
        """Clip, step and trace ``torch.optim``: the twin's one step tail (handgrad.twin.optim)."""

        def read(pick: Callable[[torch.nn.Parameter], torch.Tensor]) -> dict[str, np.ndarray]:
            return {name: _numpy(pick(param)) for name, param in named.items()}

        spec, parameters = self.optimizer_spec, list(self.module.parameters())
        optim.clip_and_trace(trace, spec, parameters, read, self.symbols)
        optim.step_and_trace(trace, spec, self.optimizer, self.scheduler, read, self.symbols, SOURCE)
