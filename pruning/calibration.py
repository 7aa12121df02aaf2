"""Calibration: capture what enters decoder block 0, run blocks in isolation, and accumulate the
per-input statistics (activation norms, Hessians) with forward hooks.

This is the only module besides `arch` that touches nn.Module internals. Linears that read the same
tensor (q/k/v, gate/up) share one accumulator: the hook sits on the first linear of each group.

Hessians are symmetric, so each chunk adds only the tiles on and above the diagonal of XᵀX (about
5/8 of the products for wide inputs) and the tiles below are mirrored once, after the last chunk.
Statistics are float32 whatever the model's dtype; `tf32=True` lets a CUDA device use its tensor
cores for the Hessian products (fp16/bf16 activations are multiplied as they are, with float32
accumulation: the products are exact, only the summation differs).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .arch import block_linears, decoder_blocks, family_of
from .types import LayerStats

STATS = frozenset({"sq_norm", "hessian"})


class _StopForward(Exception):
    """Raised by the block-0 pre-hook once the inputs are captured."""


@dataclass
class BlockInputs:
    """What a decoder block is called with, one entry per chunk of calibration windows."""

    hidden: list[Tensor] = field(default_factory=list)  # (b, L, d) hidden states per chunk
    args: list[tuple] = field(default_factory=list)  # further positional args (GPT-2 passes Nones)
    kwargs: list[dict] = field(default_factory=list)  # position embeddings, masks, …

    def with_hidden(self, hidden: list[Tensor]) -> BlockInputs:
        return BlockInputs(hidden, self.args, self.kwargs)


def chunks(windows: Tensor, batch_size: int) -> list[Tensor]:
    """Split (n, L) windows into batches of at most batch_size rows."""
    return list(windows.split(max(1, batch_size)))


@torch.no_grad()
def capture_block_inputs(model: nn.Module, windows: Tensor, batch_size: int = 8) -> BlockInputs:
    """Run the model up to block 0 on every chunk of windows and record its full call."""
    captured = BlockInputs()

    def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        hidden = args[0] if args else kwargs.pop("hidden_states")
        captured.hidden.append(hidden)
        captured.args.append(tuple(args[1:]))
        captured.kwargs.append(dict(kwargs))
        raise _StopForward

    device = next(model.parameters()).device
    handle = decoder_blocks(model)[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for ids in chunks(windows, batch_size):
            try:
                model(input_ids=ids.to(device), use_cache=False)
            except _StopForward:
                pass
    finally:
        handle.remove()
    return captured


def _output(out: Tensor | tuple) -> Tensor:
    return out[0] if isinstance(out, tuple) else out  # the return type changed across versions


@torch.no_grad()
def run_block(block: nn.Module, inputs: BlockInputs) -> list[Tensor]:
    """The block's outputs for every chunk."""
    return [
        _output(block(h, *a, **kw)) for h, a, kw in zip(inputs.hidden, inputs.args, inputs.kwargs)
    ]


def _edges(c: int) -> list[int]:
    """Tile boundaries for an (in, in) Hessian: tiles of ~384 inputs, at most 8 per side."""
    k = max(1, min(8, round(c / 384)))
    return [round(i * c / k) for i in range(k + 1)]


def _add_gram(H: Tensor, X: Tensor, beta: float, alpha: float, tf32: bool) -> None:
    """H ← beta·H + alpha·XᵀX on the tiles on and above the diagonal (X: (tokens, in))."""
    edges = _edges(H.shape[-1])
    half = tf32 and X.is_cuda and X.dtype in (torch.float16, torch.bfloat16)
    if not half:
        X = X.float()
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32 and X.is_cuda
    try:
        for a in range(len(edges) - 1):
            Xa = X[:, edges[a] : edges[a + 1]].T
            for b in range(a, len(edges) - 1):
                tile = H[edges[a] : edges[a + 1], edges[b] : edges[b + 1]]
                if half:  # fp16 × fp16 products, float32 accumulation and output
                    prod = torch.mm(Xa, X[:, edges[b] : edges[b + 1]], out_dtype=torch.float32)
                    tile.mul_(beta).add_(prod, alpha=alpha)
                else:
                    tile.addmm_(Xa, X[:, edges[b] : edges[b + 1]], beta=beta, alpha=alpha)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


def mirror(H: Tensor) -> Tensor:
    """Fill the tiles below the diagonal from those above (in place); returns H."""
    edges = _edges(H.shape[-1])
    for a in range(len(edges) - 1):
        for b in range(a + 1, len(edges) - 1):
            rows, cols = slice(edges[a], edges[a + 1]), slice(edges[b], edges[b + 1])
            H[cols, rows] = H[rows, cols].T
    return H


def _accumulate(
    stats: LayerStats, x: Tensor, b: int, needs: frozenset[str], tf32: bool = False
) -> None:
    """Add a chunk of b sequences to the running means (rescale, then add).

    b comes from the chunk, not from x: OPT flattens (b, L, d) to (b·L, d) before its MLP.
    The Hessian is left upper-tiled: `mirror` completes it after the last chunk.
    """
    X = x.reshape(-1, x.shape[-1])  # (tokens, in)
    n_old, n_new = stats.nsamples, stats.nsamples + b
    if "sq_norm" in needs:
        add = X.float().square().sum(0).div_(n_new)  # Σ_tokens x_j², as a mean over sequences
        stats.sq_norm = (
            add if stats.sq_norm is None else stats.sq_norm.mul_(n_old / n_new).add_(add)
        )
    if "hessian" in needs:
        if stats.hessian is None:
            c = X.shape[-1]
            stats.hessian = torch.zeros(c, c, dtype=torch.float32, device=X.device)
        _add_gram(stats.hessian, X, n_old / n_new, 2 / n_new, tf32)
    stats.nsamples = n_new


@torch.no_grad()
def collect_stats(
    model: nn.Module,
    block: nn.Module,
    inputs: BlockInputs,
    needs: frozenset[str],
    *,
    tf32: bool = False,
) -> tuple[dict[str, LayerStats], list[Tensor]]:
    """Statistics for every linear of a block, and the block's (dense) outputs.

    Returns {linear name: LayerStats} (linears of one group share the same object) and the outputs
    of the block as it is now. tf32: tensor cores for the Hessian products on CUDA (see above).
    """
    linears = block_linears(model, block)
    stats: dict[str, LayerStats] = {}
    handles = []
    wanted = needs & STATS
    chunk = {"b": 0}  # sequences in the chunk being run
    for group in family_of(model).groups:
        shared = LayerStats()
        stats.update({name: shared for name in group})
        if wanted:

            def hook(
                module: nn.Module, args: tuple, out: Tensor, shared: LayerStats = shared
            ) -> None:
                _accumulate(shared, args[0], chunk["b"], wanted, tf32)

            handles.append(linears[group[0]].register_forward_hook(hook))
    outputs = []
    try:
        for h, a, kw in zip(inputs.hidden, inputs.args, inputs.kwargs):
            chunk["b"] = h.shape[0]
            outputs.append(_output(block(h, *a, **kw)))
    finally:
        for handle in handles:
            handle.remove()
    for st in {id(st): st for st in stats.values()}.values():
        if st.hessian is not None:
            mirror(st.hessian)
    return stats, outputs
