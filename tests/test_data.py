"""Tests for pruning.data: the bundled split, the window samplers, and the hub loaders offline."""

from __future__ import annotations

import random
import sys
import types
from types import SimpleNamespace

import pytest
import torch

from pruning import data
from pruning.data import (
    bundled_text,
    calibration_windows,
    evaluation_tokens,
    reference_sampler,
    sample_windows,
)


def char_tok(text: str, return_tensors: str = "pt") -> SimpleNamespace:
    """One id per character (its code point), so windows decode back to substrings."""
    return SimpleNamespace(input_ids=torch.tensor([[ord(c) for c in text]], dtype=torch.long))


def int_tok(text: str, return_tensors: str = "pt") -> SimpleNamespace:
    """Whitespace words that are integers, each its own id."""
    return SimpleNamespace(input_ids=torch.tensor([[int(w) for w in text.split()]]))


def decode(ids: torch.Tensor) -> str:
    return "".join(map(chr, ids.tolist()))


def int_docs(lengths: list[int]) -> list[str]:
    """Document k holds the ids 1000k, 1000k+1, …, so a window tells which document it came from."""
    return [" ".join(str(1000 * k + j) for j in range(n)) for k, n in enumerate(lengths)]


def fake_datasets(monkeypatch: pytest.MonkeyPatch, load_dataset) -> None:
    """Put a stand-in `datasets` module (no network, no slow import) where data.py will find it."""
    module = types.ModuleType("datasets")
    module.load_dataset = load_dataset
    monkeypatch.setitem(sys.modules, "datasets", module)


# bundled corpus


def test_bundled_split_is_exact_and_about_a_fifth():
    from pydoc_data.topics import topics

    full = "\n\n".join(topics[key] for key in sorted(topics))
    calib, evaluation = bundled_text("calibration"), bundled_text("evaluation")
    assert calib and evaluation
    assert calib + "\n\n" + evaluation == full  # a partition of the joined text, at a topic start
    assert evaluation in {
        "\n\n".join(topics[k] for k in sorted(topics)[i:]) for i in range(1, len(topics))
    }
    assert 0.1 < len(evaluation) / len(full) <= 0.2  # 19.2% on CPython 3.11
    assert bundled_text("evaluation") == evaluation  # deterministic


def test_bundled_rejects_unknown_part():
    with pytest.raises(ValueError, match="'train'"):
        bundled_text("train")


# sample_windows


def test_sample_windows_are_contiguous_slices():
    ids = torch.randperm(500, generator=torch.Generator().manual_seed(1))  # distinct ids
    windows = sample_windows(ids, nsamples=40, seqlen=16, seed=3)
    assert windows.shape == (40, 16) and windows.dtype == ids.dtype
    for w in windows:
        start = int((ids == w[0]).nonzero())
        assert start + 16 < len(ids)  # room for one more token, as the references keep
        assert torch.equal(w, ids[start : start + 16])


def test_sample_windows_start_range_is_tight():
    ids = torch.arange(12)
    assert torch.equal(sample_windows(ids[:11], 8, 10, seed=0), ids[:10].expand(8, 10))
    starts = set(sample_windows(ids, 64, 10, seed=0)[:, 0].tolist())
    assert starts == {0, 1}


def test_sample_windows_seeded():
    ids = torch.arange(1000)
    a, b = sample_windows(ids, 8, 32, seed=5), sample_windows(ids, 8, 32, seed=5)
    assert torch.equal(a, b)
    assert not torch.equal(a, sample_windows(ids, 8, 32, seed=6))


def test_sample_windows_validates():
    with pytest.raises(ValueError, match=r"10 tokens.*at least 11"):
        sample_windows(torch.arange(10), 4, 10, seed=0)
    with pytest.raises(ValueError, match="nsamples"):
        sample_windows(torch.arange(100), 0, 10, seed=0)
    with pytest.raises(ValueError, match="seqlen"):
        sample_windows(torch.arange(100), 4, 1, seed=0)
    with pytest.raises(ValueError, match="1-D"):
        sample_windows(torch.arange(100)[None], 4, 10, seed=0)


# reference_sampler


def replicate_reference(docs, tokenizer, nsamples, seqlen, seed):
    """The reference loop written out with the global `random`, as the repositories have it."""
    state = random.getstate()
    try:
        random.seed(seed)
        out = []
        for _ in range(nsamples):
            while True:
                i = random.randint(0, len(docs) - 1)
                enc = tokenizer(docs[i], return_tensors="pt")
                if enc.input_ids.shape[1] > seqlen:
                    break
            start = random.randint(0, enc.input_ids.shape[1] - seqlen - 1)
            out.append(enc.input_ids[:, start : start + seqlen])
        return torch.cat(out)
    finally:
        random.setstate(state)


def test_reference_sampler_matches_reference_loop():
    lengths = [
        3,
        40,
        8,
        9,
        25,
        1,
        10,
        70,
    ]  # seqlen 8: docs 0, 2, 5 too short; doc 3 just long enough
    docs = int_docs(lengths)
    windows = reference_sampler(docs, int_tok, nsamples=30, seqlen=8, seed=7)
    assert torch.equal(windows, replicate_reference(docs, int_tok, 30, 8, 7))
    assert not torch.equal(windows, reference_sampler(docs, int_tok, 30, 8, seed=8))
    for w in windows:
        doc, pos = divmod(int(w[0]), 1000)
        assert lengths[doc] > 8
        assert pos + 8 < lengths[doc]
        assert torch.equal(w, torch.arange(8) + int(w[0]))


def test_reference_sampler_leaves_global_random_alone():
    random.seed(123)
    state = random.getstate()
    reference_sampler(int_docs([20, 30]), int_tok, 5, 8, seed=0)
    assert random.getstate() == state


def test_reference_sampler_raises_instead_of_hanging():
    calls = 0

    def counting_tok(text, return_tensors="pt"):
        nonlocal calls
        calls += 1
        assert calls < 10_000, "the sampler keeps drawing"
        return int_tok(text)

    with pytest.raises(ValueError, match="more than 8 tokens"):
        reference_sampler(int_docs([3, 8, 5]), counting_tok, 4, 8, seed=0)


# calibration_windows / evaluation_tokens


def test_calibration_from_text():
    text = "".join(chr(65 + i % 26) for i in range(300))
    windows = calibration_windows(char_tok, source="ignored", nsamples=6, seqlen=20, text=text)
    assert windows.shape == (6, 20)
    assert all(decode(w) in text for w in windows)
    with pytest.raises(ValueError, match="5 tokens"):
        calibration_windows(char_tok, nsamples=2, seqlen=10, text="short")


def test_calibration_bundled_comes_from_calibration_part():
    windows = calibration_windows(char_tok, "bundled", nsamples=8, seqlen=64, seed=1)
    assert windows.shape == (8, 64)
    calib = bundled_text("calibration")
    assert all(decode(w) in calib for w in windows)
    assert torch.equal(windows, calibration_windows(char_tok, "bundled", 8, 64, seed=1))


def test_evaluation_tokens_bundled_and_text():
    full = evaluation_tokens(char_tok)
    assert decode(full) == bundled_text("evaluation")
    cut = evaluation_tokens(char_tok, "bundled", max_tokens=100)
    assert torch.equal(cut, full[:100])
    assert decode(evaluation_tokens(char_tok, text="hello world", max_tokens=5)) == "hello"
    with pytest.raises(ValueError, match="no tokens"):
        evaluation_tokens(char_tok, text="")
    with pytest.raises(ValueError, match="max_tokens"):
        evaluation_tokens(char_tok, text="abc", max_tokens=0)


def test_unknown_source():
    with pytest.raises(ValueError, match=r"bundled, wikitext2, c4.*'ptb'"):
        calibration_windows(char_tok, "ptb")
    with pytest.raises(ValueError, match="'ptb'"):
        evaluation_tokens(char_tok, "ptb")


# hub sources, with `datasets` replaced


def test_hub_sources_offline_point_to_bundled(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'huggingface.co'\nsecond line")

    fake_datasets(monkeypatch, offline)
    for call, name in [
        (lambda: calibration_windows(char_tok, "wikitext2"), "WikiText-2"),
        (lambda: evaluation_tokens(char_tok, "wikitext2"), "WikiText-2"),
        (lambda: calibration_windows(char_tok, "c4"), "C4"),
        (lambda: evaluation_tokens(char_tok, "c4"), "C4"),
    ]:
        with pytest.raises(ValueError, match=f"could not load {name}") as info:
            call()
        assert "'bundled'" in str(info.value) and "\n" not in str(info.value)
        assert isinstance(info.value.__cause__, ConnectionError)


def test_wikitext_joins_and_samples_like_wanda(monkeypatch):
    rows = {
        "train": [f" row {i} = text {i * i} \n" for i in range(40)] + [""],
        "test": ["a", "", "b"],
    }
    calls = []

    def load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        return {"text": rows[kwargs["split"]]}

    fake_datasets(monkeypatch, load_dataset)
    assert decode(evaluation_tokens(char_tok, "wikitext2")) == "a\n\n\n\nb"
    windows = calibration_windows(char_tok, "wikitext2", nsamples=5, seqlen=30, seed=2)
    train = " ".join(rows["train"])  # the references join train rows with " "
    rng = random.Random(2)
    starts = [rng.randint(0, len(train) - 30 - 1) for _ in range(5)]
    assert [decode(w) for w in windows] == [train[s : s + 30] for s in starts]
    assert calls == [
        (("Salesforce/wikitext", "wikitext-2-raw-v1"), {"split": "test"}),
        (("Salesforce/wikitext", "wikitext-2-raw-v1"), {"split": "train"}),
    ]


def test_c4_uses_the_shard_and_the_reference_sampler(monkeypatch):
    docs = int_docs([5, 50, 12, 30, 2, 80])
    calls = []

    def load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        return {"text": docs}

    fake_datasets(monkeypatch, load_dataset)
    windows = calibration_windows(int_tok, "c4", nsamples=6, seqlen=10, seed=4)
    assert torch.equal(windows, reference_sampler(docs, int_tok, 6, 10, seed=4))
    shard = "en/c4-train.00000-of-01024.json.gz"
    assert calls == [(("allenai/c4",), {"data_files": {"train": shard}, "split": "train"})]


def test_c4_evaluation_is_first_1100_documents(monkeypatch):
    docs = [f"d{i}" for i in range(1200)]
    calls = []

    def load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        return {"text": docs}

    fake_datasets(monkeypatch, load_dataset)
    assert decode(evaluation_tokens(char_tok, "c4")) == " ".join(docs[:1100])
    shard = "en/c4-validation.00000-of-00008.json.gz"
    assert calls == [
        (("allenai/c4",), {"data_files": {"validation": shard}, "split": "validation"})
    ]


def test_sources_constant():
    assert data.SOURCES == ("bundled", "wikitext2", "c4")
