"""Calibration windows and evaluation tokens from the bundled corpus, WikiText-2, C4, or user text.

The bundled corpus is the pydoc topic help that ships with CPython: offline, and the same on every
machine with the same Python. WikiText-2 and C4 come from the Hugging Face hub and are sampled as
the reference repositories do (algorithms.md §1.3 and §1.5).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from itertools import accumulate
from typing import Any, Literal

import torch
from torch import Tensor

SOURCES = ("bundled", "wikitext2", "c4")  # user text is passed as text=, not as a source

# A Hugging Face tokenizer, or anything whose tokenizer(text, return_tensors="pt").input_ids is (1, n).
Tokenizer = Callable[..., Any]

_EVAL_FRACTION = 0.2  # the bundled corpus holds out its last ~20% of characters for evaluation
_WIKITEXT = ("Salesforce/wikitext", "wikitext-2-raw-v1")
# Single C4 shards, by file and without the legacy config name newer `datasets` reject (§1.3).
_C4_TRAIN = "en/c4-train.00000-of-01024.json.gz"
_C4_VALIDATION = "en/c4-validation.00000-of-00008.json.gz"


def bundled_text(part: Literal["calibration", "evaluation"]) -> str:
    """One part of the pydoc topics (sorted by key, joined with blank lines), split at a topic."""
    if part not in ("calibration", "evaluation"):
        raise ValueError(f"part must be 'calibration' or 'evaluation', got {part!r}")
    from pydoc_data.topics import topics  # ~0.5 MB of text: load it only when asked

    texts = [topics[key] for key in sorted(topics)]
    starts = list(accumulate((len(t) + 2 for t in texts), initial=0))  # offsets in the joined text
    bound = (1 - _EVAL_FRACTION) * (starts[-1] - 2)
    # The first topic that starts at or after 80% of the characters (the last topic if none does).
    cut = next((i for i, s in enumerate(starts[1:-1], 1) if s >= bound), len(texts) - 1)
    return "\n\n".join(texts[:cut] if part == "calibration" else texts[cut:])


def _check(nsamples: int, seqlen: int, ntok: int | None = None) -> None:
    """ValueError unless the sizes are sane and ntok tokens leave a start in [0, ntok - seqlen - 1]."""
    if nsamples < 1:
        raise ValueError(f"nsamples must be at least 1, got {nsamples}")
    if seqlen < 2:
        raise ValueError(f"seqlen must be at least 2, got {seqlen}")
    if ntok is not None and ntok < seqlen + 1:
        raise ValueError(
            f"the text has {ntok} tokens, but windows of {seqlen} need at least {seqlen + 1}; "
            "use a smaller seqlen or more text"
        )


def sample_windows(ids: Tensor, nsamples: int, seqlen: int, seed: int) -> Tensor:
    """(nsamples, seqlen) slices of the 1-D ids at uniform random starts; windows may overlap."""
    if ids.dim() != 1:
        raise ValueError(f"ids must be 1-D, got shape {tuple(ids.shape)}")
    _check(nsamples, seqlen, ids.numel())
    gen = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, ids.numel() - seqlen, (nsamples, 1), generator=gen)  # (nsamples, 1)
    return ids[(starts + torch.arange(seqlen)).to(ids.device)]


def reference_sampler(
    docs: Sequence[str], tokenizer: Tokenizer, nsamples: int, seqlen: int, seed: int
) -> Tensor:
    """(nsamples, seqlen) windows drawn exactly as the reference C4 loaders do (§1.3).

    Draw documents uniformly until one has more than seqlen tokens, then a window start in it;
    the random sequence is that of `random.seed(seed)`, but the global state is left alone.
    """
    _check(nsamples, seqlen)
    if len(docs) == 0:
        raise ValueError("reference_sampler needs documents, got an empty list")
    rng = random.Random(seed)
    too_short: set[int] = set()  # tokenizing is deterministic: short once, short forever
    windows = []
    while len(windows) < nsamples:
        i = rng.randint(0, len(docs) - 1)
        ids = tokenizer(docs[i], return_tensors="pt").input_ids[0]
        if ids.numel() <= seqlen:
            too_short.add(i)
            if len(too_short) == len(docs):  # every document rejected: the loop would never end
                raise ValueError(f"no document has more than {seqlen} tokens; use a smaller seqlen")
            continue
        start = rng.randint(0, ids.numel() - seqlen - 1)
        windows.append(ids[start : start + seqlen])
    return torch.stack(windows)


def _tokenize(tokenizer: Tokenizer, text: str) -> Tensor:
    """The whole text in one call, as 1-D ids (HF may warn that it exceeds the model maximum)."""
    return tokenizer(text, return_tensors="pt").input_ids[0]


def _load_texts(name: str, *args: Any, **kwargs: Any) -> Sequence[str]:
    """The "text" column of datasets.load_dataset(*args, **kwargs), or a ValueError naming name."""
    try:
        from datasets import load_dataset

        return load_dataset(*args, **kwargs)["text"]
    except Exception as e:  # offline, no package, dataset moved: the answer is always "bundled"
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ValueError(
            f"could not load {name} from the Hugging Face hub (offline?): {reason}. "
            "The bundled corpus ('bundled') works offline."
        ) from e


def _check_source(source: str) -> None:
    """ValueError unless source is one of SOURCES."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)} or text=, got {source!r}")


def calibration_windows(
    tokenizer: Tokenizer,
    source: str = "bundled",
    nsamples: int = 32,
    seqlen: int = 256,
    seed: int = 0,
    text: str | None = None,
) -> Tensor:
    """(nsamples, seqlen) LongTensor of calibration windows; text, when given, replaces source."""
    if text is not None:
        return sample_windows(_tokenize(tokenizer, text), nsamples, seqlen, seed)
    _check_source(source)
    if source == "bundled":
        ids = _tokenize(tokenizer, bundled_text("calibration"))
        return sample_windows(ids, nsamples, seqlen, seed)
    if source == "wikitext2":
        # As the references: train rows joined with " " (not "\n\n"), starts from random.seed(seed).
        ids = _tokenize(tokenizer, " ".join(_load_texts("WikiText-2", *_WIKITEXT, split="train")))
        _check(nsamples, seqlen, ids.numel())
        rng = random.Random(seed)
        starts = [rng.randint(0, ids.numel() - seqlen - 1) for _ in range(nsamples)]
        return torch.stack([ids[s : s + seqlen] for s in starts])
    docs = _load_texts("C4", "allenai/c4", data_files={"train": _C4_TRAIN}, split="train")
    return reference_sampler(docs, tokenizer, nsamples, seqlen, seed)


def evaluation_tokens(
    tokenizer: Tokenizer,
    source: str = "bundled",
    max_tokens: int | None = None,
    text: str | None = None,
) -> Tensor:
    """1-D LongTensor of held-out tokens, tokenized in one piece, cut to max_tokens if given."""
    if max_tokens is not None and max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    if text is None:
        _check_source(source)
        if source == "bundled":
            text = bundled_text("evaluation")
        elif source == "wikitext2":  # the test split, joined with "\n\n" (§1.5)
            text = "\n\n".join(_load_texts("WikiText-2", *_WIKITEXT, split="test"))
        else:  # SparseGPT's C4 subset: the first 1100 validation documents, joined with " "
            data_files = {"validation": _C4_VALIDATION}
            docs = _load_texts("C4", "allenai/c4", data_files=data_files, split="validation")
            text = " ".join(docs[:1100])
    ids = _tokenize(tokenizer, text)[:max_tokens]
    if ids.numel() == 0:
        raise ValueError("the evaluation text gives no tokens")
    return ids
