"""Structure analysis of masks: kept fractions, and the structure index (exactly 1 on average over
every chance mask with the same per-row counts, R for whole pruned columns)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from pruning import Sparsity, wanda
from pruning.masks import prune_lowest_nm
from pruning.structure import (
    by_linear_type,
    col_kept,
    random_like,
    row_kept,
    structure_index,
    structure_table,
)
from pruning.types import LayerStats


def all_masks_with_row_counts(counts: list[int], cols: int) -> list[torch.Tensor]:
    """Every (rows, cols) mask whose row r prunes exactly counts[r] entries."""
    per_row = [
        [
            torch.tensor([j in c for j in range(cols)])
            for c in itertools.combinations(range(cols), k)
        ]
        for k in counts
    ]
    return [torch.stack(rows) for rows in itertools.product(*per_row)]


def test_kept_fractions_hand_case():
    pruned = torch.tensor([[True, False, False, False], [True, True, False, True]])
    assert row_kept(pruned).tolist() == [0.75, 0.25]
    assert col_kept(pruned).tolist() == [0.0, 0.5, 1.0, 0.5]
    assert row_kept(pruned).dtype == torch.float32


@pytest.mark.parametrize(("counts", "cols"), [([1, 2, 3], 4), ([2, 2], 5), ([0, 1, 4], 4)])
def test_chance_masks_average_exactly_one(counts, cols):
    # brute force over every mask with these per-row counts: the mean index is 1 exactly
    masks = all_masks_with_row_counts(counts, cols)
    index = structure_index(torch.stack(masks))
    assert index.shape == (len(masks),) and index.dtype == torch.float64
    assert index.mean().item() == pytest.approx(1.0, abs=1e-12)


def test_chance_nm_masks_average_exactly_one():
    # every 2:4 mask of a 2×8 matrix (6⁴ of them): the same expectation holds under N:M
    groups = [torch.tensor([j in c for j in range(4)]) for c in itertools.combinations(range(4), 2)]
    masks = [torch.cat(g).view(2, 8) for g in itertools.product(groups, repeat=4)]
    assert structure_index(torch.stack(masks)).mean().item() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("rows", [4, 16, 64])
@pytest.mark.parametrize("frac", [0.25, 0.5, 0.75])
def test_whole_pruned_columns_give_the_number_of_rows(rows, frac):
    cols = 32
    pruned = torch.zeros(rows, cols, dtype=torch.bool)
    pruned[
        :, torch.randperm(cols, generator=torch.Generator().manual_seed(0))[: int(cols * frac)]
    ] = True
    assert structure_index(pruned).item() == pytest.approx(rows, rel=1e-12)
    assert structure_index(pruned, axis="rows").isnan()  # every column is all or nothing


def test_regression_seed_0_random_mask_is_near_one():
    # one 256×1024 chance mask (seed 0); the index's spread under chance is about √(2/1024) ≈ 0.04
    base = torch.zeros(256, 1024, dtype=torch.bool)
    base[:, :512] = True
    mask = random_like(base, seed=0)
    assert torch.equal(mask.sum(-1), base.sum(-1))  # same per-row counts
    assert 0.85 < structure_index(mask).item() < 1.15
    assert structure_index(base).item() == pytest.approx(256)


def test_random_like_keeps_every_rows_count():
    pruned = torch.rand(5, 3, 16, generator=torch.Generator().manual_seed(1)) < 0.4
    mask = random_like(pruned, seed=3)
    assert torch.equal(mask.sum(-1), pruned.sum(-1)) and not torch.equal(mask, pruned)


def test_structured_activations_give_column_structure_wanda_detects():
    # Wanda on inputs with a few dead channels prunes them in every row: whole columns, index ≫ 1
    g = torch.Generator().manual_seed(2)
    W = torch.randn(64, 32, generator=g)
    sq = torch.ones(32)
    sq[:8] = 0.0  # 8 of 32 inputs are dead
    pruned = wanda.prune(W, LayerStats(1, sq), Sparsity(0.25)).pruned
    assert pruned[:, :8].all()
    assert structure_index(pruned).item() == pytest.approx(64)
    nm = prune_lowest_nm(torch.randn(64, 32, generator=g), 2, 4)
    assert structure_index(nm).item() < 2  # a plain random-score 2:4 mask is near chance


def test_rows_axis_is_the_transpose_and_batches_match_loops():
    masks = torch.rand(3, 6, 10, generator=torch.Generator().manual_seed(4)) < 0.5
    idx = structure_index(masks)
    for b in range(3):
        assert idx[b].item() == pytest.approx(structure_index(masks[b]).item(), rel=1e-12)
        assert torch.equal(structure_index(masks[b], axis="rows"), structure_index(masks[b].T))
    with pytest.raises(ValueError, match="axis"):
        structure_index(masks, axis="diagonal")


def test_degenerate_masks_have_no_index():
    assert structure_index(torch.zeros(4, 8, dtype=torch.bool)).isnan()  # all kept
    assert structure_index(torch.ones(4, 8, dtype=torch.bool)).isnan()  # all pruned


def test_by_linear_type_and_table():
    full = torch.zeros(4, 8, dtype=torch.bool)
    full[:, :4] = True  # index 4
    two = torch.tensor([[False, True], [False, True]])  # whole columns of 2 rows: index 2
    kept = torch.zeros(4, 8, dtype=torch.bool)  # NaN: left out
    masks = {"0.mlp.up_proj": full, "1.mlp.up_proj": two, "0.self_attn.q_proj": kept}
    got = by_linear_type(masks)
    assert list(got) == ["mlp.up_proj", "self_attn.q_proj"]  # in order of first appearance
    assert got["mlp.up_proj"] == pytest.approx(3.0)  # mean of 4 and 2 over the blocks
    assert math.isnan(got["self_attn.q_proj"])  # no block with an index
    table = structure_table({"a": masks, "b": {"12.mlp.up_proj": full}})
    assert table["b"] == {"mlp.up_proj": pytest.approx(4.0)}
