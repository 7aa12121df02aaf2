"""Magnitude pruning (the baseline of every paper). Score: S = |W|. Needs: nothing.

The references compare |W| across the whole matrix (group="layer"); group="row" compares within
each output row, Wanda's group, so the two can be compared on equal terms. The references cut at
`|W| <= sorted[floor(n·s)]`, which prunes one weight too many (more on ties); this prunes exactly
floor(n·s) per group.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .masks import Group, select
from .types import LayerResult, LayerStats, Sparsity


@torch.no_grad()
def prune(
    W: Tensor, stats: LayerStats, sparsity: Sparsity, *, group: Group = "layer"
) -> LayerResult:
    """W: (..., out, in). Prunes the smallest |W| of each group (or of each N:M group)."""
    S = W.float().abs()  # (..., out, in)
    pruned = select(S, sparsity, group)
    return LayerResult(weight=W * ~pruned, pruned=pruned, score=S)  # ×0: faster than masked_fill
