"""GBLM-Pruner: the score (reductions to Wanda, the reference's balance, hand cases), the gradient
pass (equal to explicitly stored per-sample gradients, ℓ1 against ℓ2, memory, the model left as it
was) and its wiring in the runner (dense-model gradients, taken once, cached, per layer)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torch.testing import assert_close

from pruning import Sparsity, collect_dense_stats, gblm, prune_model, wanda
from pruning.arch import block_linears, decoder_blocks, get_weight
from pruning.gradients import collect_grad_norms, estimate_bytes
from pruning.masks import is_nm, select
from pruning.types import LayerStats

SPARSITIES = [Sparsity(0.5), Sparsity(0.3), Sparsity(0.5, (2, 4))]
NEEDS = frozenset({"sq_norm", "grad"})


def problem(linear_problem, out=8, inp=16, *, seed=0, dtype=torch.float32):
    """W, float32 statistics and a seeded positive gradient norm of W's shape."""
    p = linear_problem(out, inp, 64, seed=seed, correlated=True, dtype=dtype)
    g = torch.Generator().manual_seed(seed + 100)
    grad = torch.rand(out, inp, generator=g) * 0.02
    return p.W, LayerStats(64, p.stats.sq_norm.float(), grad=grad)


def weights(model) -> dict[str, torch.Tensor]:
    return {
        f"{i}.{name}": get_weight(model, module).detach().clone()
        for i, block in enumerate(decoder_blocks(model))
        for name, module in block_linears(model, block).items()
    }


# the score


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("sparsity", SPARSITIES, ids=str)
def test_zero_gradients_give_exactly_wanda(linear_problem, sparsity, dtype):
    W, st = problem(linear_problem, dtype=dtype)
    st = replace(st, grad=torch.zeros_like(st.grad))
    res, ref = gblm.prune(W, st, sparsity), wanda.prune(W, st, sparsity)
    assert torch.equal(res.pruned, ref.pruned)
    assert torch.equal(res.weight, ref.weight)
    assert torch.equal(res.score, ref.score)


@pytest.mark.parametrize("sparsity", SPARSITIES, ids=str)
def test_alpha_zero_gives_exactly_wanda(linear_problem, sparsity):
    W, st = problem(linear_problem)
    res, ref = gblm.prune(W, st, sparsity, alpha=0.0), wanda.prune(W, st, sparsity)
    assert torch.equal(res.pruned, ref.pruned) and torch.equal(res.score, ref.score)
    assert not torch.equal(gblm.prune(W, st, sparsity).pruned, ref.pruned)  # the default is not


@pytest.mark.parametrize("sparsity", SPARSITIES, ids=str)
def test_zero_activations_give_the_gradient_only_score(linear_problem, sparsity):
    # the reference's `gradient` mode: |W|·G per row
    W, st = problem(linear_problem)
    st = replace(st, sq_norm=torch.zeros_like(st.sq_norm))
    res = gblm.prune(W, st, sparsity)
    assert torch.equal(res.pruned, select(W.abs() * st.grad, sparsity, "row"))


def test_hand_case_the_gradient_flips_the_choice():
    W = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    st = LayerStats(1, torch.tensor([1.0, 4.0, 9.0, 16.0]), grad=torch.tensor([[0.05, 0, 0, 0]]))
    # Wanda: 1, 2, 3, 4 -> inputs 0 and 1 go; GBLM: 1 + 100·0.05 = 6, 2, 3, 4 -> inputs 1 and 2 go
    assert wanda.prune(W, st, Sparsity(0.5)).pruned.tolist() == [[True, True, False, False]]
    res = gblm.prune(W, st, Sparsity(0.5))
    assert res.score.tolist() == [[6.0, 2.0, 3.0, 4.0]]
    assert res.pruned.tolist() == [[False, True, True, False]]
    assert res.weight.tolist() == [[1.0, 0.0, 0.0, 1.0]]


@pytest.mark.parametrize("norm", ["l2", "l1"])
def test_default_alpha_reproduces_the_reference_score(norm):
    # the reference: gradient file = √Σ_b(100·g_b)² (ℓ2) or Σ_b|100·g_b| (ℓ1), score
    # |W|·√a + |W|·file with a the mean over windows of Σ_tokens x²; ours: unscaled G, α = 100
    g = torch.Generator().manual_seed(3)
    n, out, inp, L = 5, 6, 16, 7
    W = torch.randn(out, inp, generator=g)
    X = torch.randn(n, L, inp, generator=g) * torch.logspace(-1, 1, inp)
    per_sample = torch.randn(n, out, inp, generator=g) * 1e-3  # g_b, as backward gives them
    a = X.pow(2).sum(1).mean(0)
    if norm == "l2":
        file = (100 * per_sample).pow(2).sum(0).sqrt()
        G = per_sample.pow(2).sum(0).sqrt()
    else:
        file = (100 * per_sample).abs().sum(0)
        G = per_sample.abs().sum(0)
    reference = W.abs() * a.sqrt() + W.abs() * file
    assert gblm.ALPHA == 100
    res = gblm.prune(W, LayerStats(n, a, grad=G), Sparsity(0.5))
    assert_close(res.score, reference, rtol=1e-6, atol=0)
    assert torch.equal(res.pruned, select(reference, Sparsity(0.5), "row"))


@pytest.mark.parametrize(("norm", "power"), [("l2", 0.5), ("l1", 1.0)])
def test_alpha_formula_holds_a_reference_balance_at_another_nsamples(norm, power):
    # the docstring's rule: α = 100·(N_ref/N)^½ (ℓ2) or 100·N_ref/N (ℓ1). With every window alike
    # (g_b = g, a the same mean), N windows and that α give the reference's score on N_ref windows.
    g = torch.Generator().manual_seed(4)
    W, a = torch.randn(4, 8, generator=g), torch.rand(8, generator=g)
    g1 = torch.randn(4, 8, generator=g) * 1e-3
    n_ref, n = 128, 32
    G = {"l2": lambda k: math.sqrt(k) * g1.abs(), "l1": lambda k: k * g1.abs()}[norm]
    reference = W.abs() * a.sqrt() + W.abs() * (100 * G(n_ref))
    alpha = 100 * (n_ref / n) ** power
    res = gblm.prune(W, LayerStats(n, a, grad=G(n)), Sparsity(0.5), alpha=alpha)
    assert_close(res.score, reference, rtol=1e-5, atol=0)


def test_score_terms_add_up_and_are_reported(linear_problem):
    W, st = problem(linear_problem)
    res = gblm.prune(W, st, Sparsity(0.5), alpha=37.0)
    assert torch.equal(res.info["grad"], st.grad)
    assert torch.equal(res.info["activation_term"], wanda.prune(W, st, Sparsity(0.5)).score)
    assert_close(res.info["gradient_term"], 37.0 * W.abs() * st.grad)
    assert torch.equal(res.info["activation_term"] + res.info["gradient_term"], res.score)


@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.7])
def test_exact_count_per_row(linear_problem, ratio):
    W, st = problem(linear_problem)
    res = gblm.prune(W, st, Sparsity(ratio))
    assert res.pruned.sum(-1).tolist() == [math.floor(round(16 * ratio, 9))] * 8
    assert (res.weight[res.pruned] == 0).all() and torch.equal(
        res.weight[~res.pruned], W[~res.pruned]
    )


@pytest.mark.parametrize("nm", [(2, 4), (4, 8)])
def test_exact_nm(linear_problem, nm):
    W, st = problem(linear_problem, inp=32)
    assert is_nm(gblm.prune(W, st, Sparsity(nm[0] / nm[1], nm)).pruned, *nm)


@pytest.mark.parametrize("sparsity", SPARSITIES, ids=str)
def test_batched_equals_loop(linear_problem, sparsity):
    problems = [problem(linear_problem, seed=s) for s in range(3)]
    W = torch.stack([w for w, _ in problems])
    st = LayerStats(
        64,
        torch.stack([s.sq_norm for _, s in problems]),
        grad=torch.stack([s.grad for _, s in problems]),
    )
    res = gblm.prune(W, st, sparsity)
    for b, (w, s) in enumerate(problems):
        one = gblm.prune(w, s, sparsity)
        assert torch.equal(res.pruned[b], one.pruned) and torch.equal(res.score[b], one.score)
        assert torch.equal(res.info["gradient_term"][b], one.info["gradient_term"])


def test_missing_statistics_and_bad_alpha_are_value_errors(linear_problem):
    W, st = problem(linear_problem)
    with pytest.raises(ValueError, match="grad"):
        gblm.prune(W, replace(st, grad=None), Sparsity(0.5))
    with pytest.raises(ValueError, match="sq_norm"):
        gblm.prune(W, replace(st, sq_norm=None), Sparsity(0.5))
    for alpha in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="alpha"):
            gblm.prune(W, st, Sparsity(0.5), alpha=alpha)
    with pytest.raises(ValueError, match="do not match"):
        gblm.prune(W, replace(st, grad=st.grad.T), Sparsity(0.5))


# the gradient pass


def explicit_per_sample_grads(model, windows) -> dict[str, torch.Tensor]:
    """Every window's weight gradients, stored: (nsamples, out, in) per layer. The loss is the
    model's own causal-LM loss with labels = the window (the reference's call)."""
    model.zero_grad()
    stored: dict[str, list[torch.Tensor]] = {}
    for w in windows:
        loss = model(input_ids=w[None], labels=w[None], use_cache=False).loss
        loss.backward()
        for name, W in weights_grad(model).items():
            stored.setdefault(name, []).append(W)
        model.zero_grad()
    return {name: torch.stack(gs) for name, gs in stored.items()}


def weights_grad(model) -> dict[str, torch.Tensor]:
    """Each prunable weight's .grad as (out, in): GPT-2's Conv1D stores (in, out)."""
    from transformers.pytorch_utils import Conv1D

    return {
        f"{i}.{name}": (
            module.weight.grad.T if isinstance(module, Conv1D) else module.weight.grad
        ).clone()
        for i, block in enumerate(decoder_blocks(model))
        for name, module in block_linears(model, block).items()
    }


@pytest.mark.parametrize("family", ["llama", "gpt2", "opt", "gpt_neox"])
def test_grad_norms_equal_explicitly_stored_per_sample_gradients(tiny, family):
    model, windows = tiny(family, n=4)
    model = model.double()
    per_sample = explicit_per_sample_grads(model, windows)
    l2 = collect_grad_norms(model, windows, norm="l2")
    l1 = collect_grad_norms(model, windows, norm="l1")
    assert list(l2) == list(per_sample) == list(weights(model))
    for name, g in per_sample.items():
        assert l2[name].shape == g.shape[1:] and l2[name].dtype == torch.float64
        assert_close(l2[name], g.pow(2).sum(0).sqrt(), rtol=1e-10, atol=1e-14)
        assert_close(l1[name], g.abs().sum(0), rtol=1e-10, atol=1e-14)
        assert (l2[name] > 0).any()


def test_l1_and_l2_differ_as_they_should(tiny):
    model, windows = tiny("llama", n=4)
    model = model.double()
    l1 = collect_grad_norms(model, windows, norm="l1")
    l2 = collect_grad_norms(model, windows, norm="l2")
    one_l1 = collect_grad_norms(model, windows[:1], norm="l1")
    one_l2 = collect_grad_norms(model, windows[:1], norm="l2")
    same = windows[:1].repeat(4, 1)  # four copies of one window: ℓ1 = 4·|g|, ℓ2 = 2·|g|
    rep_l1 = collect_grad_norms(model, same, norm="l1")
    rep_l2 = collect_grad_norms(model, same, norm="l2")
    for name in l1:
        assert_close(one_l1[name], one_l2[name], rtol=1e-12, atol=0)  # one sample: both are |g|
        assert_close(rep_l1[name], 4 * one_l1[name], rtol=1e-12, atol=0)
        assert_close(rep_l2[name], 2 * one_l2[name], rtol=1e-12, atol=0)
        # distinct windows: ℓ2 ≤ ℓ1 ≤ √N·ℓ2 entrywise, and strictly apart where signs disagree
        assert (l2[name] <= l1[name] * (1 + 1e-12)).all()
        assert (l1[name] <= 2 * l2[name] * (1 + 1e-12)).all()
        assert (l1[name] > 1.05 * l2[name]).float().mean() > 0.5


def test_the_pass_leaves_the_model_as_it_was(tiny):
    model, windows = tiny("llama")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.model.embed_tokens.weight.requires_grad_(False)  # a caller's own flags and gradients
    q = model.model.layers[0].self_attn.q_proj.weight
    q.grad = torch.ones_like(q)
    model.train()
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    G = collect_grad_norms(model, windows)
    assert model.training
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert torch.equal(q.grad, torch.ones_like(q))  # put back ...
    assert all(p.grad is None for p in model.parameters() if p is not q)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    q.grad = None
    fresh, _ = tiny("llama")
    assert_close(G["0.self_attn.q_proj"], collect_grad_norms(fresh, windows)["0.self_attn.q_proj"])
    # ... and never mixed in: the same norms as a model that had no gradient


def test_a_pass_that_cannot_fit_is_a_clear_value_error(tiny):
    model, windows = tiny("llama")
    need = estimate_bytes(model, windows.shape[1])
    assert set(need) == {"accumulators", "gradient", "activations"}
    n_weights = sum(w.numel() for w in weights(model).values())
    assert need["accumulators"] == 4 * n_weights
    with pytest.raises(ValueError, match=r"gradient pass needs about .* KiB .* free on cpu"):
        collect_grad_norms(model, windows, memory_limit=sum(need.values()) - 1)
    collect_grad_norms(model, windows, memory_limit=sum(need.values()))  # exactly enough runs


@pytest.mark.parametrize("family", ["llama", "opt"])
def test_batching_changes_nothing_but_the_number_of_passes(tiny, family):
    model, windows = tiny(family, n=5)
    model = model.double()
    one = collect_grad_norms(model, windows, batch_size=1)
    for batch_size in (2, 5, 8):  # a short last batch; all at once; more than there are
        got = collect_grad_norms(model, windows, batch_size=batch_size)
        for name in one:
            assert_close(got[name], one[name], rtol=1e-12, atol=1e-15)


def test_a_short_memory_budget_shrinks_the_batch_not_the_result(tiny):
    model, windows = tiny("llama", n=4)
    model = model.double()
    calls = []
    fits_two = sum(estimate_bytes(model, windows.shape[1], 2).values())
    small = collect_grad_norms(
        model, windows, memory_limit=fits_two, progress=lambda *a: calls.append(a)
    )
    assert [done for done, _, _ in calls] == [2, 4]  # two windows per backward
    full = collect_grad_norms(model, windows)
    for name in full:
        assert_close(small[name], full[name], rtol=1e-12, atol=1e-15)


def test_progress_per_batch_and_bad_input(tiny):
    model, windows = tiny("llama", n=3)
    calls = []
    collect_grad_norms(model, windows, batch_size=1, progress=lambda *a: calls.append(a))
    assert [(done, total) for done, total, _ in calls] == [(1, 3), (2, 3), (3, 3)]
    calls.clear()
    collect_grad_norms(model, windows, batch_size=2, progress=lambda *a: calls.append(a))
    assert [(done, total) for done, total, _ in calls] == [(2, 3), (3, 3)]
    with pytest.raises(ValueError, match="batch_size"):
        collect_grad_norms(model, windows, batch_size=0)
    with pytest.raises(ValueError, match="norm"):
        collect_grad_norms(model, windows, norm="l3")
    with pytest.raises(ValueError, match="seqlen"):
        collect_grad_norms(model, windows[:, :1])


def test_non_finite_loss_is_a_value_error(tiny):
    model, windows = tiny("llama")
    with torch.no_grad():
        model.model.embed_tokens.weight[windows[0, 3]] = float("inf")
    with pytest.raises(ValueError, match="non-finite"):
        collect_grad_norms(model, windows)


# the runner


def test_dense_mode_takes_the_gradients_once_and_each_layer_gets_its_own(tiny):
    model, windows = tiny("llama")
    stats = collect_dense_stats(model, windows, NEEDS)
    G = collect_grad_norms(model, windows)
    assert stats.grad_norm == "l2" and list(stats.grads) == list(weights(model))
    assert all(torch.equal(stats.grads[k], G[k]) for k in G)
    assert all(st.grad is None for blk in stats.blocks for st in blk.values())  # shared untouched
    before = weights(model)
    run = prune_model(model, None, "gblm", Sparsity(0.5), mode="dense", dense_stats=stats)
    for name, w in before.items():
        block, linear = name.split(".", 1)
        st = replace(stats.blocks[int(block)][linear], grad=G[name])
        assert torch.equal(run.layers[name].pruned, gblm.prune(w, st, Sparsity(0.5)).pruned), name


def test_sequential_mode_uses_the_dense_models_gradients(tiny):
    # gradients are taken once on the dense model; the activation statistics are sequential
    from pruning.arch import set_weight
    from pruning.calibration import capture_block_inputs, collect_stats, run_block

    model, windows = tiny("llama")
    ref, _ = tiny("llama")
    run = prune_model(model, windows, "gblm", Sparsity(0.5), batch_size=4)
    G = collect_grad_norms(ref, windows)
    inputs = capture_block_inputs(ref, windows, 4)
    for i, block in enumerate(decoder_blocks(ref)):
        stats, _ = collect_stats(ref, block, inputs, NEEDS)
        for name, module in block_linears(ref, block).items():
            st = replace(stats[name], grad=G[f"{i}.{name}"])
            res = gblm.prune(get_weight(ref, module), st, Sparsity(0.5))
            set_weight(ref, module, res.weight)
            assert torch.equal(run.layers[f"{i}.{name}"].pruned, res.pruned), f"{i}.{name}"
        inputs = inputs.with_hidden(run_block(block, inputs))
    pruned_G = collect_grad_norms(model, windows)  # the pruned model's would be different
    assert not torch.allclose(pruned_G["1.mlp.down_proj"], G["1.mlp.down_proj"])


def test_cached_gradients_are_not_taken_again(tiny, monkeypatch):
    from pruning import runner

    calls = []

    def counting(*args, **kwargs):
        calls.append(kwargs.get("norm"))
        return collect_grad_norms(*args, **kwargs)

    monkeypatch.setattr(runner, "collect_grad_norms", counting)
    model, windows = tiny("llama")
    stats = collect_dense_stats(model, windows, NEEDS)
    for sparsity in (Sparsity(0.5), Sparsity(0.5, (2, 4)), Sparsity(0.6)):
        fresh, _ = tiny("llama")
        prune_model(fresh, None, "gblm", sparsity, mode="dense", dense_stats=stats)
    fresh, _ = tiny("llama")
    prune_model(fresh, windows, "gblm", Sparsity(0.5), dense_stats=stats)  # sequential: reused
    assert calls == ["l2"]
    with pytest.raises(ValueError, match="grad"):  # the cache has ℓ2, ℓ1 needs the windows
        prune_model(
            fresh, None, "gblm", Sparsity(0.5), mode="dense", dense_stats=stats, grad_norm="l1"
        )
    prune_model(
        fresh, windows, "gblm", Sparsity(0.5), mode="dense", dense_stats=stats, grad_norm="l1"
    )
    assert calls == ["l2", "l1"]


@pytest.mark.parametrize("mode", ["sequential", "dense"])
def test_grad_norm_and_score_terms_reach_the_result(tiny, mode):
    model, windows = tiny("opt")
    G1 = collect_grad_norms(model, windows, norm="l1")
    plain = prune_model(model, windows, "gblm", Sparsity(0.5), mode=mode, grad_norm="l1")
    assert all(r.info == {} for r in plain.layers.values())  # matrices only on request
    model, _ = tiny("opt")
    kept = prune_model(
        model,
        windows,
        "gblm",
        Sparsity(0.5),
        mode=mode,
        grad_norm="l1",
        keep_scores=True,
        alpha=7.0,
    )
    for name, r in kept.layers.items():
        assert_close(r.info["grad"], G1[name])
        assert torch.equal(r.info["activation_term"] + r.info["gradient_term"], r.score)


@pytest.mark.parametrize("mode", ["sequential", "dense"])
@pytest.mark.parametrize("sparsity", [Sparsity(0.5), Sparsity(0.5, (2, 4))], ids=str)
def test_zero_gradients_through_the_runner_give_wanda(tiny, monkeypatch, mode, sparsity):
    from pruning import runner

    def zeros(model, windows, **kwargs):
        return {k: torch.zeros_like(w) for k, w in weights(model).items()}

    monkeypatch.setattr(runner, "collect_grad_norms", zeros)
    model_a, windows = tiny("gpt2")
    model_b, _ = tiny("gpt2")
    a = prune_model(model_a, windows, "gblm", sparsity, mode=mode)
    b = prune_model(model_b, windows, "wanda", sparsity, mode=mode)
    assert all(torch.equal(a.layers[k].pruned, b.layers[k].pruned) for k in a.layers)
    W_a, W_b = weights(model_a), weights(model_b)
    assert all(torch.equal(W_a[k], W_b[k]) for k in W_a)


def test_cli_has_a_grad_norm_option():
    from pruning.__main__ import _parser

    assert _parser().parse_args([]).grad_norm == "l2"
    assert _parser().parse_args(["--grad-norm", "l1"]).grad_norm == "l1"
    with pytest.raises(SystemExit):
        _parser().parse_args(["--grad-norm", "l3"])
