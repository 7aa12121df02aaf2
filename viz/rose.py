"""ROSE orderings (Su & Wang, arXiv 2603.05878; algorithms.md §5): column losses inside each block,
block losses against the ρ test, the processing order; across the model, which layers were
reordered and what that did to the error against SparseGPT.

Column loss ℓ_j = Σ_rows of the pre-pruned scores in column j, block loss β_b = Σ ℓ_j over the
block, ρ = (max β − min β) / max β; ρ > 0.5 ⇒ blocks by descending β, columns by descending ℓ.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from .layers import layer_grid
from .style import DENSE, METHOD_COLORS, NEUTRAL, _layout, empty, f32

ROSE = METHOD_COLORS["rose"]
ROSE_LIGHT = "#f1a9d3"


def rose_columns(column_losses, *, blocksize: int = 128) -> go.Figure:
    """Column losses with each block's columns sorted descending (ROSE's order inside a block);
    blocks stay in their original order, alternately shaded."""
    title = "ROSE column losses, sorted within each block"
    loss = f32(column_losses).ravel()
    if loss.size == 0 or blocksize < 1:
        return empty(title, "no column losses (ROSE not run on this layer?)")
    block = np.arange(loss.size) // blocksize
    order = np.lexsort((-loss, block))  # by block, then by descending loss
    cd = np.stack([order, block, np.arange(loss.size) % blocksize], -1).astype(np.int32)
    fig = go.Figure(
        go.Bar(
            x=np.arange(loss.size, dtype=np.int32),
            y=loss[order],
            customdata=cd,
            marker={
                "color": (block % 2).astype(np.uint8),
                "colorscale": [[0, ROSE], [1, ROSE_LIGHT]],
                "cmin": 0,
                "cmax": 1,
                "line_width": 0,
            },
            hovertemplate="column %{customdata[0]} (block %{customdata[1]}, rank %{customdata[2]})"
            "<br>loss %{y:.4g}<extra></extra>",
        )
    )
    fig.update_layout(bargap=0)
    nb = int(block[-1]) + 1
    sub = (
        f"{loss.size} columns in {nb} block(s) of {blocksize}; inside each block the largest "
        "expected loss first; shading alternates by block"
    )
    return _layout(
        fig,
        title,
        subtitle=sub,
        legend=False,
        x="position (blocks in original order)",
        y="column loss ℓ_j (sum of pre-pruned scores)",
    )


def rose_blocks(block_losses, rho: float | None = None, *, threshold: float = 0.5) -> go.Figure:
    """Block losses β_b with the ρ test drawn: ρ > threshold exactly when the smallest block lies
    below (1 − threshold)·max β, the dashed line; the bars carry their processing rank."""
    beta = f32(block_losses).ravel()
    if beta.size == 0 or not np.isfinite(beta).all() or beta.max() <= 0:
        return empty("ROSE block losses", "no positive block losses to draw")
    rho = float((beta.max() - beta.min()) / beta.max()) if rho is None else float(rho)
    reorder = rho > threshold
    rank = np.empty(beta.size, np.int32)
    rank[np.argsort(-beta, kind="stable") if reorder else np.arange(beta.size)] = range(beta.size)
    fig = go.Figure(
        go.Bar(
            x=np.arange(beta.size, dtype=np.int32),
            y=beta,
            customdata=rank + 1,
            marker_color=ROSE,
            name="block loss β_b",
            texttemplate="%{customdata}" if beta.size <= 32 else None,
            textposition="outside",
            cliponaxis=False,
            hovertemplate="block %{x}: β %{y:.4g}<br>processed #%{customdata}<extra></extra>",
        )
    )
    ends = f32([-0.5, beta.size - 0.5])
    level = (1 - threshold) * float(beta.max())
    fig.add_scatter(
        x=ends,
        y=f32([beta.max()] * 2),
        mode="lines",
        name="max β",
        line={"color": DENSE, "width": 1},
        hoverinfo="skip",
    )
    fig.add_scatter(
        x=ends,
        y=f32([level] * 2),
        mode="lines",
        line={"color": DENSE, "dash": "dash"},
        name=f"(1 − {threshold:g})·max β: reorder if the smallest block is below",
        hovertemplate="%{y:.4g}<extra></extra>",
    )
    verdict = "blocks reordered by descending loss" if reorder else "order kept (plain SparseGPT)"
    title = f"ROSE block losses: ρ = {rho:.3f} {'>' if reorder else '≤'} {threshold:g}, {verdict}"
    return _layout(
        fig,
        title,
        x="block (original order)",
        y="block loss β_b",
        subtitle="ρ = (max β − min β) / max β; number on a bar = its processing rank",
    )


def rose_order(order) -> go.Figure:
    """Original column index at each processing step; the dashed diagonal is left-to-right."""
    order = np.asarray(order).ravel()
    if order.size == 0:
        return empty("ROSE processing order", "no order (ROSE not run on this layer?)")
    moved = int(np.count_nonzero(order != np.arange(order.size)))
    fig = go.Figure(
        go.Scatter(
            x=np.arange(order.size, dtype=np.int32),
            y=order.astype(np.int32),
            mode="markers",
            marker={"color": ROSE, "size": 3},
            name="ROSE order",
            hovertemplate="step %{x}: column %{y}<extra></extra>",
        )
    )
    fig.add_scatter(
        x=f32([0, order.size - 1]),
        y=f32([0, order.size - 1]),
        mode="lines",
        line={"color": DENSE, "dash": "dash", "width": 1},
        name="original order",
        hoverinfo="skip",
    )
    sub = (
        f"{moved} of {order.size} columns processed out of their original place"
        if moved
        else "identity order: the layer was not reordered"
    )
    return _layout(
        fig,
        "ROSE processing order vs original column index",
        subtitle=sub,
        x="processing step",
        y="original input column",
    )


def rose_model(
    rho: dict[str, float], reordered: dict[str, bool], *, threshold: float = 0.5
) -> go.Figure:
    """ρ of every layer, blocks × linear types: grey below the threshold, ROSE-coloured above it;
    "↻" marks the layers that were reordered."""
    flags = {k: bool(reordered.get(k, v > threshold)) for k, v in rho.items() if v is not None}
    return layer_grid(
        rho,
        title="ROSE ρ per layer (↻ = reordered)",
        label="ρ",
        fmt=".3f",
        cell=".2f",
        zmin=0,
        zmax=1,
        colorscale=[[0, "#bdbdbd"], [threshold, NEUTRAL], [1, ROSE]],
        notes={k: "reordered" if f else "original order (SparseGPT)" for k, f in flags.items()},
        marks={k: " ↻" for k, f in flags.items() if f},
        subtitle=f"{sum(flags.values())} of {len(flags)} layers reordered (ρ > {threshold:g})",
    )


def rose_error_ratio(ratio: dict[str, float]) -> go.Figure:
    """ROSE's reconstruction error divided by SparseGPT's, per layer: 1 = equal, below 1 = ROSE
    lower (ROSE-coloured), above 1 = ROSE higher (grey)."""
    good = {k: float(v) for k, v in ratio.items() if v is not None and np.isfinite(v) and v > 0}
    vals = np.array(list(good.values()))
    span = max(float(np.abs(vals - 1).max()), 1e-3) if vals.size else 1.0
    sub = (
        f"below 1 = ROSE lower: {np.count_nonzero(vals < 1)} of {vals.size} layers; geometric "
        f"mean {np.exp(np.log(vals).mean()):.4f}"
        if vals.size
        else ""
    )
    return layer_grid(
        good,
        title="ROSE / SparseGPT reconstruction error per layer",
        label="error ROSE / SparseGPT",
        fmt=".4f",
        cell=".3f",
        zmin=1 - span,
        zmax=1 + span,
        colorscale=[[0, ROSE], [0.5, NEUTRAL], [1, DENSE]],
        subtitle=sub,
    )
