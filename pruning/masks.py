"""Exact mask selection, shared by every method: the k lowest scores of each group are pruned.

Groups: the whole matrix ("layer"), each output row ("row"), or each aligned run of m inputs of a
row (N:M). Counts are exact: k = floor(size·ratio) per group, ties broken by position (the result of
a stable ascending sort), never a `score <= threshold` cut, which over-prunes on ties and by one.
Scores may carry leading batch dimensions: (..., out, in); each batch entry is its own layer.

How: the k-th lowest value t of each group, then `score <= t`; only where a group has surplus ties
at t are the tied entries taken lowest index first. t comes from numpy's introselect on the CPU
(several times faster than torch's topk there), from topk elsewhere, and for N:M with M ≤ 8 from a
sorting network of elementwise min/max (no per-group kernel at all).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from .types import Sparsity

Group = Literal["layer", "row"]
_CHUNK = 1 << 22  # elements per numpy partition call: its scratch copy stays small and reused
_NETWORK_M = 8  # N:M groups up to this size use the sorting network


def count(size: int, ratio: float) -> int:
    """floor(size·ratio), robust to float error (0.29·100 is 28.999…)."""
    return math.floor(size * ratio + 1e-6)


def kth_lowest(S: Tensor, k: int) -> Tensor:
    """(..., 1) the k-th lowest value along the last dim (1 ≤ k ≤ S.shape[-1])."""
    n = S.shape[-1]
    if S.device.type == "cpu" and S.dtype in (torch.float32, torch.float64) and S.numel():
        rows = S.detach().reshape(-1, n).numpy()  # a view where S is contiguous
        out = np.empty(len(rows), dtype=rows.dtype)
        step = max(1, _CHUNK // n)
        for r0 in range(0, len(rows), step):
            out[r0 : r0 + step] = np.partition(rows[r0 : r0 + step], k - 1, axis=-1)[:, k - 1]
        return torch.from_numpy(out).view(*S.shape[:-1], 1)
    return S.topk(k, dim=-1, largest=False, sorted=False).values.amax(-1, keepdim=True)


def _total(mask: Tensor) -> int:
    """Number of True entries (numpy's count is far faster than torch's bool sum on the CPU)."""
    if mask.device.type == "cpu":
        return int(np.count_nonzero(mask.contiguous().numpy()))
    return int(mask.sum())


def _row_counts(mask: Tensor) -> Tensor:
    """(rows,) number of True entries of each row of a 2-D mask."""
    if mask.device.type == "cpu":
        counts = np.count_nonzero(mask.contiguous().numpy(), axis=-1)
        return torch.from_numpy(np.asarray(counts, dtype=np.int64))
    return mask.sum(-1)


def _at_most(S: Tensor, t: Tensor, k: int) -> Tensor:
    """The k lowest of each row of S (rows, n) given t (rows, 1), the k-th lowest; of the entries
    tied at t, the lowest indices go."""
    at_most = S <= t
    # every row has at least k entries ≤ t, so the total is k·rows exactly when none has more
    if _total(at_most) == k * S.shape[0]:
        return at_most
    counts = _row_counts(at_most)
    rows = (counts > k).nonzero().flatten()
    if S.device.type == "cpu" and len(rows) <= 64:  # few rows with surplus ties: unmark the last
        A = S.contiguous().numpy()
        for r in rows.tolist():
            ties = np.flatnonzero(A[r] == A.dtype.type(t[r, 0].item()))
            at_most[r, ties[len(ties) - (int(counts[r]) - k) :]] = False
        return at_most
    sub, tt = S[rows], t[rows]
    below = sub < tt
    ties = (sub <= tt) ^ below
    need = k - _row_counts(below).to(S.device).unsqueeze(-1)
    at_most[rows] = below | (ties & (ties.cumsum(-1, dtype=torch.int32) <= need))
    return at_most


def lowest_k(S: Tensor, k: int) -> Tensor:
    """Bool mask of the k lowest entries along the last dim; ties go to the lower index."""
    if k <= 0:
        return torch.zeros_like(S, dtype=torch.bool)
    if k >= S.shape[-1]:
        return torch.ones_like(S, dtype=torch.bool)
    rows = S.reshape(-1, S.shape[-1])
    return _at_most(rows, kth_lowest(rows, k), k).view(S.shape)


def prune_lowest(score: Tensor, ratio: float, group: Group) -> Tensor:
    """Prune floor(n·ratio) lowest scores per group: the whole matrix or each row."""
    if group == "layer":
        flat = score.flatten(-2)
        return lowest_k(flat, count(flat.shape[-1], ratio)).view(score.shape)
    if group == "row":
        return lowest_k(score, count(score.shape[-1], ratio))
    raise ValueError(f"group must be 'layer' or 'row', got {group!r}")


def _nth_of_columns(cols: list[Tensor], n: int) -> Tensor:
    """The n-th lowest of m same-shaped tensors, elementwise: odd-even transposition sort."""
    cols = list(cols)
    m = len(cols)
    for p in range(m):
        for i in range(p % 2, m - 1, 2):
            a, b = cols[i], cols[i + 1]
            cols[i], cols[i + 1] = torch.minimum(a, b), torch.maximum(a, b)
    return cols[n - 1]


def prune_lowest_nm(score: Tensor, n: int, m: int) -> Tensor:
    """In every row, prune the n lowest of each aligned group of m inputs."""
    cols = score.shape[-1]
    if cols % m:
        raise ValueError(f"N:M with M={m} needs the input size to be a multiple of {m}, got {cols}")
    groups = score.reshape(*score.shape[:-1], cols // m, m)
    if not 0 < n < m or m > _NETWORK_M:
        return lowest_k(groups, n).reshape(score.shape)
    split = groups.reshape(-1, m).T.contiguous()  # (m, groups): contiguous operands
    t = _nth_of_columns(list(split.unbind(0)), n).unsqueeze(-1)
    return _at_most(groups.reshape(-1, m), t, n).view(score.shape)


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
