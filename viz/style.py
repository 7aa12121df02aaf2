"""The shared look: kept/pruned colours, one colour per method, the `_layout` helper, pooling.

Everything real-valued goes on the wire as float32 (`f32`, `pool`): plotly sends typed arrays
base64-encoded, so a 128×128 float32 map costs about 90 kB.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import plotly.graph_objects as go

KEPT = "#2166ac"  # blue: a weight that stays
PRUNED = "#b2182b"  # red: a weight set to zero
NEUTRAL = "#f7f7f7"  # the middle of every diverging scale
ONLY_A = "#e6ab02"  # mask diff: pruned only by the first mask
ONLY_B = "#1b9e77"  # mask diff: pruned only by the second mask
DENSE = "#444444"  # the dense model, reference lines
HEAT = "Viridis"  # quantities that are not kept/pruned: errors, gradients, ρ
METHOD_COLORS = {
    "dense": DENSE,
    "magnitude": "#7f7f7f",
    "wanda": "#e66101",
    "sparsegpt": "#5e3c99",
    "rose": "#d01c8b",
    "gblm": "#018571",
    "sparseswaps": "#a6611a",
    "barber": "#4dac26",
}
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
DASHES = ["solid", "dash", "dot", "dashdot", "longdash"]


def method_color(name: str) -> str:
    """A stable colour per method or run label: 'wanda', 'Wanda 50%' and 'wanda@2:4' share one."""
    key = str(name).strip().lower()
    first = key.replace("@", " ").replace(":", " ").replace("_", " ").split(" ")[0]
    return (
        METHOD_COLORS.get(key)
        or METHOD_COLORS.get(first)
        or PALETTE[zlib.crc32(key.encode()) % len(PALETTE)]
    )


def line_styles(labels: list[str]) -> list[dict]:
    """Colour per label; labels that share a colour (two Wanda runs) get different dashes."""
    seen: dict[str, int] = {}
    for label in labels:
        seen[label] = sum(method_color(k) == method_color(label) for k in seen)
    return [{"color": method_color(k), "dash": DASHES[n % len(DASHES)]} for k, n in seen.items()]


def kept_scale(middle: float, low: str = PRUNED, high: str = KEPT) -> list:
    """`low` at 0, neutral at `middle` (the layer's or model's mean), `high` at 1."""
    return [[0.0, low], [float(np.clip(middle, 0.02, 0.98)), NEUTRAL], [1.0, high]]


def f32(values) -> np.ndarray:
    """The wire format for real numbers."""
    return np.asarray(values, dtype=np.float32)


def _layout(
    fig: go.Figure,
    title: str,
    *,
    subtitle: str = "",
    x: str | None = None,
    y: str | None = None,
    height: int | None = None,
    legend: bool = True,
    top: int = 0,
) -> go.Figure:
    """Title (what is shown), subtitle (how to read it), axis titles with units, one font;
    `top` adds room above the plot (subplot titles)."""
    fig.update_layout(
        template="plotly_white",
        title={"text": title, "subtitle": {"text": subtitle}, "x": 0.01, "xanchor": "left"},
        font={"size": 13},
        margin={"l": 70, "r": 30, "t": (90 if subtitle else 60) + top, "b": 60},
        hoverlabel={"namelength": -1},
        showlegend=legend,
        legend={"orientation": "h", "yanchor": "top", "y": -0.15, "x": 0},
        height=height,
    )
    if x is not None:
        fig.update_xaxes(title_text=x)
    if y is not None:
        fig.update_yaxes(title_text=y)
    return fig


def empty(title: str, note: str) -> go.Figure:
    """A figure that says why there is nothing to draw (empty input never raises)."""
    fig = go.Figure()
    fig.add_annotation(text=note, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _layout(fig, title, legend=False, height=300)


def log_axis(fig: go.Figure, axis: str = "y", on: bool = True, power: bool = False) -> None:
    """A log axis labelled at 1, 2 and 5 of each decade (a linear one when `on` is False);
    `power` writes 10⁻⁶ instead of 1µ (for scores that span many decades)."""
    kw = {"type": "log", "dtick": "D2"} if on else {"type": "linear"}
    kw |= {"exponentformat": "power"} if on and power else {}
    (fig.update_yaxes if axis == "y" else fig.update_xaxes)(**kw)


def log_colorbar(lo: float, hi: float, title: str) -> dict:
    """Colour bar for a heatmap coloured by log10(value): ticks at 1, 2, 5 × 10^k, real values."""
    ticks = [math.log10(m) + k for k in range(math.floor(lo), math.ceil(hi) + 1) for m in (1, 2, 5)]
    ticks = [t for t in ticks if lo - 1e-9 <= t <= hi + 1e-9] or [lo]
    return {"title": title, "tickvals": f32(ticks), "ticktext": [f"{10**t:.3g}" for t in ticks]}


def pool(matrix, max_cells: int = 128 * 128) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over tiles so that at most `max_cells` remain; tiles as square as the shape allows.

    Returns (pooled float32 (r, c), row_edges (r+1,), col_edges (c+1,)): tile i, j is the mean of
    matrix[row_edges[i]:row_edges[i+1], col_edges[j]:col_edges[j+1]].
    """
    m = np.asarray(matrix)
    rows, cols = m.shape
    r = rows if rows * cols <= max_cells else int(rows * math.sqrt(max_cells / (rows * cols)))
    r = min(rows, max(r, 1))
    c = min(cols, max(max_cells // r, 1))
    re, ce = (np.linspace(0, n, k + 1).round().astype(np.int64) for n, k in ((rows, r), (cols, c)))
    if m.dtype == bool:  # count in integers: exact
        m, dtype = m.view(np.uint8), np.int64
    else:  # float32 sums of at most a tile's values: ~1e-6 relative, and fast
        m, dtype = f32(m), np.float32
    sums = np.add.reduceat(m, ce[:-1], axis=1, dtype=dtype)  # along rows first: contiguous, fast
    sums = np.add.reduceat(sums, re[:-1], axis=0)
    return f32(sums / np.outer(np.diff(re), np.diff(ce))), re, ce


def tile_hover(re: np.ndarray, ce: np.ndarray, *extra: np.ndarray) -> tuple[np.ndarray, str]:
    """customdata (r, c, 4 + len(extra)): each tile's first and last row and column, then the
    extras; unsigned ints when everything is integral, else float32 (exact below 2**24)."""
    r0, c0 = np.meshgrid(re[:-1], ce[:-1], indexing="ij")
    r1, c1 = np.meshgrid(re[1:] - 1, ce[1:] - 1, indexing="ij")
    cd = np.stack([r0, r1, c0, c1, *extra], axis=-1)
    if np.issubdtype(cd.dtype, np.floating):
        cd = cd.astype(np.float32)
    else:
        cd = cd.astype(np.uint16 if cd.max(initial=0) < 2**16 else np.uint32)
    return cd, "rows %{customdata[0]}–%{customdata[1]}<br>columns %{customdata[2]}–%{customdata[3]}"


def matrix_axes(fig: go.Figure, equal: bool = True, **where) -> None:
    """Row 0 at the top like a printed matrix; square cells when `equal`."""
    fig.update_yaxes(autorange="reversed", title_text="output row", **where)
    fig.update_xaxes(title_text="input column", **where)
    if equal:
        fig.update_yaxes(scaleanchor="x", constrain="domain", **where)
        fig.update_xaxes(constrain="domain", **where)


def split_layer(name: str) -> tuple[int, str]:
    """'12.mlp.down_proj' -> (12, 'mlp.down_proj')."""
    block, _, linear = str(name).partition(".")
    if not block.isdigit() or not linear:
        raise ValueError(f"layer names look like '3.mlp.down_proj', got {name!r}")
    return int(block), linear


MODEL_ORDER = (  # linear types of the supported families, in the order a block runs them
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "self_attn.out_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj", "fc1", "fc2",
    "attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj", "attention.query_key_value",
    "attention.dense", "mlp.dense_h_to_4h", "mlp.dense_4h_to_h",
)  # fmt: skip


def linear_types(names) -> tuple[list[str], dict[str, str]]:
    """Linear types in model order (known families; others after them, as they first appear) and
    a short label for each: the last part of the name where unambiguous ('q_proj'), else all."""
    seen = list(dict.fromkeys(split_layer(n)[1] for n in names))
    order = sorted(seen, key=lambda t: (MODEL_ORDER + tuple(seen)).index(t))
    last = [t.rsplit(".", 1)[-1] for t in order]
    return order, {t: s if last.count(s) == 1 else t for t, s in zip(order, last)}
