"""Exact mask selection, shared by every method: the k lowest scores of each group are pruned.

Groups: the whole matrix ("layer"), each output row ("row"), or each aligned run of m inputs of a
row (N:M). Counts are exact: k = floor(size·ratio) per group, ties broken by position (the result of
a stable ascending sort), never a `score <= threshold` cut, which over-prunes on ties and by one.
Scores may carry leading batch dimensions: (..., out, in); each batch entry is its own layer.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from .types import Sparsity

Group = Literal["layer", "row"]


def count(size: int, ratio: float) -> int:
    """floor(size·ratio), robust to float error (0.29·100 is 28.999…)."""
    return math.floor(size * ratio + 1e-6)


def lowest_k(S: Tensor, k: int) -> Tensor:
    """Bool mask of the k lowest entries along the last dim; ties go to the lower index."""
    if k <= 0:
        return torch.zeros_like(S, dtype=torch.bool)
    if k >= S.shape[-1]:
        return torch.ones_like(S, dtype=torch.bool)
    t = S.topk(k, dim=-1, largest=False, sorted=False).values.amax(-1, keepdim=True)  # k-th lowest
    at_most = S <= t
    if bool((at_most.sum(-1) == k).all()):  # no surplus ties at the threshold: the common case
        return at_most
    below = S < t
    ties = S == t
    need = k - below.sum(-1, keepdim=True)  # how many tied entries still go, lowest index first
    return below | (ties & (ties.cumsum(-1) <= need))


def prune_lowest(score: Tensor, ratio: float, group: Group) -> Tensor:
    """Prune floor(n·ratio) lowest scores per group: the whole matrix or each row."""
    if group == "layer":
        flat = score.flatten(-2)
        return lowest_k(flat, count(flat.shape[-1], ratio)).view(score.shape)
    if group == "row":
        return lowest_k(score, count(score.shape[-1], ratio))
    raise ValueError(f"group must be 'layer' or 'row', got {group!r}")


def prune_lowest_nm(score: Tensor, n: int, m: int) -> Tensor:
    """In every row, prune the n lowest of each aligned group of m inputs."""
    cols = score.shape[-1]
    if cols % m:
        raise ValueError(f"N:M with M={m} needs the input size to be a multiple of {m}, got {cols}")
    groups = score.reshape(*score.shape[:-1], cols // m, m)
    return lowest_k(groups, n).reshape(score.shape)


def select(score: Tensor, sparsity: Sparsity, group: Group = "row") -> Tensor:
    """The pruned mask for a sparsity target: N:M when set, else the ratio within `group`."""
    if sparsity.nm is not None:
        return prune_lowest_nm(score, *sparsity.nm)
    return prune_lowest(score, sparsity.ratio, group)


def is_nm(pruned: Tensor, n: int, m: int) -> bool:
    """True when every aligned group of m inputs in every row has exactly n pruned."""
    if pruned.shape[-1] % m:
        return False
    groups = pruned.reshape(*pruned.shape[:-1], pruned.shape[-1] // m, m)
    return bool((groups.sum(-1) == n).all())


def fraction(pruned: Tensor) -> float:
    """Fraction of entries pruned."""
    return pruned.float().mean().item()
