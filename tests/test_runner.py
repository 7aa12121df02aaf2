"""Tests for pruning.runner.prune_model on tiny models of every family: exact sparsity measured on
the model's own weights, reductions (ratio 0, magnitude per layer), sequential vs dense statistics,
and the errors raised at the entry point."""

from __future__ import annotations

import inspect
import math
from types import SimpleNamespace

import pytest
import torch
from conftest import FAMILIES
from conftest import windows as seeded_windows
from torch import nn
from torch.testing import assert_close

from pruning import METHODS, Sparsity, collect_dense_stats, magnitude, prune_model
from pruning.arch import block_linears, decoder_blocks, get_weight
from pruning.calibration import capture_block_inputs, run_block
from pruning.evaluate import overall_sparsity, sparsity_by_layer
from pruning.masks import is_nm
from pruning.models import tiny_model
from pruning.types import LayerStats

MODES = ("sequential", "dense")


def floor_count(size: int, ratio: float) -> int:
    return math.floor(round(size * ratio, 9))


def group_of(method: str) -> str:
    param = inspect.signature(METHODS[method].prune).parameters.get("group")
    return param.default if param is not None else "layer"


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every prunable weight as (out, in), keyed like PruneRun.layers, cloned."""
    return {
        f"{i}.{name}": get_weight(model, module).detach().clone()
        for i, block in enumerate(decoder_blocks(model))
        for name, module in block_linears(model, block).items()
    }


def logits(model: nn.Module, windows: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=windows, use_cache=False).logits


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("family", FAMILIES)
def test_ratio_zero_leaves_the_model_unchanged(tiny, family, method):
    model, windows = tiny(family)
    before, dense_logits = weights(model), logits(model, windows)
    run = prune_model(model, windows, method, Sparsity(0.0))
    assert_close(logits(model, windows), dense_logits, rtol=0, atol=0)
    after = weights(model)
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert run.achieved_sparsity() == 0.0
    assert set(run.layers) == set(before)
    assert all(not r.pruned.any() for r in run.layers.values())
    assert all(mse == 0.0 for mse in run.block_mse)


def _sequential_only(method: str, mode: str) -> bool:
    """Block-level methods (Barber) refuse dense mode, with a message that says why."""
    if mode == "dense" and METHODS[method].refine is not None:
        with pytest.raises(ValueError, match="sequential mode only"):
            prune_model(tiny_model("llama"), None, method, Sparsity(0.5), mode=mode)
        return True
    return False


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sparsity", [Sparsity(0.5), Sparsity(0.3), Sparsity(0.5, (2, 4))], ids=str)
@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("family", FAMILIES)
def test_exact_sparsity_measured_on_the_model(tiny, family, method, sparsity, mode):
    model, windows = tiny(family)
    if _sequential_only(method, mode):
        return
    run = prune_model(model, windows, method, sparsity, mode=mode)
    assert run.mode == mode
    W = weights(model)
    assert set(run.layers) == set(W)
    for name, w in W.items():
        zeros = w == 0
        assert torch.equal(zeros, run.layers[name].pruned), name  # the record is the model
        assert run.layers[name].weight is None  # the runner drops the weights
        rows, cols = w.shape
        if sparsity.nm is not None:
            assert is_nm(zeros, *sparsity.nm), name
        elif group_of(method) == "row":
            assert zeros.sum(-1).tolist() == [floor_count(cols, sparsity.ratio)] * rows, name
        else:
            assert int(zeros.sum()) == floor_count(rows * cols, sparsity.ratio), name
    measured = sparsity_by_layer(model)
    assert run.layer_sparsity() == pytest.approx(measured, abs=1e-12)
    assert run.achieved_sparsity() == pytest.approx(overall_sparsity(model), abs=1e-12)


@pytest.mark.parametrize("sparsity", [Sparsity(0.4), Sparsity(0.5, (4, 8))], ids=str)
@pytest.mark.parametrize("family", FAMILIES)
def test_magnitude_through_prune_model_equals_per_layer(tiny, family, sparsity):
    model, _ = tiny(family)
    before = weights(model)
    run = prune_model(model, None, "magnitude", sparsity)  # magnitude needs no data
    after = weights(model)
    for name, w in before.items():
        ref = magnitude.prune(w, LayerStats(), sparsity)
        assert torch.equal(after[name], ref.weight), name
        assert torch.equal(run.layers[name].pruned, ref.pruned), name


def test_magnitude_group_option_reaches_the_method(tiny):
    model, _ = tiny("llama")
    before = weights(model)
    prune_model(model, None, "magnitude", Sparsity(0.3), group="row")
    for name, w in weights(model).items():
        assert torch.equal(
            w, magnitude.prune(before[name], LayerStats(), Sparsity(0.3), group="row").weight
        )


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
@pytest.mark.parametrize("family", ["llama", "opt"])
def test_sequential_and_dense_agree_on_block_0_only(tiny, family, method):
    seq_model, windows = tiny(family)
    dense_model, _ = tiny(family)
    seq = prune_model(seq_model, windows, method, Sparsity(0.5), mode="sequential")
    dense = prune_model(dense_model, windows, method, Sparsity(0.5), mode="dense")
    W_seq, W_dense = weights(seq_model), weights(dense_model)
    differ = []
    for name in W_seq:
        if name.startswith("0."):  # the same inputs, so the same statistics and result
            assert torch.equal(seq.layers[name].pruned, dense.layers[name].pruned), name
            assert_close(W_seq[name], W_dense[name], rtol=1e-5, atol=1e-6)
        else:  # block 1 sees the pruned block 0's outputs in sequential mode only
            same = torch.equal(
                seq.layers[name].pruned, dense.layers[name].pruned
            ) and torch.allclose(W_seq[name], W_dense[name])
            differ.append(not same)
    assert any(differ)
    if method == "sparsegpt":  # every compensated layer of block 1 differs
        assert all(differ)
    assert len(seq.block_mse) == 2 and dense.block_mse == []


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_dense_mode_equals_the_method_on_each_layer(tiny, family, method):
    # the batched solve over all blocks gives what the method gives on each layer alone
    model, windows = tiny(family)
    stats = collect_dense_stats(model, windows, METHODS[method].needs)
    before = weights(model)
    run = prune_model(model, None, method, Sparsity(0.5), mode="dense", dense_stats=stats)
    after = weights(model)
    for name, w in before.items():
        block, linear = name.split(".", 1)
        ref = METHODS[method].prune(w, stats.blocks[int(block)][linear], Sparsity(0.5))
        assert torch.equal(run.layers[name].pruned, ref.pruned), name
        assert_close(after[name], ref.weight, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_sequential_mode_equals_a_hand_written_loop(tiny, method):
    # the papers' protocol with the public pieces: statistics of block i on the outputs of the
    # already pruned blocks, every linear of the block from the same dense-within-block pass
    from pruning.arch import set_weight
    from pruning.calibration import collect_stats

    model, windows = tiny("llama")
    ref_model, _ = tiny("llama")
    run = prune_model(model, windows, method, Sparsity(0.5), batch_size=4)
    inputs = capture_block_inputs(ref_model, windows, 4)
    for i, block in enumerate(decoder_blocks(ref_model)):
        stats, _ = collect_stats(ref_model, block, inputs, METHODS[method].needs)
        results = {
            name: METHODS[method].prune(get_weight(ref_model, module), stats[name], Sparsity(0.5))
            for name, module in block_linears(ref_model, block).items()
        }
        for name, module in block_linears(ref_model, block).items():
            set_weight(ref_model, module, results[name].weight)
            assert torch.equal(run.layers[f"{i}.{name}"].pruned, results[name].pruned)
        inputs = inputs.with_hidden(run_block(block, inputs))
    W, W_ref = weights(model), weights(ref_model)
    for name in W:
        assert torch.equal(W[name] == 0, W_ref[name] == 0), name
        assert_close(W[name], W_ref[name], rtol=1e-5, atol=1e-6)


def test_sequential_block_mse_is_the_block_output_error(tiny):
    model, windows = tiny("llama")
    dense_model, _ = tiny("llama")
    run = prune_model(model, windows, "sparsegpt", Sparsity(0.5), batch_size=4)
    inputs = capture_block_inputs(dense_model, windows, 4)
    want = run_block(decoder_blocks(dense_model)[0], inputs)
    got = run_block(decoder_blocks(model)[0], inputs)
    mse = sum(float((a - b).pow(2).sum()) for a, b in zip(want, got)) / sum(a.numel() for a in want)
    assert run.block_mse[0] == pytest.approx(mse, rel=1e-5)
    assert run.block_mse[0] > 0


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_cached_dense_stats_equal_dense_mode(tiny, method):
    model_a, windows = tiny("llama")
    model_b, _ = tiny("llama")
    stats = collect_dense_stats(model_a, windows, frozenset({"sq_norm", "hessian"}))
    assert len(stats.blocks) == 2 and stats.nsamples == len(windows)
    W_b = weights(model_b)
    assert all(
        torch.equal(w, W_b[k]) for k, w in weights(model_a).items()
    )  # collecting prunes nothing
    run_a = prune_model(model_a, None, method, Sparsity(0.5), mode="dense", dense_stats=stats)
    run_b = prune_model(model_b, windows, method, Sparsity(0.5), mode="dense")
    W_a, W_b = weights(model_a), weights(model_b)
    for name in W_a:
        assert torch.equal(run_a.layers[name].pruned, run_b.layers[name].pruned), name
        assert torch.equal(W_a[name], W_b[name]), name


def test_cached_dense_stats_serve_several_runs(tiny):
    # the cache is not consumed or changed by a run: a second method on a fresh model still works
    model, windows = tiny("llama")
    stats = collect_dense_stats(model, windows, frozenset({"sq_norm", "hessian"}))
    H = stats.blocks[0]["self_attn.q_proj"].hessian.clone()
    prune_model(tiny("llama")[0], None, "sparsegpt", Sparsity(0.5), mode="dense", dense_stats=stats)
    assert torch.equal(stats.blocks[0]["self_attn.q_proj"].hessian, H)
    fresh = tiny("llama")[0]
    prune_model(fresh, None, "wanda", Sparsity(0.5, (2, 4)), mode="dense", dense_stats=stats)
    assert all(is_nm(w == 0, 2, 4) for w in weights(fresh).values())


def test_dense_stats_missing_a_statistic_without_windows_is_a_value_error(tiny):
    model, windows = tiny("llama")
    stats = collect_dense_stats(model, windows, frozenset({"sq_norm"}))  # no Hessian
    with pytest.raises(ValueError, match="hessian"):
        prune_model(model, None, "sparsegpt", Sparsity(0.5), mode="dense", dense_stats=stats)


def test_dense_stats_in_sequential_mode_without_windows_fails_cleanly(tiny):
    model, windows = tiny("llama")
    stats = collect_dense_stats(model, windows, frozenset({"sq_norm"}))
    try:
        prune_model(model, None, "wanda", Sparsity(0.5), dense_stats=stats)
    except ValueError:
        return  # a clear error at the entry point is fine
    assert all(int((w == 0).sum()) == w.numel() // 2 for w in weights(model).values())


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_non_finite_statistics_are_a_value_error(tiny, method, mode):
    model, windows = tiny("llama")
    with torch.no_grad():
        model.model.embed_tokens.weight[windows[0, 3]] = float("inf")  # activations blow up
    with pytest.raises(ValueError, match="non-finite"):
        prune_model(model, windows, method, Sparsity(0.5), mode=mode)


def test_progress_is_called_once_per_block(_transformers_loaded):
    model = tiny_model("llama", layers=3)
    calls = []
    prune_model(
        model, seeded_windows(), "wanda", Sparsity(0.5), progress=lambda *a: calls.append(a)
    )
    assert [(done, total) for done, total, _ in calls] == [(1, 3), (2, 3), (3, 3)]
    assert all(isinstance(desc, str) and desc for _, _, desc in calls)


def test_nm_that_does_not_divide_a_layer_names_it(tiny):
    model, windows = tiny("llama")
    with pytest.raises(ValueError, match="self_attn.q_proj") as err:
        prune_model(model, windows, "magnitude", Sparsity(3 / 7, (3, 7)))
    assert "7" in str(err.value)


def test_nm_error_names_the_one_layer_that_does_not_fit():
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=128,
        max_position_embeddings=64,
    )
    model = AutoModelForCausalLM.from_config(config).eval()
    before = weights(model)
    with pytest.raises(ValueError, match="mlp.down_proj") as err:  # 48 inputs; the rest have 32
        prune_model(model, None, "magnitude", Sparsity(0.5, (16, 32)))
    assert "48" in str(err.value)
    assert all(torch.equal(w, before[k]) for k, w in weights(model).items())  # nothing pruned


def test_unknown_method_lists_the_methods(tiny):
    model, windows = tiny("llama")
    with pytest.raises(ValueError, match="obs") as err:
        prune_model(model, windows, "obs", Sparsity(0.5))
    assert all(name in str(err.value) for name in METHODS)


@pytest.mark.parametrize(
    ("method", "option"),
    [("magnitude", "blocksize"), ("wanda", "percdamp"), ("sparsegpt", "group")],
)
def test_unknown_option_is_a_value_error(tiny, method, option):
    model, windows = tiny("llama")
    before = weights(model)
    with pytest.raises(ValueError, match=option):
        prune_model(model, windows, method, Sparsity(0.5), **{option: 1})
    assert all(torch.equal(w, before[k]) for k, w in weights(model).items())


def test_bad_mode_is_a_value_error(tiny):
    model, windows = tiny("llama")
    with pytest.raises(ValueError, match="lazy"):
        prune_model(model, windows, "wanda", Sparsity(0.5), mode="lazy")


@pytest.mark.parametrize("method", [m for m in METHODS if METHODS[m].needs])
def test_missing_calibration_data_is_a_value_error(tiny, method):
    model, _ = tiny("llama")
    with pytest.raises(ValueError, match=method):
        prune_model(model, None, method, Sparsity(0.5))


def test_unsupported_architecture_names_the_supported_ones():
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(
        vocab_size=128,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    bert = BertForMaskedLM(config).eval()
    dummy = nn.Linear(2, 2)
    dummy.config = SimpleNamespace(model_type="mamba")
    for model, name in ((bert, "bert"), (dummy, "mamba")):
        with pytest.raises(ValueError, match=name) as err:
            prune_model(model, None, "magnitude", Sparsity(0.5))
        for supported in ("llama", "opt", "gpt2", "gpt_neox"):
            assert supported in str(err.value)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("method", list(METHODS))
def test_gpt2_transposed_weights_match_the_recorded_masks(tiny, method, mode):
    model, windows = tiny("gpt2")
    if _sequential_only(method, mode):
        return
    run = prune_model(model, windows, method, Sparsity(0.5, (2, 4)), mode=mode)
    for i, block in enumerate(decoder_blocks(model)):
        for name, module in block_linears(model, block).items():
            stored = module.weight  # Conv1D: (in, out)
            pruned = run.layers[f"{i}.{name}"].pruned  # (out, in)
            assert pruned.shape == stored.T.shape
            if name != "attn.c_proj":  # the others are not square: the layouts really differ
                assert pruned.shape != stored.shape
            assert torch.equal(stored.T == 0, pruned), name
            assert is_nm(stored.T == 0, 2, 4)  # N:M along the inputs, i.e. the stored rows' axis


@pytest.mark.parametrize("family", FAMILIES)
def test_pruned_model_still_runs_and_changes(tiny, family):
    model, windows = tiny(family)
    dense = logits(model, windows)
    prune_model(model, windows, "sparsegpt", Sparsity(0.5))
    out = logits(model, windows)
    assert torch.isfinite(out).all()
    assert not torch.allclose(out, dense)


def test_dense_mode_in_several_stacks_equals_one_stack(tiny, monkeypatch):
    # a small memory cap splits the blocks into several batched problems: same result
    from pruning import runner

    model_a, windows = tiny("llama")
    model_b, _ = tiny("llama")
    stats = collect_dense_stats(model_a, windows, frozenset({"hessian"}))
    one = prune_model(model_a, None, "sparsegpt", Sparsity(0.5), mode="dense", dense_stats=stats)
    monkeypatch.setattr(runner, "STACK_BYTES", 4 * 32 * 32)  # one block per stack
    many = prune_model(model_b, None, "sparsegpt", Sparsity(0.5), mode="dense", dense_stats=stats)
    W_a, W_b = weights(model_a), weights(model_b)
    for name in W_a:
        assert torch.equal(one.layers[name].pruned, many.layers[name].pruned), name
        assert_close(W_a[name], W_b[name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", MODES)
def test_scores_are_kept_only_on_request(tiny, mode):
    model, windows = tiny("opt")
    plain = prune_model(model, windows, "wanda", Sparsity(0.5), mode=mode)
    assert all(r.score is None for r in plain.layers.values())
    model, windows = tiny("opt")
    kept = prune_model(model, windows, "wanda", Sparsity(0.5), mode=mode, keep_scores=True)
    for r in kept.layers.values():
        assert r.score is not None and r.score.shape == r.pruned.shape
        # the pruned entries are the lowest scores of their row
        assert (
            r.score.masked_fill(~r.pruned, -1).amax(-1)
            <= r.score.masked_fill(r.pruned, float("inf")).amin(-1)
        ).all()


def test_raised_dampening_is_reported_in_the_notes(tiny):
    # windows of one repeated token: every Llama linear sees identical inputs, a Hessian of rank 1,
    # so percdamp = 0 cannot be factorized and must be raised (and said so)
    model, _ = tiny("llama")
    run = prune_model(model, torch.full((2, 16), 5), "sparsegpt", Sparsity(0.5), percdamp=0.0)
    assert len(run.notes) == len(run.layers)
    assert all("dampening" in note for note in run.notes)
    assert all(r.info["percdamp"] > 0 for r in run.layers.values())
    model, windows = tiny("llama")
    assert prune_model(model, windows, "sparsegpt", Sparsity(0.5)).notes == []
