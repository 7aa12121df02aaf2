"""The app's session layer on the bundled model: the cached dense model is never pruned, caches are
reused, recomputed layer details equal the run's, layer errors equal ‖ΔW X‖²/‖W X‖², runs cancel,
and two concurrent runs do not disturb each other."""

from __future__ import annotations

import threading
import zipfile

import pytest
import torch

from pruning import Sparsity, lab
from pruning.arch import decoder_blocks

SETUP = lab.Setup(nsamples=4, seqlen=64, eval_tokens=512)


def _checksum(model) -> float:
    return float(sum(p.double().abs().sum() for p in model.parameters()))


@pytest.fixture(scope="module")
def dense():
    model, _ = lab.dense_model(SETUP)
    return model, _checksum(model)


def test_runs_never_prune_the_cached_model_and_reuse_statistics(dense):
    model, before = dense
    a = lab.run(SETUP, "wanda", Sparsity(0.5))
    stats = lab.dense_stats(SETUP, frozenset({"sq_norm"}))
    b = lab.run(SETUP, "wanda", Sparsity.parse("2:4"))
    assert lab.dense_stats(SETUP, frozenset({"sq_norm"})) is stats  # collected once
    assert _checksum(lab.dense_model(SETUP)[0]) == before and lab.dense_model(SETUP)[0] is model
    assert a.run.achieved_sparsity() == pytest.approx(0.5, abs=1e-3)
    assert b.run.achieved_sparsity() == pytest.approx(0.5, abs=1e-3)
    assert a.dense_ppl == b.dense_ppl and a.ppl > a.dense_ppl
    assert len(a.block_error) == len(decoder_blocks(model)) and all(e > 0 for e in a.block_error)


def test_layer_detail_recomputes_the_runs_mask_exactly():
    rec = lab.run(SETUP, "wanda", Sparsity(0.6))
    for name in ("0.self_attn.q_proj", "17.mlp.down_proj"):
        detail = lab.layer_detail(rec, name)
        assert torch.equal(detail.pruned[0], rec.run.layers[name].pruned)
        assert detail.score.shape[1:] == rec.run.layers[name].pruned.shape


def test_layer_error_is_the_relative_output_error_on_calibration_inputs():
    rec = lab.run(SETUP, "sparsegpt", Sparsity(0.5))
    model, _ = lab.dense_model(SETUP)
    q = decoder_blocks(model)[0].self_attn.q_proj
    seen = []
    hook = q.register_forward_pre_hook(lambda m, args: seen.append(args[0].flatten(0, -2)))
    with torch.no_grad():
        model(lab.calibration(SETUP))
    hook.remove()
    X = torch.cat(seen).double()  # (tokens, in)
    W = q.weight.double()
    # rebuild the pruned weight: SparseGPT's is not W with zeros, so prune the same layer again
    detail = lab.layer_detail(rec, "0.self_attn.q_proj")
    dW = W - detail.weight[0].double()
    want = float((X @ dW.T).pow(2).sum() / (X @ W.T).pow(2).sum())
    assert rec.layer_error["0.self_attn.q_proj"] == pytest.approx(want, rel=1e-3)
    assert len(rec.layer_error) == len(rec.run.layers)


def test_cancel_stops_a_run_and_leaves_the_model_alone(dense):
    model, before = dense
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(lab.Cancelled):
        lab.run(SETUP, "magnitude", Sparsity(0.5), cancel=cancel)
    assert _checksum(model) == before


def test_concurrent_runs_get_their_own_results(dense):
    alone = {m: lab.run(SETUP, m, Sparsity(0.5)) for m in ("magnitude", "wanda")}
    got = {}
    threads = [
        threading.Thread(target=lambda m=m: got.update({m: lab.run(SETUP, m, Sparsity(0.5))}))
        for m in alone
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for m, rec in alone.items():
        assert got[m].ppl == rec.ppl
        assert all(
            torch.equal(got[m].run.layers[k].pruned, r.pruned) for k, r in rec.run.layers.items()
        )
    assert _checksum(dense[0]) == dense[1]


def test_sweep_matches_single_runs():
    curves = lab.sweep(SETUP, ["magnitude"], (0.3, 0.7))
    assert [r for r, _ in curves["magnitude"]] == [0.3, 0.7]
    assert curves["magnitude"][1][1] == pytest.approx(
        lab.run(SETUP, "magnitude", Sparsity(0.7)).ppl
    )
    assert curves["magnitude"][1][1] > curves["magnitude"][0][1]


def test_bad_inputs_are_value_errors():
    with pytest.raises(ValueError, match="unknown method"):
        lab.run(SETUP, "nope", Sparsity(0.5))
    with pytest.raises(ValueError, match="fewer than|too short|tokens"):
        lab.run(
            lab.Setup(text="too short", nsamples=4, seqlen=64, eval_tokens=512),
            "wanda",
            Sparsity(0.5),
        )


def test_export_round_trips_the_pruned_model(tmp_path, dense):
    # SparseGPT moves the kept weights too, so the export must hold the run's weights, not just
    # the dense ones with its zeros: the saved model has the run's zeros and its perplexity
    from transformers import AutoModelForCausalLM

    from pruning import export
    from pruning.evaluate import perplexity

    rec = lab.run(SETUP, "sparsegpt", Sparsity.parse("2:4"))
    files = lab.export_run(rec, tmp_path / "out")
    with zipfile.ZipFile(files["model"]) as z:
        z.extractall(tmp_path)
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "model").eval()
    blocks, rebuilt = decoder_blocks(saved), decoder_blocks(lab.pruned_model(rec))
    for name, layer in rec.run.layers.items():
        block, linear = name.split(".", 1)
        w = blocks[int(block)].get_submodule(linear).weight
        assert not w[layer.pruned].any(), name  # the run's zeros (a kept weight may be 0 too)
        assert torch.equal(w, rebuilt[int(block)].get_submodule(linear).weight), name
    dense_w = decoder_blocks(dense[0])[0].self_attn.q_proj.weight
    assert not torch.equal(
        blocks[0].self_attn.q_proj.weight,
        dense_w.masked_fill(rec.run.layers["0.self_attn.q_proj"].pruned, 0),
    )  # SparseGPT's updated weights, not the dense ones with zeros
    assert perplexity(saved, lab.evaluation_ids(SETUP), SETUP.seqlen) == pytest.approx(
        rec.ppl, rel=1e-6
    )
    masks = export.read_masks(files["masks"])
    assert all(torch.equal(masks[k], v.pruned) for k, v in rec.run.layers.items())
    card = (tmp_path / "model" / "README.md").read_text()
    assert "sparsegpt" in card and "2:4" in card and f"{rec.ppl:.3f}" in card
    assert files["model"].suffix == ".zip" and files["csv"].read_text().count("\n") >= 210
    assert _checksum(dense[0]) == dense[1]


def test_generation_compares_the_dense_and_the_pruned_model():
    rec = lab.run(SETUP, "magnitude", Sparsity(0.8))  # far enough to change a greedy answer
    dense_text, pruned_text = lab.generate_pair(rec, "The capital of France is", 12)
    assert "Paris" in dense_text and dense_text != pruned_text
    with pytest.raises(ValueError, match="prompt"):
        lab.generate_pair(rec, "  ")


def test_toy_layer_is_a_window_of_the_real_layer_with_its_dense_hessian():
    W, H, what = lab.toy(SETUP, "2.mlp.down_proj", row0=16, col0=32)
    model, _ = lab.dense_model(SETUP)
    weight = decoder_blocks(model)[2].mlp.down_proj.weight.double()
    hessian = lab.dense_stats(SETUP, frozenset({"hessian"})).blocks[2]["mlp.down_proj"].hessian
    assert W.shape == (8, 16) and (W == weight[16:24, 32:48].numpy()).all()
    assert (H == hessian.double()[32:48, 32:48].numpy()).all() and "down_proj" in what
    assert lab.toy(None, None, seed=3)[0].shape == (8, 16)
