"""SparseSwaps: brute force on tiny rows (every warm-start mask ends at a 1-swap local optimum,
never worse, objective = ‖(w ⊙ pruned) X‖²), exact counts and N:M, the screened search equal to
the full one, mask-only warm starts, a hand-made case where it must disagree with Wanda."""

from __future__ import annotations

import itertools

import pytest
import torch
from conftest import recon_error, stats_from_X

from pruning import METHODS, Sparsity, needs_of, prune_model, sparseswaps
from pruning.masks import is_nm
from pruning.sparseswaps import refine
from pruning.types import LayerStats


def row_error(w: torch.Tensor, pruned: torch.Tensor, X: torch.Tensor) -> float:
    """‖(w ⊙ pruned) X‖², computed directly."""
    return float(((w * pruned) @ X).pow(2).sum())


def improving_swap(w, pruned, X, allowed=None) -> float:
    """The best error change of any single swap (kept ↔ pruned), by brute force; ≥ 0 at a 1-swap
    local optimum. allowed(p, u) restricts the pairs (N:M groups)."""
    E = row_error(w, pruned, X)
    best = float("inf")
    for p in (~pruned).nonzero()[:, 0].tolist():
        for u in pruned.nonzero()[:, 0].tolist():
            if allowed is not None and not allowed(p, u):
                continue
            q = pruned.clone()
            q[p], q[u] = True, False
            best = min(best, row_error(w, q, X) - E)
    return best


def correlated_X(c: int, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(c, n, generator=g, dtype=torch.float64)
    return X + 0.7 * torch.randn(1, n, generator=g, dtype=torch.float64)  # a shared factor


def test_every_mask_of_a_1x8_row_ends_at_a_local_optimum():
    # 1×8 at 50%: all C(8, 4) = 70 warm starts; each must end where no single swap improves,
    # no worse than it started, with the objective equal to the directly computed error.
    X = correlated_X(8, 24, seed=3)
    w = torch.randn(1, 8, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    G = (X @ X.T).unsqueeze(0)
    finals = set()
    moved = 0
    for combo in itertools.combinations(range(8), 4):
        warm = torch.zeros(1, 1, 8, dtype=torch.bool)
        warm[0, 0, list(combo)] = True
        out = refine(w.unsqueeze(0), G, warm, iters=100)
        mask = out["pruned"][0, 0]
        E0, E = row_error(w[0], warm[0, 0], X), row_error(w[0], mask, X)
        assert int(mask.sum()) == 4
        assert float(out["E0"]) == pytest.approx(E0, rel=1e-10)
        assert float(out["E"]) == pytest.approx(E, rel=1e-10)
        assert E <= E0 * (1 + 1e-12)
        assert improving_swap(w[0], mask, X) >= -1e-9 * E
        assert bool(out["converged"][0, 0])
        curve = out["curve"][0]
        assert curve[0] == pytest.approx(E0, rel=1e-10) and curve[-1] == pytest.approx(E, rel=1e-10)
        assert (curve[1:] <= curve[:-1] * (1 + 1e-12)).all()  # every swap lowers the error
        assert len(curve) == int(out["swaps"]) + 1  # one entry per swap, after the first
        finals.add(tuple(mask.tolist()))
        moved += int(out["swaps"]) > 0
    assert moved > 50 and len(finals) < 70  # most warm starts move; they meet in few optima


@pytest.mark.parametrize("nm", [(2, 4), (1, 4), (4, 8)])
def test_nm_row_ends_at_a_local_optimum_inside_groups(nm):
    n, m = nm
    c = 16
    X = correlated_X(c, 48, seed=5)
    w = torch.randn(3, c, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    warm = torch.zeros(1, 3, c, dtype=torch.bool)
    g = torch.Generator().manual_seed(7)
    for i in range(3):  # a random N:M mask per row
        for j in range(0, c, m):
            warm[0, i, j + torch.randperm(m, generator=g)[:n]] = True
    out = refine(w.unsqueeze(0), (X @ X.T).unsqueeze(0), warm, iters=200, nm=nm)
    mask = out["pruned"][0]
    assert is_nm(mask, n, m)
    assert bool(out["converged"].all()) and int(out["swaps"].sum()) > 0
    for i in range(3):
        E = row_error(w[i], mask[i], X)
        assert E <= row_error(w[i], warm[0, i], X) * (1 + 1e-12)
        assert improving_swap(w[i], mask[i], X, lambda p, u: p // m == u // m) >= -1e-9 * E
    # a swap across groups can still help: the restriction is real
    free = min(improving_swap(w[i], mask[i], X) for i in range(3))
    assert free < 0


def test_prune_objective_is_the_output_error_of_the_masked_weights(linear_problem):
    p = linear_problem(6, 12, 40, correlated=True)
    res = sparseswaps.prune(p.W, p.stats, Sparsity(0.5))
    warm = METHODS["wanda"].prune(p.W, p.stats, Sparsity(0.5))
    # trace: ‖(W ⊙ pruned) X‖² = ‖W X − W_new X‖², from the warm start to the end
    assert res.trace[0] == pytest.approx(recon_error(p.W, warm.weight, p.X), rel=1e-10)
    assert res.trace[-1] == pytest.approx(recon_error(p.W, res.weight, p.X), rel=1e-10)
    assert res.trace[-1] < res.trace[0]
    assert float(res.info["objective"]) == pytest.approx(res.trace[-1], rel=1e-12)
    assert float(res.info["error_reduction"]) == pytest.approx(
        1 - res.trace[-1] / res.trace[0], rel=1e-9
    )
    per_row = ((p.W * res.pruned) @ p.X).pow(2).sum(-1)
    torch.testing.assert_close(res.loss, per_row, rtol=1e-10, atol=0)
    assert torch.equal(res.weight, p.W.masked_fill(res.pruned, 0))
    assert int(res.info["swaps"]) == int((res.pruned & ~warm.pruned).sum())


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.7])
def test_counts_of_every_row_are_the_warm_starts(linear_problem, ratio):
    p = linear_problem(8, 20, 60, correlated=True, seed=1)
    res = sparseswaps.prune(p.W, p.stats, Sparsity(ratio), warm_start="magnitude")
    warm = METHODS["magnitude"].prune(p.W, p.stats, Sparsity(ratio), group="row")
    assert torch.equal(res.pruned.sum(-1), warm.pruned.sum(-1))
    assert not torch.equal(res.pruned, warm.pruned)


@pytest.mark.parametrize("nm", [(2, 4), (4, 8), (1, 4)])
def test_prune_keeps_nm(linear_problem, nm):
    p = linear_problem(8, 32, 64, correlated=True, seed=2)
    res = sparseswaps.prune(p.W, p.stats, Sparsity(nm[0] / nm[1], nm))
    warm = METHODS["wanda"].prune(p.W, p.stats, Sparsity(nm[0] / nm[1], nm))
    assert is_nm(res.pruned, *nm) and not torch.equal(res.pruned, warm.pruned)
    assert res.trace[-1] < res.trace[0]


def test_screened_search_equals_the_full_search(monkeypatch):
    # the bound only skips pairs that cannot win: the same swaps with every pair searched
    g = torch.Generator().manual_seed(8)
    L, r, c = 3, 10, 40
    X = torch.randn(L, c, 120, generator=g, dtype=torch.float64)
    X = X + 0.9 * torch.randn(L, 1, 120, generator=g, dtype=torch.float64)  # strong correlations
    W = torch.randn(L, r, c, generator=g, dtype=torch.float64)
    warm = torch.rand(L, r, c, generator=g).argsort(-1) < 20
    G = X @ X.transpose(-1, -2)
    screened = refine(W, G, warm, iters=300)
    monkeypatch.setattr(sparseswaps, "_LEVELS", ())
    full = refine(W, G, warm, iters=300)
    assert torch.equal(screened["pruned"], full["pruned"])
    assert torch.equal(screened["swaps"], full["swaps"])
    assert bool(screened["converged"].all())


@pytest.mark.parametrize("levels", [(8, 32), (1, 2, 4)])
@pytest.mark.parametrize("shared", [0.0, 0.5, 3.0])
def test_one_search_finds_the_brute_force_optimum(monkeypatch, shared, levels):
    # the screened search of one iteration against every kept × pruned pair; a strong shared
    # factor makes the bound loose, and tiny candidate sets (1, 2, 4) make it fail often, so
    # the search must widen, level by level up to all pairs, to stay exact
    monkeypatch.setattr(sparseswaps, "_LEVELS", levels)
    g = torch.Generator().manual_seed(9)
    R, c, n = 48, 96, 160
    X = torch.randn(c, n, generator=g, dtype=torch.float64)
    X = X + shared * torch.randn(1, n, generator=g, dtype=torch.float64)
    X = X * torch.logspace(-1, 1, c, dtype=torch.float64)[torch.randperm(c, generator=g)][:, None]
    W = torch.randn(R, c, generator=g, dtype=torch.float64)
    pruned = torch.rand(R, c, generator=g).argsort(-1) < 40
    G = (X @ X.T).unsqueeze(0)
    st = sparseswaps._Active(W, pruned, G, torch.zeros(R, dtype=torch.long))
    delta, p, u = sparseswaps._best_unstructured(st)
    for i in range(R):  # brute force on the outputs: ‖y + w_p·x_p − w_u·x_u‖² − ‖y‖², y = r X
        V = W[i, :, None] * X  # (c, n) each weight's output
        y = (W[i] * pruned[i]) @ X
        kept, gone = (~pruned[i]).nonzero()[:, 0], pruned[i].nonzero()[:, 0]
        moved = y + V[kept, None, :] - V[None, gone, :]  # (kept, pruned, n)
        D = moved.pow(2).sum(-1) - y.pow(2).sum()
        scale = float(y.pow(2).sum() + V.pow(2).sum(-1).max())
        assert float(delta[i]) == pytest.approx(float(D.min()), abs=1e-10 * scale)
        assert not pruned[i, p[i]] and pruned[i, u[i]]
        hit = D[(kept == p[i]).nonzero()[0, 0], (gone == u[i]).nonzero()[0, 0]]
        assert float(hit) == pytest.approx(float(D.min()), abs=1e-10 * scale)


def test_disagrees_with_wanda_on_a_hand_made_row():
    # x1 = x2 and w = (1, −0.5, 0.6, 0.7): Wanda prunes w2, w3 (error 0.25 + 0.36); pruning the
    # largest weight w1 next to w2 leaves 0.5·x1 (error 0.25), and no single swap beats that.
    X = torch.tensor(
        [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64
    )
    W = torch.tensor([[1.0, -0.5, 0.6, 0.7]], dtype=torch.float64)
    st = stats_from_X(X, 3)
    wanda = METHODS["wanda"].prune(W, st, Sparsity(0.5))
    res = sparseswaps.prune(W, st, Sparsity(0.5))
    assert wanda.pruned.tolist() == [[False, True, True, False]]
    assert res.pruned.tolist() == [[True, True, False, False]]
    assert res.trace == pytest.approx([0.61, 0.25])


def test_sparsegpt_warm_start_gives_its_mask_on_the_original_weights(linear_problem):
    p = linear_problem(8, 16, 64, correlated=True, seed=4)
    sg = METHODS["sparsegpt"].prune(p.W, p.stats, Sparsity(0.5))
    res = sparseswaps.prune(p.W, p.stats, Sparsity(0.5), warm_start="sparsegpt")
    assert torch.equal(res.weight, p.W.masked_fill(res.pruned, 0))  # no compensation
    assert torch.equal(res.pruned.sum(-1), sg.pruned.sum(-1))  # SparseGPT's uneven rows kept
    assert res.trace[0] == pytest.approx(recon_error(p.W, p.W.masked_fill(sg.pruned, 0), p.X))


def test_zero_iterations_is_the_warm_start_and_the_cap_holds(linear_problem):
    p = linear_problem(8, 16, 64, correlated=True, seed=5)
    warm = METHODS["wanda"].prune(p.W, p.stats, Sparsity(0.5))
    none = sparseswaps.prune(p.W, p.stats, Sparsity(0.5), iters=0)
    assert torch.equal(none.pruned, warm.pruned) and torch.equal(none.weight, warm.weight)
    assert len(none.trace) == 1 and float(none.info["error_reduction"]) == 0
    one = sparseswaps.prune(p.W, p.stats, Sparsity(0.5), iters=1)
    assert ((one.pruned & ~warm.pruned).sum(-1) <= 1).all() and len(one.trace) == 2
    full = sparseswaps.prune(p.W, p.stats, Sparsity(0.5), iters=1000)
    assert full.trace[-1] <= one.trace[-1] <= one.trace[0]
    assert float(full.info["converged"]) == 1 and float(one.info["converged"]) < 1


def test_batched_layers_equal_one_at_a_time(linear_problem):
    ps = [linear_problem(6, 16, 48, correlated=True, seed=s) for s in (10, 11, 12)]
    W = torch.stack([p.W for p in ps])
    st = LayerStats(48, torch.stack([p.stats.sq_norm for p in ps]))
    st.hessian = torch.stack([p.stats.hessian for p in ps])
    res = sparseswaps.prune(W, st, Sparsity(0.5))
    for b, p in enumerate(ps):
        one = sparseswaps.prune(p.W, p.stats, Sparsity(0.5))
        assert torch.equal(res.pruned[b], one.pruned)
        assert float(res.info["error_reduction"][b]) == pytest.approx(
            float(one.info["error_reduction"]), rel=1e-9
        )
        assert res.info["objective_trace"][b][-1] == pytest.approx(one.trace[-1], rel=1e-9)


def test_warm_start_and_statistics_are_checked(linear_problem):
    p = linear_problem(4, 8, 16)
    with pytest.raises(ValueError, match="warm start"):
        sparseswaps.prune(p.W, p.stats, Sparsity(0.5), warm_start="nope")
    with pytest.raises(ValueError, match="warm start"):
        sparseswaps.prune(p.W, p.stats, Sparsity(0.5), warm_start="sparseswaps")
    with pytest.raises(ValueError, match="Hessian"):
        sparseswaps.prune(p.W, LayerStats(16, p.stats.sq_norm), Sparsity(0.5))
    assert needs_of("sparseswaps") == {"hessian", "sq_norm"}
    assert needs_of("sparseswaps", {"warm_start": "magnitude"}) == {"hessian"}
    assert needs_of("sparseswaps", {"warm_start": "sparsegpt"}) == {"hessian"}


@pytest.mark.parametrize("mode", ["sequential", "dense"])
def test_through_the_runner_every_layer_improves(tiny, mode):
    model, windows = tiny("llama")
    run = prune_model(model, windows, "sparseswaps", Sparsity(0.5), mode=mode)
    reductions = [r.info["error_reduction"] for r in run.layers.values()]
    assert all(x >= 0 for x in reductions) and sum(reductions) > 0
    assert all(r.info["objective"] <= r.info["objective_warm"] for r in run.layers.values())


def test_magnitude_warm_start_through_the_runner_needs_no_activation_norms(tiny):
    model, windows = tiny("opt")
    run = prune_model(model, windows, "sparseswaps", Sparsity(0.5), warm_start="magnitude")
    assert run.achieved_sparsity() > 0.49


def test_cli_warm_start_needs_a_refining_method(capsys):
    from pruning.__main__ import main, table

    assert main(["--method", "wanda", "--warm-start", "sparsegpt"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "sparseswaps, barber" in err
    row = {
        "method": "barber",
        "warm_start": "sparsegpt",
        "sparsity": "50%",
        "mode": "sequential",
        "achieved": 0.5,
        "dense_ppl": 14.0,
        "ppl": 20.0,
        "load_s": 0.0,
        "calibrate_s": 1.0,
        "prune_s": 2.0,
        "eval_s": 3.0,
    }
    line = table([row]).splitlines()[2].split()
    assert line[:2] == ["barber(sparsegpt)", "50%"] and float(line[5]) == 20.0
