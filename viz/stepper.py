"""The toy-layer stepper (algorithms.md §4): one state of SparseGPT's column-by-column walk (the
weights with the mask marked, the current column boxed, and the compensating update it spread over
the columns still to come), the error of every step with the running total, and the masks of
magnitude, Wanda and SparseGPT on the same toy side by side with their reconstruction errors.

Inputs are plain arrays and dicts (a state may be `pruning.stepper.StepState` or a dict with its
field names); toys are small, so every cell is drawn, up to `max_cells`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .style import DENSE, KEPT, METHOD_COLORS, PRUNED, _layout, empty, f32, matrix_axes

WEIGHTS = "BrBG"  # diverging, signed weights; not RdBu: blue and red mean kept and pruned here
UPDATES = "PiYG"  # diverging, the compensation
MAX_CELLS = 128 * 128
MARKS = (  # (status, legend name, marker) drawn over the weights
    (3, "pruned earlier", {"symbol": "x-thin", "size": 9, "line": {"color": PRUNED, "width": 2}}),
    (4, "pruned at this step", {"symbol": "x", "size": 15, "color": PRUNED}),
    (1, "chosen, not reached yet", {"symbol": "circle-open", "size": 11, "color": PRUNED}),
)
STATUS = (
    "not processed yet",
    "not processed yet; chosen to be pruned",
    "kept",
    "pruned earlier",
    "pruned at this step",
    "kept at this step",
)


def _fields(state) -> Mapping:
    """A state as a mapping: a dict as it is, a dataclass (StepState) by its attributes."""
    return state if isinstance(state, Mapping) else vars(state)


def _status(s: Mapping, shape: tuple[int, int]) -> np.ndarray:
    """(r, c) uint8 index into STATUS of every weight."""
    chosen = np.asarray(s.get("chosen", s["pruned"]), dtype=bool)
    done = np.broadcast_to(np.asarray(s["processed"], dtype=bool), shape)
    current = np.zeros(shape, dtype=bool)
    if s["column"] >= 0:
        current[:, s["column"]] = True
    code = np.where(done, np.where(chosen, 3, 2), np.where(chosen, 1, 0))
    code = np.where(current, np.where(chosen, 4, 5), code)
    return code.astype(np.uint8)


def _box(col: int, rows: int, where: dict) -> dict:
    """A black outline around column `col` of a rows-high matrix, on the subplot `where`."""
    return {
        "type": "rect",
        "x0": col - 0.5,
        "x1": col + 0.5,
        "y0": -0.5,
        "y1": rows - 0.5,
        "line": {"color": "black", "width": 3},
        **where,
    }


def _stacked_axes(fig: go.Figure, rows: int) -> None:
    """Matrix axes (row 0 on top) with square cells on each of `rows` stacked subplots; the column
    axis named on the last only."""
    matrix_axes(fig, equal=False)
    for i in range(1, rows + 1):
        fig.update_yaxes(scaleanchor=f"x{i if i > 1 else ''}", constrain="domain", row=i, col=1)
        fig.update_xaxes(constrain="domain", row=i, col=1)
        if i < rows:
            fig.update_xaxes(title_text="", row=i, col=1)


def _marks(fig: go.Figure, cells: np.ndarray, name: str, marker: dict) -> None:
    """Markers on the True cells of a mask (row 1 of the state figure); the heatmap keeps the hover."""
    rows, cols = np.nonzero(cells)
    fig.add_scatter(
        x=cols.astype(np.int32),
        y=rows.astype(np.int32),
        mode="markers",
        name=f"{name} ({rows.size})",
        marker=marker,
        hoverinfo="skip",
        row=1,
        col=1,
    )


def stepper_state(state, *, zmax: float | None = None, max_cells: int = MAX_CELLS) -> go.Figure:
    """One step: top, the weights after it (✕ pruned, a large ✕ pruned at this step, ◯ chosen but
    not reached yet; the processed column boxed); below, the update this step added to the columns
    not yet processed. zmax: the weight colour range (±), fixed across steps by the caller."""
    s = _fields(state)
    title = "SparseGPT stepper"
    W = np.asarray(s.get("weight", ()), dtype=np.float64)
    if W.ndim != 2 or not W.size or W.size > max_cells:
        return empty(title, f"needs a toy weight matrix of at most {max_cells:,} cells")
    rows, cols = W.shape
    step, col = int(s["step"]), int(s["column"])
    update = np.asarray(s["update"], dtype=np.float64)
    code = _status(s, W.shape)
    score = np.asarray(s.get("score", np.full(W.shape, np.nan)), dtype=np.float64)
    order = np.asarray(s.get("order", np.arange(cols)))
    at = np.empty(cols, np.float32)
    at[order] = np.arange(1, cols + 1)  # the step that processes each column
    before = W - update
    if col >= 0:
        before[:, col] += np.asarray(s["removed"], dtype=np.float64)
    cd = np.stack([score, np.broadcast_to(at, W.shape), before], -1).astype(np.float32)
    names = ["weights after this step", "update added to the columns not yet processed"]
    fig = make_subplots(rows=2, cols=1, subplot_titles=names, vertical_spacing=0.16)
    x, y = np.arange(cols, dtype=np.int32), np.arange(rows, dtype=np.int32)
    top = float(zmax) if zmax else float(max(np.abs(W).max(), 1e-12))
    fig.add_heatmap(
        z=f32(W),
        x=x,
        y=y,
        customdata=cd,
        text=np.array(STATUS)[code],
        zmin=-top,
        zmax=top,
        colorscale=WEIGHTS,
        xgap=1,
        ygap=1,
        colorbar={"title": "weight", "y": 0.79, "len": 0.42},
        hovertemplate="row %{y}, column %{x}: <b>%{text}</b><br>weight %{z:.6g} "
        "(before this step %{customdata[2]:.6g})<br>score w²/[H_F⁻¹]_qq %{customdata[0]:.6g}"
        "<br>processed at step %{customdata[1]}<extra></extra>",
        row=1,
        col=1,
    )
    span = float(max(np.abs(update).max(), 1e-12))
    fig.add_heatmap(
        z=f32(update),
        x=x,
        y=y,
        customdata=f32(W),
        zmin=-span,
        zmax=span,
        colorscale=UPDATES,
        xgap=1,
        ygap=1,
        colorbar={"title": "update", "y": 0.21, "len": 0.42},
        hovertemplate="row %{y}, column %{x}<br>update %{z:+.6g}<br>weight now "
        "%{customdata:.6g}<extra></extra>",
        row=2,
        col=1,
    )
    for code_, name, marker in MARKS:
        _marks(fig, code == code_, name, marker)
    if col >= 0:
        fig.update_layout(
            shapes=[_box(col, rows, {"xref": f"x{i}", "yref": f"y{i}"}) for i in ("", "2")]
        )
    _stacked_axes(fig, 2)
    n_new = int(np.count_nonzero(code == 4))
    n_all = n_new + int(np.count_nonzero(code == 3))
    if step == 0:
        title = f"SparseGPT stepper: start, {cols} columns to process"
    else:
        title = (
            f"Step {step} of {cols}: column {col}, {n_new} pruned, error {s['error']:.4g}, "
            f"running total {s['total']:.4g}"
        )
    sub = (
        f"{n_all} of {W.size} pruned so far; ½·tr(ΔW H ΔWᵀ) now {s.get('measured', np.nan):.4g}; "
        "box = this step's column"
    )
    if not np.array_equal(order, np.arange(cols)):
        sub += "; columns processed in a reordered sequence (ROSE)"
    return _layout(fig, title, subtitle=sub, height=640, top=20)


def stepper_errors(
    errors, totals, *, columns=None, pruned=None, measured=None, current: int | None = None
) -> go.Figure:
    """Bars: the OBS error of each step (Σ_rows (w−q)²/[H_F⁻¹]_qq / 2); line: the running total
    (right axis); dotted: the measured ½·tr(ΔW H ΔWᵀ) where given. `current` (a step, from 1)
    is highlighted."""
    title = "SparseGPT stepper: error per step"
    err, tot = f32(errors).ravel(), f32(totals).ravel()
    if not err.size or err.shape != tot.shape:
        return empty(title, "no steps (errors and totals of the same length)")
    n = err.size
    x = np.arange(1, n + 1, dtype=np.int32)
    colq = np.asarray(columns if columns is not None else x - 1).astype(np.int32)
    cnt = np.asarray(pruned if pruned is not None else np.zeros(n)).astype(np.int32)
    cd = np.stack([colq, cnt], -1).astype(np.int32)
    colour = np.where(x == (current or 0), DENSE, METHOD_COLORS["sparsegpt"])
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_bar(
        x=x,
        y=err,
        customdata=cd,
        name="error of the step",
        marker_color=colour.tolist(),
        hovertemplate="step %{x}: column %{customdata[0]}, %{customdata[1]} pruned<br>"
        "error %{y:.6g}<extra></extra>",
        secondary_y=False,
    )
    fig.add_scatter(
        x=x,
        y=tot,
        mode="lines+markers",
        name="running total",
        line={"color": PRUNED, "width": 2},
        hovertemplate="after step %{x}: total %{y:.6g}<extra></extra>",
        secondary_y=True,
    )
    if measured is not None and f32(measured).size == n:
        fig.add_scatter(
            x=x,
            y=f32(measured).ravel(),
            mode="lines",
            name="measured ½·tr(ΔW H ΔWᵀ)",
            line={"color": DENSE, "dash": "dot"},
            hovertemplate="after step %{x}: measured %{y:.6g}<extra></extra>",
            secondary_y=True,
        )
    fig.update_yaxes(title_text="error of the step", secondary_y=False, rangemode="tozero")
    fig.update_yaxes(
        title_text="running total", secondary_y=True, rangemode="tozero", showgrid=False
    )
    sub = f"{n} steps, total {float(tot[-1]):.4g}"
    if current:
        sub += f"; step {current} highlighted"
    return _layout(fig, title, subtitle=sub, x="step (one column each)")


def stepper_compare(
    results: Mapping[str, Mapping], *, weight=None, max_cells: int = MAX_CELLS
) -> go.Figure:
    """The masks of several methods on the same toy, one row each, error tr(ΔW H ΔWᵀ) and its share
    of tr(W H Wᵀ) in each title; `weight` (the toy's) adds the value before and after to the hover."""
    title = "The same toy, three ways: mask and reconstruction error"
    masks = {k: np.asarray(v["pruned"], dtype=bool) for k, v in results.items()}
    shapes = {m.shape for m in masks.values()}
    if not masks or len(shapes) != 1 or len(next(iter(shapes))) != 2:
        return empty(title, "needs masks of one toy, all of the same 2-D shape")
    shape = next(iter(shapes))
    if shape[0] * shape[1] > max_cells:
        return empty(title, f"needs a toy of at most {max_cells:,} cells")
    labels = [
        f"{k}: tr(ΔW H ΔWᵀ) = {float(v['error']):.4g} ({float(v['relative']):.2%} of tr(W H Wᵀ))"
        for k, v in results.items()
    ]
    fig = make_subplots(rows=len(masks), cols=1, subplot_titles=labels, vertical_spacing=0.12)
    x, y = np.arange(shape[1], dtype=np.int32), np.arange(shape[0], dtype=np.int32)
    before = None if weight is None else np.asarray(weight, dtype=np.float64)
    for i, (k, m) in enumerate(masks.items(), start=1):
        after = np.asarray(results[k].get("weight", np.full(shape, np.nan)), dtype=np.float64)
        ref = before if before is not None and before.shape == shape else np.full(shape, np.nan)
        fig.add_heatmap(
            z=(~m).astype(np.uint8),
            x=x,
            y=y,
            text=np.where(m, "pruned", "kept"),
            customdata=np.stack([ref, after], -1).astype(np.float32),
            zmin=0,
            zmax=1,
            xgap=1,
            ygap=1,
            colorscale=[[0, PRUNED], [0.5, PRUNED], [0.5, KEPT], [1, KEPT]],
            showscale=i == 1,
            colorbar={"tickvals": [0.25, 0.75], "ticktext": ["pruned", "kept"]},
            hovertemplate=f"{k}<br>row %{{y}}, column %{{x}}: <b>%{{text}}</b><br>weight "
            "%{customdata[0]:.6g} → %{customdata[1]:.6g}<extra></extra>",
            row=i,
            col=1,
        )
    _stacked_axes(fig, len(masks))
    best = min(results, key=lambda k: float(results[k]["error"]))
    sub = (
        f"{shape[0]}×{shape[1]} weights; lowest error: {best}. SparseGPT also updates the kept "
        "weights, which is why its error can be far lower for the same count"
    )
    return _layout(fig, title, subtitle=sub, legend=False, height=220 * len(masks) + 120, top=20)
