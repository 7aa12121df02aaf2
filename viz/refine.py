"""Mask refinement: the SparseSwaps objective per iteration and its error reduction per layer
(Zimmer et al., arXiv 2512.10922); LLM-Barber's swaps per layer and block loss before/after the
rebuild (Su et al., arXiv 2408.10631)."""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go

from .layers import layer_grid
from .style import (
    DENSE,
    METHOD_COLORS,
    NEUTRAL,
    PALETTE,
    _layout,
    empty,
    f32,
    linear_types,
    log_axis,
    split_layer,
)


def swap_trace(
    traces: dict[str, list[float]], *, relative: bool = True, max_points: int = 20_000
) -> go.Figure:
    """Objective (w⊙p)ᵀH(w⊙p) per iteration, one line per layer, coloured by linear type; with
    `relative` (and every warm start > 0) each line is divided by its warm-start value so that all
    layers share one axis. Beyond `max_points` in all, every k-th iteration is drawn (and the last)."""
    title = "SparseSwaps objective per iteration"
    traces = {k: f32(v) for k, v in traces.items() if v is not None and len(v)}
    if not traces:
        return empty(title, "no iteration traces (SparseSwaps not run?)")
    types, short = linear_types(traces)
    rel = relative and all(v[0] > 0 for v in traces.values())
    step = max(1, -(-sum(v.size for v in traces.values()) // max_points))
    keep = {n: np.unique(np.r_[0 : v.size : step, v.size - 1]) for n, v in traces.items()}
    fig = go.Figure()
    for i, t in enumerate(types):  # one trace per type, layers separated by NaN gaps
        names = sorted((n for n in traces if split_layer(n)[1] == t), key=split_layer)
        parts = [(keep[n], split_layer(n)[0], traces[n]) for n in names]
        x = np.concatenate([np.append(it, it[-1]) for it, _, _ in parts]).astype(np.int32)
        raw = np.concatenate([np.append(v[it], np.nan) for it, _, v in parts])
        block = np.concatenate([np.full(it.size + 1, b) for it, b, _ in parts])
        start = np.concatenate([np.full(it.size + 1, v[0]) for it, _, v in parts])
        fig.add_scatter(
            x=x,
            y=f32(raw / start if rel else raw),
            customdata=np.stack([raw, block], -1).astype(np.float32),
            mode="lines",
            name=short[t],
            opacity=0.7,
            line={"color": PALETTE[i % len(PALETTE)], "width": 1},
            hovertemplate=f"%{{customdata[1]}}.{t}<br>iteration %{{x}}: objective "
            "%{customdata[0]:.4g}" + (" (%{y:.2%} of warm start)" * rel) + "<extra></extra>",
        )
    final = [v[-1] / v[0] for v in traces.values() if v[0] > 0]
    thin = f"; one point every {step} iterations (and the last)" if step > 1 else ""
    sub = f"{len(traces)} layers{thin}"
    if final:
        sub += f"; final / warm start: median {np.median(final):.1%}, best {min(final):.1%}"
    if rel:
        fig.update_yaxes(tickformat=".0%")
    return _layout(
        fig,
        title,
        subtitle=sub,
        x="iteration (0 = warm start)",
        y="objective / warm start" if rel else "objective (w⊙p)ᵀH(w⊙p)",
    )


def error_reduction(values: dict[str, float]) -> go.Figure:
    """Per-layer error reduction against the warm start, in percent: 100·(1 − after / before)."""
    vals = [float(v) for v in values.values() if v is not None and math.isfinite(v)]
    top = max([abs(v) for v in vals] + [1e-9])
    low = -top if min(vals, default=0) < 0 else 0  # diverging only when some layer got worse
    scale = [[0, NEUTRAL], [1, METHOD_COLORS["sparseswaps"]]]
    scale = [[0, DENSE], [0.5, NEUTRAL], scale[1]] if low else scale
    return layer_grid(
        values,
        title="SparseSwaps error reduction per layer (%)",
        label="error reduction vs warm start (%)",
        fmt=".2f",
        cell=".1f",
        zmin=low,
        zmax=top,
        colorscale=scale,
        subtitle="higher = the swaps removed more of the warm start's error",
    )


def barber_swaps(swaps: dict[str, int]) -> go.Figure:
    """Number of pruned↔kept swaps LLM-Barber made in each layer (sparsity is unchanged)."""
    return layer_grid(
        {k: v for k, v in swaps.items() if v is not None},
        title="LLM-Barber swaps per layer",
        label="swaps",
        fmt=",.0f",
        cell=".0f",
        zmin=0,
        colorscale=[[0, NEUTRAL], [1, METHOD_COLORS["barber"]]],
        subtitle=f"{sum(v for v in swaps.values() if v):,.0f} swaps in all; each "
        "regrows one weight and prunes another",
    )


def barber_block_loss(before: list[float], after: list[float]) -> go.Figure:
    """Block reconstruction loss with the warm-start mask and after the Barber rebuild."""
    title = "LLM-Barber block loss before and after the rebuild"
    before, after = (f32([] if v is None else v).ravel() for v in (before, after))
    if before.size == 0 and after.size == 0:
        return empty(title, "no block losses to draw")
    fig = go.Figure()
    for name, v, line in (
        ("before (warm start)", before, {"color": DENSE, "dash": "dash"}),
        ("after rebuild", after, {"color": METHOD_COLORS["barber"]}),
    ):
        if v.size:
            fig.add_scatter(
                x=np.arange(v.size, dtype=np.int32),
                y=v,
                name=name,
                line=line,
                mode="lines+markers",
                hovertemplate=f"{name}<br>block %{{x}}: loss %{{y:.4g}}<extra></extra>",
            )
    both = np.concatenate([before, after])
    logy = bool(both.min() > 0 and both.max() > 10 * both.min())
    log_axis(fig, "y", logy)
    sub = "log scale" if logy else "linear scale"
    if before.size == after.size and before.sum() > 0:
        sub += f"; total change {after.sum() / before.sum() - 1:+.1%}"
    return _layout(
        fig,
        title,
        subtitle=sub,
        x="block (attention, then MLP, of each layer)",
        y="block output MSE",
    )
