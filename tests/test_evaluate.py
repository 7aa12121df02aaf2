"""Evaluation: the reference perplexity protocol, measured sparsity, block errors."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from pruning import Sparsity, prune_model
from pruning.evaluate import (
    block_errors,
    overall_sparsity,
    perplexity,
    sparsity_by_layer,
    windows_of,
)
from pruning.models import tiny_model


def test_perplexity_is_exp_of_mean_window_loss_with_the_remainder_dropped():
    model = tiny_model("llama")
    ids = torch.randint(0, 128, (3 * 16 + 5,), generator=torch.Generator().manual_seed(0))
    losses = []
    for w in ids[: 3 * 16].view(3, 16):  # by hand: one window at a time, L-1 predictions each
        logits = model(input_ids=w[None]).logits[0]
        losses.append(F.cross_entropy(logits[:-1], w[1:]).item())
    expected = math.exp(sum(losses) / 3)
    assert perplexity(model, ids, 16, batch_size=2) == pytest.approx(expected, rel=1e-5)
    assert perplexity(model, ids[: 3 * 16], 16) == pytest.approx(expected, rel=1e-5)


def test_too_few_tokens_for_one_window_is_a_clear_error():
    with pytest.raises(ValueError, match="fewer than one window of 16"):
        windows_of(torch.arange(10), 16)


def test_block_errors_are_zero_for_the_same_model_and_positive_after_pruning():
    model = tiny_model("gpt2")
    windows = torch.randint(0, 128, (4, 16), generator=torch.Generator().manual_seed(1))
    assert block_errors(model, copy.deepcopy(model), windows) == [0.0, 0.0]
    pruned = copy.deepcopy(model)
    run = prune_model(pruned, windows, "wanda", Sparsity(0.5))
    errors = block_errors(model, pruned, windows)
    assert all(0 < e < 10 for e in errors)
    layers = sparsity_by_layer(pruned)
    assert layers.keys() == run.layers.keys() and all(v == 0.5 for v in layers.values())
    assert overall_sparsity(pruned) == run.achieved_sparsity() == 0.5
