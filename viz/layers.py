"""The whole model: a blocks × linear-types grid of any per-layer value (the model map, and the
ROSE and refinement per-layer views build on it), per-block error of many runs, perplexity bars and
the sparsity sweep."""

from __future__ import annotations

import math
import textwrap

import numpy as np
import plotly.graph_objects as go

from .style import (
    DENSE,
    HEAT,
    KEPT,
    PRUNED,
    _layout,
    empty,
    f32,
    kept_scale,
    line_styles,
    linear_types,
    log_axis,
    log_colorbar,
    method_color,
    split_layer,
)


def _finite(values: dict) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if v is not None and math.isfinite(v)}


def layer_grid(
    values: dict[str, float],
    *,
    title: str,
    label: str,
    fmt: str = ".4g",
    cell: str = ".2g",
    colorscale=HEAT,
    zmin=None,
    zmax=None,
    log: bool = False,
    notes: dict[str, str] | None = None,
    marks: dict[str, str] | None = None,
    subtitle: str = "",
) -> go.Figure:
    """Heatmap of blocks (rows, block 0 on top) × linear types (model order); each cell shows the
    value (`cell` format) and its `marks`, and hovers with the layer name, the value (`fmt`) and
    its `notes`; `log` colours by log10 for values spanning decades."""
    finite = _finite(values)
    if log and finite and min(finite.values()) <= 0:
        log = False
    if not finite:
        return empty(title, f"no {label} to draw")
    types, short = linear_types(finite)
    blocks = sorted({split_layer(n)[0] for n in finite})
    z = np.full((len(blocks), len(types)), np.nan, np.float32)
    text, hover = np.full(z.shape, "", object), np.full(z.shape, "", object)
    for name, v in finite.items():
        b, t = split_layer(name)
        i, j = blocks.index(b), types.index(t)
        z[i, j], text[i, j] = v, f"{v:{cell}}" + (marks or {}).get(name, "")
        hover[i, j] = f"{name}<br>{label}: {v:{fmt}}" + (f"<br>{notes[name]}" if notes else "")
    vals = list(finite.values())
    short_label = "<br>".join(textwrap.wrap(label, 16))
    colour, bar = z, {"title": short_label, "tickformat": ".0%" if "%" in fmt else None}
    if log:
        colour, bar = f32(np.log10(z)), log_colorbar(*np.log10([min(vals), max(vals)]), short_label)
    fig = go.Figure(
        go.Heatmap(
            z=colour,
            x=[short[t] for t in types],
            y=np.array(blocks, np.int32),
            text=text,
            hovertext=hover,
            texttemplate="%{text}" if z.size <= 400 else None,
            colorscale=colorscale,
            zmin=zmin,
            zmax=zmax,
            colorbar=bar,
            xgap=1,
            ygap=1,
            hovertemplate="%{hovertext}<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed", dtick=1 if len(blocks) <= 40 else None)
    sub = subtitle or f"{len(finite)} layers"
    sub += f"; mean {np.mean(vals):{fmt}}, min {min(vals):{fmt}}, max {max(vals):{fmt}}"
    return _layout(
        fig,
        title,
        subtitle=sub,
        x="linear",
        y="block",
        legend=False,
        height=max(350, 140 + 16 * len(blocks)),
    )


def model_map(values: dict[str, float], *, metric: str = "sparsity", title: str = "") -> go.Figure:
    """Blocks × linear types coloured by "sparsity" (pruned fraction, white = the model mean) or
    "error" (relative reconstruction error, log colour when it spans more than 10×); any other
    metric name is drawn on a plain colour scale."""
    label = {"sparsity": "sparsity", "error": "relative error"}.get(metric, metric)
    title = title or f"Model map: {label} of every pruned linear"
    vals = list(_finite(values).values())
    if metric == "sparsity":
        scale = kept_scale(float(np.mean(vals)) if vals else 0.5, low=KEPT, high=PRUNED)
        return layer_grid(
            values,
            title=title,
            label=label,
            fmt=".2%",
            cell=".0%",
            zmin=0,
            zmax=1,
            colorscale=scale,
            subtitle="white = the model's mean sparsity",
        )
    log = metric == "error" and bool(vals) and min(vals) > 0 and max(vals) > 10 * min(vals)
    return layer_grid(values, title=title, label=label, log=log)


def block_errors(
    runs: dict[str, list[float]], *, log: bool = True, relative: bool = False
) -> go.Figure:
    """Per-block output error of each run, one line per run.

    relative=False: the runner's block MSE (sequential mode, pruned inputs); relative=True:
    ‖dense − pruned‖² / ‖dense‖² of each block fed the dense inputs (any mode)."""
    what = "relative error" if relative else "MSE"
    title = "Reconstruction error per block"
    runs = {k: f32(v) for k, v in runs.items() if v is not None and len(v)}
    if not runs:
        return empty(title, "no block errors: they are measured in the sequential mode only")
    fig = go.Figure()
    for (name, err), style in zip(runs.items(), line_styles(list(runs))):
        fig.add_scatter(
            x=np.arange(err.size, dtype=np.int32),
            y=err,
            name=name,
            line=style,
            mode="lines+markers",
            marker={"size": 5},
            hovertemplate=f"{name}<br>block %{{x}}: {what} %{{y:.4g}}<extra></extra>",
        )
    logy = log and all(v.min() > 0 for v in runs.values())
    log_axis(fig, "y", logy)
    sub = (
        "‖dense − pruned‖² / ‖dense‖² of each block's output, both fed the dense inputs"
        if relative
        else "mean squared difference of each block's output, dense vs pruned, calibration inputs"
    )
    y = "relative output error" if relative else "block output MSE"
    return _layout(fig, title, subtitle=sub + ("; log scale" if logy else ""), x="block", y=y)


def perplexity_bars(dense: float | None, runs: dict[str, float]) -> go.Figure:
    """Dense and pruned perplexity per run, value on each bar; log-y when the spread exceeds 10×."""
    title = "Perplexity: dense vs pruned"
    bars = ({"dense": dense} if dense is not None else {}) | {**runs}
    good = {k: v for k, v in _finite(bars).items() if v > 0}
    if not good:
        return empty(title, "no finite perplexity to draw")
    logy = max(good.values()) > 10 * min(good.values())
    colors = [DENSE if k == "dense" else method_color(k) for k in good]
    fig = go.Figure(
        go.Bar(
            x=list(good),
            y=f32(list(good.values())),
            marker_color=colors,
            texttemplate="%{y:.2f}",
            textposition="outside",
            cliponaxis=False,
            hovertemplate="%{x}<br>perplexity %{y:.4g}<extra></extra>",
        )
    )
    log_axis(fig, "y", logy)
    sub = "lower is better" + ("; log scale" if logy else "")
    if bad := [k for k in bars if k not in good]:
        sub += "; not finite (diverged): " + ", ".join(map(str, bad))
    return _layout(fig, title, subtitle=sub, y="perplexity (evaluation text)", legend=False)


def sparsity_sweep(
    curves: dict[str, list[tuple[float, float]]],
    *,
    dense: float | None = None,
    log: bool | None = None,
) -> go.Figure:
    """Perplexity against sparsity, one line per method, dense as a dashed line; log-y when the
    perplexities span more than 10× (where they explode), or as `log` says."""
    title = "Sparsity sweep: perplexity vs sparsity"
    pts = {
        k: sorted((float(s), float(p)) for s, p in v if math.isfinite(p) and p > 0)
        for k, v in curves.items()
    }
    pts = {k: v for k, v in pts.items() if v}
    if not pts:
        return empty(title, "no finite points to draw")
    ys = [p for v in pts.values() for _, p in v] + ([dense] if dense else [])
    logy = max(ys) > 10 * min(ys) if log is None else log
    fig = go.Figure()
    for (name, v), style in zip(pts.items(), line_styles(list(pts))):
        fig.add_scatter(
            x=f32([s for s, _ in v]),
            y=f32([p for _, p in v]),
            name=name,
            line=style,
            mode="lines+markers",
            hovertemplate=f"{name}<br>sparsity %{{x:.1%}}: perplexity %{{y:.4g}}<extra></extra>",
        )
    if dense:
        xs = [s for v in pts.values() for s, _ in v]
        fig.add_scatter(
            x=f32([min(xs), max(xs)]),
            y=f32([dense, dense]),
            mode="lines",
            name=f"dense {dense:.2f}",
            line={"color": DENSE, "dash": "dash"},
            hovertemplate="dense perplexity %{y:.4g}<extra></extra>",
        )
    log_axis(fig, "y", logy)
    fig.update_xaxes(tickformat=".0%")
    sub = "log scale" if logy else "linear scale"
    if dropped := sum(map(len, curves.values())) - sum(map(len, pts.values())):
        sub += f"; {dropped} diverged (non-finite) points not drawn"
    return _layout(
        fig,
        title,
        subtitle=sub,
        x="sparsity (share of weights pruned)",
        y="perplexity (evaluation text)",
    )
