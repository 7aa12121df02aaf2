"""ROSE, Reordered SparseGPT (Su & Wang, arXiv 2603.05878). Order: columns whose pre-pruned loss
ℓ_j = Σ_rows S_ij·[S_ij pre-pruned] is largest go first (S = |W|·√a, Wanda's score), whole blocks by
their loss β_b = Σ_{j∈b} ℓ_j, then plain SparseGPT on W[:, π], H[π, π]. Needs: hessian.

Per block of `blocksize` (128) columns, the lowest floor(r·B·s) scores over all rows are pre-pruned
(the block group of SparseGPT's mask); ℓ and β measure what they would cost. A layer is reordered
only if it is "columnar": ρ = (max β − min β)/max β > threshold (0.5). Then inside each block the
columns are sorted by descending ℓ and the blocks by descending β; otherwise π is the identity (no
reordering at either level) and the result is SparseGPT's, bit for bit. SparseGPT's solver is
reused through its `order` argument; whole blocks move and columns stay in their block, so each of
SparseGPT's mask groups holds the same columns as without reordering: only the processing order,
hence who compensates whom, changes. The weights come back in the original column order.

Statistics: the activation energy a_j is read off the Hessian, a = diag(H)/2. calibration.py keeps
both as running means over sequences of the same inputs, so this is exactly Wanda's uniform average
(sq_norm) and no second accumulator is needed. The reference accumulates a from the input already
scaled by √(2/n) for SparseGPT, which weights calibration sequence k (of N, batch 1) by 2/(k·N):
the first sequence counts N times more than the last. That only moves the ordering, never the mask
rule; it would need a per-sequence statistic that calibration does not keep, so it is not offered.

Differences from the reference (mingluo-su/ROSE 000b131):
- exact counts: pre-pruning takes exactly floor(r·w·s) per block (the reference cuts at
  `<= sorted[floor(r·w·s)]`, one more and more on ties); SparseGPT's own counts as in sparsegpt.py;
  ties in the orderings keep the original order (stable sorts);
- a last block narrower than `blocksize` (SmolLM2's 576 inputs = 4·128 + 64; the reference assumes
  c divisible by 128 and indexes past the end when it reorders such a layer) compares by loss per
  column, β·B/width, in ρ and in `info["block_loss"]` (its plain sum would make ρ ≥ ~0.5 by
  itself), and stays last, its columns sorted inside it, so that SparseGPT's blocks stay aligned
  with the original ones;
- N:M works (the reference's N:M path raises NameError whenever ρ > 0.5): the pre-pruned mask is
  the N lowest scores of every aligned M-group of each row; blocks (blocksize rounded down to a
  multiple of M) are tested and ordered as above, but inside a block whole M-groups are ordered by
  descending group loss, and the columns inside each group by descending ℓ. Every M consecutive
  positions of π hold one original group, so SparseGPT's just-in-time N:M mask is N:M in the
  original column order.
W and H may carry leading batch dimensions: every batch entry is its own layer (its own ρ and π).
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import sparsegpt
from .masks import count, lowest_k, prune_lowest_nm
from .types import LayerResult, LayerStats, Sparsity


def _desc(x: Tensor) -> Tensor:
    """Indices sorting the last dim by descending value; ties keep their order."""
    return x.argsort(dim=-1, descending=True, stable=True)


def column_losses(S: Tensor, sparsity: Sparsity, width: int) -> Tensor:
    """ℓ (..., c): per column, the summed scores of the weights pre-pruned in its block."""
    c = S.shape[-1]
    if sparsity.nm is not None:
        pre = prune_lowest_nm(S, *sparsity.nm)
    else:
        pre = torch.zeros_like(S, dtype=torch.bool)
        for i1 in range(0, c, width):  # the r×w block is one group, as in SparseGPT's mask
            i2 = min(i1 + width, c)
            block = S[..., i1:i2].flatten(-2)
            k = count(block.shape[-1], sparsity.ratio)
            pre[..., i1:i2] = lowest_k(block, k).view(S[..., i1:i2].shape)
    return (S * pre).sum(-2)


def block_losses(ell: Tensor, width: int) -> Tensor:
    """β (..., nblocks): summed column losses per block; a narrower last block is scaled by
    width/its width, so blocks compare by loss per column."""
    c = ell.shape[-1]
    return torch.stack(
        [ell[..., i : i + width].sum(-1) * (width / min(width, c - i)) for i in range(0, c, width)],
        -1,
    )


def relative_range(beta: Tensor) -> Tensor:
    """ρ = (max β − min β) / max β, 0 where every block loss is 0."""
    top = beta.amax(-1)
    rho = (top - beta.amin(-1)) / top
    return torch.where(top > 0, rho, torch.zeros_like(rho))


def permutation(ell: Tensor, beta: Tensor, width: int, unit: int = 1) -> Tensor:
    """π (..., c): full blocks by descending β (a narrower last block stays last); inside each
    block its units of `unit` consecutive columns by descending summed ℓ; inside each unit its
    columns by descending ℓ. unit = 1 is ROSE's two levels; unit = M keeps N:M groups whole."""
    c = ell.shape[-1]
    units = ell.unflatten(-1, (c // unit, unit))  # (..., c/u, u)
    inner = _desc(units) + torch.arange(0, c, unit, device=ell.device).unsqueeze(-1)
    per = width // unit  # units per full block
    nfull = c // width
    unit_loss = units.sum(-1)  # (..., c/u)
    parts = []
    if nfull:
        full = unit_loss[..., : nfull * per].unflatten(-1, (nfull, per))  # (..., nb, per)
        within = _desc(full) + torch.arange(0, nfull * per, per, device=ell.device).unsqueeze(-1)
        blocks = _desc(beta[..., :nfull])  # (..., nb)
        parts.append(within.gather(-2, blocks.unsqueeze(-1).expand_as(within)).flatten(-2))
    if c % width:  # the narrower last block
        parts.append(_desc(unit_loss[..., nfull * per :]) + nfull * per)
    unit_order = torch.cat(parts, -1)  # (..., c/u) original unit indices in processing order
    return inner.gather(-2, unit_order.unsqueeze(-1).expand_as(inner)).flatten(-2)


@torch.no_grad()
def prune(
    W: Tensor,
    stats: LayerStats,
    sparsity: Sparsity,
    *,
    blocksize: int = 128,
    percdamp: float = 0.01,
    threshold: float = 0.5,
    inner: int = 16,
) -> LayerResult:
    """W: (..., out, in); stats.hessian: (..., in, in).

    threshold: a layer is reordered when ρ > threshold (< 0: every layer, ≥ 1: none, = SparseGPT).
    info: column_loss (..., in), block_loss (..., nblocks), rho (...), reordered (...) 0/1, and
    SparseGPT's percdamp; order is π, loss the per-row OBS loss of the reordered solve.
    """
    if stats.hessian is None:
        raise ValueError("rose needs a Hessian (stats.hessian)")
    c = W.shape[-1]
    nm = sparsity.nm
    unit = 1 if nm is None else nm[1]
    width = blocksize if nm is None else max(unit, blocksize - blocksize % unit)
    if c % unit:
        raise ValueError(f"N:M with M={unit} needs the input size to be a multiple of {unit}")
    dtype = torch.promote_types(W.dtype, torch.float32)
    act = stats.hessian.diagonal(dim1=-2, dim2=-1).to(dtype).clamp_min(0) / 2  # = sq_norm
    S = W.to(dtype).abs() * act.sqrt().unsqueeze(-2)  # (..., r, c) Wanda's score
    ell = column_losses(S, sparsity, width)
    beta = block_losses(ell, width)
    rho = relative_range(beta)
    reordered = rho > threshold  # (...)
    order = None
    if bool(reordered.any()):
        ident = torch.arange(c, device=W.device).expand_as(ell)
        order = torch.where(reordered.unsqueeze(-1), permutation(ell, beta, width, unit), ident)
    res = sparsegpt.prune(
        W, stats, sparsity, blocksize=width, percdamp=percdamp, order=order, inner=inner
    )
    res.info.update(column_loss=ell, block_loss=beta, rho=rho, reordered=reordered.to(dtype))
    return res
