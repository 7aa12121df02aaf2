"""LLM-Barber (Su et al., arXiv 2408.10631): rebuild a warm-start mask block by block. Score:
S = |W|·√D, D = mean over the calibration windows of g², g = ∂ℓ/∂W of the sub-block loss
ℓ = MSE(sparse sub-block output, dense sub-block output) on the sparse path's inputs, taken w.r.t.
the DENSE weights at the dense weights. Needs: the warm start's statistics, and the block inputs,
so it runs in sequential mode only.

Two steps per decoder block, as the reference: the warm start (default Wanda; any registered
method) prunes the block's linears (`prune`, the runner's layer step); then `refine` rebuilds the
attention sub-block's masks (q/k/v/o), then, on the inputs the rebuilt attention produces, the MLP's
(gate/up/down). Per comparison group (default each output row) the pruned entries sorted by
descending S are paired with the kept ones sorted by ascending S; n_pos counts the pairs where
the pruned one scores higher, and k = floor(threshold·n_pos) swaps are made: the k best pruned
entries come back, the k worst kept ones go. Counts per group, hence sparsity, are exact; with N:M
the row's k best pruned entries come back and in each M-group as many of its lowest kept ones go.

Weights: by default every rebuilt linear is RESET to its dense weights before the new mask is
applied, as the reference does: a SparseGPT warm start then contributes its mask only.
`retain_reconstruction=True` keeps the warm start's values on the entries it kept (dense values
on the ones it pruned), the reference's --retain_reconstruction.

Differences from the reference (YupengSu/LLM-Barber 6f5ca4e), all deliberate:
- the warm start runs inside the same sequential pass, so block i's warm-start statistics come
  from inputs through the already REBUILT blocks 0…i−1 (the reference first prunes the whole model
  with the warm start, then rebuilds it block by block);
- exact swap counts by rank, ties broken by position (the reference cuts at `>`/`<` thresholds,
  which can swap more or fewer on ties); in N:M groups the swaps are capped at the group's kept
  count, so N:M holds for every N:M (the reference assumes N ≤ M − N);
- the dense sub-block runs in eval mode (no dropout; the reference's copy is in train mode,
  which matters for OPT's dropout 0.1), in float32 like the reference;
- per-window gradients come from one backward per chunk of windows (windows do not interact in a
  decoder block, so each window's gradient is δ_sᵀ·x_s of its own tokens), not batch-1 passes;
- sub-blocks are found generically: the common module of the linears (`self_attn`, `mlp`, …), or
  the whole decoder block where there is none (OPT's fc1/fc2; with the attention already rebuilt,
  the block's output differs between the two versions by the MLP's output alone).
Result info per linear: "swaps", and its sub-block's loss (Σ over windows of the MSE):
"block_loss_before" (the warm start as it pruned), "block_loss_base" (its mask on the base
weights: the dense ones by default) and "block_loss_after" (rebuilt).
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Literal

import torch
from torch import Tensor, nn

from .arch import get_weight, set_weight
from .calibration import BlockInputs
from .masks import Group
from .sparseswaps import warm_method, warm_start_mask
from .types import LayerResult, LayerStats, Sparsity

Granularity = Literal["row", "column", "layer", "block"]  # reference: output1, input1, layer, block
Metric = Literal["WD", "W", "D"]
GRANULARITIES = ("row", "column", "layer", "block")
METRICS = ("WD", "W", "D")


def _check(sparsity: Sparsity, threshold: float, granularity: str, metric: str) -> None:
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {', '.join(GRANULARITIES)}: {granularity!r}")
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    if not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    if sparsity.nm is not None and granularity != "row":
        raise ValueError(f"{sparsity} needs granularity 'row', got {granularity!r}")


@torch.no_grad()
def prune(
    W: Tensor,
    stats: LayerStats,
    sparsity: Sparsity,
    *,
    warm_start: str = "wanda",
    group: Group = "row",
    threshold: float = 0.01,
    granularity: Granularity = "row",
    metric: Metric = "WD",
    retain_reconstruction: bool = False,
) -> LayerResult:
    """The layer step: the warm start's mask (and weights); `refine` rebuilds it per block.

    group goes to warm starts that take one (magnitude, wanda); the other options are refine's.
    """
    _check(sparsity, threshold, granularity, metric)
    return warm_start_mask(warm_start, "barber", W, stats, sparsity, group)


# the mask rebuild


def _k(n_pos: Tensor, threshold: float) -> Tensor:
    """floor(n_pos·threshold), robust to float error like masks.count."""
    return torch.floor(n_pos.double() * threshold + 1e-6).long()


def _regrow_and_drop(S: Tensor, pruned: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
    """The threshold rule along the last dim: (k best pruned entries, k worst kept entries).

    One ascending sort: a cut after position i (between different values) has kept_le[i] kept
    entries below it and pruned_gt[i] pruned ones above, so min(kept_le, pruned_gt) pairs favour a
    swap; n_pos, the reference's count, is the largest such min."""
    order = S.argsort(dim=-1, stable=True)
    s, p = S.gather(-1, order), pruned.gather(-1, order)
    kept_le = (~p).cumsum(-1)  # kept entries at or before each position
    pruned_gt = p.sum(-1, keepdim=True) - p.cumsum(-1)  # pruned entries after it
    cut = torch.ones_like(p)
    cut[..., :-1] = s[..., :-1] < s[..., 1:]  # no cut inside a run of equal scores
    n_pos = torch.where(cut, torch.minimum(kept_le, pruned_gt), 0).amax(-1, keepdim=True)
    k = _k(n_pos, threshold)
    regrow = torch.zeros_like(pruned).scatter(-1, order, p & (pruned_gt < k))
    drop = torch.zeros_like(pruned).scatter(-1, order, ~p & (kept_le <= k))
    return regrow, drop


def rebuild_mask(S: Tensor, pruned: Tensor, threshold: float) -> Tensor:
    """New pruned mask: k = floor(threshold·n_pos) swaps in every group along the last dim."""
    regrow, drop = _regrow_and_drop(S, pruned, threshold)
    return (pruned & ~regrow) | drop


def rebuild_mask_nm(S: Tensor, pruned: Tensor, threshold: float, n: int, m: int) -> Tensor:
    """N:M: the row's k best pruned entries come back; each M-group drops as many of its kept
    entries, lowest S first (at most its M − N kept ones), so every group keeps N pruned."""
    regrow, _ = _regrow_and_drop(S, pruned, threshold)
    shape = S.shape
    Sg, pg, rg = (t.reshape(*shape[:-1], shape[-1] // m, m) for t in (S, pruned, regrow))
    inf = torch.tensor(float("inf"), dtype=S.dtype, device=S.device)
    count = rg.sum(-1, keepdim=True).clamp(max=m - n)
    first = torch.arange(m, device=S.device) < count
    r_order = torch.where(rg, Sg, -inf).argsort(dim=-1, descending=True, stable=True)
    k_order = torch.where(pg, inf, Sg).argsort(dim=-1, stable=True)
    back = torch.zeros_like(pg).scatter(-1, r_order, first)
    drop = torch.zeros_like(pg).scatter(-1, k_order, first)
    return ((pg & ~back) | drop).reshape(shape)


def rebuild(
    scores: dict[str, Tensor],
    pruned: dict[str, Tensor],
    sparsity: Sparsity,
    threshold: float,
    granularity: Granularity = "row",
) -> dict[str, Tensor]:
    """New masks for the linears of one sub-block; (out, in) scores and masks by name."""
    if sparsity.nm is not None:
        n, m = sparsity.nm
        return {k: rebuild_mask_nm(scores[k], pruned[k], threshold, n, m) for k in scores}
    if granularity == "row":
        return {k: rebuild_mask(scores[k], pruned[k], threshold) for k in scores}
    if granularity == "column":
        return {k: rebuild_mask(scores[k].T, pruned[k].T, threshold).T for k in scores}
    if granularity == "layer":
        return {
            k: rebuild_mask(scores[k].flatten(), pruned[k].flatten(), threshold).view_as(pruned[k])
            for k in scores
        }
    names = list(scores)  # block: every linear of the sub-block in one group
    flat = rebuild_mask(
        torch.cat([scores[k].flatten() for k in names]),
        torch.cat([pruned[k].flatten() for k in names]),
        threshold,
    )
    parts = flat.split([pruned[k].numel() for k in names])
    return {k: part.view_as(pruned[k]) for k, part in zip(names, parts)}


# the block step


def _out(out: Tensor | tuple) -> Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


def _to(obj, dtype: torch.dtype):
    """Floating tensors inside nested args/kwargs cast to dtype; everything else as it is."""
    if isinstance(obj, Tensor):
        return obj.to(dtype) if obj.is_floating_point() else obj
    if isinstance(obj, tuple):
        return tuple(_to(x, dtype) for x in obj)
    if isinstance(obj, list):
        return [_to(x, dtype) for x in obj]
    if isinstance(obj, dict):
        return {k: _to(v, dtype) for k, v in obj.items()}
    return obj


def _mse_per_window(y: Tensor, ref: Tensor, b: int) -> Tensor:
    """(b,) mean squared difference of each window's outputs."""
    return (y.float() - ref.float()).pow(2).reshape(b, -1).mean(-1)


def phases(names: list[str]) -> list[tuple[str, list[str]]]:
    """Sub-blocks in order: (module path, its linears), grouped by the linears' parent module
    ("" when a linear sits directly in the decoder block, as OPT's fc1/fc2)."""
    out: dict[str, list[str]] = {}
    for name in names:
        out.setdefault(name.rpartition(".")[0], []).append(name)
    return list(out.items())


def dense_copy(
    model: nn.Module, sub: nn.Module, path: str, dense: dict[str, Tensor]
) -> tuple[nn.Module, dict[str, nn.Module]]:
    """A float32 eval-mode copy of the sub-block at `path` with the dense weights of its linears
    (block-relative names), which alone require gradients; returns it and those linears."""
    copied = copy.deepcopy(sub).float().eval().requires_grad_(False)
    inner = {n: copied.get_submodule(n[len(path) + 1 :] if path else n) for n in dense}
    for n, module in inner.items():
        set_weight(model, module, dense[n])
        module.weight.requires_grad_(True)
    return copied, inner


@torch.enable_grad()
def _gradient_energy(
    model: nn.Module,
    dense_sub: nn.Module,
    modules: dict[str, nn.Module],
    calls: list[tuple[tuple, dict, Tensor]],
) -> tuple[dict[str, Tensor], list[Tensor]]:
    """D = mean over windows of (∂ MSE_window / ∂W)² for the dense copy's linears `modules`, and
    the dense outputs per chunk. calls: the sparse sub-block's (args, kwargs, output) per chunk."""
    names = list(modules)
    D = {n: torch.zeros_like(get_weight(model, m), dtype=torch.float32) for n, m in modules.items()}
    count = 0
    seen: dict[str, tuple[Tensor, Tensor]] = {}

    def hook(name: str):
        def fn(module: nn.Module, args: tuple, out: Tensor) -> None:
            seen[name] = (args[0].detach(), out)

        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in modules.items()]
    dense_out = []
    try:
        for args, kwargs, y_sparse in calls:
            b = y_sparse.shape[0]
            seen.clear()
            y = _out(dense_sub(*_to(args, torch.float32), **_to(kwargs, torch.float32)))
            loss = _mse_per_window(y, y_sparse, b).sum()  # windows are independent
            grads = torch.autograd.grad(loss, [seen[n][1] for n in names])
            for n, delta in zip(names, grads):
                x = seen[n][0].float().reshape(b, -1, seen[n][0].shape[-1])  # (b, tokens, in)
                d = delta.float().reshape(b, -1, delta.shape[-1])  # (b, tokens, out)
                for s in range(b):  # this window's gradient δ_sᵀ·x_s, squared
                    D[n].add_((d[s].T @ x[s]).pow_(2))
            count += b
            dense_out.append(y.detach())
    finally:
        for h in handles:
            h.remove()
    return {n: v / max(count, 1) for n, v in D.items()}, dense_out


def _capture(block: nn.Module, sub: nn.Module, inputs: BlockInputs) -> list[tuple]:
    """Run the block on every chunk and record the sub-block's call: (args, kwargs, output)."""
    calls = []

    def hook(module: nn.Module, args: tuple, kwargs: dict, out) -> None:
        calls.append((args, dict(kwargs), _out(out).detach()))

    handle = sub.register_forward_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            for h, a, kw in zip(inputs.hidden, inputs.args, inputs.kwargs):
                block(h, *a, **kw)
    finally:
        handle.remove()
    return calls


@torch.no_grad()
def _loss(sub: nn.Module, calls: list, dense_out: list[Tensor]) -> float:
    """Σ over windows of MSE(sub-block output, dense output), on the recorded inputs."""
    total = 0.0
    for (args, kwargs, _), ref in zip(calls, dense_out):
        y = _out(sub(*args, **kwargs))
        total += float(_mse_per_window(y, ref, ref.shape[0]).sum())
    return total


def _score(W: Tensor, D: Tensor, metric: str) -> Tensor:
    if metric == "W":
        return W.float().abs()
    if metric == "D":
        return D.sqrt()
    return W.float().abs() * D.sqrt()


@torch.no_grad()
def refine(
    model: nn.Module,
    block: nn.Module,
    inputs: BlockInputs,
    dense: dict[str, Tensor],
    results: dict[str, LayerResult],
    sparsity: Sparsity,
    *,
    warm_start: str = "wanda",
    group: Group = "row",
    threshold: float = 0.01,
    granularity: Granularity = "row",
    metric: Metric = "WD",
    retain_reconstruction: bool = False,
) -> dict[str, LayerResult]:
    """The block step, called by the runner once the warm start has pruned `block` in place.

    dense: each linear's (out, in) weight before pruning; results: the warm start's results.
    Writes the rebuilt weights into the block and returns the updated results.
    """
    warm_method(warm_start, "barber")
    out = dict(results)
    for path, names in phases(list(dense)):
        sub = block.get_submodule(path) if path else block
        calls = _capture(block, sub, inputs)  # the sparse path as the warm start left it
        dense_sub, inner = dense_copy(model, sub, path, {n: dense[n] for n in names})
        D, dense_out = _gradient_energy(model, dense_sub, inner, calls)
        del dense_sub
        loss_before = sum(
            float(_mse_per_window(y, ref, ref.shape[0]).sum())
            for (_, _, y), ref in zip(calls, dense_out)
        )
        modules = {n: block.get_submodule(n) for n in names}
        old = {n: results[n].pruned.to(dense[n].device) for n in names}
        base = {}
        for n in names:
            if retain_reconstruction:  # kept entries keep the warm start's (updated) values
                warm = get_weight(model, modules[n])
                base[n] = torch.where(old[n], dense[n].to(warm.dtype), warm).clone()
            else:  # the reference's default: back to the dense weights
                base[n] = dense[n].clone()
        for n in names:
            set_weight(model, modules[n], base[n].masked_fill(old[n], 0))
        loss_base = _loss(sub, calls, dense_out)
        scores = {n: _score(base[n], D[n], metric) for n in names}
        new = rebuild(scores, old, sparsity, threshold, granularity)
        for n in names:
            set_weight(model, modules[n], base[n].masked_fill(new[n], 0))
        loss_after = _loss(sub, calls, dense_out)
        for n in names:
            info = dict(results[n].info)
            info.update(
                swaps=float((old[n] & ~new[n]).sum()),
                block_loss_before=loss_before,
                block_loss_base=loss_base,
                block_loss_after=loss_after,
            )
            out[n] = replace(results[n], pruned=new[n].cpu(), info=info)
    return out
