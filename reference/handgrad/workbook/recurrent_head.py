"""The head of the recurrent Walkthrough (a Dense on the top layer's h: at every step, or on each
sequence's last state h_n) and the loss band right of band T: z, ŷ, y, ℓ, L and the count n of
the elements in the mean, then ∂L/∂ŷ, ∂L/∂z and the ∂L/∂h the head sends down into the bands."""

from __future__ import annotations

from handgrad.contract.recurrent import HEAD
from handgrad.workbook import formulas as fx
from handgrad.workbook.blocks import Block
from handgrad.workbook.grid import address
from handgrad.workbook.loss_formulas import ElementLoss
from handgrad.workbook.recurrent_cells import Slot, row_of


class HeadBands:
    """The head's blocks and the loss band, mixed into
    :class:`handgrad.workbook.recurrent_bands.Bands` (whose layout, blocks and term writers they
    use)."""

    def head_slots(self) -> tuple[list[Slot], list[Slot]]:
        """The head's blocks in every band (many-to-many: z_t, ŷ_t, y_t, ℓ_t; ∂L/∂ŷ_t, ∂L/∂z_t,
        ∂L/∂h_t from the head); none many-to-one (its head is in the loss band)."""
        if not self.many:
            return [], []
        O = self.O
        act = self.data.model.output_activation
        fwd = [
            Slot(("z",), "head: z_t = W_y h_t + b_y", O, "forward", True),
            Slot(("yhat",), f"head: ŷ_t = {act}(z_t)", O, "forward", True),
            Slot(("y",), "y_t: the step's targets (edit me)", O, "input", False),
            Slot(
                ("ell",),
                "ℓ_t: the loss of each element (0 past the end: not in the loss)",
                O,
                "loss",
                False,
            ),
        ]
        bwd = [
            Slot(("dyhat",), "∂L/∂ŷ_t (0 past the end)", O, "backward", True),
            Slot(("dz",), "∂L/∂z_t = ∂L/∂ŷ_t ⊙ f′(z_t)", O, "backward", True),
            Slot(("dxhead",), "∂L/∂h_t from the head = ∂L/∂z_t · W_y", self.H, "backward", True),
        ]
        return fwd, bwd

    def loss_slots(self) -> tuple[list[Slot], list[Slot]]:
        """The loss band's own blocks (many-to-one: z, ŷ, y, ℓ; ∂L/∂ŷ, ∂L/∂z, ∂L/∂h_n)."""
        if self.many:
            return [], []
        O, act = self.O, self.data.model.output_activation
        fwd = [
            Slot(
                ("z",), "head: z = W_y h_n + b_y  (h_n: each sequence's own last state)", O, "forward", True
            ),
            Slot(("yhat",), f"head: ŷ = {act}(z)", O, "forward", True),
            Slot(("y",), "y: the targets (edit me)", O, "input", False),
            Slot(("ell",), "ℓ: the loss of each element", O, "loss", False),
        ]
        bwd = [
            Slot(("dyhat",), "∂L/∂ŷ", O, "backward", True),
            Slot(("dz",), "∂L/∂z = ∂L/∂ŷ ⊙ f′(z)", O, "backward", True),
            Slot(
                ("dhn",),
                "∂L/∂h_n = ∂L/∂z · W_y (into the top layer at each sequence's last step)",
                self.H,
                "backward",
                True,
            ),
        ]
        return fwd, bwd

    def head_forward(self, t: int, h: Block, suffix: str) -> None:
        """z, ŷ, y, ℓ of band t (many-to-many: per-step terms) or of the loss band."""
        N, O = self.N, self.O
        W, bias = self.weights[f"{HEAD}.W"], self.weights[f"{HEAD}.b"]
        act, slope = self.data.model.output_activation, self.data.model.slope
        zb, yb_hat = self.header(("z",), t), self.header(("yhat",), t)
        yb, ell = self.header(("y",), t), self.header(("ell",), t)
        zc = {
            (n, o): f"SUMPRODUCT({row_of(h, n)},{row_of(W, o, absolute=True)})+{bias.cell(o, 0, True)}"
            for n in range(N)
            for o in range(O)
        }
        ac = {(n, o): fx.activation(act, zb.cell(n, o), slope) for n in range(N) for o in range(O)}
        targets = self.data.y[:, t - 1, :] if self.many else self.data.y
        self.grid.block(yb.top, yb.left, targets, "input")
        if self.many:
            self.step_term(("z",), t, f"{HEAD}.z{suffix}", zc, (0, O), "forward")
            self.step_term(("yhat",), t, f"{HEAD}.a{suffix}", ac, (0, O), "forward")
        else:
            self.whole_term(("z",), t, f"{HEAD}.z", zc, "forward")
            self.whole_term(("yhat",), t, f"{HEAD}.a", ac, "forward")
        elements = ElementLoss(self.data.loss)
        for n in range(N):
            for o in range(O):
                p, y = yb_hat.cell(n, o), yb.cell(n, o)
                element = elements.element(p, y) if self.data.loss.kind == "bce" else f"({p}-{y})^2"
                body = f"IF({self.mask(t, n)}=1,{element},0)" if self.many else element
                self.set(ell.top + n, ell.left + o, body, "loss")

    def head_backward(self, t: int, suffix: str) -> None:
        N, O = self.N, self.O
        act, slope = self.data.model.output_activation, self.data.model.slope
        yhat, y, z = self.b[(("yhat",), t)], self.b[(("y",), t)], self.b[(("z",), t)]
        dyhat = self.header(("dyhat",), t)
        self.header(("dz",), t)
        count = self.count_ref if self.many else str(N * O)
        gcells, zcells = {}, {}
        for n in range(N):
            for o in range(O):
                grad = ElementLoss(self.data.loss).element_gradient(yhat.cell(n, o), y.cell(n, o), count)
                gcells[(n, o)] = f"IF({self.mask(t, n)}=1,{grad},0)" if self.many else grad
                zcells[(n, o)] = fx.times_derivative(
                    act, dyhat.cell(n, o), z.cell(n, o), yhat.cell(n, o), slope
                )
        if self.many:
            self.step_term(("dyhat",), t, f"{HEAD}.dL_da{suffix}", gcells, (0, O), "backward")
            self.step_term(("dz",), t, f"{HEAD}.dL_dz{suffix}", zcells, (0, O), "backward")
        else:
            self.whole_term(("dyhat",), t, f"{HEAD}.dL_da", gcells, "backward")
            self.whole_term(("dz",), t, f"{HEAD}.dL_dz", zcells, "backward")

    def head_dx(self, t: int, key: tuple, name: str) -> None:
        """∂L/∂h from the head = ∂L/∂z · W_y (per step many-to-many, ∂L/∂h_n many-to-one)."""
        dz, W = self.b[(("dz",), t)], self.weights[f"{HEAD}.W"]
        self.header(key, t)
        cells = {
            (n, j): fx.dot([(dz.cell(n, o), W.cell(o, j, True)) for o in range(self.O)])
            for n in range(self.N)
            for j in range(self.H)
        }
        if self.many:
            self.step_term(key, t, name, cells, (0, self.H), "backward")
        else:
            self.whole_term(key, t, name, cells, "backward")

    def loss_band(self) -> None:
        grid, T, N, O = self.grid, self.T, self.N, self.O
        loss = self.data.loss
        left = self.band_left(T + 1)
        if not self.many:
            self.head_forward(T + 1, self.b[(("h", self.L - 1), T)], "")
            ells = [self.b[(("ell",), T + 1)].range()]
            count_body = f"{N * O}"
        else:
            ells = [self.b[(("ell",), t)].range() for t in range(1, T + 1)]
            masks = [f"SUM({self.b[(('mask',), t)].range()})" for t in range(1, T + 1)]
            count_body = f"{O}*({'+'.join(masks)})"
        row = self.loss_row
        grid.text(row, 1, "n: the elements in the mean (output size × real steps)", "loss")
        self.set(row, left, count_body, "loss")
        self.count_ref = address(row, left, absolute=True)
        total = f"SUM({','.join(ells)})"
        body = f"{total}/{self.count_ref}" if loss.reduction == "mean" else total
        if loss.half:
            body = f"0.5*({body})"
        grid.text(row + 1, 1, "L = (½·) Σ ℓ (/ n for a mean)", "loss")
        self.set(row + 1, left, body, "loss", ("loss.L", 0))
        values = self.torch_value("loss.L")
        if values is not None:
            grid.text(row + 2, 1, f"torch's L ({self.torch_source('loss.L')}) and |Δ|", "torch")
            grid.set(row + 2, left, float(values.reshape(-1)[0]), "torch")
            delta = fx.absolute_difference(address(row + 1, left), address(row + 2, left))
            grid.set(row + 3, left, fx.formula(delta), "delta")
        if not self.many:
            self.head_backward(T + 1, "")
            self.head_dx(T + 1, ("dhn",), f"{HEAD}.dL_dx")
