"""Tests for the fast paths: batched and broadcast solving equals solving each layer alone, the
factorization and the tiled Hessian equal their plain definitions, the selection fast paths equal a
brute-force stable sort, batched calibration equals per-sample calibration, the runner's worker
threads change nothing, the memory guard refuses what cannot fit, and the GPU benchmark runs at a
tiny size on the CPU. CUDA-only tests are skipped without a GPU."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import stats_from_X
from conftest import windows as seeded_windows
from torch.testing import assert_close

from pruning import METHODS, Sparsity, collect_dense_stats, memory, prune_model, runner, sparsegpt
from pruning.arch import block_linears, decoder_blocks, get_weight
from pruning.calibration import _add_gram, _edges, capture_block_inputs, collect_stats, mirror
from pruning.gradients import collect_grad_norms
from pruning.masks import is_nm, kth_lowest, lowest_k, prune_lowest_nm
from pruning.memory import MemoryGuardError
from pruning.models import tiny_model
from pruning.types import LayerStats

BATCHED = [m for m in ("magnitude", "wanda", "sparsegpt", "rose", "gblm") if m in METHODS]
SPARSITIES = [Sparsity(0.5), Sparsity(0.35), Sparsity(0.5, (2, 4)), Sparsity(0.5, (4, 8))]
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def shared_problem(names=3, blocks=2, out=6, inp=16, seed=0, dtype=torch.float64):
    """`names` linears per block reading one input (statistics shared), `blocks` blocks: W
    (names, blocks, out, in), the shared statistics of each block, and per-linear gradients."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(names, blocks, out, inp, generator=g, dtype=dtype)
    st = []
    for _ in range(blocks):
        B = torch.randn(inp, 3, generator=g, dtype=dtype)
        X = B @ torch.randn(3, 40, generator=g, dtype=dtype) + 0.3 * torch.randn(
            inp, 40, generator=g, dtype=dtype
        )
        st.append(stats_from_X(X * torch.logspace(-0.5, 0.5, inp, dtype=dtype)[:, None], 40))
    sq = torch.stack([s.sq_norm for s in st])  # (blocks, in)
    H = torch.stack([s.hessian for s in st])  # (blocks, in, in)
    grad = torch.rand(names, blocks, out, inp, generator=g, dtype=dtype)
    return W, sq, H, grad


def per_layer(W, sq, H, grad, n, b):
    return W[n, b], LayerStats(40, sq[b], H[b], grad[n, b])


@pytest.mark.parametrize("method", BATCHED)
@pytest.mark.parametrize("sparsity", SPARSITIES, ids=str)
def test_broadcast_batch_equals_each_layer_alone(method, sparsity):
    # the runner's call: two batch dims, the shared statistics broadcast (stride 0) over the names
    W, sq, H, grad = shared_problem()
    st = LayerStats(40, sq.expand(3, *sq.shape), H.expand(3, *H.shape), grad)
    assert st.hessian.stride(0) == 0
    res = METHODS[method].prune(W, st, sparsity)
    for n in range(3):
        for b in range(2):
            one = METHODS[method].prune(*per_layer(W, sq, H, grad, n, b), sparsity)
            assert torch.equal(res.pruned[n, b], one.pruned), (n, b)
            assert_close(res.weight[n, b], one.weight)
            if one.loss is not None:
                assert_close(res.loss[n, b], one.loss)
            if one.order is not None:
                assert torch.equal(res.order[n, b], one.order)
            for key, value in one.info.items():
                assert_close(res.info[key][n, b], value, msg=key)


@pytest.mark.parametrize("sparsity", [Sparsity(0.5), Sparsity(0.5, (2, 4))], ids=str)
def test_sparsegpt_factors_each_shared_hessian_once(monkeypatch, sparsity):
    W, _, H, _ = shared_problem(names=3, blocks=2)
    seen = []
    factor = sparsegpt.factor
    monkeypatch.setattr(
        sparsegpt, "factor", lambda Hg, p: seen.append(Hg.shape[0]) or factor(Hg, p)
    )
    sparsegpt.prune(W, LayerStats(40, hessian=H.expand(3, *H.shape)), sparsity)
    assert seen == [2]  # two blocks' Hessians, not six layers'
    seen.clear()
    sparsegpt.prune(W, LayerStats(40, hessian=H.expand(3, *H.shape).clone()), sparsity)
    assert seen == [6]  # a materialized stack is six problems


@pytest.mark.parametrize("c", [5, 64, 300])
def test_factor_is_the_inverse_of_the_references_cholesky_factor(c):
    # T upper with T·Tᵀ = the damped H, and T⁻¹ = U, the upper Cholesky factor of its inverse
    g = torch.Generator().manual_seed(c)
    X = torch.randn(c, 2 * c, generator=g, dtype=torch.float64)
    H = (X @ X.T).unsqueeze(0)
    H[0, 2, :] = H[0, :, 2] = 0  # a dead input: its diagonal becomes 1
    T, damp = sparsegpt.factor(H, 0.01)
    ref = H[0].clone()
    ref[2, 2] = 1
    ref += 0.01 * ref.diagonal().mean() * torch.eye(c, dtype=torch.float64)
    U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(ref)), upper=True)
    assert torch.equal(T[0], T[0].triu()) and (T[0].diagonal() > 0).all()
    assert_close(T[0] @ T[0].T, ref, rtol=1e-10, atol=1e-10 * float(ref.abs().max()))
    assert_close(T[0] @ U, torch.eye(c, dtype=torch.float64), rtol=0, atol=1e-8)
    assert float(damp[0]) == 0.01
    assert (H[0, 2] == 0).all()  # the input is not modified


@pytest.mark.parametrize("c", [1, 100, 800, 1300])
def test_tiled_hessian_equals_the_full_product(c):
    g = torch.Generator().manual_seed(c)
    H = torch.zeros(c, c, dtype=torch.float32)
    chunks = [torch.randn(n, c, generator=g) for n in (7, 3, 5)]
    seen = 0
    for X in chunks:  # the running mean of calibration.py: rescale, then add
        _add_gram(H, X, seen / (seen + len(X)), 2 / (seen + len(X)), tf32=False)
        seen += len(X)
    mirror(H)
    X = torch.cat(chunks).double()
    assert_close(H.double(), 2 / seen * X.T @ X, rtol=1e-5, atol=1e-5)
    edges = _edges(c)
    assert len(edges) - 1 == max(1, round(c / 384))  # 800 and 1300 inputs: 2 and 3 tiles a side
    for a in range(len(edges) - 1):  # the tiles below the diagonal are exact mirrors
        for b in range(a + 1, len(edges) - 1):
            rows, cols = slice(edges[a], edges[a + 1]), slice(edges[b], edges[b + 1])
            assert torch.equal(H[cols, rows], H[rows, cols].T)


def test_grouped_hessians_equal_per_linear_hessians(_transformers_loaded):
    # a llama wide enough that the Hessians are tiled (576 and 1152 inputs): the one accumulator
    # of q/k/v (and of gate/up) equals the Hessian of each member's own input
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=576,
        intermediate_size=1152,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=64,
        max_position_embeddings=32,
    )
    model = LlamaForCausalLM(config).eval()
    windows = torch.randint(0, 64, (3, 16), generator=torch.Generator().manual_seed(0))
    block = decoder_blocks(model)[0]
    inputs = capture_block_inputs(model, windows, batch_size=2)
    seen: dict[str, list[torch.Tensor]] = {}
    handles = [
        module.register_forward_hook(
            lambda m, a, o, name=name: seen.setdefault(name, []).append(a[0].detach())
        )
        for name, module in block_linears(model, block).items()
    ]
    try:
        stats, _ = collect_stats(model, block, inputs, frozenset({"hessian"}))
    finally:
        for h in handles:
            h.remove()
    for name, xs in seen.items():
        X = torch.cat([x.reshape(-1, x.shape[-1]) for x in xs]).double()
        want = 2 / 3 * X.T @ X
        assert_close(stats[name].hessian.double(), want, rtol=1e-4, atol=1e-4 * want.abs().max())
    assert stats["self_attn.k_proj"] is stats["self_attn.q_proj"]


def test_batched_calibration_equals_per_sample(tiny):
    model, windows = tiny("llama", n=5)
    needs = frozenset({"sq_norm", "hessian"})
    batched = collect_dense_stats(model, windows, needs, batch_size=8)
    single = collect_dense_stats(model, windows, needs, batch_size=1)
    for a, b in zip(batched.blocks, single.blocks):
        for name in a:
            assert a[name].nsamples == b[name].nsamples == 5
            assert_close(a[name].sq_norm, b[name].sq_norm, rtol=1e-5, atol=1e-5)
            assert_close(a[name].hessian, b[name].hessian, rtol=1e-5, atol=1e-4)


def brute_lowest(S: torch.Tensor, k: int) -> torch.Tensor:
    order = torch.argsort(S, dim=-1, stable=True)
    return torch.zeros_like(S, dtype=torch.bool).scatter(-1, order[..., :k], True)


@pytest.mark.parametrize("rows", [3, 100])  # few rows with surplus ties (a loop), many (vectors)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lowest_k_with_many_ties_is_a_stable_sort(rows, dtype):
    # 4-bit-like values, as a dequantized model has: ties at the threshold in almost every row
    g = torch.Generator().manual_seed(rows)
    S = torch.randint(0, 16, (rows, 37), generator=g).to(dtype) * 0.125
    for k in (1, 10, 18, 36):
        assert torch.equal(lowest_k(S, k), brute_lowest(S, k)), k
    assert_close(kth_lowest(S, 10), S.sort(-1).values[:, 9:10])


@pytest.mark.parametrize("nm", [(1, 4), (2, 4), (3, 4), (2, 8), (5, 8), (4, 16)])
def test_nm_selection_with_ties_is_a_stable_sort(nm):
    n, m = nm
    g = torch.Generator().manual_seed(m + n)
    S = torch.randint(0, 3, (5, 7, 4 * m), generator=g).float()  # ties everywhere
    got = prune_lowest_nm(S, n, m)
    want = brute_lowest(S.reshape(5, 7, 4, m), n).reshape(S.shape)
    assert torch.equal(got, want)
    assert is_nm(got, n, m)


def test_runner_worker_threads_change_nothing(tiny, monkeypatch):
    # small budgets split dense mode into many problems, solved on two worker threads: the same
    # masks and weights as one thread solving everything in order
    model_a, windows = tiny("llama")
    model_b, _ = tiny("llama")
    stats = collect_dense_stats(model_a, windows, frozenset({"sq_norm", "hessian"}))
    monkeypatch.setattr(runner, "STACK_BYTES", 1)
    monkeypatch.setattr(runner, "SMALL_BYTES", 1)
    for method in ("wanda", "sparsegpt"):
        old = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            one = prune_model(model_a, None, method, Sparsity(0.5), mode="dense", dense_stats=stats)
        finally:
            torch.set_num_threads(old)
        torch.set_num_threads(2)
        try:
            two = prune_model(model_b, None, method, Sparsity(0.5), mode="dense", dense_stats=stats)
        finally:
            torch.set_num_threads(old)
        assert list(one.layers) == list(two.layers)
        for name in one.layers:
            assert torch.equal(one.layers[name].pruned, two.layers[name].pruned), (method, name)
    for block_a, block_b in zip(decoder_blocks(model_a), decoder_blocks(model_b)):
        for (name, a), b in zip(
            block_linears(model_a, block_a).items(), block_linears(model_b, block_b).values()
        ):
            assert torch.equal(get_weight(model_a, a), get_weight(model_b, b)), name


def test_memory_guard_refuses_an_absurd_request_and_names_what_fits(tiny):
    model, _ = tiny("llama")
    needs = frozenset({"hessian"})
    fits = memory.check_calibration(model, 8, 16, needs, free=2**30)
    assert 0 < fits < 2**30
    with pytest.raises(MemoryGuardError, match=r"4096×4096 tokens.*1.00 GB is free") as err:
        memory.check_calibration(model, 4096, 4096, needs, free=2**30)
    assert "try nsamples=512 or seqlen=512" in str(err.value)  # the largest halvings that fit
    with pytest.raises(MemoryGuardError, match=r"10000000×64 tokens.*try nsamples=\d+$"):
        memory.check_calibration(model, 10**7, 64, needs, free=2**30)  # no seqlen is short enough


def test_memory_guard_refuses_a_model_too_large_and_names_a_dtype_that_fits(monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda device="cpu": 10 * 2**30)
    assert memory.check_load(10**9, torch.float32) == 4 * 10**9
    with pytest.raises(MemoryGuardError, match="3.00B parameters.*try dtype float16 or bfloat16"):
        memory.check_load(3 * 10**9, torch.float32)  # 12 GB in float32, 6 GB in float16
    with pytest.raises(MemoryGuardError, match="try a smaller model"):
        memory.check_load(10**13, torch.float32)


def test_memory_guard_runs_before_calibration_starts(tiny, monkeypatch):
    model, windows = tiny("llama")
    monkeypatch.setattr(memory, "available_bytes", lambda device="cpu": 1000)
    calls = []
    monkeypatch.setattr(runner, "capture_block_inputs", lambda *a, **k: calls.append(a))
    with pytest.raises(MemoryGuardError, match="dense mode"):
        collect_dense_stats(model, windows, frozenset({"hessian"}))
    with pytest.raises(MemoryGuardError, match="sequential mode"):
        prune_model(model, windows, "sparsegpt", Sparsity(0.5), mode="sequential")
    assert calls == []


def test_gpu_benchmark_runs_at_a_tiny_size_on_the_cpu(tmp_path):
    from benchmarks import gpu

    out = tmp_path / "gpu.json"
    result = gpu.main(
        "--shapes tiny --device cpu --nsamples 2 --seqlen 16 --methods magnitude,wanda,sparsegpt "
        f"--out {out}".split()
    )
    assert out.exists() and result["shapes"]["tiny"]["forward_s"] > 0
    rows = result["shapes"]["tiny"]["methods"]
    assert list(rows) == ["magnitude", "wanda", "sparsegpt"]
    for row in rows.values():
        assert row["total_s"] > 0 and row["peak_gb"] > 0
        assert row["ratio"] == pytest.approx(row["total_s"] / result["shapes"]["tiny"]["forward_s"])
        assert row["sparsity"] == 0.5  # 64·64 and 64·128 weights: exactly half of each


def test_precision_benchmark_runs_a_setting_and_keeps_its_tokens(tmp_path):
    from benchmarks import precision

    small = ["--nsamples", "2", "--seqlen", "32", "--eval-tokens", "256"]
    data, out = tmp_path / "ids.pt", tmp_path / "precision.json"
    argv = [*small, "--settings", "cpu:float32", "--save-data", str(data), "--out", str(out)]
    row = precision.main(argv)["settings"]["cpu:float32"]  # (one setting: each takes ~20 s here)
    assert json.loads(out.read_text())["settings"]["cpu:float32"] == row
    assert all(row[f"{key}_rel"] == 0 for key in ("dense", "wanda", "sparsegpt"))  # to itself
    assert 1 < row["dense"] < min(row["wanda"], row["sparsegpt"]) < 1e3
    saved = torch.load(data)
    assert saved["windows"].shape == (2, 32) and len(saved["eval_ids"]) == 256


# CUDA: the same functions on a GPU give the CPU's results


@cuda
@pytest.mark.parametrize("method", BATCHED)
@pytest.mark.parametrize("sparsity", [Sparsity(0.5), Sparsity(0.5, (2, 4))], ids=str)
def test_cuda_methods_equal_cpu(method, sparsity):
    W, sq, H, grad = shared_problem(names=2, blocks=3, out=8, inp=32)
    st = LayerStats(40, sq.expand(2, *sq.shape), H.expand(2, *H.shape), grad)
    cpu = METHODS[method].prune(W, st, sparsity)
    gpu_st = LayerStats(40, *(t.cuda() for t in (st.sq_norm, st.hessian, st.grad)))
    gpu = METHODS[method].prune(W.cuda(), gpu_st, sparsity)
    assert gpu.weight.is_cuda and gpu.pruned.is_cuda
    assert torch.equal(gpu.pruned.cpu(), cpu.pruned)
    assert_close(gpu.weight.cpu(), cpu.weight)


@cuda
@pytest.mark.parametrize("method", BATCHED)
def test_cuda_dense_prune_model_exact_sparsity(method):
    model = tiny_model("llama").cuda()
    windows = seeded_windows()
    run = prune_model(model, windows, method, Sparsity(0.5), mode="dense")
    for block in decoder_blocks(model):
        for module in block_linears(model, block).values():
            assert int((get_weight(model, module) == 0).sum()) == module.weight.numel() // 2
    assert run.achieved_sparsity() == 0.5


@cuda
@pytest.mark.parametrize("tf32", [False, True])
def test_cuda_fp16_statistics_match_float64(tf32):
    model = tiny_model("llama").cuda().half()
    windows = seeded_windows()
    block = decoder_blocks(model)[0]
    inputs = capture_block_inputs(model, windows, batch_size=4)
    seen = []
    q = block_linears(model, block)["self_attn.q_proj"]
    handle = q.register_forward_hook(lambda m, a, o: seen.append(a[0].detach()))
    try:
        stats, _ = collect_stats(model, block, inputs, frozenset({"hessian"}), tf32=tf32)
    finally:
        handle.remove()
    X = torch.cat([x.reshape(-1, x.shape[-1]) for x in seen]).double()
    want = 2 / len(windows) * X.T @ X
    got = stats["self_attn.q_proj"].hessian
    assert got.dtype == torch.float32
    assert_close(got.double(), want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))


@cuda
def test_cuda_memory_guard_uses_device_memory():
    model = tiny_model("llama").cuda()
    free = memory.available_bytes(torch.device("cuda"))
    assert free > 0
    with pytest.raises(MemoryGuardError, match="cuda"):
        memory.check_calibration(model, 10**9, 64, frozenset({"hessian"}))


@cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_cuda_gradient_pass_matches_float64_on_the_cpu(dtype):
    model = tiny_model("llama")
    windows = seeded_windows()
    want = collect_grad_norms(model.double(), windows, batch_size=1)
    got = collect_grad_norms(model.to("cuda", dtype), windows, batch_size=4)
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    for name, G in want.items():
        assert got[name].is_cuda and got[name].dtype == torch.float32
        assert_close(got[name].double().cpu(), G, rtol=tol, atol=tol * float(G.abs().max()))
