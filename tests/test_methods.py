"""Tests for the layer-level methods: magnitude, Wanda, SparseGPT, and the contract every method in
pruning.METHODS must keep (parametrized, so a new method is covered by adding it to the registry)."""

from __future__ import annotations

import inspect
import math

import pytest
import torch
from conftest import recon_error, stats_from_X
from torch.testing import assert_close

from pruning import METHODS, magnitude, sparsegpt, wanda
from pruning.masks import is_nm
from pruning.types import LayerStats, Sparsity


def floor_count(size: int, ratio: float) -> int:
    """floor(size·ratio) of the decimal product (0.29·100 is 29, not 28)."""
    return math.floor(round(size * ratio, 9))


def uniform_stats(inp: int, value: float = 3.7) -> LayerStats:
    return LayerStats(nsamples=1, sq_norm=torch.full((inp,), value), hessian=torch.eye(inp))


# magnitude


def test_magnitude_hand_case():
    W = torch.tensor([[0.1, -5.0, 0.3, 2.0], [-1.0, 0.05, 4.0, -0.2]])
    res = magnitude.prune(W, LayerStats(), Sparsity(0.5))
    # the four smallest |w| of the whole matrix: 0.05, 0.1, 0.2, 0.3
    assert res.pruned.tolist() == [[True, False, True, False], [False, True, False, True]]
    assert res.weight.tolist() == [[0.0, -5.0, 0.0, 2.0], [-1.0, 0.0, 4.0, 0.0]]
    assert_close(res.score, W.abs())


def test_magnitude_layer_and_row_groups_disagree():
    # row 0 holds only small weights: the layer group prunes it entirely, the row group only half
    W = torch.tensor([[1.0, -2.0, 3.0, 4.0], [10.0, 20.0, -30.0, 40.0]])
    layer = magnitude.prune(W, LayerStats(), Sparsity(0.5), group="layer").pruned
    row = magnitude.prune(W, LayerStats(), Sparsity(0.5), group="row").pruned
    assert layer.tolist() == [[True, True, True, True], [False, False, False, False]]
    assert row.tolist() == [[True, True, False, False], [True, True, False, False]]


def test_magnitude_default_group_is_layer(linear_problem):
    p = linear_problem(8, 16, dtype=torch.float32)
    W = p.W * torch.linspace(0.1, 2, 8)[:, None]  # rows of very different scale
    res = magnitude.prune(W, LayerStats(), Sparsity(0.5))
    assert torch.equal(
        res.pruned, magnitude.prune(W, LayerStats(), Sparsity(0.5), group="layer").pruned
    )
    assert not torch.equal(
        res.pruned, magnitude.prune(W, LayerStats(), Sparsity(0.5), group="row").pruned
    )


@pytest.mark.parametrize("group", ["layer", "row"])
def test_magnitude_zeroes_pruned_and_keeps_the_rest(linear_problem, group):
    W = linear_problem(6, 12, dtype=torch.float32).W
    before = W.clone()
    res = magnitude.prune(W, LayerStats(), Sparsity(0.4), group=group)
    assert torch.equal(W, before)  # input untouched
    assert (res.weight[res.pruned] == 0).all()
    assert torch.equal(res.weight[~res.pruned], W[~res.pruned])
    kept_min = W.abs()[~res.pruned].min() if group == "layer" else None
    if kept_min is not None:  # every pruned |w| is below every kept |w|
        assert (W.abs()[res.pruned] < kept_min).all()


# Wanda


def test_wanda_discriminates_from_magnitude():
    # torchao's case: activations 100, 10, 1, 0.1 make the small weights the important ones
    W = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    st = stats_from_X(torch.tensor([[100.0], [10.0], [1.0], [0.1]]), nsamples=1)
    res = wanda.prune(W, st, Sparsity(0.5))
    assert res.weight.tolist() == [[1.0, 2.0, 0.0, 0.0]]
    assert res.pruned.tolist() == [[False, False, True, True]]
    assert_close(res.score, torch.tensor([[100.0, 20.0, 3.0, 0.4]]))
    assert magnitude.prune(W, st, Sparsity(0.5)).weight.tolist() == [[0.0, 0.0, 3.0, 4.0]]


def test_wanda_uses_the_root_of_the_squared_norm():
    # |w|·‖x‖ = [1·2, 3·1] prunes the first weight; |w|·‖x‖² = [4, 3] would prune the second
    W = torch.tensor([[1.0, 3.0]])
    st = LayerStats(nsamples=1, sq_norm=torch.tensor([4.0, 1.0]))
    assert wanda.prune(W, st, Sparsity(0.5)).weight.tolist() == [[0.0, 3.0]]


def test_wanda_2_4_with_uniform_activations():
    W = torch.arange(1.0, 9.0)[None]
    res = wanda.prune(W, uniform_stats(8, 1.0), Sparsity(0.5, (2, 4)))
    assert res.weight.tolist() == [[0.0, 0.0, 3.0, 4.0, 0.0, 0.0, 7.0, 8.0]]


@pytest.mark.parametrize(
    "sparsity", [Sparsity(0.5), Sparsity(0.3), Sparsity(0.5, (2, 4)), Sparsity(0.5, (4, 8))]
)
def test_wanda_with_uniform_activations_equals_row_magnitude(linear_problem, sparsity):
    W = linear_problem(8, 16, dtype=torch.float32).W
    res = wanda.prune(W, uniform_stats(16), sparsity)
    ref = magnitude.prune(W, LayerStats(), sparsity, group="row")
    assert torch.equal(res.pruned, ref.pruned)
    assert torch.equal(res.weight, ref.weight)


def test_wanda_compares_within_rows(linear_problem):
    p = linear_problem(8, 20, dtype=torch.float32, correlated=True)
    W = p.W * torch.logspace(-2, 2, 8)[:, None]  # rows of very different scale
    res = wanda.prune(W, p.stats, Sparsity(0.3))
    assert res.pruned.sum(-1).tolist() == [6] * 8
    assert torch.equal(res.weight[~res.pruned], W[~res.pruned])  # no weight update


def test_wanda_needs_sq_norm(linear_problem):
    with pytest.raises(ValueError, match="sq_norm"):
        wanda.prune(linear_problem().W, LayerStats(hessian=torch.eye(16)), Sparsity(0.5))


# SparseGPT: a naive one-column-at-a-time OBS written for this test (no lazy batching at all)


def naive_sparsegpt(W, H, sparsity, blocksize, percdamp=0.01):
    """Straightforward OBS: U from inv(H), every column's update applied to all later columns at
    once. Block b prunes floor(r·c_b·s) − floor(r·c_{b−1}·s) lowest w²/U_jj² of its r×b block, on
    the weights updated so far; N:M picks the n lowest of each m-group just before it."""
    W, H = W.double().clone(), H.double().clone()
    r, c = W.shape
    dead = H.diagonal() == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H += percdamp * H.diagonal().mean() * torch.eye(c, dtype=H.dtype)
    U = torch.linalg.cholesky(torch.linalg.inv(H), upper=True)  # H⁻¹ = UᵀU
    d = U.diagonal()
    pruned = torch.zeros(r, c, dtype=torch.bool)
    loss = torch.zeros(r, dtype=W.dtype)
    nm = sparsity.nm
    if nm is not None:
        blocksize = max(nm[1], blocksize - blocksize % nm[1])
    for i1 in range(0, c, blocksize):
        i2 = min(i1 + blocksize, c)
        if nm is None:
            S = (W[:, i1:i2] ** 2 / d[i1:i2] ** 2).flatten()
            k = floor_count(r * i2, sparsity.ratio) - floor_count(r * i1, sparsity.ratio)
            block = torch.zeros(S.numel(), dtype=torch.bool)
            block[torch.argsort(S, stable=True)[:k]] = True
            pruned[:, i1:i2] = block.view(r, i2 - i1)
        for j in range(i1, i2):
            if nm is not None and j % nm[1] == 0:
                S = W[:, j : j + nm[1]] ** 2 / d[j : j + nm[1]] ** 2
                low = torch.argsort(S, dim=-1, stable=True)[:, : nm[0]]
                pruned[:, j : j + nm[1]] = torch.zeros_like(S, dtype=torch.bool).scatter(
                    1, low, True
                )
            w = W[:, j].clone()
            q = w.masked_fill(pruned[:, j], 0)
            e = (w - q) / d[j]
            loss += e**2 / 2
            W[:, j:] -= e[:, None] * U[j, j:][None, :]
            W[:, j] = q
    return W, pruned, loss


@pytest.mark.parametrize(
    ("out", "inp", "sparsity", "blocksize", "inner"),
    [
        (6, 16, Sparsity(0.5), 128, 16),  # one block
        (6, 16, Sparsity(0.5), 4, 2),  # several blocks, lazy inner updates
        (5, 23, Sparsity(0.7), 8, 3),  # last block partial, inner not dividing the block
        (7, 20, Sparsity(0.35), 6, 4),
        (6, 16, Sparsity(0.5, (2, 4)), 8, 4),
        (6, 24, Sparsity(0.5, (4, 8)), 16, 8),
        (6, 24, Sparsity(0.75, (3, 4)), 10, 5),  # blocksize/inner rounded down to multiples of M
    ],
)
def test_sparsegpt_equals_naive_obs(linear_problem, out, inp, sparsity, blocksize, inner):
    p = linear_problem(out, inp, 64, correlated=True, seed=inp)
    res = sparsegpt.prune(p.W, p.stats, sparsity, blocksize=blocksize, inner=inner)
    W_ref, pruned_ref, loss_ref = naive_sparsegpt(p.W, p.stats.hessian, sparsity, blocksize)
    assert torch.equal(res.pruned, pruned_ref)
    assert_close(res.weight, W_ref)
    assert_close(res.loss, loss_ref)


def test_sparsegpt_identity_hessian_is_layer_magnitude(linear_problem):
    W = linear_problem(8, 16).W
    st = LayerStats(nsamples=1, hessian=torch.eye(16, dtype=torch.float64))
    res = sparsegpt.prune(W, st, Sparsity(0.5), blocksize=16)
    ref = magnitude.prune(W, st, Sparsity(0.5), group="layer")
    assert torch.equal(res.pruned, ref.pruned)
    assert torch.equal(res.weight, ref.weight)  # no compensation: kept weights exactly unchanged
    assert res.weight.dtype == torch.float64


@pytest.mark.parametrize(
    ("sparsity", "blocksize", "inner"),
    [
        (Sparsity(0.5), 128, 16),
        (Sparsity(0.5), 8, 3),
        (Sparsity(0.6), 5, 2),
        (Sparsity(0.5, (2, 4)), 128, 16),
        (Sparsity(0.5, (2, 4)), 8, 4),
        (Sparsity(0.5, (4, 8)), 8, 8),
    ],
)
def test_sparsegpt_loss_is_the_reconstruction_error(linear_problem, sparsity, blocksize, inner):
    # percdamp = 0: the OBS loss summed over columns is ½·ΔW H ΔWᵀ = ‖ΔW X‖²/nsamples, exactly
    p = linear_problem(6, 16, 64, correlated=True)
    res = sparsegpt.prune(p.W, p.stats, sparsity, blocksize=blocksize, percdamp=0.0, inner=inner)
    assert res.weight.dtype == torch.float64
    measured = recon_error(p.W, res.weight, p.X) / p.nsamples
    assert_close(res.loss.sum().item(), measured, rtol=1e-9, atol=0)


@pytest.mark.parametrize(
    ("out", "inp", "ratio", "blocksize"),
    [(5, 23, 0.7, 8), (4, 25, 0.29, 7), (3, 10, 0.5, 3), (6, 16, 0.5, 128), (7, 9, 0.99, 4)],
)
def test_sparsegpt_exact_count(linear_problem, out, inp, ratio, blocksize):
    p = linear_problem(out, inp, 64, correlated=True)
    res = sparsegpt.prune(p.W, p.stats, Sparsity(ratio), blocksize=blocksize)
    assert int(res.pruned.sum()) == floor_count(out * inp, ratio)
    for i1 in range(0, inp, blocksize):  # the per-block rule of the docstring
        i2 = min(i1 + blocksize, inp)
        want = floor_count(out * i2, ratio) - floor_count(out * i1, ratio)
        assert int(res.pruned[:, i1:i2].sum()) == want
    assert (res.weight[res.pruned] == 0).all()


@pytest.mark.parametrize("nm", [(2, 4), (4, 8), (1, 4)])
@pytest.mark.parametrize("blocksize", [128, 8, 6])
def test_sparsegpt_exact_nm(linear_problem, nm, blocksize):
    p = linear_problem(6, 32, 64, correlated=True)
    res = sparsegpt.prune(p.W, p.stats, Sparsity(nm[0] / nm[1], nm), blocksize=blocksize, inner=3)
    assert is_nm(res.pruned, *nm)
    assert (res.weight[res.pruned] == 0).all()
    assert (res.weight[~res.pruned] != 0).all()


def stacked_problem(linear_problem, batch=3, out=5, inp=12):
    problems = [linear_problem(out, inp, 48, seed=s, correlated=True) for s in range(batch)]
    W = torch.stack([p.W for p in problems])
    st = LayerStats(
        nsamples=48,
        sq_norm=torch.stack([p.stats.sq_norm for p in problems]),
        hessian=torch.stack([p.stats.hessian for p in problems]),
    )
    return W, st


@pytest.mark.parametrize("sparsity", [Sparsity(0.5), Sparsity(0.6), Sparsity(0.5, (2, 4))])
def test_sparsegpt_batched_equals_loop(linear_problem, sparsity):
    W, st = stacked_problem(linear_problem)
    H = st.hessian.clone()
    evals, evecs = torch.linalg.eigh(H[1])  # make entry 1 not PD: its lowest eigenvalue negative
    v = evecs[:, 0]
    H[1] -= (evals[0] + 0.05 * H[1].diagonal().mean()) * torch.outer(v, v)
    st.hessian = H
    res = sparsegpt.prune(W, st, sparsity, blocksize=5)
    assert res.weight.shape == W.shape and res.pruned.shape == W.shape and res.loss.shape == (3, 5)
    for b in range(3):
        one = sparsegpt.prune(W[b], LayerStats(48, st.sq_norm[b], H[b]), sparsity, blocksize=5)
        assert torch.equal(res.pruned[b], one.pruned)
        assert_close(res.weight[b], one.weight)
        assert_close(res.loss[b], one.loss)
        assert_close(res.info["percdamp"][b], one.info["percdamp"])
    assert res.info["percdamp"][1] > 0.01 and res.info["percdamp"][0] == 0.01


@pytest.mark.parametrize("sparsity", [Sparsity(0.5), Sparsity(0.5, (2, 4))])
@pytest.mark.parametrize("blocksize", [128, 4, 5])
def test_sparsegpt_order_is_permutation_equivariant(linear_problem, sparsity, blocksize):
    p = linear_problem(6, 16, 64, correlated=True, seed=3)
    gen = torch.Generator().manual_seed(7)
    perm = torch.randperm(16, generator=gen)
    if sparsity.nm:  # N:M orders move whole groups of M (and shuffle inside them)
        m = sparsity.nm[1]
        inside = torch.stack([torch.randperm(m, generator=gen) for _ in range(16 // m)])
        perm = (torch.randperm(16 // m, generator=gen)[:, None] * m + inside).flatten()
    H = p.stats.hessian
    natural = sparsegpt.prune(
        p.W[:, perm], LayerStats(64, hessian=H[perm][:, perm]), sparsity, blocksize=blocksize
    )
    ordered = sparsegpt.prune(p.W, p.stats, sparsity, blocksize=blocksize, order=perm)
    assert torch.equal(ordered.pruned[:, perm], natural.pruned)
    assert_close(ordered.weight[:, perm], natural.weight)
    assert_close(ordered.loss, natural.loss)
    assert torch.equal(ordered.order, perm)


def test_sparsegpt_order_keeps_the_nm_pattern_of_the_original_columns(linear_problem):
    p = linear_problem(4, 8, 32)
    with pytest.raises(ValueError, match="whole groups of 4"):  # splits groups 0 and 1
        sparsegpt.prune(
            p.W, p.stats, Sparsity(0.5, (2, 4)), order=torch.tensor([4, 1, 2, 3, 0, 5, 6, 7])
        )
    res = sparsegpt.prune(
        p.W, p.stats, Sparsity(0.5, (2, 4)), order=torch.tensor([5, 7, 4, 6, 2, 0, 1, 3])
    )
    assert is_nm(res.pruned, 2, 4)


def test_sparsegpt_identity_order_is_no_order(linear_problem):
    p = linear_problem(6, 16, 64, correlated=True)
    plain = sparsegpt.prune(p.W, p.stats, Sparsity(0.5), blocksize=4)
    ordered = sparsegpt.prune(p.W, p.stats, Sparsity(0.5), blocksize=4, order=torch.arange(16))
    assert torch.equal(plain.pruned, ordered.pruned)
    assert torch.equal(plain.weight, ordered.weight)
    assert torch.equal(plain.order, torch.arange(16))


def test_sparsegpt_batched_order_equals_loop(linear_problem):
    W, st = stacked_problem(linear_problem, batch=2)
    g = torch.Generator().manual_seed(1)
    order = torch.stack([torch.randperm(12, generator=g) for _ in range(2)])
    res = sparsegpt.prune(W, st, Sparsity(0.5), blocksize=5, order=order)
    for b in range(2):
        one = sparsegpt.prune(
            W[b], LayerStats(48, hessian=st.hessian[b]), Sparsity(0.5), blocksize=5, order=order[b]
        )
        assert torch.equal(res.pruned[b], one.pruned)
        assert_close(res.weight[b], one.weight)


def test_sparsegpt_raises_dampening_for_a_hessian_that_is_not_pd(linear_problem):
    p = linear_problem(6, 16, 64)
    v = torch.randn(16, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    v /= v.norm()
    H = torch.eye(16, dtype=torch.float64) - 1.5 * torch.outer(v, v)  # eigenvalue −0.5 along v
    res = sparsegpt.prune(p.W, LayerStats(64, hessian=H), Sparsity(0.5), percdamp=0.01)
    assert float(res.info["percdamp"]) > 0.01
    # mean(diag H) = 1 − 1.5/16; the smallest 10× step that clears −0.5 is 1.0
    assert_close(float(res.info["percdamp"]), 1.0)
    assert torch.isfinite(res.weight).all()
    assert int(res.pruned.sum()) == 48


def test_sparsegpt_percdamp_zero_on_a_singular_hessian_gets_damped(linear_problem):
    p = linear_problem(4, 8, 64)
    H = torch.eye(8, dtype=torch.float64)
    H[:2, :2] = 1.0  # two identical channels: an exact zero pivot
    res = sparsegpt.prune(p.W, LayerStats(64, hessian=H), Sparsity(0.5), percdamp=0.0)
    assert float(res.info["percdamp"]) > 0.0
    assert torch.isfinite(res.weight).all()
    assert int(res.pruned.sum()) == 16
    good = sparsegpt.prune(p.W, p.stats, Sparsity(0.5), percdamp=0.0)
    assert float(good.info["percdamp"]) == 0.0  # no raise where none is needed


def test_sparsegpt_dead_inputs_get_zero_weights(linear_problem):
    p = linear_problem(6, 16, 64, correlated=True)
    X = p.X.clone()
    X[[3, 7]] = 0  # two inputs never active
    st = stats_from_X(X, 64)
    assert (st.hessian[3] == 0).all() and (st.hessian[:, 7] == 0).all()
    for sparsity in (Sparsity(0.25), Sparsity(0.5, (2, 4))):
        res = sparsegpt.prune(p.W, st, sparsity, blocksize=8)
        assert (res.weight[:, [3, 7]] == 0).all()
        assert torch.isfinite(res.weight).all()
        if sparsity.nm is None:
            assert int(res.pruned.sum()) == 24
        else:
            assert is_nm(res.pruned, 2, 4)


def test_sparsegpt_needs_hessian(linear_problem):
    p = linear_problem()
    with pytest.raises(ValueError, match="hessian"):
        sparsegpt.prune(p.W, LayerStats(64, sq_norm=p.stats.sq_norm), Sparsity(0.5))


@pytest.mark.parametrize("sparsity", [Sparsity(0.5), Sparsity(0.5, (2, 4))])
def test_regression_sparsegpt_reconstructs_better_than_magnitude_and_wanda(
    linear_problem, sparsity
):
    # A regression test, not a theorem: on this seeded correlated problem (seed 11, 16×32 weights,
    # 256 tokens), SparseGPT's compensated weights give the lowest output error ‖ΔW X‖².
    p = linear_problem(16, 32, 256, seed=11, correlated=True)
    errors = {
        name: recon_error(p.W, METHODS[name].prune(p.W, p.stats, sparsity).weight, p.X)
        for name in ("magnitude", "wanda", "sparsegpt")
    }
    assert errors["sparsegpt"] < errors["wanda"]
    assert errors["sparsegpt"] < errors["magnitude"]


# the contract every registered method keeps


def group_of(method: str) -> str:
    """The comparison group a method's exact count holds for: its `group` default, else the layer."""
    param = inspect.signature(METHODS[method].prune).parameters.get("group")
    return param.default if param is not None else "layer"


def contract_problem(linear_problem, dtype=torch.float32, out=8, inp=16):
    p = linear_problem(out, inp, 64, correlated=True, dtype=dtype)
    grad = torch.rand(out, inp, generator=torch.Generator().manual_seed(1))  # GBLM's ‖∇W‖
    st = LayerStats(64, p.stats.sq_norm.float(), p.stats.hessian.float(), grad)  # all float32
    return p.W, st


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize("sparsity", [Sparsity(0.5), Sparsity(0.5, (2, 4))])
def test_contract_shape_dtype_purity_zeros(linear_problem, method, dtype, sparsity):
    W, st = contract_problem(linear_problem, dtype)
    W_before, sq_before, H_before = W.clone(), st.sq_norm.clone(), st.hessian.clone()
    res = METHODS[method].prune(W, st, sparsity)
    assert res.weight.shape == W.shape and res.weight.dtype == dtype
    assert res.weight.device == W.device
    assert res.pruned.shape == W.shape and res.pruned.dtype == torch.bool
    assert torch.equal(W, W_before)  # inputs untouched
    assert torch.equal(st.sq_norm, sq_before) and torch.equal(st.hessian, H_before)
    assert (res.weight[res.pruned] == 0).all()


@pytest.mark.parametrize("method", list(METHODS))
def test_contract_deterministic(linear_problem, method):
    W, st = contract_problem(linear_problem)
    a = METHODS[method].prune(W, st, Sparsity(0.5))
    b = METHODS[method].prune(W, st, Sparsity(0.5))
    assert torch.equal(a.pruned, b.pruned) and torch.equal(a.weight, b.weight)


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_contract_ratio_zero_is_identity(linear_problem, method, dtype):
    W, st = contract_problem(linear_problem, dtype)
    res = METHODS[method].prune(W, st, Sparsity(0.0))
    assert not res.pruned.any()
    assert torch.equal(res.weight, W)


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.7])
def test_contract_exact_count(linear_problem, method, ratio):
    W, st = contract_problem(linear_problem, out=8, inp=16)
    res = METHODS[method].prune(W, st, Sparsity(ratio))
    if group_of(method) == "row":
        assert res.pruned.sum(-1).tolist() == [floor_count(16, ratio)] * 8
    else:
        assert int(res.pruned.sum()) == floor_count(8 * 16, ratio)


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("nm", [(2, 4), (4, 8), (1, 4)])
def test_contract_exact_nm(linear_problem, method, nm):
    W, st = contract_problem(linear_problem, inp=32)
    res = METHODS[method].prune(W, st, Sparsity(nm[0] / nm[1], nm))
    assert is_nm(res.pruned, *nm)
    assert (res.weight[res.pruned] == 0).all()


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("sparsity", [Sparsity(0.4), Sparsity(0.5, (2, 4))])
def test_contract_batched_equals_loop(linear_problem, method, sparsity):
    W, st = stacked_problem(linear_problem)
    grad = torch.rand(W.shape, generator=torch.Generator().manual_seed(1))
    W, st = W.float(), LayerStats(48, st.sq_norm.float(), st.hessian.float(), grad)
    res = METHODS[method].prune(W, st, sparsity)
    for b in range(W.shape[0]):
        one_st = LayerStats(48, st.sq_norm[b], st.hessian[b], grad[b])
        one = METHODS[method].prune(W[b], one_st, sparsity)
        assert torch.equal(res.pruned[b], one.pruned)
        assert_close(res.weight[b], one.weight)
