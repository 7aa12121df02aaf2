"""SparseGPT (arXiv 2301.00774). Update: for each column j in order, prune by w²/[H⁻¹]_jj², then
spread the error e = (w − q)/U_jj over the columns still to come (U: upper Cholesky of H⁻¹).
Needs: hessian.

Optimal Brain Surgeon made cheap: one Cholesky factor serves every column, and updates are applied
lazily per block of columns. As the reference: dead inputs (H_jj = 0) are zeroed, the diagonal is
damped by percdamp·mean(diag H), and the unstructured mask is chosen per block of `blocksize`
columns over all rows jointly, on the weights as updated so far; N:M masks are chosen just in time,
one M-group at a time. Differences from the reference:
- exact counts: the reference cuts at `score <= sorted[floor(r·B·s)]`, one extra weight per block
  (more on ties); here block b prunes floor(r·c_b·s) − floor(r·c_{b−1}·s) (c_b: columns up to the end
  of block b), so the layer loses exactly floor(r·c·s);
- a Hessian that is not positive definite is retried with 10× the dampening (up to 4 times) and the
  value used is reported in `info["percdamp"]`;
- inside a block the column updates are themselves lazy, `inner` columns at a time: the same
  arithmetic in a different order, far fewer kernel launches;
- for N:M the blocksize only batches updates, so it is rounded down to a multiple of M;
- an optional column `order` (ROSE) processes the columns in that order; with N:M it must move
  whole M-groups, so the mask is N:M in the original column order.
W and H may carry leading batch dimensions: every batch entry is solved as its own layer.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .masks import count, lowest_k, prune_lowest_nm
from .types import LayerResult, LayerStats, Sparsity


def _cholesky_inverse_upper(H: Tensor, percdamp: float) -> tuple[Tensor, Tensor]:
    """U upper with H⁻¹ = UᵀU, after damping H in place; ×10 dampening where H is not PD."""
    diag = H.diagonal(dim1=-2, dim2=-1)  # (..., c) a view: damping writes into H
    mean_diag = diag.mean(-1)  # (...)
    damp = torch.full_like(mean_diag, percdamp)
    diag.add_((damp * mean_diag).unsqueeze(-1))
    for _ in range(5):
        L, info = torch.linalg.cholesky_ex(H)
        bad = info > 0
        if not bad.any():
            return torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True), damp
        more = torch.where(
            bad, torch.where(damp > 0, damp * 9, 0.01), 0
        )  # new damp = 10× (or 0.01)
        diag.add_((more * mean_diag).unsqueeze(-1))
        damp = damp + more
    raise ValueError(f"Hessian is not positive definite even with dampening {damp.max().item():g}")


@torch.no_grad()
def prune(
    W: Tensor,
    stats: LayerStats,
    sparsity: Sparsity,
    *,
    blocksize: int = 128,
    percdamp: float = 0.01,
    order: Tensor | None = None,
    inner: int = 16,
) -> LayerResult:
    """W: (..., out, in); stats.hessian: (..., in, in); order: (..., in) column order or None."""
    if stats.hessian is None:
        raise ValueError("sparsegpt needs a Hessian (stats.hessian)")
    dtype = W.dtype
    W = W.to(torch.promote_types(dtype, torch.float32)).clone()  # (..., r, c), at least fp32
    H = stats.hessian.to(W.dtype).clone()  # (..., c, c)
    r, c = W.shape[-2:]
    nm = sparsity.nm
    if order is not None and nm is not None:
        groups = order.reshape(*order.shape[:-1], -1, nm[1]) // nm[1]  # (..., c/m, m) source groups
        if not bool((groups == groups[..., :1]).all()):
            raise ValueError(f"with {nm[0]}:{nm[1]}, an order must move whole groups of {nm[1]}")
    if order is not None:  # permute columns of W and rows/columns of H
        W = W.gather(-1, order.unsqueeze(-2).expand_as(W))
        H = H.gather(-1, order.unsqueeze(-2).expand_as(H)).gather(
            -2, order.unsqueeze(-1).expand_as(H)
        )

    dead = H.diagonal(dim1=-2, dim2=-1) == 0  # (..., c) inputs never active
    H.diagonal(dim1=-2, dim2=-1).masked_fill_(dead, 1)
    W.masked_fill_(dead.unsqueeze(-2), 0)
    U, damp = _cholesky_inverse_upper(H, percdamp)  # (..., c, c)
    d = U.diagonal(dim1=-2, dim2=-1)  # (..., c) √ of the OBS denominators

    if nm is not None:
        blocksize = max(nm[1], blocksize - blocksize % nm[1])
        inner = max(nm[1], inner - inner % nm[1])
    pruned = torch.zeros_like(W, dtype=torch.bool)
    S = torch.zeros_like(W)  # the scores that decided, for the views
    loss = torch.zeros_like(W[..., 0])  # (..., r)
    for i1 in range(0, c, blocksize):
        i2 = min(i1 + blocksize, c)
        W1 = W[..., i1:i2].clone()  # (..., r, b) contiguous: the column loop runs on it
        U1, d1 = U[..., i1:i2, i1:i2], d[..., i1:i2]
        E1 = torch.zeros_like(W1)  # (..., r, b) scaled errors of this block
        if nm is None:  # adaptive mask over the r×b block, on the weights updated so far
            S[..., i1:i2] = W1.pow(2) / d1.pow(2).unsqueeze(-2)
            k = count(r * i2, sparsity.ratio) - count(r * i1, sparsity.ratio)
            pruned[..., i1:i2] = lowest_k(S[..., i1:i2].flatten(-2), k).view_as(W1)
        for j1 in range(0, i2 - i1, inner):  # lazy updates inside the block, too
            j2 = min(j1 + inner, i2 - i1)
            for j in range(j1, j2):
                if nm is not None and j % nm[1] == 0:  # N:M, chosen just in time
                    g = slice(j, j + nm[1])
                    S1 = W1[..., g].pow(2) / d1[..., g].pow(2).unsqueeze(-2)
                    S[..., i1 + j : i1 + j + nm[1]] = S1
                    pruned[..., i1 + j : i1 + j + nm[1]] = prune_lowest_nm(S1, *nm)
                w = W1[..., j]  # (..., r)
                q = w.masked_fill(pruned[..., i1 + j], 0)
                e = (w - q) / d1[..., j, None]  # (..., r)
                loss += e.pow(2) / 2
                W1[..., j:j2] -= e.unsqueeze(-1) * U1[..., j, j:j2].unsqueeze(-2)
                W1[..., j] = q  # exact zeros where pruned
                E1[..., j] = e
            W1[..., j2:] -= E1[..., j1:j2] @ U1[..., j1:j2, j2:]
        W[..., i1:i2] = W1
        W[..., i2:] -= E1 @ U[..., i1:i2, i2:]

    order_out = torch.arange(c, device=W.device).expand(W.shape[:-2] + (c,))
    if order is not None:  # back to the original column order
        inv = order.argsort(-1)
        W, pruned, S = (t.gather(-1, inv.unsqueeze(-2).expand_as(W)) for t in (W, pruned, S))
        order_out = order
    return LayerResult(
        weight=W.to(dtype),
        pruned=pruned,
        score=S,
        order=order_out,
        loss=loss,
        info={"percdamp": damp},  # (...) the dampening each layer needed
    )
