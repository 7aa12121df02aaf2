"""Wanda (arXiv 2306.11695). Score: S_ij = |W_ij| · ‖X_j‖₂, compared within each output row.
Needs: sq_norm.

Magnitude weighted by the input channel's activation norm over the calibration tokens; no weight
update. Per row the lowest floor(in·s) scores go (or the lowest N of every M inputs).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .masks import Group, select
from .types import LayerResult, LayerStats, Sparsity


@torch.no_grad()
def prune(W: Tensor, stats: LayerStats, sparsity: Sparsity, *, group: Group = "row") -> LayerResult:
    """W: (..., out, in); stats.sq_norm: (..., in) mean over sequences of Σ_tokens x_j²."""
    if stats.sq_norm is None:
        raise ValueError("wanda needs activation norms (stats.sq_norm)")
    S = W.float().abs() * stats.sq_norm.sqrt().unsqueeze(-2)  # (..., out, in)
    pruned = select(S, sparsity, group)
    return LayerResult(weight=W * ~pruned, pruned=pruned, score=S)  # ×0: faster than masked_fill
