"""The conv walkthrough: a small first conv layer (and the activation and max-pool after it) as
live formulas, forward and backward, with the windows laid out where the eye can see them.

Every feature map is a block of cells in its own spatial layout (rows = h, columns = w): one
band of blocks per sample ``n``, one block per channel across. So the formula of an output pixel
reads a *contiguous* window of the block above it, and clicking the cell makes LibreOffice or
Excel outline that window.

- x (the step's images), W, b and η are plain input cells (edit one: the whole sheet recomputes);
- x̃: x with its zero padding (references to x; not a term);
- z⁽conv⁾[n,o,i,j] = Σ_c SUMPRODUCT(window of x̃[n,c], W[o,c]) + b[o], one formula per pixel
  (torch's conv is a cross-correlation: the kernel is not flipped);
- a = f(z) (the activation's formula), out⁽pool⁾ = MAX over each window, and the winner of each
  window (the first maximum in row-major order: torch's tie rule) as a nested IF;
- backward: ∂L/∂out⁽pool⁾ comes in as plain numbers (the layers after are on the Trace sheet),
  routed to each window's winner only (IF(winner = tap, δ, 0), summed over overlapping
  windows); ∂L/∂z = ∂L/∂a ⊙ f′(z); ∂L/∂W[o,c,u,v] = Σ_n SUMPRODUCT(δ[n,o], x̃[n,c] shifted by
  (u, v)): a sum over windows; ∂L/∂b[o] = Σ SUM(δ[n,o]); ∂L/∂x = the full correlation of δ̂ (δ
  dilated by the stride and zero-padded by k−1) with rot180(W), also laid out as blocks;
- with clipping: ‖g‖ over every parameter of the network (the hand side's number: most of the
  parameters are on the Trace sheet), the coefficient and the clipped ĝ by formula;
- the update: the optimizer's state before the step (inputs, from step − 1's trace), its new state
  and W′, b′, in the optimizer's live rule (:mod:`handgrad.workbook.formulas`), written by
  :func:`handgrad.workbook.blocks.update_blocks` as on the dense Walkthrough.

The sheet is a :class:`handgrad.workbook.blocks.Sheet` laying out maps instead of 2-D blocks:
beside each computed block torch's values (plain numbers) and |Δ| by formula. ``grid.checks``
maps each formula cell that computes a hand term to (step, term, flat index).

A batch too large for the sheet (a block of more than :data:`MAX_LIVE_ELEMENTS` cells, e.g.
alexnet-mini's 8 images) is written on a slice, named under the title: the first image of the
batch, every channel. Each map of an image-shaped term (z, a, out⁽pool⁾, ∂L/∂z, ∂L/∂x, ...) holds
that image's cells, checked at their flat indices in the batch's term (the first C·H·W of it: the
image is n = 1). What the slice cannot compute comes in from the Trace as yellow input cells: the
upstream gradient of that image, and ∂L/∂W, ∂L/∂b, sums over all N images; the image's own share
of them is shown beside, by formula (not a term). The update reads the batch's gradients, so W′,
b′ and the optimizer's state are checked in full. A layer too large even for one image gets the
Trace sheet only: :func:`conv_unsupported_reason` says why, and :func:`conv_walkthrough_grids`
refuses.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable

import numpy as np

from handgrad.contract.conv_layers import Conv2d, MaxPool2d
from handgrad.contract.runs import StackRun
from handgrad.contract.spec import Activation, Network, SpecError, Stage
from handgrad.contract.stack import shape_of
from handgrad.harness import Experiment
from handgrad.workbook import formulas as fx
from handgrad.workbook.blocks import (
    Captured,
    Cells,
    clip_blocks,
    hyper_inputs,
    params_before,
    step_grids,
    update_blocks,
)
from handgrad.workbook.grid import Grid
from handgrad.workbook.map_blocks import ConvSheet, Maps, Shape4

MAX_LIVE_ELEMENTS = 2048  # the largest 4-D block (N·C·H·W) written as live formulas
LIVE_ACTIVATIONS = tuple(fx.ACTIVATION_EQUATIONS)

# --- what the conv walkthrough covers ------------------------------------------------------------


def covered_stages(network: Network) -> list[Stage]:
    """The conv stage first, then the activation and the max-pool right after it, if present."""
    stages = network.stages()
    if not stages or not isinstance(stages[0].layer, Conv2d):
        return []
    covered = [stages[0]]
    rest = stages[1:]
    if rest and isinstance(rest[0].layer, Activation) and rest[0].layer.kind in LIVE_ACTIVATIONS:
        covered.append(rest[0])
        rest = rest[1:]
    if rest and isinstance(rest[0].layer, MaxPool2d):
        covered.append(rest[0])
    return covered


def _shapes(network: Network, batch: int) -> dict[str, Shape4]:
    """(N, C, H, W) of every block the sheet lays out."""
    conv: Conv2d = network.layers[0]  # type: ignore[assignment]
    c_in, h, w = network.input_shape  # type: ignore[misc]
    (kh, kw), (ph, pw) = conv.kernel_size, conv.padding  # type: ignore[misc]
    c_out, ho, wo = conv.output_shape((c_in, h, w))
    shapes = {
        "x": (batch, c_in, h, w),
        "xp": (batch, c_in, h + 2 * ph, w + 2 * pw),
        "z": (batch, c_out, ho, wo),
        "W": (c_out, c_in // conv.groups, kh, kw),
        "dhat": (batch, c_out, h + 2 * ph + kh - 1, w + 2 * pw + kw - 1),
    }
    return shapes


def conv_unsupported_reason(experiment: Experiment) -> str | None:
    """``None`` when the conv walkthrough can be written for this run, else why not (one line)."""
    spec = experiment.spec
    if not isinstance(spec, StackRun):
        return "the conv walkthrough needs a network spec"
    network: Network = spec.network
    covered = covered_stages(network)
    if not covered:
        return "the conv walkthrough covers networks whose first layer is Conv2d"
    conv: Conv2d = covered[0].layer  # type: ignore[assignment]
    if conv.dilation != (1, 1):
        return f"{covered[0].name} has dilation {conv.dilation}: its windows are not contiguous (see Trace)"
    if len(covered) > 2 and covered[-1].layer.dilation != (1, 1):  # type: ignore[attr-defined]
        return f"{covered[-1].name} has dilation > 1 (see Trace)"
    largest = _largest_block(network, 1)
    if largest > MAX_LIVE_ELEMENTS:
        return (
            f"{covered[0].name} is too large for a live walkthrough ({largest:,} cells in one block for "
            f"one image, more than {MAX_LIVE_ELEMENTS:,}): its terms are on the Trace sheet"
        )
    return None


def _largest_block(network: Network, batch: int) -> int:
    return max(int(np.prod(shape)) for shape in _shapes(network, batch).values())


def is_sliced(experiment: Experiment) -> bool:
    """True when the run's largest batch makes a block larger than :data:`MAX_LIVE_ELEMENTS`:
    the sheet then shows the first image of the batch (the slice named under the title)."""
    spec = experiment.spec
    assert isinstance(spec, StackRun)
    batch = max(len(rows) for rows in itertools.islice(spec.batches, 2_000_000))  # sizes repeat each epoch
    return _largest_block(spec.network, batch) > MAX_LIVE_ELEMENTS


def slice_note(experiment: Experiment) -> str | None:
    """The slice the conv sheet shows (None when it shows the whole batch), in the sheet's words."""
    if conv_unsupported_reason(experiment) is not None or not is_sliced(experiment):
        return None
    assert isinstance(experiment.spec, StackRun)
    network: Network = experiment.spec.network
    stage = covered_stages(network)[0]
    c_out = _shapes(network, 1)["z"][1]
    return (
        f"Slice: image n = 1 (the first) of the step's batch, all {c_out} output channels of "
        f"{stage.name}; the upstream ∂L/∂(…) of that image and ∂L/∂W, ∂L/∂b (sums over the whole "
        "batch) are yellow inputs from the Trace"
    )


def sheet_name(step: int) -> str:
    return "Conv walkthrough" if step == 1 else f"Conv walkthrough {step}"


def conv_walkthrough_grids(
    experiment: Experiment, captured: Captured, steps: Iterable[int] | None = None
) -> list[Grid]:
    """One Grid per walkthrough step ("Conv walkthrough", "Conv walkthrough 50", ...);
    ``captured[k]`` is (hand trace, torch trace) of step k, with step k − 1 beside every k > 1."""
    return step_grids(experiment, captured, steps, conv_unsupported_reason, conv_walkthrough_grid)


# --- the sheet -----------------------------------------------------------------------------------


def _batch_gradients(
    sheet: ConvSheet,
    name: str,
    batch: int,
    w_shape: Shape4,
    dw_body: Callable[[int, int, int, int], str],
    db_body: Callable[[int, int, int, int], str] | None,
) -> tuple[Maps, Maps | None]:
    """On the sliced sheet: image 1's share of ∂L/∂W (and ∂L/∂b) by formula (not a term), then
    the batch's ∂L/∂W, ∂L/∂b from the Trace as inputs (the other N − 1 images are not on the
    sheet), which clipping and the update read."""
    sheet.map_computed(
        None,
        "image 1's share of ∂L/∂W: SUMPRODUCT(∂L/∂z[1,o], x̃[1,c] shifted by (u, v))  (not a term: "
        f"the other {batch - 1} images of the batch add theirs)",
        "backward",
        w_shape,
        dw_body,
        ("o", "c"),
    )
    sheet.top += 1
    c_out = w_shape[0]
    if db_body is not None:
        sheet.map_computed(
            None,
            f"image 1's share of ∂L/∂b: SUM(∂L/∂z[1,o])  (not a term: the other {batch - 1} add theirs)",
            "backward",
            (1, 1, 1, c_out),
            db_body,
            ("", ""),
        )
        sheet.top += 1
    dw_maps = sheet.map_computed(
        f"{name}.dL_dW",
        f"Σ over all N = {batch} images, from the Trace (an input: the update reads it)",
        "input",
        w_shape,
        None,
        ("o", "c"),
    )
    sheet.top += 1
    db_maps = None
    if db_body is not None:
        db_maps = sheet.map_computed(
            f"{name}.dL_db",
            f"Σ over all N = {batch} images, from the Trace (an input: the update reads it)",
            "input",
            (1, 1, 1, c_out),
            None,
            ("", ""),
        )
        sheet.top += 1
    return dw_maps, db_maps


def _sum(parts: list[str]) -> str:
    return "+".join(parts) if parts else "0"


def conv_walkthrough_grid(experiment: Experiment, step: int, captured: Captured) -> Grid:
    """The live conv walkthrough of one step (``captured[step]`` = (hand trace, torch trace))."""
    reason = conv_unsupported_reason(experiment)
    if reason is not None:
        raise SpecError("workbook", reason)
    if step not in captured:
        raise SpecError("walkthrough", f"step {step} was not captured (the run has {experiment.steps} steps)")
    hand, torch = captured[step]
    spec = experiment.spec
    network: Network = spec.network
    stages = covered_stages(network)
    conv_stage = stages[0]
    conv: Conv2d = conv_stage.layer  # type: ignore[assignment]
    act = next((s for s in stages if isinstance(s.layer, Activation)), None)
    pool = next((s for s in stages if isinstance(s.layer, MaxPool2d)), None)
    name = conv_stage.name
    rows_used = np.asarray(spec.batches[step - 1])
    x = np.asarray(spec.data.x[rows_used], dtype=float)
    batch = x.shape[0]
    note = slice_note(experiment)
    if note is not None:
        x = x[:1]
    n = x.shape[0]

    def part(shape: Shape4) -> np.ndarray | None:
        """Flat indices of the first image's cells in an image-shaped term (None: the whole term)."""
        return np.arange(int(np.prod(shape))) if note is not None else None

    shapes = _shapes(network, n)
    c_out, c_g, kh, kw = shapes["W"]
    _, c_in, h_in, w_in = shapes["x"]
    _, _, ho, wo = shapes["z"]
    (sh, sw), (ph, pw), groups = conv.stride, conv.padding, conv.groups  # type: ignore[misc]
    o_g = c_out // groups
    table = [
        (f"{name}.{short}", shape, symbol) for short, shape, symbol in shape_of(conv_stage).params(conv_stage)
    ]
    params = params_before(experiment, step, captured, [param for param, _, _ in table])
    optimizer = spec.optimizer
    rule = fx.update_rule(optimizer)

    pool_shape: Shape4 | None = None
    if pool is not None:
        pool_shape = (n, *pool.layer.output_shape(shapes["z"][1:]))  # type: ignore[assignment]
    widths = [Maps(0, 0, s).width for s in (*shapes.values(), *([pool_shape] if pool_shape else []))]
    grid = Grid(sheet_name(step))
    sheet = ConvSheet(grid, step, max(widths), hand, torch)
    grid.widths[1] = 14.0

    chain = " → ".join([name, *([f"{act.layer.kind}"] if act else []), *([pool.name] if pool else [])])
    sheet.heading(f"Conv walkthrough, step {step}: {chain}, as live formulas", "title")
    if note is not None:
        sheet.note(f"{note}. The batch has N = {batch} images (data row {int(rows_used[0]) + 1} is image 1).")
    sheet.note(
        "Each map is laid out as the image it is (rows h, columns w); click a formula cell and the "
        "window it reads is outlined. Yellow cells are inputs: edit one and the step recomputes."
    )
    sheet.note(
        "Colours: yellow input · blue forward · red backward · green update · grey torch's value · "
        "|Δ| by formula. The layers after are on the Trace sheet."
    )
    sheet.top += 1

    # --- inputs ---
    sheet.heading("Hyper-parameters (inputs)", "subtitle")
    hyper = hyper_inputs(sheet, rule, optimizer, named=False)
    sheet.top += 1
    x_title = f"x: the step's {n} image(s)" if note is None else f"x: image 1 of the step's {batch}"
    x_maps = sheet.map_inputs(f"{x_title}, (N, C_in, H, W) = {shapes['x']}", x, shapes["x"], ("n", "c"))
    sheet.top += 1
    w_maps = sheet.map_inputs(
        f"W⁽{name}⁾: the kernel before the step, (C_out, C_in/G, kH, kW) = {shapes['W']}",
        params[f"{name}.W"],
        shapes["W"],
        ("o", "c"),
    )
    b_maps: Maps | None = None
    if conv.bias:
        sheet.top += 1
        b_maps = sheet.map_inputs(
            f"b⁽{name}⁾: one bias per output channel", params[f"{name}.b"], (1, 1, 1, c_out), ("", "")
        )
    sheet.top += 1

    # --- forward ---
    if ph or pw:
        xp_maps = sheet.map_computed(
            None,
            f"x̃ = x zero-padded by p = ({ph}, {pw}) on each side (not a term: the windows read it)",
            "forward",
            shapes["xp"],
            lambda a, b, h, w: (
                x_maps.cell(a, b, h - ph, w - pw) if ph <= h < ph + h_in and pw <= w < pw + w_in else "0"
            ),
            ("n", "c"),
        )
        sheet.top += 1
    else:
        xp_maps = x_maps

    def z_body(a: int, o: int, i: int, j: int) -> str:
        g = o // o_g
        parts = [
            f"SUMPRODUCT({xp_maps.window(a, g * c_g + c, i * sh, j * sw, kh, kw)},"
            f"{w_maps.window(o, c, 0, 0, kh, kw)})"
            for c in range(c_g)
        ]
        if b_maps is not None:
            parts.append(b_maps.cell(0, 0, 0, o))
        return _sum(parts)

    z_maps = sheet.map_computed(
        f"{name}.z",
        f"z[n,o,i,j] = Σ_c SUMPRODUCT(x̃[n,c] window at ({sh}·i, {sw}·j), W[o,c]) + b[o]  "
        "(a cross-correlation: the kernel is not flipped)",
        "forward",
        shapes["z"],
        z_body,
        ("n", "o"),
        indices=part(shapes["z"]),
    )
    sheet.top += 1
    out_maps = z_maps
    a_maps: Maps | None = None
    if act is not None:
        kind, slope = act.layer.kind, act.layer.slope  # type: ignore[attr-defined]
        a_maps = sheet.map_computed(
            f"{name}.a",
            f"a = {fx.ACTIVATION_EQUATIONS[kind][0]}",
            "forward",
            shapes["z"],
            lambda a, o, i, j: fx.activation(kind, z_maps.cell(a, o, i, j), slope),
            ("n", "c"),
            indices=part(shapes["z"]),
        )
        sheet.top += 1
        out_maps = a_maps

    win_maps: Maps | None = None
    pool_maps: Maps | None = None
    taps: dict[tuple[int, int], list[tuple[int, int, int]]] = {}
    if pool is not None and pool_shape is not None:
        pk, ps, pp = pool.layer.kernel_size, pool.layer.stride, pool.layer.padding  # type: ignore[attr-defined]
        _, _, po_h, po_w = pool_shape
        for i in range(po_h):
            for j in range(po_w):
                taps[(i, j)] = [
                    (u * pk[1] + v, i * ps[0] - pp[0] + u, j * ps[1] - pp[1] + v)
                    for u in range(pk[0])
                    for v in range(pk[1])
                    if 0 <= i * ps[0] - pp[0] + u < ho and 0 <= j * ps[1] - pp[1] + v < wo
                ]  # (tap u·kW + v, h, w) of the real pixels of window (i, j), row-major
        src = out_maps
        pool_maps = sheet.map_computed(
            f"{pool.name}.out",
            f"out[n,c,i,j] = MAX of the {pk[0]}×{pk[1]} window at ({ps[0]}·i − {pp[0]}, {ps[1]}·j − {pp[1]})",
            "forward",
            pool_shape,
            lambda a, c, i, j: "MAX({})".format(
                ",".join(src.cell(a, c, hh, ww) for _, hh, ww in taps[(i, j)])
            ),
            ("n", "c"),
            indices=part(pool_shape),
        )
        sheet.top += 1
        pooled = pool_maps

        def winner(a: int, c: int, i: int, j: int) -> str:
            real = taps[(i, j)]
            text = str(real[-1][0])
            for tap, hh, ww in reversed(real[:-1]):
                text = f"IF({src.cell(a, c, hh, ww)}={pooled.cell(a, c, i, j)},{tap},{text})"
            return text

        win_maps = sheet.map_computed(
            None,
            f"winner of each window, as tap u·{pk[1]} + v: the FIRST maximum in row-major order "
            "(torch's tie rule; ties are common here)",
            "forward",
            pool_shape,
            winner,
            ("n", "c"),
        )
        sheet.top += 1

    # --- backward ---
    last = stages[-1]
    suffix, _ = shape_of(last).output(last)
    upstream_term = f"{last.name}.dL_d{suffix}"
    up_shape = pool_shape if pool is not None and pool_shape is not None else shapes["z"]
    up_maps = sheet.map_computed(
        upstream_term,
        "from the layers after (the hand side's numbers; their terms are on the Trace sheet)"
        if note is None
        else "image 1's cells, from the Trace (the hand side's numbers: the layers after are not on "
        "this sheet); an input: edit one and the blocks below recompute",
        "backward" if note is None else "input",
        up_shape,
        None,
        ("n", "c"),
        indices=part(up_shape),
    )
    sheet.top += 1
    grad_out = up_maps  # ∂L/∂(output of the conv block so far), walking back
    if pool is not None and win_maps is not None:
        routes: dict[tuple[int, int], list[tuple[int, int, int]]] = {}
        for (i, j), real in taps.items():
            for tap, hh, ww in real:
                routes.setdefault((hh, ww), []).append((i, j, tap))
        winners = win_maps

        def routed(a: int, c: int, hh: int, ww: int) -> str:
            return _sum(
                [
                    f"IF({winners.cell(a, c, i, j)}={tap},{up_maps.cell(a, c, i, j)},0)"
                    for i, j, tap in routes.get((hh, ww), [])
                ]
            )

        target = f"{name}.dL_da" if act is not None else f"{name}.dL_dz"
        grad_out = sheet.map_computed(
            target,
            "each window's gradient goes to its winner only: Σ over the windows holding the pixel of "
            "IF(winner = this tap, ∂L/∂out, 0)",
            "backward",
            shapes["z"],
            routed,
            ("n", "c"),
            indices=part(shapes["z"]),
        )
        sheet.top += 1
    if act is not None and a_maps is not None:
        kind, slope = act.layer.kind, act.layer.slope  # type: ignore[attr-defined]
        upstream_a, a_cells = grad_out, a_maps
        grad_out = sheet.map_computed(
            f"{name}.dL_dz",
            f"∂L/∂z = ∂L/∂a ⊙ f′(z), {fx.ACTIVATION_EQUATIONS[kind][1]}",
            "backward",
            shapes["z"],
            lambda a, o, i, j: fx.times_derivative(
                kind, upstream_a.cell(a, o, i, j), z_maps.cell(a, o, i, j), a_cells.cell(a, o, i, j), slope
            ),
            ("n", "o"),
            indices=part(shapes["z"]),
        )
        sheet.top += 1
    dz_maps = grad_out

    # δ̂: ∂L/∂z dilated by the stride (s − 1 zeros between entries), zero-padded by k − 1 before and
    # enough after to give every pixel of x̃ a full window
    def dhat_body(a: int, o: int, r: int, q: int) -> str:
        i, i_rem = divmod(r - (kh - 1), sh)
        j, j_rem = divmod(q - (kw - 1), sw)
        if r >= kh - 1 and q >= kw - 1 and not i_rem and not j_rem and i < ho and j < wo:
            return dz_maps.cell(a, o, i, j)
        return "0"

    dhat = sheet.map_computed(
        None,
        f"δ̂ = ∂L/∂z dilated by s = ({sh}, {sw}) and zero-padded by k − 1 = ({kh - 1}, {kw - 1}): "
        "what the full correlation slides over (not a term)",
        "backward",
        shapes["dhat"],
        dhat_body,
        ("n", "o"),
    )
    sheet.top += 1

    def dw_body(o: int, c: int, u: int, v: int) -> str:
        g = o // o_g
        rows, cols = (ho - 1) * sh + 1, (wo - 1) * sw + 1
        if sh == 1 and sw == 1:  # δ itself, against x̃ shifted by the tap (u, v)
            return _sum(
                [
                    f"SUMPRODUCT({dz_maps.window(a, o, 0, 0, ho, wo)},"
                    f"{xp_maps.window(a, g * c_g + c, u, v, ho, wo)})"
                    for a in range(n)
                ]
            )
        return _sum(  # the stride-dilated δ (the core of δ̂) against the same span of x̃
            [
                f"SUMPRODUCT({dhat.window(a, o, kh - 1, kw - 1, rows, cols)},"
                f"{xp_maps.window(a, g * c_g + c, u, v, rows, cols)})"
                for a in range(n)
            ]
        )

    def db_body(_a: int, _b: int, _h: int, o: int) -> str:
        return _sum([f"SUM({dz_maps.window(a, o, 0, 0, ho, wo)})" for a in range(n)])

    dw_equation = (
        "Σ_n SUMPRODUCT(∂L/∂z[n,o], x̃[n,c] shifted by (u, v)): a sum over the windows of δ × the "
        "pixel tap (u, v) saw"
    )
    db_maps: Maps | None = None
    if note is None:
        dw_maps = sheet.map_computed(
            f"{name}.dL_dW", f"∂L/∂W[o,c,u,v] = {dw_equation}", "backward", shapes["W"], dw_body, ("o", "c")
        )
        sheet.top += 1
        if conv.bias:
            db_maps = sheet.map_computed(
                f"{name}.dL_db",
                "∂L/∂b[o] = Σ_n SUM(∂L/∂z[n,o])",
                "backward",
                (1, 1, 1, c_out),
                db_body,
                ("", ""),
            )
            sheet.top += 1
    else:
        dw_maps, db_maps = _batch_gradients(
            sheet, name, batch, shapes["W"], dw_body, db_body if conv.bias else None
        )

    rot = sheet.map_computed(
        None,
        "rot180(W)[o,c,u,v] = W[o,c,kH−1−u,kW−1−v]: the flipped kernel (not a term)",
        "backward",
        shapes["W"],
        lambda o, c, u, v: w_maps.cell(o, c, kh - 1 - u, kw - 1 - v),
        ("o", "c"),
    )
    sheet.top += 1

    def dx_body(a: int, c: int, hh: int, ww: int) -> str:
        g, local = divmod(c, c_g)
        return _sum(
            [
                f"SUMPRODUCT({dhat.window(a, o, hh + ph, ww + pw, kh, kw)},"
                f"{rot.window(o, local, 0, 0, kh, kw)})"
                for o in range(g * o_g, (g + 1) * o_g)
            ]
        )

    sheet.map_computed(
        "input.dL_dx",
        "∂L/∂x[n,c,h,w] = Σ_o SUMPRODUCT(δ̂[n,o] window at (h + p, w + p), rot180(W)[o,c]): the full "
        "correlation with the flipped kernel, padding cropped",
        "backward",
        shapes["x"],
        dx_body,
        ("n", "c"),
        indices=part(shapes["x"]),
    )
    sheet.top += 1

    # --- clipping and the update ---
    params_cells: dict[str, Cells] = {f"{name}.W": w_maps}
    grads: dict[str, Cells] = {f"{name}.W": dw_maps}
    if b_maps is not None and db_maps is not None:
        params_cells[f"{name}.b"], grads[f"{name}.b"] = b_maps, db_maps
    if rule.clip is not None:
        grads = clip_blocks(sheet, rule.clip, table, grads, hyper)
    update_blocks(sheet, captured, optimizer, rule, table, params_cells, grads, hyper, scalars=False)
    return grid
