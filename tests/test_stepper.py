"""Tests for the toy-layer stepper (pruning/stepper.py, viz/stepper.py): its last state is SparseGPT's
(and ROSE's, given ROSE's order) result, the mask is chosen by SparseGPT's rule at the right
moments, counts add up, every step's error is the OBS formula recomputed from an explicit inverse,
the running total telescopes to ½·tr(ΔW H ΔWᵀ) at every step, and the figures draw those values
with nothing float64 on the wire."""

from __future__ import annotations

import json
from itertools import pairwise

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

import viz
from pruning import Sparsity, rose, sparsegpt
from pruning.masks import count, is_nm
from pruning.stepper import (
    compare_methods,
    error_trace,
    hessian_of,
    reconstruction_error,
    rose_order,
    sparsegpt_steps,
    toy_problem,
)
from pruning.types import LayerStats

SPARSITIES = [Sparsity(0.5), Sparsity(0.7), Sparsity(0.5, (2, 4))]
IDS = ["50%", "70%", "2:4"]


def library(W, H, sparsity, **kw):
    """The library's own SparseGPT (or ROSE with rose=True) on numpy W, H in float64."""
    fn = rose.prune if kw.pop("rose", False) else sparsegpt.prune
    return fn(torch.from_numpy(W), LayerStats(1, hessian=torch.from_numpy(H)), sparsity, **kw)


def damped(H: np.ndarray, percdamp: float) -> np.ndarray:
    """SparseGPT's dampened Hessian, written out: dead inputs get H_jj = 1, then + λ·I."""
    H = H.copy()
    d = np.diagonal(H).copy()
    d[d == 0] = 1
    np.fill_diagonal(H, d + percdamp * d.mean())
    return H


def half_trace(dW: np.ndarray, H: np.ndarray) -> float:
    return float(np.trace(dW @ H @ dW.T) / 2)


def columnar_toy(seed: int = 0, rows: int = 8, blocks: int = 4, width: int = 4):
    """Inputs sharing 3 factors, the last block of `width` inputs 4× louder: ROSE reorders it."""
    rng = np.random.default_rng(seed)
    c, n = blocks * width, 128
    X = rng.standard_normal((n, 3)) @ rng.standard_normal((3, c))
    X += 0.3 * rng.standard_normal((n, c))
    X[:, -width:] *= 4
    return toy_problem(rows, c, seed=seed, inputs=X)


# the toy


def test_toy_hessian_is_calibrations_convention():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((5, 7, 20))  # 5 sequences of 7 tokens, 20 inputs
    W_big = rng.standard_normal((12, 20))
    W, H = toy_problem(4, 6, weight=W_big, inputs=X, row0=2, col0=10)
    flat = X.reshape(-1, 20)[:, 10:16]
    assert np.array_equal(W, W_big[2:6, 10:16])
    assert np.allclose(H, 2 / 5 * flat.T @ flat, rtol=1e-13, atol=0)  # 2/N, N = sequences
    full = hessian_of(X)
    _, H2 = toy_problem(4, 6, weight=W_big, hessian=full, row0=2, col0=10)
    assert np.allclose(H2, H, rtol=1e-13, atol=0)  # the Hessian's block = the slice's Hessian
    assert np.allclose(hessian_of(flat, nsamples=35), 2 / 35 * flat.T @ flat)


def test_random_toy_is_seeded_and_positive_definite():
    W, H = toy_problem(8, 16, seed=1)
    W2, H2 = toy_problem(8, 16, seed=1)
    W3, _ = toy_problem(8, 16, seed=2)
    assert W.shape == (8, 16) and H.shape == (16, 16)
    assert np.array_equal(W, W2) and np.array_equal(H, H2) and not np.array_equal(W, W3)
    assert np.allclose(H, H.T) and np.linalg.eigvalsh(H).min() > 0
    with pytest.raises(ValueError, match="inputs or its Hessian"):
        toy_problem(weight=W)


# the last state is the library's result


@pytest.mark.parametrize("sparsity", SPARSITIES, ids=IDS)
@pytest.mark.parametrize("blocksize", [128, 4, 5])
@pytest.mark.parametrize("seed", [0, 1])
def test_final_state_is_sparsegpt(sparsity, blocksize, seed):
    W, H = toy_problem(8, 16, seed=seed)
    last = sparsegpt_steps(W, H, sparsity, blocksize=blocksize)[-1]
    res = library(W, H, sparsity, blocksize=blocksize)
    assert np.array_equal(last.pruned, res.pruned.numpy())
    assert np.allclose(last.weight, res.weight.numpy(), rtol=0, atol=1e-10)
    assert np.allclose(last.row_loss, res.loss.numpy(), rtol=1e-10, atol=0)
    assert last.step == 16 and last.processed.all()
    assert np.array_equal(last.chosen, last.pruned)  # nothing chosen is left unapplied


def test_dead_inputs_and_raised_dampening_as_sparsegpt():
    W, H = toy_problem(6, 12, seed=4)
    H[3, :] = H[:, 3] = 0  # an input never active
    states = sparsegpt_steps(W, H, Sparsity(0.5), blocksize=4)
    assert (states[0].weight[:, 3] == 0).all() and (states[0].weight[:, :3] == W[:, :3]).all()
    res = library(W, H, Sparsity(0.5), blocksize=4)
    assert np.array_equal(states[-1].pruned, res.pruned.numpy())
    assert np.allclose(states[-1].weight, res.weight.numpy(), rtol=0, atol=1e-10)
    vals, vecs = np.linalg.eigh(H)  # not positive definite: the dampening is raised 10× at a time
    bad = H - (vals[0] + 0.05 * np.diagonal(H).mean()) * np.outer(vecs[:, 0], vecs[:, 0])
    last = sparsegpt_steps(W, bad, Sparsity(0.5), blocksize=4)[-1]
    res = library(W, bad, Sparsity(0.5), blocksize=4)
    assert last.percdamp > 0.01 and last.percdamp == pytest.approx(float(res.info["percdamp"]))
    assert np.array_equal(last.pruned, res.pruned.numpy())
    assert np.allclose(last.weight, res.weight.numpy(), rtol=0, atol=1e-10)


@pytest.mark.parametrize("sparsity", SPARSITIES, ids=IDS)
def test_rose_order_gives_rose(sparsity):
    W, H = columnar_toy()
    order, rho, reordered = rose_order(W, H, sparsity, blocksize=4)
    assert reordered and rho > 0.5 and not np.array_equal(order, np.arange(16))
    states = sparsegpt_steps(W, H, sparsity, order=order, blocksize=4)
    assert [s.column for s in states[1:]] == order.tolist()  # the steps follow ROSE's order
    res = library(W, H, sparsity, blocksize=4, rose=True)
    assert np.array_equal(res.order.numpy(), order)
    assert np.array_equal(states[-1].pruned, res.pruned.numpy())
    assert np.allclose(states[-1].weight, res.weight.numpy(), rtol=0, atol=1e-10)
    assert np.allclose(states[-1].row_loss, res.loss.numpy(), rtol=1e-10, atol=0)
    plain = sparsegpt_steps(W, H, sparsity, blocksize=4)[-1]
    assert not np.allclose(plain.weight, states[-1].weight)  # the order did change the result


def test_forced_reordering_gives_rose():
    W, H = toy_problem(8, 16, seed=5)  # no columnar pattern: reordered only with threshold < 0
    assert not rose_order(W, H, Sparsity(0.6), blocksize=8)[2]
    order, _, reordered = rose_order(W, H, Sparsity(0.6), blocksize=8, threshold=-1.0)
    assert reordered and not np.array_equal(order, np.arange(16))
    last = sparsegpt_steps(W, H, Sparsity(0.6), order=order, blocksize=8)[-1]
    res = library(W, H, Sparsity(0.6), blocksize=8, threshold=-1.0, rose=True)
    assert np.array_equal(last.pruned, res.pruned.numpy())
    assert np.allclose(last.weight, res.weight.numpy(), rtol=0, atol=1e-10)


def test_bad_orders_are_refused():
    W, H = toy_problem(4, 8)
    with pytest.raises(ValueError, match="permutation"):
        sparsegpt_steps(W, H, Sparsity(0.5), order=[0, 1, 2, 3, 4, 5, 6, 6])
    with pytest.raises(ValueError, match="whole groups of 4"):
        sparsegpt_steps(W, H, Sparsity(0.5, (2, 4)), order=[4, 1, 2, 3, 0, 5, 6, 7])


# the mask rule, the counts and the OBS arithmetic, step by step


@pytest.mark.parametrize("sparsity", [Sparsity(0.5), Sparsity(0.3), Sparsity(0.5, (2, 4))])
def test_counts_add_up_and_processed_columns_stay(sparsity):
    W, H = toy_problem(7, 16, seed=2)
    states = sparsegpt_steps(W, H, sparsity, blocksize=5)
    assert len(states) == 17 and states[0].column == -1 and not states[0].pruned.any()
    total = 0
    for prev, s in pairwise(states):
        new = int(s.new.sum())
        total += new
        assert int(s.pruned.sum()) == total  # cumulative = sum of the steps' counts
        assert not s.new[:, np.arange(16) != s.column].any()  # only this step's column
        assert np.array_equal(s.pruned, prev.pruned | s.new) and not (prev.pruned & s.new).any()
        assert (s.weight[s.pruned] == 0).all() and (s.pruned <= s.chosen).all()
        done = prev.processed  # processed columns never change again; the update skips them
        assert np.array_equal(s.weight[:, done], prev.weight[:, done])
        assert (s.update[:, done | (np.arange(16) == s.column)] == 0).all()
        later = ~s.processed
        assert np.allclose(s.weight[:, later], prev.weight[:, later] + s.update[:, later])
        assert np.array_equal(s.removed, prev.weight[:, s.column] * s.new[:, s.column])
    if sparsity.nm:
        assert is_nm(states[-1].pruned, *sparsity.nm)
    else:
        assert total == count(7 * 16, sparsity.ratio)


def test_unstructured_mask_is_chosen_per_block_on_the_updated_weights():
    # at the start of each block of 4 columns, its k lowest w²/[H_F⁻¹]_qq over all rows jointly,
    # with [H_F⁻¹]_qq from an explicit inverse of the trailing damped Hessian
    W, H = toy_problem(6, 16, seed=7)
    r, s = 6, Sparsity(0.6)
    states = sparsegpt_steps(W, H, s, blocksize=4)
    Hd = damped(H, 0.01)
    for i1 in range(0, 16, 4):
        before, first = states[i1], states[i1 + 1]
        denom = np.array([np.linalg.inv(Hd[j:, j:])[0, 0] for j in range(i1, i1 + 4)])
        score = before.weight[:, i1 : i1 + 4] ** 2 / denom
        k = count(r * (i1 + 4), s.ratio) - count(r * i1, s.ratio)
        want = np.zeros(score.size, bool)
        want[np.argsort(score.ravel(), kind="stable")[:k]] = True
        assert np.array_equal(first.chosen[:, i1 : i1 + 4], want.reshape(r, 4))
        assert not first.chosen[:, i1 + 4 :].any()  # later blocks are not decided yet
        assert np.allclose(first.score[:, i1 : i1 + 4], score, rtol=1e-9)
        assert np.array_equal(first.group, np.arange(i1, i1 + 4))


def test_step_error_and_update_are_obs():
    # error = Σ_rows w_q²/[H_F⁻¹]_qq / 2 and update = −(w_q/[H_F⁻¹]_qq)·[H_F⁻¹]_{q,F∖q}: OBS with
    # an explicit inverse of the sub-Hessian of the columns not yet processed, in ROSE's order
    W, H = columnar_toy(seed=1)
    order, _, _ = rose_order(W, H, Sparsity(0.5), blocksize=4)
    states = sparsegpt_steps(W, H, Sparsity(0.5), order=order, blocksize=4)
    Hd = damped(H, 0.01)
    for p, (prev, s) in enumerate(pairwise(states)):
        F = order[p:]
        Hinv = np.linalg.inv(Hd[np.ix_(F, F)])
        w = prev.weight[:, s.column] * s.new[:, s.column]
        assert s.error == pytest.approx((w**2).sum() / Hinv[0, 0] / 2, rel=1e-9, abs=1e-15)
        want = -np.outer(w / Hinv[0, 0], Hinv[0, 1:])
        assert np.allclose(s.update[:, F[1:]], want, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("sparsity", SPARSITIES, ids=IDS)
def test_running_total_telescopes(sparsity):
    W, H = toy_problem(8, 16, seed=3)
    states = sparsegpt_steps(W, H, sparsity, blocksize=8)
    trace = error_trace(states)
    assert np.allclose(trace["totals"], np.cumsum(trace["errors"]), rtol=1e-12)
    assert trace["pruned"].sum() == states[-1].pruned.sum()
    Hd = damped(H, 0.01)  # with dampening: ½·tr(ΔW H_d ΔWᵀ), at every step
    for s in states:
        assert s.total == pytest.approx(half_trace(s.weight - W, Hd), rel=1e-9, abs=1e-14)
        assert s.measured == pytest.approx(half_trace(s.weight - W, H), rel=1e-9, abs=1e-14)
    assert states[-1].measured < states[-1].total  # H_d = H + λI counts more than H


@pytest.mark.parametrize("sparsity", SPARSITIES, ids=IDS)
def test_undamped_total_is_the_output_error(sparsity):
    # percdamp = 0: the OBS losses summed so far are ‖ΔW X‖²/nsamples of the weights now, exactly
    rng = np.random.default_rng(8)
    X = rng.standard_normal((64, 3)) @ rng.standard_normal((3, 16)) + rng.standard_normal((64, 16))
    W, H = toy_problem(8, 16, seed=8, inputs=X)
    states = sparsegpt_steps(W, H, sparsity, percdamp=0.0, blocksize=8)
    for s in states[1:]:
        out = float((((s.weight - W) @ X.T) ** 2).sum()) / 64
        assert s.total == pytest.approx(out, rel=1e-9)
        assert s.total == pytest.approx(s.measured, rel=1e-9)
    assert states[-1].total > 0


# the side-by-side helper


def test_compare_methods_errors_and_masks():
    W, H = toy_problem(8, 16, seed=0)
    out = compare_methods(W, H, "50%", blocksize=4)
    assert list(out) == ["magnitude", "wanda", "sparsegpt"]
    dense = float(np.trace(W @ H @ W.T))
    for v in out.values():
        dW = v["weight"] - W
        assert v["error"] == pytest.approx(float(np.trace(dW @ H @ dW.T)), rel=1e-12)
        assert v["relative"] == pytest.approx(v["error"] / dense, rel=1e-12)
        assert int(v["pruned"].sum()) == 64 and (v["weight"][v["pruned"]] == 0).all()
    cut = np.sort(np.abs(W).ravel())[63]  # magnitude: the 64 smallest |W| of the whole matrix
    assert np.array_equal(out["magnitude"]["pruned"], np.abs(W) <= cut)
    act = np.sqrt(np.diagonal(H) / 2)  # Wanda: per row, |W|·‖X_j‖ with ‖X_j‖² = H_jj/2
    S = np.abs(W) * act
    assert np.array_equal(out["wanda"]["pruned"], S <= np.sort(S, axis=1)[:, 7:8])
    last = sparsegpt_steps(W, H, "50%", blocksize=4)[-1]
    assert np.array_equal(out["sparsegpt"]["pruned"], last.pruned)
    assert out["sparsegpt"]["error"] == pytest.approx(reconstruction_error(W, last.weight, H))
    assert out["sparsegpt"]["error"] < out["wanda"]["error"] < out["magnitude"]["error"]


# the figures


def wire(fig: go.Figure) -> dict:
    """The JSON the app would send: under 1 MB, no float64 array anywhere."""
    assert isinstance(fig, go.Figure)
    text = fig.to_json()
    assert len(text) < 1_000_000 and '"dtype":"f8"' not in text.replace(" ", "")

    def walk(node):
        if isinstance(node, dict):
            assert node.get("dtype") != "f8"
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            assert sum(isinstance(v, float) for v in node) <= 32
            for v in node:
                walk(v)

    data = json.loads(text)
    walk(data)
    return data


def test_state_figure_draws_the_state():
    W, H = toy_problem(8, 16, seed=0)
    states = sparsegpt_steps(W, H, Sparsity(0.5), blocksize=8)
    s = states[5]
    fig = viz.stepper_state(s)
    wire(fig)
    assert [t.type for t in fig.data] == ["heatmap", "heatmap", "scatter", "scatter", "scatter"]
    assert np.array_equal(fig.data[0].z, s.weight.astype(np.float32))
    assert np.array_equal(fig.data[1].z, s.update.astype(np.float32))
    earlier, now, ahead = fig.data[2:]
    for trace, cells in ((earlier, s.pruned & ~s.new), (now, s.new), (ahead, s.chosen & ~s.pruned)):
        rows, cols = np.nonzero(cells)
        assert np.array_equal(trace.x, cols) and np.array_equal(trace.y, rows)
        assert trace.name.endswith(f"({rows.size})") and trace.marker.color in (None, viz.PRUNED)
    assert all(t.marker.color == viz.PRUNED for t in (now, ahead))
    assert {(sh.x0, sh.x1) for sh in fig.layout.shapes} == {(s.column - 0.5, s.column + 0.5)}
    title = fig.layout.title.text
    assert f"column {s.column}" in title and f"{int(s.new.sum())} pruned" in title
    cd = np.asarray(fig.data[0].customdata)  # hover: the weight before the step, exactly
    assert np.allclose(cd[..., 2], states[4].weight.astype(np.float32))
    as_dict = viz.stepper_state(vars(s))  # a plain dict draws the same
    assert np.array_equal(as_dict.data[0].z, fig.data[0].z)
    assert "start" in viz.stepper_state(states[0]).layout.title.text


def test_state_figure_in_rose_order_says_so():
    W, H = columnar_toy()
    order, _, _ = rose_order(W, H, Sparsity(0.5), blocksize=4)
    s = sparsegpt_steps(W, H, Sparsity(0.5), order=order, blocksize=4)[3]
    fig = viz.stepper_state(s)
    wire(fig)
    assert "reordered" in fig.layout.title.subtitle.text and s.column == order[2]
    at = np.asarray(fig.data[0].customdata)[0, :, 1]  # hover: the step of each column
    assert np.array_equal(at[order], np.arange(1, 17))


def test_error_figure_and_compare_figure():
    W, H = toy_problem(8, 16, seed=0)
    states = sparsegpt_steps(W, H, Sparsity(0.5, (2, 4)))
    trace = error_trace(states)
    fig = viz.stepper_errors(**trace, current=3)
    wire(fig)
    assert [t.type for t in fig.data] == ["bar", "scatter", "scatter"]
    assert np.array_equal(fig.data[0].y, trace["errors"].astype(np.float32))
    assert np.array_equal(fig.data[1].y, trace["totals"].astype(np.float32))
    assert np.array_equal(np.asarray(fig.data[0].customdata)[:, 0], trace["columns"])
    assert len(set(fig.data[0].marker.color)) == 2  # the current step stands out
    out = compare_methods(W, H, "2:4")
    fig = viz.stepper_compare(out, weight=W)
    wire(fig)
    assert [t.type for t in fig.data] == ["heatmap"] * 3
    titles = [a.text for a in fig.layout.annotations]
    for (name, v), title, trace_ in zip(out.items(), titles, fig.data):
        assert title.startswith(name) and f"{v['error']:.4g}" in title
        assert f"{v['relative']:.2%}" in title
        assert np.array_equal(trace_.z, (~v["pruned"]).astype(np.uint8))
    assert "lowest error: sparsegpt" in fig.layout.title.subtitle.text


@pytest.mark.parametrize(
    "call",
    [
        lambda: viz.stepper_state({"weight": np.zeros((0, 0))}),
        lambda: viz.stepper_errors([], []),
        lambda: viz.stepper_compare({}),
        lambda: viz.stepper_compare({"a": {"pruned": np.zeros((2, 2)), "error": 1, "relative": 1},
                                     "b": {"pruned": np.zeros((2, 3)), "error": 1, "relative": 1}}),
    ],
)  # fmt: skip
def test_degenerate_inputs_give_a_figure(call):
    wire(call())
