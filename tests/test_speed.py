"""Tests for pruning.speed: the "unavailable" answers are answers (never exceptions), malformed
arguments raise, the note is honest either way; on a CUDA machine, a real 2:4 measurement."""

from __future__ import annotations

import pytest
import torch

from pruning.masks import is_nm
from pruning.models import tiny_model
from pruning.speed import (
    check_shapes,
    honest_note,
    linear_shapes,
    random_24_weight,
    semi_structured_speedup,
)

CUDA = torch.cuda.is_available()
SHAPES = [(576, 576), (1536, 576), (576, 1536), (576, 576)]  # SmolLM2-135M's, one repeated


@pytest.mark.skipif(CUDA, reason="checks the answer on a machine without CUDA")
def test_no_cuda_is_an_answer_naming_cuda():
    result = semi_structured_speedup(SHAPES)
    assert result["available"] is False and "CUDA" in result["reason"]
    explicit = semi_structured_speedup(SHAPES, device="cpu")
    assert explicit["available"] is False and "CUDA" in explicit["reason"]


def test_other_dtypes_are_unavailable_not_errors():
    result = semi_structured_speedup(SHAPES, dtype=torch.float32)
    assert result == {"available": False, "reason": result["reason"]}
    assert "float16 or bfloat16" in result["reason"] and "float32" in result["reason"]


@pytest.mark.parametrize(
    "shapes, kwargs, words",
    [
        ([], {}, "at least one"),
        ([(576, 570)], {}, "multiple of"),
        ([(8, 576)], {}, "multiple of"),
        ([(576,)], {}, "(out, in)"),
        ([(0, 576)], {}, "positive"),
        ([(576.0, 576)], {}, "positive integers"),
        ([(576, 576)], {"tokens": 0}, "tokens"),
        ([(576, 576)], {"repeats": -1}, "repeats"),
    ],
)
def test_bad_arguments_raise(shapes, kwargs, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        semi_structured_speedup(shapes, **kwargs)


def test_shapes_are_checked_against_the_backend_rule():
    assert check_shapes([(32, 64), (576, 1536)]) == [(32, 64), (576, 1536)]


def test_random_weight_is_exactly_2_of_4():
    W = random_24_weight((32, 64), torch.Generator().manual_seed(0))
    assert is_nm(W == 0, 2, 4)


def test_linear_shapes_lists_every_prunable_linear():
    shapes = linear_shapes(tiny_model("llama", layers=2))
    assert len(shapes) == 2 * 7 and (64, 32) in shapes and (32, 64) in shapes


def test_honest_note_without_a_measurement():
    note = honest_note({"available": False, "reason": "no CUDA device: CPU-only build"})
    assert "no speed-up" in note and "Unstructured" in note
    assert "no CUDA device: CPU-only build" in note and "2:4" in note


def test_honest_note_with_a_measurement():
    result = {
        "available": True,
        "device": "NVIDIA A100",
        "dtype": "float16",
        "tokens": 2048,
        "backend": "cusparselt",
        "total": {"dense_ms": 2.0, "sparse_ms": 1.25, "speedup": 1.6},
        "check_passed": False,
        "check": "sparse results differ from dense beyond tolerance for [(576, 576)]",
    }
    note = honest_note(result)
    assert "NVIDIA A100" in note and "1.60×" in note and "no speed-up" in note
    assert "Warning" in note and "(576, 576)" in note


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_measures_a_speedup_on_cuda():
    result = semi_structured_speedup(SHAPES, tokens=1024, repeats=10)
    if not result["available"]:  # e.g. a pre-Ampere GPU: the reason must say why
        assert "capability" in result["reason"] or "failed" in result["reason"]
        pytest.skip(result["reason"])
    assert {"device", "capability", "backend", "dtype", "tokens", "shapes", "total"} <= set(result)
    assert [(r["shape"], r["count"]) for r in result["shapes"]] == [
        ((576, 576), 2),
        ((1536, 576), 1),
        ((576, 1536), 1),
    ]
    for row in result["shapes"]:
        assert row["dense_ms"] > 0 and row["sparse_ms"] > 0 and row["speedup"] > 0
        assert row["check_passed"], row
    total = result["total"]
    assert total["dense_ms"] == pytest.approx(
        sum(r["dense_ms"] * r["count"] for r in result["shapes"])
    )
    assert total["speedup"] > 0 and result["check_passed"]
    assert result["device"] in honest_note(result)
