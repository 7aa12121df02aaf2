"""viz/: every figure on small inputs and on real layer sizes (the bundled model's 576×576, 1536×576,
576×1536, and a 2048×8192 layer): the traces it should have, the values it draws (checked against
numpy), a payload under 1 MB with no float64 on the wire, and no torch or gradio import."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest

import viz
from viz.style import line_styles, linear_types, pool

ROOT = Path(__file__).resolve().parents[1]
SIZES = [(8, 16), (576, 576), (1536, 576), (576, 1536), (2048, 8192)]
TYPES = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")
TYPES += ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


def names(blocks: int = 30) -> list[str]:
    return [f"{b}.{t}" for b in range(blocks) for t in TYPES]


def wire(fig: go.Figure) -> dict:
    """The JSON the app would send: < 1 MB, no float64 arrays, no long lists of Python floats."""
    assert isinstance(fig, go.Figure)
    text = fig.to_json()
    assert len(text) < 1_000_000, f"{len(text):,} bytes"

    def walk(node, path="fig"):
        if isinstance(node, dict):
            assert node.get("dtype") != "f8", f"float64 array at {path}"
            for k, v in node.items():
                walk(v, f"{path}.{k}")
        elif isinstance(node, list):
            assert sum(isinstance(v, float) for v in node) <= 32, f"list of floats at {path}"
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]")

    data = json.loads(text)
    walk(data)
    return data


def kinds(fig: go.Figure) -> list[str]:
    return [t.type for t in fig.data]


def note(fig: go.Figure) -> str:
    """Everything a figure says in words: title, subtitle, annotations, trace names."""
    parts = [fig.layout.title.text or "", fig.layout.title.subtitle.text or ""]
    parts += [a.text for a in fig.layout.annotations] + [t.name or "" for t in fig.data]
    return " | ".join(parts)


@pytest.fixture(scope="module", params=SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def layer(request):
    """A layer with Wanda-like scores, a per-row mask, a layer-wise mask, a 2:4 mask, a gradient."""
    rows, cols = request.param
    rng = np.random.default_rng(0)
    W = rng.standard_normal((rows, cols), dtype=np.float32)
    S = np.abs(W) * rng.lognormal(0, 1, cols).astype(np.float32)
    k = cols // 2
    per_row = S <= np.partition(S, k - 1, axis=1)[:, k - 1 : k]
    layer_wise = np.abs(W) <= 0.6745  # one threshold for the whole matrix (|N(0,1)|'s median)
    patterns = np.array(
        [[1, 1, 0, 0], [1, 0, 1, 0], [1, 0, 0, 1], [0, 1, 1, 0], [0, 1, 0, 1], [0, 0, 1, 1]], bool
    )  # the six 2:4 patterns
    nm = patterns[rng.integers(0, 6, (rows, cols // 4))].reshape(rows, cols)
    return {"W": W, "S": S, "per_row": per_row, "layer_wise": layer_wise, "nm": nm}


def test_the_wire_check_catches_float64_and_float_lists():
    with pytest.raises(AssertionError, match="float64"):
        wire(go.Figure(go.Scatter(y=np.linspace(0, 1, 5))))  # numpy's default dtype
    with pytest.raises(AssertionError, match="list of floats"):
        wire(go.Figure(go.Scatter(y=[i / 3 for i in range(100)])))
    wire(go.Figure(go.Scatter(y=np.linspace(0, 1, 100, dtype=np.float32))))


def test_no_torch_or_gradio_import():
    code = "import viz, sys; assert 'torch' not in sys.modules and 'gradio' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_pool_is_the_tile_mean():
    m = np.arange(7 * 10, dtype=np.float32).reshape(7, 10)
    pooled, re, ce = pool(m, max_cells=6)
    assert pooled.dtype == np.float32 and pooled.size <= 6 and re[-1] == 7 and ce[-1] == 10
    for i in range(len(re) - 1):
        for j in range(len(ce) - 1):
            tile = m[re[i] : re[i + 1], ce[j] : ce[j + 1]]
            assert pooled[i, j] == pytest.approx(tile.mean())
    small, *_ = pool(m, max_cells=1000)  # fits: nothing pooled
    assert np.array_equal(small, m)


@pytest.mark.parametrize("shape", SIZES[1:])
def test_pool_uses_the_budget_with_square_tiles(shape):
    pooled, re, ce = pool(np.zeros(shape, bool), 128 * 128)
    assert 128 * 128 // 2 <= pooled.size <= 128 * 128
    assert 0.5 <= np.diff(re).mean() / np.diff(ce).mean() <= 2


def test_mask_figures(layer):
    """All one-layer figures at this size: traces, payload, and the values drawn."""
    W, S, per_row, nm = layer["W"], layer["S"], layer["per_row"], layer["nm"]
    fig = viz.mask_overview(per_row)
    data = wire(fig)
    assert kinds(fig) == ["heatmap"] and np.asarray(fig.data[0].z).size <= 128 * 128
    kept = pool(~per_row, 128 * 128)[0]
    assert np.allclose(fig.data[0].z, kept)
    cd = np.asarray(fig.data[0].customdata)  # hover: first/last row and column of each tile
    assert cd[0, 0, 0] == 0 and cd[-1, 0, 1] == W.shape[0] - 1 and cd[0, -1, 3] == W.shape[1] - 1
    assert np.array_equal(cd[1:, 0, 0], cd[:-1, 0, 1] + 1)  # tiles cover every row once
    assert "customdata[0]" in data["data"][0]["hovertemplate"]

    tile = viz.mask_tile(nm, row0=1, col0=2, rows=4, cols=8, nm=(2, 4), score=S)
    wire(tile)
    assert np.array_equal(tile.data[0].z, ~nm[1:5, 2:10])
    assert len(tile.layout.shapes) == 2 and "every group exact" in note(tile)  # lines at 4, 8
    assert np.array_equal(tile.data[0].customdata, S[1:5, 2:10])
    cut = viz.mask_tile(nm, row0=1, col0=2, rows=4, cols=8, score=S[1:5, 2:10])  # as the app does
    assert np.array_equal(cut.data[0].customdata, S[1:5, 2:10])
    bad = viz.mask_tile(per_row, rows=4, cols=8, nm=(2, 4))
    assert "NOT exact" in note(bad)

    prof = viz.mask_profiles(per_row, others={"magnitude": layer["layer_wise"]})
    wire(prof)
    assert kinds(prof) == ["scatter"] * 8
    assert np.allclose(prof.data[0].y, 1 - per_row.mean(1)) and np.allclose(prof.data[0].y, 0.5)
    assert np.allclose(prof.data[2].y, 1 - per_row.mean(0))

    hist = viz.score_histogram(S, per_row)
    wire(hist)
    assert kinds(hist) == ["scatter"] * 3
    zeros = np.count_nonzero(S == 0)  # float32 normals hit 0.0 now and then: off a log axis
    assert hist.data[0].y[:-1].sum() == np.count_nonzero(per_row & (S > 0))
    assert hist.data[1].y[:-1].sum() == np.count_nonzero(~per_row & (S > 0))
    assert (f"{zeros:,} scores ≤ 0 not shown" in note(hist)) == (zeros > 0)
    assert "per row" in note(hist)  # per-row selection: pruned and kept scores overlap
    if W.size <= 576 * 1536:  # one global threshold: the cut-off is the largest pruned score
        flat = viz.score_histogram(np.abs(W), layer["layer_wise"])
        assert float(flat.data[2].x[0]) == pytest.approx(np.abs(W)[layer["layer_wise"]].max())
        assert "per row" not in note(flat)


def test_compare_figures(layer):
    a, b = layer["per_row"], layer["layer_wise"]
    fig = viz.mask_diff(a, b, labels=("wanda", "magnitude"))
    wire(fig)
    assert kinds(fig) == ["scatter"] * 4 + ["heatmap"]
    counts = [(~a & ~b).sum(), (a & b).sum(), (a & ~b).sum(), (~a & b).sum()]
    for trace, n in zip(fig.data[:4], counts):
        assert f": {n:,} (" in trace.name
    z = np.asarray(fig.data[4].z)
    if a.size <= 128 * 128:  # cell by cell: the category of every weight
        assert np.array_equal(z, np.select([a & ~b, ~a & b, a], [2, 3, 1], 0))
    else:  # pooled: share only A − share only B, counts in the hover
        assert np.allclose(z, pool(a & ~b)[0] - pool(~a & b)[0], atol=1e-6)
        cd = np.asarray(fig.data[4].customdata)
        assert cd[..., 4].sum() == counts[2] and cd[..., 5].sum() == counts[3]
    window = viz.mask_diff(a, b, window=(3, 5, 4, 6))
    assert np.asarray(window.data[4].z).shape == (min(4, a.shape[0] - 3), min(6, a.shape[1] - 5))

    masks = {"wanda": a, "magnitude": b, "2:4": layer["nm"]}
    agree = viz.agreement_matrix(masks)
    wire(agree)
    jac, ms = np.asarray(agree.data[0].z), list(masks.values())
    assert np.array_equal(jac, jac.T) and (np.diag(jac) == 1).all()
    for i, j in ((0, 1), (0, 2), (1, 2)):
        both, either = np.count_nonzero(ms[i] & ms[j]), np.count_nonzero(ms[i] | ms[j])
        assert jac[i, j] == pytest.approx(both / either, abs=1e-6)


def test_gradient_figures(layer):
    g = np.abs(layer["W"]) * 1e-3
    fig = viz.grad_heatmap(g)
    wire(fig)
    assert kinds(fig) == ["heatmap"]
    cd = np.asarray(fig.data[0].customdata)
    assert np.allclose(cd[..., 4], pool(g)[0], rtol=1e-5)  # the hover gives the real mean
    assert np.allclose(fig.data[0].z, np.log10(cd[..., 4]), atol=1e-5)  # colour is its log
    terms = viz.score_terms(layer["S"], g * 300)
    wire(terms)
    assert kinds(terms) == ["heatmap", "heatmap"]
    assert {t.coloraxis for t in terms.data} == {"coloraxis"}  # one shared scale
    assert all(np.asarray(t.z).size <= 128 * 128 // 2 for t in terms.data)


def test_rose_layer_figures(layer):
    cols = layer["W"].shape[1]
    losses = np.random.default_rng(1).random(cols)
    fig = viz.rose_columns(losses, blocksize=128)
    wire(fig)
    y, col = np.asarray(fig.data[0].y), np.asarray(fig.data[0].customdata)[:, 0]
    assert np.array_equal(np.sort(col), np.arange(cols)) and np.allclose(y, losses[col])
    for start in range(0, cols, 128):  # descending inside every block, blocks not mixed
        assert (np.diff(y[start : start + 128]) <= 0).all()
        assert (col[start : start + 128] // 128 == start // 128).all()
    blocks = viz.rose_blocks(np.add.reduceat(losses, np.arange(0, cols, 128)))
    wire(blocks)
    assert kinds(blocks) == ["bar", "scatter", "scatter"] and len(blocks.data[0].y) == -(
        -cols // 128
    )
    order = np.random.default_rng(2).permutation(cols)
    wire(viz.rose_order(order))
    assert "identity" in note(viz.rose_order(np.arange(cols)))


def test_rose_blocks_ranks_and_verdict():
    beta = np.array([5.0, 1.0, 3.0])  # ρ = 0.8: reordered, processed 0, 2, 1
    fig = viz.rose_blocks(beta, 0.8)
    wire(fig)
    assert list(fig.data[0].customdata) == [1, 3, 2] and "> 0.5" in fig.layout.title.text
    flat = viz.rose_blocks(np.array([5.0, 4.0, 4.5]))  # ρ = 0.2 computed: order kept
    assert list(flat.data[0].customdata) == [1, 2, 3] and "≤ 0.5" in flat.layout.title.text
    assert flat.data[2].y[0] == pytest.approx(2.5)  # the dashed line: (1 − 0.5)·max β


@pytest.mark.parametrize("blocks", [1, 30, 80])
def test_model_figures(blocks):
    rng = np.random.default_rng(blocks)
    layers = names(blocks)
    shuffled = dict(sorted({n: float(rng.random()) for n in layers}.items()))
    fig = viz.model_map(shuffled, metric="sparsity")
    wire(fig)
    assert list(fig.data[0].x) == [t.split(".")[1] for t in TYPES]  # model order, not sorted
    z = np.asarray(fig.data[0].z)
    assert z.shape == (blocks, 7) and z[blocks - 1, 6] == np.float32(shuffled[layers[-1]])
    err = viz.model_map({n: float(10 ** rng.uniform(-3, 0)) for n in layers}, metric="error")
    wire(err)
    assert "relative error" in err.layout.title.text
    rho = {n: float(rng.random()) for n in layers}
    flags = {n: v > 0.5 for n, v in rho.items()}
    grid = viz.rose_model(rho, flags)
    wire(grid)
    marked = np.char.endswith(np.asarray(grid.data[0].text, str), "↻")
    assert marked.sum() == sum(flags.values())
    ratio = viz.rose_error_ratio({n: float(rng.normal(1, 0.05)) for n in layers})
    wire(ratio)
    assert ratio.data[0].zmin + ratio.data[0].zmax == pytest.approx(2)  # symmetric around 1
    traces = {
        n: list(np.cumprod(1 - rng.random(100) * 0.01) * (1 + i)) for i, n in enumerate(layers)
    }
    swaps = viz.swap_trace(traces)
    wire(swaps)
    assert kinds(swaps) == ["scatter"] * 7  # one trace per linear type, layers split by gaps
    y = np.asarray(swaps.data[0].y)
    starts = np.r_[0, np.flatnonzero(np.isnan(y))[:-1] + 1]
    assert starts.size == blocks and np.allclose(y[starts], 1)  # each layer from its warm start
    for fn in (viz.error_reduction, viz.barber_swaps):
        f = fn({n: int(rng.integers(0, 500)) for n in layers})
        wire(f)
        assert kinds(f) == ["heatmap"]
    wire(viz.barber_block_loss(list(rng.random(2 * blocks)), list(rng.random(2 * blocks))))


def test_run_figures():
    rng = np.random.default_rng(0)
    runs = {"magnitude": list(rng.random(30) + 0.1), "wanda": list(rng.random(30) + 0.1)}
    fig = viz.block_errors(runs)
    wire(fig)
    assert kinds(fig) == ["scatter", "scatter"] and fig.layout.yaxis.type == "log"
    bars = viz.perplexity_bars(17.6, {"wanda": 31.2, "magnitude": 141.0})
    assert bars.layout.yaxis.type == "linear" and bars.data[0].x[0] == "dense"
    wide = viz.perplexity_bars(17.6, {"wanda": 31.2, "magnitude": 1410.0, "broken": float("inf")})
    wire(wide)
    assert wide.layout.yaxis.type == "log" and "broken" in note(wide) and len(wide.data[0].x) == 3
    curves = {"wanda": [(0.1, 18.0), (0.5, 31.0), (0.8, 900.0)], "sparsegpt": [(0.5, 28.0)]}
    sweep = viz.sparsity_sweep(curves, dense=17.6)
    wire(sweep)
    assert kinds(sweep) == ["scatter"] * 3 and sweep.layout.yaxis.type == "log"
    index = {"wanda": {"q_proj": 1.2, "o_proj": 2.0}, "gblm": {"q_proj": 2.5, "o_proj": 3.0}}
    bars = viz.structure_bars(index)
    wire(bars)
    assert kinds(bars) == ["bar", "bar"] and bars.layout.shapes[0].y0 == 1


@pytest.mark.parametrize(
    "call",
    [
        lambda: viz.mask_overview(np.zeros((0, 4), bool)),
        lambda: viz.mask_overview(np.ones((4, 4), bool)),  # all pruned
        lambda: viz.mask_tile(np.zeros((3, 3), bool), row0=10, col0=10, nm=(2, 4)),
        lambda: viz.mask_profiles(np.zeros((4, 4), bool)),
        lambda: viz.score_histogram(np.ones((4, 4)), np.zeros((4, 4), bool)),  # constant, kept
        lambda: viz.score_histogram(np.zeros((4, 4)), np.ones((4, 4), bool)),
        lambda: viz.mask_diff(np.zeros((2, 2), bool), np.zeros((3, 3), bool)),
        lambda: viz.agreement_matrix({}),
        lambda: viz.agreement_matrix({"a": np.zeros((2, 2), bool), "b": np.zeros((2, 2), bool)}),
        lambda: viz.grad_heatmap(np.zeros((4, 4))),
        lambda: viz.score_terms(np.zeros((4, 4)), np.zeros((4, 4))),
        lambda: viz.model_map({}),
        lambda: viz.block_errors({"sparsegpt": []}),
        lambda: viz.perplexity_bars(None, {"a": float("nan")}),
        lambda: viz.sparsity_sweep({"a": []}),
        lambda: viz.rose_columns([], blocksize=128),
        lambda: viz.rose_blocks([3.0]),  # a single block: ρ = 0
        lambda: viz.rose_order([]),
        lambda: viz.rose_model({}, {}),
        lambda: viz.rose_error_ratio({}),
        lambda: viz.structure_bars({}),
        lambda: viz.swap_trace({"0.mlp.up_proj": [0.0]}),
        lambda: viz.error_reduction({}),
        lambda: viz.barber_swaps({}),
        lambda: viz.barber_block_loss([], []),
    ],
)
def test_degenerate_inputs_give_a_figure(call):
    wire(call())


def test_colours_are_consistent():
    assert viz.KEPT != viz.PRUNED
    assert (
        viz.method_color("wanda") == viz.method_color("Wanda 50%") == viz.method_color("wanda@2:4")
    )
    assert viz.method_color("my run") == viz.method_color("my run")  # stable for unknown labels
    styles = line_styles(["wanda 50%", "wanda 2:4", "sparsegpt"])
    assert styles[0]["color"] == styles[1]["color"] and styles[0]["dash"] != styles[1]["dash"]
    assert viz.mask_tile(np.eye(4, dtype=bool)).data[0].colorscale[0][1] == viz.PRUNED
    types, short = linear_types(["0.attn.c_proj", "0.mlp.c_proj", "0.attn.c_attn"])
    assert (
        types == ["attn.c_attn", "attn.c_proj", "mlp.c_proj"] and short["attn.c_attn"] == "c_attn"
    )
