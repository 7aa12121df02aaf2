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
- no inverse at all: the reference's U (H⁻¹ = UᵀU) is T⁻¹ for T upper with H = T·Tᵀ, which is one
  Cholesky of the reversed H (J·H·J = L·Lᵀ ⇒ T = J·L·J), against the reference's Cholesky →
  inverse → Cholesky chain. The loop keeps, per column j, a_j = Σ_{k<j} d_k·T_kj with d = w₀ − q
  the total change of each processed column; then w_j = w₀_j + a_j/T_jj when j is reached, and the
  weights the reference holds for a later group of columns G (its block, or N:M group) are
  w₀_G + a_G·T_GG⁻¹, a small triangular solve per group. Same arithmetic as the reference up to
  rounding (tests compare against a plain OBS written with U).
W and H may carry leading batch dimensions: every batch entry is solved as its own layer. H may be
broadcast over some of them (a stride-0 `expand`, as the runner passes linears that read the same
input): then each distinct Hessian is factored once and the layers sharing it are solved as one
problem with their rows stacked, each keeping its own mask group. Same results, less work.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .masks import count, lowest_k, prune_lowest_nm
from .types import LayerResult, LayerStats, Sparsity

FACTOR_BYTES = 24 * 2**20  # Hessians factored at once: scratch stays small (no fresh pages)


def factor(H: Tensor, percdamp: float) -> tuple[Tensor, Tensor]:
    """(T, damp) for H (g, c, c), unchanged: T upper with H + damp·mean(diag H)·I = T·Tᵀ, where dead
    inputs (H_jj = 0) get H_jj = 1 first and damp (g,) starts at percdamp, ×10 while not PD.

    T is the Cholesky factor of the reversed matrix, reversed: J·H·J = L·Lᵀ ⇒ H = (J·L·J)(J·L·J)ᵀ,
    and T⁻¹ is the reference's U (H⁻¹ = UᵀU)."""
    g, c = H.shape[0], H.shape[-1]
    T = torch.empty_like(H)
    damp = torch.full((g,), float(percdamp), dtype=H.dtype, device=H.device)
    step = max(1, FACTOR_BYTES // (H.element_size() * c * c))
    for g0 in range(0, g, step):
        g1 = min(g0 + step, g)
        R = H[g0:g1].flip(-2, -1)  # a copy, reversed: J·H·J
        diag = R.diagonal(dim1=-2, dim2=-1)
        diag.masked_fill_(diag == 0, 1)
        mean_diag = diag.mean(-1)
        part = damp[g0:g1]
        diag.add_((part * mean_diag).unsqueeze(-1))
        for _ in range(5):
            L, info = torch.linalg.cholesky_ex(R)
            bad = info > 0
            if not bool(bad.any()):
                break
            more = torch.where(bad, torch.where(part > 0, part * 9, 0.01), 0)  # → 10× (or 0.01)
            diag.add_((more * mean_diag).unsqueeze(-1))
            part += more
        else:
            raise ValueError(
                f"Hessian is not positive definite even with dampening {part.max().item():g}"
            )
        T[g0:g1] = L.flip(-2, -1)
    return T, damp


def _inverse_diagonal_blocks(T: Tensor, size: int) -> Tensor:
    """(G, c/size, size, size): the inverses of T's diagonal blocks (c divisible by size)."""
    c = T.shape[-1]
    idx = torch.arange(c, device=T.device).view(c // size, size)
    blocks = T[:, idx[:, :, None], idx[:, None, :]]  # (G, c/size, size, size) upper
    eye = torch.eye(size, dtype=T.dtype, device=T.device).expand_as(blocks).contiguous()
    return torch.linalg.solve_triangular(blocks, eye, upper=True)


def _held(W0: Tensor, A: Tensor, T_inv: Tensor) -> Tensor:
    """The weights the reference holds for a group of columns (G, g, R) once every column before
    it is processed: w₀ + a·T_GG⁻¹ (columns as rows here: w₀ + T_GG⁻ᵀ·a)."""
    return torch.baddbmm(W0, T_inv.transpose(1, 2), A)


def _compact(t: Tensor) -> Tensor:
    """t with its broadcast (stride-0) batch dims cut to size 1, so a conversion stays small."""
    idx = tuple(
        slice(0, 1) if t.stride(i) == 0 and t.shape[i] > 1 else slice(None)
        for i in range(t.dim() - 2)
    )
    return t[idx]


def _layout(batch: tuple[int, ...], H: Tensor) -> tuple[list[int], list[int]]:
    """Batch dims of W whose Hessian differs (own), and those it is broadcast over (shared)."""
    shared = [i for i, n in enumerate(batch) if n > 1 and H.stride(i) == 0]
    return [i for i in range(len(batch)) if i not in shared], shared


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
    dtype, device = W.dtype, W.device
    wdt = torch.promote_types(dtype, torch.float32)  # the solve runs in at least fp32
    batch, (r, c) = tuple(W.shape[:-2]), W.shape[-2:]
    nm = sparsity.nm
    H = _compact(stats.hessian).to(device=device, dtype=wdt).expand(*batch, c, c)
    if order is not None:
        order = order.to(device).expand(*batch, c)
        if nm is not None:
            groups = order.reshape(*batch, -1, nm[1]) // nm[1]  # (..., c/m, m) source groups
            if not bool((groups == groups[..., :1]).all()):
                raise ValueError(
                    f"with {nm[0]}:{nm[1]}, an order must move whole groups of {nm[1]}"
                )
        idx = order.unsqueeze(-2).expand(*batch, c, c)  # each layer its own permuted Hessian
        H = H.gather(-1, idx).gather(-2, idx.transpose(-1, -2))
    own, shared = _layout(batch, H)
    gshape = [batch[i] for i in own]
    sshape = [batch[i] for i in shared]
    G, Sn = math.prod(gshape), math.prod(sshape)
    R = Sn * r  # rows solved together against one Hessian
    perm = own + shared  # batch dims, own first
    nb = len(batch)
    Hg = H.permute(*perm, nb, nb + 1)[(slice(None),) * len(own) + (0,) * len(shared)]
    Hg = Hg.reshape(G, c, c)  # the distinct Hessians (a view where they were stacked)

    def work_view(t: Tensor) -> Tensor:  # (G, c, R) working tensor as (*own, c, *shared, r)
        return t.view((*gshape, c, *sshape, r))

    wperm = [*own, nb + 1, *shared, nb]  # W's dims in the working order
    Wt = torch.empty(G, c, R, dtype=wdt, device=device)  # columns as rows: the loop reads rows
    work_view(Wt).copy_(W.permute(*wperm))
    if order is not None:  # here G covers the whole batch: permute each layer's columns
        Wt = Wt.gather(1, order.reshape(G, c, 1).expand(G, c, R))

    dead = Hg.diagonal(dim1=-2, dim2=-1) == 0  # (G, c) inputs never active
    W0 = Wt.mul_(~dead.unsqueeze(-1))  # (mask products: far faster than masked_fill on a CPU)
    T, damp = factor(Hg, percdamp)  # (G, c, c) upper, H = T·Tᵀ, T = U⁻¹
    t = T.diagonal(dim1=-2, dim2=-1)  # (G, c) 1/U_jj
    A = torch.zeros_like(W0)  # a_j = Σ_{k<j} d_k·T_kj over the processed columns k

    if nm is not None:
        blocksize = max(nm[1], blocksize - blocksize % nm[1])
        inner = max(nm[1], inner - inner % nm[1])
    mask = torch.empty(G, c, R, dtype=torch.bool, device=device)  # (every entry gets written)
    S = torch.empty(G, c, R, dtype=wdt, device=device)  # the scores that decided, for the views
    loss = torch.zeros(G, R, dtype=wdt, device=device)
    for i1 in range(0, c, blocksize):
        i2 = min(i1 + blocksize, c)
        b = i2 - i1
        W1, A1, T1, M1, S1 = (
            W0[:, i1:i2],
            A[:, i1:i2],
            T[:, i1:i2, i1:i2],
            mask[:, i1:i2],
            S[:, i1:i2],
        )
        t1 = t[:, i1:i2, None]  # (G, b, 1)
        B = torch.empty(G, b, R, dtype=wdt, device=device)  # w₀ where pruned, else 0
        Kt = torch.empty(G, b, R, dtype=wdt, device=device)  # 1/T_jj where kept, else 0
        if nm is None:  # adaptive mask over each layer's r×b block, on the weights held so far
            held = _held(W1, A1, _inverse_diagonal_blocks(T1, b)[:, 0]) if i1 else W1
            torch.mul(held, t1, out=S1).square_()  # (w/U_jj)²
            k = count(r * i2, sparsity.ratio) - count(r * i1, sparsity.ratio)
            by_layer = S1.view(G, b, Sn, r).permute(0, 2, 3, 1).reshape(G, Sn, r * b)
            chosen = lowest_k(by_layer, k).view(G, Sn, r, b).permute(0, 3, 1, 2)
            M1.view(G, b, Sn, r).copy_(chosen)
            torch.mul(W1, M1, out=B)
            torch.div(~M1, t1, out=Kt)
        else:
            T_inv = _inverse_diagonal_blocks(T1, nm[1])  # (G, b/m, m, m)
        D = torch.empty(G, b, R, dtype=wdt, device=device)  # d = w₀ − q of each column
        # per-column views made once per block: the loop below runs once per column
        Bc, Ac, Kc, Dc, D1 = B.unbind(1), A1.unbind(1), Kt.unbind(1), D.unbind(1), D.split(1, 1)
        for j1 in range(0, b, inner):  # lazy updates inside the block, too
            j2 = min(j1 + inner, b)
            T_in, A_in = T1[:, j1:j2, j1:j2, None], A1[:, j1:j2]
            for j in range(j1, j2):
                if nm is not None and j % nm[1] == 0:  # N:M, chosen just in time
                    g = slice(j, j + nm[1])
                    held = _held(W1[:, g], A1[:, g], T_inv[:, j // nm[1]])
                    torch.mul(held, t1[:, g], out=S1[:, g]).square_()
                    M1[:, g] = prune_lowest_nm(S1[:, g].transpose(1, 2), *nm).transpose(1, 2)
                    torch.mul(W1[:, g], M1[:, g], out=B[:, g])
                    torch.div(~M1[:, g], t1[:, g], out=Kt[:, g])
                # q = w₀ + a/T_jj where kept, 0 where pruned: d = w₀·[pruned] − a·[kept]/T_jj
                torch.addcmul(Bc[j], Ac[j], Kc[j], value=-1, out=Dc[j])
                if j + 1 < j2:
                    A_in[:, j + 1 - j1 :].addcmul_(T_in[:, j - j1, j + 1 - j1 :], D1[j])
            if j2 < b:
                A1[:, j2:].baddbmm_(T1[:, j1:j2, j2:].transpose(1, 2), D[:, j1:j2])
        if i2 < c:
            A[:, i2:].baddbmm_(T[:, i1:i2, i2:].transpose(1, 2), D)
        W1.addcdiv_(A1, t1)  # w when reached: w₀ + a/T_jj
        loss += (W1 * M1).mul_(t1).square_().sum(1).div_(2)  # e = (w − q)/U_jj; ½e² per row
        W1.mul_(~M1)  # q: exact zeros where pruned

    order_out = torch.arange(c, device=device).expand(*batch, c)
    if order is not None:  # back to the original column order
        inv = order.reshape(G, c).argsort(-1).view(G, c, 1).expand(G, c, R)
        W0, mask, S = (x.gather(1, inv) for x in (W0, mask, S))
        order_out = order

    unperm = [wperm.index(i) for i in range(nb + 2)]

    def back(t: Tensor, dt: torch.dtype) -> Tensor:  # (G, c, R) → (..., r, c), a view if it can
        return work_view(t).permute(*unperm).to(dt)

    inv_perm = [perm.index(i) for i in range(nb)]  # working batch order → W's
    damp_out = damp.view((*gshape, *[1] * len(shared))).expand((*gshape, *sshape))
    return LayerResult(
        weight=back(W0, dtype),
        pruned=back(mask, torch.bool),
        score=back(S, wdt),
        order=order_out,
        loss=loss.view((*gshape, *sshape, r)).permute(*inv_perm, nb).contiguous(),
        info={"percdamp": damp_out.permute(tuple(inv_perm)).contiguous()},  # (...) dampening used
    )
