"""One layer's mask (True = pruned): pooled overview, full-resolution tile, row and column profiles,
score histogram with the cut-off; the four-category diff of two masks, the Jaccard agreement of many.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .style import (
    KEPT,
    NEUTRAL,
    ONLY_A,
    ONLY_B,
    PRUNED,
    _layout,
    empty,
    f32,
    kept_scale,
    log_axis,
    matrix_axes,
    method_color,
    pool,
    tile_hover,
)

CATEGORIES = ("kept by both", "pruned by both", "pruned only by {a}", "pruned only by {b}")
CAT_COLORS = (KEPT, PRUNED, ONLY_A, ONLY_B)


def _mask(pruned) -> np.ndarray | None:
    m = np.asarray(pruned, dtype=bool)
    return m if m.ndim == 2 and m.size else None


def _degenerate(m: np.ndarray) -> str:
    n = np.count_nonzero(m)
    return "" if 0 < n < m.size else ("; all weights pruned" if n else "; all weights kept")


def _window(shape, row0, col0, rows, cols, max_cells) -> tuple[slice, slice]:
    """The requested window clipped to the matrix and to at most `max_cells` cells."""
    r0, c0 = min(max(row0, 0), shape[0] - 1), min(max(col0, 0), shape[1] - 1)
    cols = max(1, min(cols, shape[1] - c0))
    rows = max(1, min(rows, shape[0] - r0, max_cells // cols))
    return slice(r0, r0 + rows), slice(c0, c0 + cols)


def mask_overview(pruned, *, max_cells: int = 128 * 128, title: str = "") -> go.Figure:
    """Pooled heatmap: colour = kept fraction of each tile, white = the layer's mean."""
    title = title or "Mask overview: kept fraction per tile"
    m = _mask(pruned)
    if m is None:
        return empty(title, "no mask to draw")
    kept, re, ce = pool(~m, max_cells)
    mean = 1 - np.count_nonzero(m) / m.size
    cd, where = tile_hover(re, ce)
    fig = go.Figure(
        go.Heatmap(
            z=kept,
            x=ce.astype(np.int32),
            y=re.astype(np.int32),
            customdata=cd,
            zmin=0,
            zmax=1,
            colorscale=kept_scale(mean),
            colorbar={"title": "kept", "tickformat": ".0%"},
            hovertemplate=where + "<br>kept %{z:.2%}<extra></extra>",
        )
    )
    matrix_axes(fig)
    sub = (
        f"{m.shape[0]}×{m.shape[1]} weights, {mean:.2%} kept; a cell = up to "
        f"{np.diff(re).max()}×{np.diff(ce).max()} weights; white = the layer mean"
    )
    return _layout(fig, title, subtitle=sub + _degenerate(m), legend=False)


def mask_tile(
    pruned,
    *,
    row0: int = 0,
    col0: int = 0,
    rows: int = 32,
    cols: int = 64,
    nm: tuple[int, int] | None = None,
    score=None,
    max_cells: int = 128 * 128,
) -> go.Figure:
    """Full-resolution window (at most `max_cells` cells); with nm=(n, m) black lines mark the
    M-groups and every group in the window is checked for exactly n pruned. `score` for the hover:
    the whole layer's, or just the window's (already cut out at row0, col0)."""
    m = _mask(pruned)
    if m is None:
        return empty("Mask tile", "no mask to draw")
    rs, cs = _window(m.shape, row0, col0, rows, cols, max_cells)
    w = m[rs, cs]
    hover = "row %{y}, column %{x}: <b>%{text}</b>"
    sc = None if score is None else np.asarray(score)
    if sc is not None and sc.shape == m.shape:  # the whole layer's scores: cut the window out
        sc = sc[rs, cs]
    elif sc is not None:  # already cut out, starting at (row0, col0)
        sc = sc[: w.shape[0], : w.shape[1]] if sc.ndim == 2 else None
    kw = {"customdata": f32(sc)} if sc is not None and sc.shape == w.shape else {}
    hover += "<br>score %{customdata:.4g}" if kw else ""
    fig = go.Figure(
        go.Heatmap(
            z=(~w).astype(np.uint8),
            x=np.arange(cs.start, cs.stop, dtype=np.int32),
            y=np.arange(rs.start, rs.stop, dtype=np.int32),
            text=np.where(w, "pruned", "kept"),
            zmin=0,
            zmax=1,
            xgap=1,
            ygap=1,
            colorscale=[[0, PRUNED], [0.5, PRUNED], [0.5, KEPT], [1, KEPT]],
            colorbar={"tickvals": [0.25, 0.75], "ticktext": ["pruned", "kept"]},
            hovertemplate=hover + "<extra></extra>",
            **kw,
        )
    )
    sub = f"rows {rs.start}–{rs.stop - 1}, columns {cs.start}–{cs.stop - 1}: {w.mean():.1%} pruned"
    if nm:
        n, g = nm
        y0, y1 = rs.start - 0.5, rs.stop - 0.5
        line = {"type": "line", "y0": y0, "y1": y1, "line": {"width": 2, "color": "black"}}
        starts = [c for c in range(cs.start + 1, cs.stop) if c % g == 0]  # group boundaries
        fig.update_layout(shapes=[line | {"x0": c - 0.5, "x1": c - 0.5} for c in starts])
        first, last = cs.start // g * g, min(m.shape[1], -(-cs.stop // g) * g)
        groups = m[rs, first : first + (last - first) // g * g].reshape(w.shape[0], -1, g).sum(-1)
        bad = np.count_nonzero(groups != n)
        sub += f"; {n}:{g} groups: " + (f"{bad} NOT exact" if bad else "every group exact")
    fig = _layout(
        fig, "Mask tile at full resolution (one cell = one weight)", subtitle=sub, legend=False
    )
    matrix_axes(fig)
    return fig


def mask_profiles(pruned, *, others: dict | None = None, label: str = "mask") -> go.Figure:
    """Kept fraction of each output row and of each input column, the mean dashed; `others`
    ({label: mask of the same layer}) overlays more masks, e.g. GBLM's against Wanda's."""
    masks = {k: _mask(v) for k, v in {label: pruned, **(others or {})}.items()}
    masks = {k: v for k, v in masks.items() if v is not None}
    if not masks:
        return empty("Kept fraction per row and per column", "no mask to draw")
    fig = make_subplots(rows=2, cols=1, vertical_spacing=0.18)
    for k, v in masks.items():
        color = KEPT if len(masks) == 1 else method_color(k)
        for row, (axis, what) in enumerate(((1, "row"), (0, "column")), start=1):
            prof = 1 - v.mean(axis=axis, dtype=np.float64)
            mode = "markers" if prof.size > 200 else "lines+markers"
            fig.add_scatter(
                x=np.arange(prof.size, dtype=np.int32),
                y=f32(prof),
                name=k,
                mode=mode,
                marker={"color": color, "size": 3, "opacity": 0.7},
                line={"color": color, "width": 1},
                legendgroup=k,
                showlegend=row == 1,
                row=row,
                col=1,
                hovertemplate=f"{k}<br>{what} %{{x}}: kept %{{y:.2%}}<extra></extra>",
            )
            fig.add_scatter(
                x=[0, prof.size - 1],
                y=f32([prof.mean()] * 2),
                mode="lines",
                line={"color": color, "dash": "dash"},
                showlegend=False,
                row=row,
                col=1,
                hovertemplate=f"{k} mean: %{{y:.2%}}<extra></extra>",
            )
    fig.update_yaxes(range=[-0.02, 1.02], tickformat=".0%")
    fig.update_yaxes(title_text="kept per row", row=1)
    fig.update_yaxes(title_text="kept per column", row=2)
    fig.update_xaxes(title_text="output row", row=1)
    fig.update_xaxes(title_text="input column", row=2)
    sub = "dashed = mean; a flat row profile = the same sparsity in every row (per-row methods)"
    return _layout(
        fig, "Kept fraction per row and per column", subtitle=sub, height=540, legend=len(masks) > 1
    )


def score_histogram(score, pruned, *, bins: int = 80, log: bool = True) -> go.Figure:
    """Stacked histogram of the pruned and kept scores, with the cut-off; log-x when the positive
    scores span more than two decades. Per-row or N:M selection has no single cut-off: then the
    median of the per-row cut-offs is drawn and the overlap is said."""
    title = "Score histogram: which scores were pruned"
    s, m = np.atleast_2d(f32(score)), np.atleast_2d(np.asarray(pruned, dtype=bool))
    if s.shape != m.shape or not np.isfinite(s).any():
        return empty(title, "no scores to draw (or their shape differs from the mask's)")
    s = s if np.isfinite(s).all() else np.where(np.isfinite(s), s, np.float32(np.nan))
    lo, hi = float(np.nanmin(s)), float(np.nanmax(s))
    if log and lo <= 0 < hi:
        lo = float(np.nanmin(np.where(s > 0, s, np.float32(np.nan))))
    logx = bool(log and lo > 0 and hi >= 100 * lo)
    lo = lo if logx else float(np.nanmin(s))
    with np.errstate(divide="ignore", invalid="ignore"):  # bin index of every score, one pass
        v, a, b = (np.log2(s), np.log2(lo), np.log2(hi)) if logx else (s - 0, lo, hi)
        width = (b - a) / bins if b > a else 1.0
        v -= np.float32(a)
        v *= np.float32(1 / width)
        show = v > -0.5  # NaN and, on a log axis, scores ≤ 0 fall out; lo itself (±1 ulp) stays
    code = np.clip(v, 0, bins - 1).astype(np.intp)  # intp: bincount takes it without a copy
    code[~show] = bins
    code *= 2
    code += m
    counts = np.bincount(code.ravel(), minlength=2 * bins + 2).reshape(-1, 2)[:bins]
    edges = a + width * np.arange(bins + 1)
    edges = 2**edges if logx else edges
    fig = go.Figure()
    for name, col, sel, color in (("pruned", 1, m, PRUNED), ("kept", 0, ~m, KEPT)):
        fig.add_scatter(
            x=f32(edges),
            y=np.append(counts[:, col], counts[-1, col]).astype(np.int32),
            customdata=f32(edges[1:]),
            name=f"{name} ({np.count_nonzero(sel):,})",
            mode="lines",
            line={"shape": "hv", "width": 0},
            fillcolor=color,
            stackgroup="h",
            hovertemplate=f"{name}: %{{y:,}} scores in [%{{x:.4g}}, "
            "%{customdata:.4g})<extra></extra>",
        )
    sub = "log score axis" if logx else "linear score axis"
    if hidden := np.count_nonzero(~show) - np.count_nonzero(np.isnan(s)):
        sub += f"; {hidden:,} scores ≤ 0 not shown"
    if m.any() and (~m).any():
        row_top = np.fmax.reduce(np.where(m, s, -np.inf), axis=-1)  # largest pruned per row
        row_low = np.fmin.reduce(np.where(m, np.inf, s), axis=-1)  # smallest kept per row
        if row_top.max() <= row_low.min():
            cut = float(row_top.max())
            what = f"cut-off = largest pruned score {cut:.4g}"
        else:  # selection per row or per N:M group: no global threshold exists
            cut = float(np.median(row_top[row_top > -np.inf]))
            what = f"median of the per-row cut-offs {cut:.4g}"
            sub += "; the cut-off is per row (or per N:M group), so kept and pruned scores overlap"
        fig.add_scatter(
            x=f32([cut, cut]),
            y=np.array([0, counts.sum(1).max()], np.int32),
            name=what,
            mode="lines",
            line={"color": "black", "dash": "dash"},
            hoverinfo="name",
        )
    log_axis(fig, "x", logx, power=True)
    return _layout(
        fig,
        title,
        subtitle=sub + _degenerate(m),
        x="score (the method's importance)",
        y="number of weights",
    )


def mask_diff(
    a,
    b,
    *,
    labels=("A", "B"),
    max_cells: int = 128 * 128,
    window: tuple[int, int, int, int] | None = None,
) -> go.Figure:
    """Kept by both / pruned by both / pruned only by A / only by B, with exact counts in the
    legend. Up to `max_cells` weights, or a (row0, col0, rows, cols) `window`, cell by cell;
    larger matrices pooled: colour = share pruned only by A minus share pruned only by B."""
    ma, mb, (la, lb) = _mask(a), _mask(b), labels
    title = f"Mask difference: {la} vs {lb}"
    if ma is None or mb is None or ma.shape != mb.shape:
        return empty(title, "the two masks must be 2-D and of the same shape")
    only_a, only_b = ma & ~mb, mb & ~ma
    n_a, n_b, n_both = (np.count_nonzero(x) for x in (only_a, only_b, ma & mb))
    counts = [ma.size - n_a - n_b - n_both, n_both, n_a, n_b]
    names = [c.format(a=la, b=lb) for c in CATEGORIES]
    fig = go.Figure()
    for name, n, color in zip(names, counts, CAT_COLORS):
        fig.add_scatter(
            x=[None],
            y=[None],
            mode="markers",
            name=f"{name}: {n:,} ({n / ma.size:.1%})",
            marker={"color": color, "size": 12, "symbol": "square"},
        )
    if window or ma.size <= max_cells:
        rs, cs = _window(ma.shape, *(window or (0, 0, *ma.shape)), max_cells)
        w = (ma[rs, cs] & mb[rs, cs]) + 2 * only_a[rs, cs] + 3 * only_b[rs, cs]
        w = w.astype(np.uint8)  # the category, 0..3, of every weight
        fig.add_heatmap(
            z=w,
            x=np.arange(cs.start, cs.stop, dtype=np.int32),
            y=np.arange(rs.start, rs.stop, dtype=np.int32),
            text=np.array(names)[w],
            zmin=-0.5,
            zmax=3.5,
            showscale=False,
            xgap=1,
            ygap=1,
            colorscale=[[q / 4 + e, c] for q, c in enumerate(CAT_COLORS) for e in (0, 0.25)],
            hovertemplate="row %{y}, column %{x}: %{text}<extra></extra>",
        )
        sub = f"one cell = one weight; rows {rs.start}–{rs.stop - 1}, columns {cs.start}–{cs.stop - 1}"
    else:
        share_a, re, ce = pool(only_a, max_cells)
        share_b = pool(only_b, max_cells)[0]
        size = np.outer(np.diff(re), np.diff(ce))
        cd, where = tile_hover(
            re,
            ce,
            np.rint(share_a * size).astype(np.int64),
            np.rint(share_b * size).astype(np.int64),
        )
        span = float(max(np.abs(share_a - share_b).max(), 1e-6))
        fig.add_heatmap(
            z=share_a - share_b,
            x=ce.astype(np.int32),
            y=re.astype(np.int32),
            customdata=cd,
            zmin=-span,
            zmax=span,
            colorscale=[[0, ONLY_B], [0.5, NEUTRAL], [1, ONLY_A]],
            colorbar={"title": f"only {la}<br>− only {lb}", "tickformat": ".0%"},
            hovertemplate=f"{where}<br>pruned only by {la}: %{{customdata[4]}}<br>"
            f"pruned only by {lb}: %{{customdata[5]}}<br>difference of shares "
            "%{z:+.2%}<extra></extra>",
        )
        sub = (
            f"pooled, a cell = up to {np.diff(re).max()}×{np.diff(ce).max()} weights; colour ="
            f" share pruned only by {la} − share pruned only by {lb}"
        )
    matrix_axes(fig)
    return _layout(fig, title, subtitle=sub)


def agreement_matrix(masks: dict[str, np.ndarray]) -> go.Figure:
    """Jaccard similarity |A∩B| / |A∪B| of the pruned sets of every pair of runs (one layer)."""
    title = "Agreement of pruned sets (Jaccard)"
    if not masks or len({np.shape(v) for v in masks.values()}) != 1:
        return empty(title, "needs masks of one layer, all of the same shape")
    names, bits = list(masks), [np.packbits(np.asarray(v, dtype=bool)) for v in masks.values()]
    jac = np.ones((len(names), len(names)), np.float32)
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            inter = np.bitwise_count(bits[i] & bits[j]).sum(dtype=np.int64)
            union = np.bitwise_count(bits[i] | bits[j]).sum(dtype=np.int64)
            jac[i, j] = jac[j, i] = inter / union if union else 1.0
    fig = go.Figure(
        go.Heatmap(
            z=jac,
            x=names,
            y=names,
            zmin=0,
            zmax=1,
            colorscale="Blues",
            texttemplate="%{z:.3f}",
            colorbar={"title": "Jaccard"},
            hovertemplate="%{y} vs %{x}: Jaccard %{z:.4f}<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed")
    p = float(np.mean([np.mean(v, dtype=np.float64) for v in masks.values()]))
    sub = (
        f"1 = the same weights pruned; two independent random masks at {p:.0%} sparsity "
        f"would give {p / (2 - p):.2f}"
    )
    return _layout(fig, title, subtitle=sub, legend=False)
