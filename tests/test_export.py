"""Tests for pruning.export on tiny pruned models: the saved folder loads back with transformers
and is the same model (weights, zeros, logits, perplexity), the card is valid front matter, masks
round-trip exactly, the report matches the masks, and the zip holds every file."""

from __future__ import annotations

import csv
import json
import zipfile

import pytest
import torch
import yaml
from conftest import windows
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from pruning import Sparsity, prune_model
from pruning.arch import block_linears, decoder_blocks, family_of, get_weight
from pruning.evaluate import perplexity
from pruning.export import (
    CSV_BASE,
    MASKS_FILE,
    base_model,
    bundle,
    layer_rows,
    model_card,
    read_masks,
    write_masks,
    write_model,
    write_report,
)
from pruning.masks import is_nm
from pruning.models import HUB_TWIN, tiny_model


def meta_for(method: str, sparsity: str = "50%", model: str = "HuggingFaceTB/SmolLM2-135M") -> dict:
    return {
        "model": model,
        "method": method,
        "sparsity": sparsity,
        "mode": "sequential",
        "hparams": {"group": "row"},
        "calibration": {"data": "random", "nsamples": 6, "seqlen": 16, "seed": 0},
        "evaluation": {"data": "random", "tokens": 256},
        "dense_ppl": 130.123,
        "ppl": 141.456,
        "achieved": 0.5,
    }


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the tiny models' 128 ids: 't0' … 't126', '[UNK]' = 127."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {f"t{i}": i for i in range(127)} | {"[UNK]": 127}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


def pruned_weights(model) -> dict[str, torch.Tensor]:
    """Every prunable weight as (out, in), keyed like PruneRun.layers."""
    return {
        f"{i}.{name}": get_weight(model, module).detach()
        for i, block in enumerate(decoder_blocks(model))
        for name, module in block_linears(model, block).items()
    }


@pytest.fixture(scope="module")
def runs():
    """method/pattern -> (pruned tiny llama, PruneRun), pruned once for the whole file."""
    out = {}
    for key, method, target in (
        ("magnitude", "magnitude", Sparsity(0.5)),
        ("wanda", "wanda", Sparsity(0.5)),
        ("wanda-2:4", "wanda", Sparsity.parse("2:4")),
    ):
        model = tiny_model("llama")
        out[key] = (model, prune_model(model, windows(6, 16), method, target))
    return out


@pytest.mark.parametrize("method", ["magnitude", "wanda"])
def test_saved_model_loads_back_identical(runs, method, tmp_path):
    model, run = runs[method]
    tokenizer = tiny_tokenizer()
    write_model(tmp_path, model, tokenizer, model_card(meta_for(method)))
    assert (tmp_path / "model.safetensors").exists()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()

    want, got = model.state_dict(), loaded.state_dict()
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want)
    for name, W in pruned_weights(loaded).items():  # zeros exactly where the run pruned
        assert torch.equal(W == 0, run.layers[name].pruned), name

    ids = windows(1, 256, seed=1).flatten()
    with torch.no_grad():
        assert torch.equal(loaded(ids[None, :32]).logits, model(ids[None, :32]).logits)
    assert perplexity(loaded, ids, 32) == perplexity(model, ids, 32)
    assert AutoTokenizer.from_pretrained(tmp_path)("t3 t5 t126").input_ids == [3, 5, 126]


def test_model_card_is_front_matter_naming_the_run(tmp_path):
    card = model_card(meta_for("wanda", "2:4"))
    assert card.startswith("---\n")
    front, body = card[4:].split("\n---\n", 1)
    fields = yaml.safe_load(front)
    assert fields["library_name"] == "transformers"
    assert fields["tags"] == ["pruning", "pruning-lab", "wanda"]
    assert fields["base_model"] == "HuggingFaceTB/SmolLM2-135M"
    assert "wanda" in body and "2:4" in body and "sequential" in body
    assert "130.123" in body and "141.456" in body and "`group=row`" in body
    assert "6 windows × 16 tokens, seed 0" in body
    assert "stored densely" in body and "to_sparse_semi_structured" in body
    unstructured = model_card(meta_for("magnitude", "50%", model=str(tmp_path)))
    assert "base_model" not in unstructured and "unstructured" in unstructured
    assert "to_sparse_semi_structured" not in unstructured


def test_base_model_only_for_hub_ids(tmp_path):
    assert base_model("openai-community/gpt2") == "openai-community/gpt2"
    assert base_model("bundled") == HUB_TWIN
    assert base_model(str(tmp_path)) is None and base_model("gpt2.safetensors") is None


@pytest.mark.parametrize("key", ["wanda", "wanda-2:4"])
def test_masks_round_trip_exactly(runs, key, tmp_path):
    _, run = runs[key]
    masks = {name: res.pruned for name, res in run.layers.items()}
    path = write_masks(tmp_path / MASKS_FILE, masks, metadata={"method": "wanda"})
    back = read_masks(path)
    assert list(back) == list(masks)
    assert all(back[n].dtype == torch.bool and torch.equal(back[n], masks[n]) for n in masks)
    if key.endswith("2:4"):
        assert all(is_nm(m, 2, 4) for m in back.values())
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata()["convention"] == "1 = pruned" and f.metadata()["method"] == "wanda"
        assert f.get_tensor("0.mlp.down_proj").dtype == torch.uint8


def test_read_masks_rejects_other_safetensors(runs, tmp_path):
    model, _ = runs["magnitude"]
    write_model(tmp_path, model, None, "card")
    with pytest.raises(ValueError, match="not a Pruning Lab masks file"):
        read_masks(tmp_path / "model.safetensors")


def test_report_rows_match_the_masks(runs, tmp_path):
    _, run = runs["wanda"]
    names = list(run.layers)
    errors = {name: 0.01 * i for i, name in enumerate(names[:-1])}  # the last has none
    rows = layer_rows(run, errors)
    json_path, csv_path = write_report(tmp_path, meta_for("wanda"), rows)

    with csv_path.open(newline="") as f:
        reader = csv.DictReader(f)
        table = list(reader)
    assert reader.fieldnames == [*CSV_BASE, "error"]
    assert [r["name"] for r in table] == names
    for r in table:
        pruned = run.layers[r["name"]].pruned
        assert int(r["pruned"]) == int(pruned.sum())
        assert (int(r["rows"]), int(r["cols"])) == tuple(pruned.shape)
        assert f"{r['block']}.{r['linear']}" == r["name"]
        assert float(r["sparsity"]) == pytest.approx(0.5)
    assert table[-1]["error"] == "" and float(table[1]["error"]) == pytest.approx(0.01)

    report = json.loads(json_path.read_text())
    assert {k: report[k] for k in meta_for("wanda")} == meta_for("wanda")
    assert [r["name"] for r in report["layers"]] == names
    assert sum(r["pruned"] for r in report["layers"]) == sum(
        int(res.pruned.sum()) for res in run.layers.values()
    )


def test_layer_rows_go_block_by_block():
    model = tiny_model("llama")  # dense mode lists a linear type across all blocks at once
    run = prune_model(model, windows(6, 16), "wanda", Sparsity(0.5), mode="dense")
    rows = layer_rows(run)
    linears = family_of(model).linear_names
    assert list(rows) == [f"{b}.{name}" for b in range(2) for name in linears]
    assert set(rows) == set(run.layers)


def test_csv_columns_are_stable_and_numeric_only(tmp_path):
    base = {"name": "0.fc1", "block": 0, "linear": "fc1", "rows": 4, "cols": 8, "pruned": 16}
    rows = {
        "0.fc1": {**base, "sparsity": 0.5, "loss": 2.0, "note": "text is left out"},
        "0.fc2": {**base, "name": "0.fc2", "linear": "fc2", "sparsity": 0.5, "error": 0.1},
    }
    _, csv_path = write_report(tmp_path, {"method": "x"}, rows)
    header = csv_path.read_text().splitlines()[0]
    assert header == ",".join([*CSV_BASE, "error", "loss"])


def test_bundle_holds_every_file(runs, tmp_path):
    model, run = runs["magnitude"]
    folder = tmp_path / "export"
    write_model(folder, model, tiny_tokenizer(), model_card(meta_for("magnitude")))
    write_masks(folder / MASKS_FILE, {n: r.pruned for n, r in run.layers.items()})
    write_report(folder, meta_for("magnitude"), layer_rows(run))
    zip_path = bundle(folder)
    assert zip_path == tmp_path / "export.zip"

    files = {p.relative_to(tmp_path).as_posix(): p for p in folder.rglob("*") if p.is_file()}
    with zipfile.ZipFile(zip_path) as zf:
        infos = {info.filename: info for info in zf.infolist()}
        assert set(infos) == set(files)
        for name, path in files.items():
            assert zf.read(name) == path.read_bytes()
            stored = name.endswith(".safetensors")
            want = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
            assert infos[name].compress_type == want, name
    with pytest.raises(ValueError, match="folder"):
        bundle(zip_path)
