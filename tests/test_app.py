"""The app without a browser: control parsing, the layout builds, and a run through the handlers on
the bundled model returns this session's records and every view's figure."""

from __future__ import annotations

import gradio as gr
import plotly.graph_objects as go
import pytest

import app
from pruning import Sparsity

SMALL = ("bundled", "bundled", "", 4, 64, 0, 512)  # model, data, text, windows, seqlen, seed, eval


def test_parse_sparsity():
    assert app.parse_sparsity("unstructured", 0.6, "2:4") == Sparsity(0.6)
    assert app.parse_sparsity("N:M", 0.6, "2:4") == Sparsity(0.5, (2, 4))
    with pytest.raises(ValueError, match="N:M"):
        app.parse_sparsity("N:M", 0.5, "two:four")
    with pytest.raises(ValueError, match="in \\[0, 1\\)"):
        app.parse_sparsity("unstructured", 1.0, "")


def test_options_are_typed_like_the_defaults_and_unknown_ones_refused():
    assert app.parse_options("sparsegpt", "blocksize=64, percdamp=0.05") == {
        "blocksize": 64,
        "percdamp": 0.05,
    }
    assert app.parse_options("sparsegpt", app.format_options("sparsegpt")) == {}  # defaults only
    with pytest.raises(ValueError, match="no option"):
        app.parse_options("wanda", "alpha=3")
    with pytest.raises(ValueError):
        app.parse_options("sparsegpt", "blocksize=big")


def test_setup_refuses_bad_sizes_and_empty_text():
    with pytest.raises(ValueError, match="windows"):
        app._setup("bundled", "bundled", "", 0, 64, 0, 512)
    with pytest.raises(ValueError, match="paste"):
        app._setup("bundled", "my text", " ", 4, 64, 0, 512)


def test_build_demo_builds_without_launching():
    demo = app.build_demo()
    assert isinstance(demo, gr.Blocks)


def _drain(gen):
    *_, last = gen
    return last


def test_run_and_render_every_view():
    steps = list(
        app.execute(
            {},
            [("magnitude", "0.5", {}), ("wanda", "2:4", {})],
            SMALL,
            "dense",
            None,
            lambda *a, **k: None,
        )
    )
    records, status = steps[-1]
    # the first run's result is on screen (records and its perplexity) before the job is done
    early = [(r, s) for r, s in steps[:-1] if isinstance(r, dict) and "__type__" not in r]
    assert early and list(early[0][0]) == ["magnitude 50% · dense"]
    assert "magnitude 50% · dense**: perplexity" in early[0][1] and "Done" not in early[0][1]
    after = steps[steps.index(early[0]) + 1 : -1]  # and stays in the status while wanda runs
    assert after and all("magnitude 50% · dense**: perplexity" in s for _, s in after)
    assert list(records) == ["magnitude 50% · dense", "wanda 2:4 · dense"] and status.startswith(
        "Done"
    )
    a, b = records
    bars, errors = app.render_perplexity(records)
    assert isinstance(bars, go.Figure) and isinstance(errors, go.Figure)
    assert app.render_map(records, b, "sparsity")[1] is not None
    assert app.render_map(records, b, "error")[1] is None  # no Hessian cached for this setting
    figs = app.render_layer(records, b, 3, "mlp.down_proj", 0, 0)
    assert all(isinstance(f, go.Figure) for f in figs[:4]) and "down_proj" in figs[4]
    diff, agree, note = app.render_compare(records, a, b, 3, "mlp.down_proj")
    assert isinstance(diff, go.Figure) and isinstance(agree, go.Figure) and a in note
    rose = app.render_rose(records, b, 3, "mlp.down_proj")
    assert rose[:5] == (None,) * 5 and "ROSE" in rose[5]  # explains what to run instead


def test_bad_input_is_a_gradio_error():
    with pytest.raises(gr.Error, match="divisible by 7"):
        _drain(app.execute({}, [("wanda", "5:7", {})], SMALL, "dense", None, lambda *a, **k: None))


def test_refinement_view_draws_sparseswaps_and_barber_runs():
    records, status = _drain(
        app.execute(
            {},
            [("sparseswaps", "0.5", {}), ("barber", "0.5", {})],
            SMALL,
            "sequential",
            None,
            lambda *a, **k: None,
        )
    )
    assert status.startswith("Done"), status
    swaps, barber = records
    trace, reduction, note = app.render_refine(records, swaps, 2)
    assert len(trace.data) == 7 and len(reduction.data) >= 1  # block 2: a curve per linear
    assert "Mean error reduction" in note
    layers = records[barber].run.layers
    before, after = app.barber_losses(layers)
    assert len(before) == len(after) == 2 * 30  # attention, then MLP, of every block
    first = layers["0.self_attn.q_proj"].info
    assert before[0] == float(first["block_loss_before"])
    assert after[0] == float(first["block_loss_after"])
    counts, losses, note = app.render_refine(records, barber, 0)
    assert len(counts.data) >= 1 and len(losses.data) == 2 and "swaps in all" in note


def test_stepper_tab_walks_sparsegpt_and_rose_on_the_random_toy():
    data, slider, state, errors, three, note = app.stepper_build(
        {}, None, 0, None, "random", 1, "50%", "SparseGPT", 4, False
    )
    assert slider["maximum"] == 16 and len(data["states"]) == 17
    assert [len(f.data) > 0 for f in (state, errors, three)] == [True] * 3
    assert "Step 0" in note
    *_, note = app.stepper_draw(data, 5)
    s = data["states"][5]
    assert f"column {s.column} processed" in note and f"{int(s.new.sum())} weight(s)" in note
    data, *_, note = app.stepper_build({}, None, 0, None, "random", 1, "2:4", "ROSE", 4, True)
    assert "ROSE: ρ" in note and "order" in note
    with pytest.raises(gr.Error, match="run a method first"):
        app.stepper_build({}, None, 0, None, "layer on view", 1, "50%", "SparseGPT", 4, False)


class _Request:
    def __init__(self, **query):
        self.query_params = query


def test_share_link_restores_the_controls_and_skips_bad_values():
    values = ("2:4 three ways", "bundled", "sparsegpt", "N:M", 0.5, "4:8", "sequential")
    values += ("bundled", 16, 128, 3, 1024, "blocksize=64")
    query = app.share_query(*values)
    assert query.startswith("?preset=2%3A4+three+ways&model=bundled&method=sparsegpt")
    from urllib.parse import parse_qsl

    out = app.restore(_Request(**dict(parse_qsl(query[1:]))))
    restored = [u["value"] for u in out[: len(app.SHARED)]]
    assert restored == list(values)
    assert out[app.SHARED.index("nm")]["visible"] is True
    assert out[app.SHARED.index("ratio")]["visible"] is False
    assert "sparsegpt" in out[-2] and "restored" in out[-1]
    bad = app.restore(_Request(method="nope", ratio="1.5", seed="x", model="bundled"))
    assert bad[app.SHARED.index("model")]["value"] == "bundled"
    assert "method, ratio, seed" in bad[-1]
