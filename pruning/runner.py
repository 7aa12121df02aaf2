"""prune_model(): the one loop that prunes a whole model, in either statistics mode.

- sequential (the papers' protocol): block by block, statistics of block i are taken on the inputs
  that the already-pruned blocks 0…i−1 produce; block i is pruned, rerun, and its outputs feed i+1.
- dense: statistics of the dense model are collected once (`collect_dense_stats`) and can be kept by
  the caller; every further method and sparsity then re-prunes without a forward pass, solving each
  linear type of all blocks as one batched problem.
This is the only place that writes weights into the model.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from . import METHODS
from .arch import block_linears, decoder_blocks, family_of, get_weight, set_weight
from .calibration import capture_block_inputs, collect_stats, run_block
from .types import LayerResult, LayerStats, PruneRun, Sparsity

Mode = Literal["sequential", "dense"]
Progress = Callable[[int, int, str], None]
STACK_BYTES = 512 * 2**20  # cap on one batched problem's Hessians (dense mode)


@dataclass
class DenseStats:
    """Statistics of the dense model, per block: linear name -> LayerStats (groups share one)."""

    needs: frozenset[str]
    blocks: list[dict[str, LayerStats]]
    nsamples: int
    seconds: float


def _check_finite(stats: dict[str, LayerStats], block: int) -> None:
    for name, st in stats.items():
        for t in (st.sq_norm, st.hessian):
            if t is not None and not torch.isfinite(t).all():
                raise ValueError(
                    f"non-finite activation statistics in block {block} ({name}): the model "
                    "overflows on this data; try float32"
                )


@torch.no_grad()
def collect_dense_stats(
    model: nn.Module,
    windows: Tensor,
    needs: frozenset[str],
    *,
    batch_size: int = 8,
    progress: Progress | None = None,
) -> DenseStats:
    """One pass of the dense model over the windows, keeping the statistics `needs` asks for."""
    start = time.perf_counter()
    blocks = decoder_blocks(model)
    inputs = capture_block_inputs(model, windows, batch_size)
    per_block = []
    for i, block in enumerate(blocks):
        stats, outputs = collect_stats(model, block, inputs, needs)
        _check_finite(stats, i)
        per_block.append(stats)
        inputs = inputs.with_hidden(outputs)
        if progress:
            progress(i + 1, len(blocks), f"dense statistics, block {i + 1}/{len(blocks)}")
    return DenseStats(frozenset(needs), per_block, len(windows), time.perf_counter() - start)


def _validate(model: nn.Module, method: str, sparsity: Sparsity, mode: str, hparams: dict) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if mode not in ("sequential", "dense"):
        raise ValueError(f"mode must be 'sequential' or 'dense', got {mode!r}")
    params = inspect.signature(METHODS[method].prune).parameters
    allowed = [p for p, v in params.items() if v.kind is inspect.Parameter.KEYWORD_ONLY]
    for key in hparams:
        if key not in allowed:
            raise ValueError(f"{method} has no option {key!r}; it takes {', '.join(allowed)}")
    if sparsity.nm is not None:
        m = sparsity.nm[1]
        block = decoder_blocks(model)[0]
        for name, module in block_linears(model, block).items():
            cols = get_weight(model, module).shape[1]
            if cols % m:
                raise ValueError(f"{sparsity} needs inputs divisible by {m}; {name} has {cols}")


def _split(res: LayerResult, n: int, keep_scores: bool) -> list[LayerResult]:
    """Per-layer CPU results from a batched result; the new weights are returned separately."""
    out = []
    for i in range(n):
        out.append(
            LayerResult(
                weight=None,
                pruned=res.pruned[i].cpu(),
                score=res.score[i].cpu() if keep_scores and res.score is not None else None,
                order=res.order[i].cpu() if res.order is not None else None,
                loss=res.loss[i].cpu() if res.loss is not None else None,
                trace=list(res.trace),
                info={k: _item(v[i]) for k, v in res.info.items()},
            )
        )
    return out


def _item(v: Tensor) -> float | Tensor:
    return float(v) if v.dim() == 0 else v.cpu()


def _notes(layers: dict[str, LayerResult], hparams: dict) -> list[str]:
    base = hparams.get("percdamp", 0.01)
    return [
        f"{name}: Hessian not positive definite, dampening raised to {r.info['percdamp']:g}"
        for name, r in layers.items()
        if r.info.get("percdamp", base) > base * 1.0001
    ]


@torch.no_grad()
def prune_model(
    model: nn.Module,
    windows: Tensor | None,
    method: str,
    sparsity: Sparsity,
    *,
    mode: Mode = "sequential",
    dense_stats: DenseStats | None = None,
    batch_size: int = 8,
    keep_scores: bool = False,
    progress: Progress | None = None,
    **hparams,
) -> PruneRun:
    """Prune every decoder linear of `model` in place and return what happened.

    windows: (nsamples, seqlen) token ids for calibration (unused by magnitude, or when dense_stats
    is given). hparams go to the method's prune().
    """
    _validate(model, method, sparsity, mode, hparams)
    spec = METHODS[method]
    needs = spec.needs
    have = dense_stats.needs if dense_stats is not None and mode == "dense" else frozenset()
    if needs and windows is None and not needs <= have:
        raise ValueError(
            f"{method} in {mode} mode needs calibration windows (statistics: "
            f"{', '.join(sorted(needs))}; cached: {', '.join(sorted(have)) or 'none'})"
        )
    blocks = decoder_blocks(model)
    names = family_of(model).linear_names
    layers: dict[str, LayerResult] = {}
    seconds = {"calibrate": 0.0, "prune": 0.0}
    block_mse: list[float] = []

    if mode == "dense" or not needs:
        if needs and (dense_stats is None or not needs <= dense_stats.needs):
            dense_stats = collect_dense_stats(
                model, windows, needs, batch_size=batch_size, progress=progress
            )
            seconds["calibrate"] = dense_stats.seconds
        start = time.perf_counter()
        for step, name in enumerate(names):  # one linear type of every block at a time
            modules = [blocks[i].get_submodule(name) for i in range(len(blocks))]
            W = torch.stack([get_weight(model, mod) for mod in modules])  # (blocks, out, in)
            stats = [dense_stats.blocks[i][name] for i in range(len(blocks))] if needs else None
            c = W.shape[-1]
            per = max(1, STACK_BYTES // (4 * c * c)) if "hessian" in needs else len(blocks)
            for b0 in range(0, len(blocks), per):
                b1 = min(b0 + per, len(blocks))
                st = LayerStats(nsamples=stats[0].nsamples) if stats else LayerStats()
                for field in needs:
                    setattr(st, field, torch.stack([getattr(s, field) for s in stats[b0:b1]]))
                res = spec.prune(W[b0:b1], st, sparsity, **hparams)
                for i, part in zip(range(b0, b1), _split(res, b1 - b0, keep_scores)):
                    set_weight(model, modules[i], res.weight[i - b0])
                    layers[f"{i}.{name}"] = part
            if progress:
                progress(step + 1, len(names), f"{method}: {name} of all blocks")
        seconds["prune"] = time.perf_counter() - start
        return PruneRun(method, sparsity, mode, layers, [], seconds, _notes(layers, hparams))

    inputs = capture_block_inputs(model, windows, batch_size)
    for i, block in enumerate(blocks):
        start = time.perf_counter()
        stats, dense_out = collect_stats(model, block, inputs, needs)
        _check_finite(stats, i)
        seconds["calibrate"] += time.perf_counter() - start
        start = time.perf_counter()
        for name, module in block_linears(model, block).items():
            W = get_weight(model, module)
            res = spec.prune(W.unsqueeze(0), _batch1(stats[name]), sparsity, **hparams)
            set_weight(model, module, res.weight[0])
            layers[f"{i}.{name}"] = _split(res, 1, keep_scores)[0]
        seconds["prune"] += time.perf_counter() - start
        start = time.perf_counter()
        pruned_out = run_block(block, inputs)
        block_mse.append(_mse(dense_out, pruned_out))
        inputs = inputs.with_hidden(pruned_out)  # sequential propagation is this line
        seconds["calibrate"] += time.perf_counter() - start
        if progress:
            progress(i + 1, len(blocks), f"{method}: block {i + 1}/{len(blocks)}")
    return PruneRun(method, sparsity, mode, layers, block_mse, seconds, _notes(layers, hparams))


def _batch1(st: LayerStats) -> LayerStats:
    """The same statistics with a leading batch dimension of one."""
    return LayerStats(
        st.nsamples,
        None if st.sq_norm is None else st.sq_norm.unsqueeze(0),
        None if st.hessian is None else st.hessian.unsqueeze(0),
        None if st.grad is None else st.grad.unsqueeze(0),
    )


def _mse(a: list[Tensor], b: list[Tensor]) -> float:
    total = sum(float((x.float() - y.float()).pow(2).sum()) for x, y in zip(a, b))
    return total / sum(x.numel() for x in a)
