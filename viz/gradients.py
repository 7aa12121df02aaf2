"""Gradient patterns (GBLM, Das et al., arXiv 2311.04902): the pooled |∇W| map, the two score terms
S = |W|·‖X_j‖ + |W|·|G| side by side on one log colour scale, and the structure index of several
methods' masks per linear type (1.0 = no more structure than a random mask with the same counts)."""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .style import (
    DENSE,
    HEAT,
    _layout,
    empty,
    f32,
    log_colorbar,
    matrix_axes,
    method_color,
    pool,
    tile_hover,
)


def _log_pool(matrix, max_cells: int) -> tuple | None:
    """Pooled mean |x|: (log10 for colour, customdata with the tile and the real value, hover
    text, row edges, column edges)."""
    m = np.asarray(matrix)
    if m.ndim != 2 or m.size == 0:
        return None
    mean, re, ce = pool(np.abs(m), max_cells)
    with np.errstate(divide="ignore", invalid="ignore"):
        colour = f32(np.where(mean > 0, np.log10(mean), np.nan))
    cd, where = tile_hover(re, ce, mean)
    return colour, cd, where, re, ce


def grad_heatmap(grad, *, max_cells: int = 128 * 128) -> go.Figure:
    """Mean |∇W| of each tile, log colour scale."""
    title = "Gradient magnitude |∇W| (pooled)"
    got = _log_pool(grad, max_cells)
    if got is None or not np.isfinite(got[0]).any():
        return empty(title, "no gradient to draw (all zero, or not collected)")
    colour, cd, where, re, ce = got
    lo, hi = float(np.nanmin(colour)), float(np.nanmax(colour))
    fig = go.Figure(
        go.Heatmap(
            z=colour,
            x=ce.astype(np.int32),
            y=re.astype(np.int32),
            customdata=cd,
            colorscale=HEAT,
            colorbar=log_colorbar(lo, hi, "mean |∇W|"),
            hovertemplate=where + "<br>mean |∇W| %{customdata[4]:.4g}<extra></extra>",
        )
    )
    matrix_axes(fig)
    sub = (
        f"{np.shape(grad)[0]}×{np.shape(grad)[1]} weights; a cell = mean over up to "
        f"{np.diff(re).max()}×{np.diff(ce).max()} weights; log colour"
    )
    return _layout(fig, title, subtitle=sub, legend=False)


def score_terms(activation_term, gradient_term, *, max_cells: int = 128 * 128) -> go.Figure:
    """GBLM's two score terms |W|·‖X_j‖ and |W|·|G|, pooled, on one shared log colour scale
    (each panel gets half of `max_cells`)."""
    title = "GBLM score terms: activation vs gradient"
    a, g = np.asarray(activation_term), np.asarray(gradient_term)
    if a.shape != g.shape or a.ndim != 2 or a.size == 0:
        return empty(title, "the two terms must be 2-D and of the same shape")
    pools = [_log_pool(t, max(max_cells // 2, 1)) for t in (a, g)]
    finite = np.concatenate([p[0][np.isfinite(p[0])] for p in pools])
    if finite.size == 0:
        return empty(title, "both terms are zero everywhere")
    lo, hi = float(finite.min()), float(finite.max())
    names = ("activation term |W|·‖X_j‖", "gradient term |W|·|G|")
    fig = make_subplots(rows=1, cols=2, subplot_titles=names, horizontal_spacing=0.08)
    for i, (colour, cd, where, re, ce) in enumerate(pools):
        fig.add_heatmap(
            z=colour,
            x=ce.astype(np.int32),
            y=re.astype(np.int32),
            customdata=cd,
            row=1,
            col=i + 1,
            coloraxis="coloraxis",
            hovertemplate=f"{names[i]}<br>{where}<br>mean %{{customdata[4]:.4g}}<extra></extra>",
        )
    bar = log_colorbar(lo, hi, "mean term")
    fig.update_layout(coloraxis={"colorscale": HEAT, "cmin": lo, "cmax": hi, "colorbar": bar})
    matrix_axes(fig, equal=False)
    fig.update_yaxes(title_text="", col=2)
    share = float(np.mean(np.abs(g) > np.abs(a)))
    ratio = float(np.abs(g).sum(dtype=np.float64) / max(np.abs(a).sum(dtype=np.float64), 1e-30))
    return _layout(
        fig,
        title,
        legend=False,
        top=30,
        subtitle=f"shared log colour scale; the gradient term "
        f"is larger for {share:.1%} of weights; sum(gradient) / sum(activation) = {ratio:.3g}",
    )


def structure_bars(index: dict[str, dict[str, float]]) -> go.Figure:
    """Structure index of each method's mask per linear type, grouped bars; 1.0 = chance."""
    title = "Mask structure index per linear type"
    index = {
        m: {t: float(v) for t, v in d.items() if v is not None and math.isfinite(v)}
        for m, d in index.items()
    }
    index = {m: d for m, d in index.items() if d}
    if not index:
        return empty(title, "no structure index to draw")
    types = list(dict.fromkeys(t for d in index.values() for t in d))
    fig = go.Figure()
    for method, d in index.items():
        fig.add_bar(
            x=types,
            y=f32([d.get(t, np.nan) for t in types]),
            name=method,
            marker_color=method_color(method),
            hovertemplate=f"{method}<br>%{{x}}: %{{y:.3f}}<extra></extra>",
        )
    chance = "1.0 = chance (a random mask with the same counts)"
    fig.add_hline(y=1, line={"color": DENSE, "dash": "dash"}, showlegend=True, name=chance)
    fig.update_layout(barmode="group")
    return _layout(
        fig,
        title,
        x="linear type",
        y="structure index (× random mask)",
        subtitle="how much more structured than a random mask with the same counts; "
        "1.0 = no more structure than chance",
    )
