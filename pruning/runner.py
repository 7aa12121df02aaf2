"""prune_model(): the one loop that prunes a whole model, in either statistics mode.

- sequential (the papers' protocol): block by block, statistics of block i are taken on the inputs
  that the already-pruned blocks 0…i−1 produce; block i is pruned, rerun, and its outputs feed i+1.
- dense: statistics of the dense model are collected once (`collect_dense_stats`) and can be kept by
  the caller; every further method and sparsity then re-prunes without a forward pass. The
  linears of a shared-input group with one shape (q/k/v or gate/up where equal) of many blocks are
  solved as one batched problem, their statistics broadcast, not copied; batches are sized by a
  memory budget, and on the CPU they run on single-threaded worker threads side by side (their
  kernels are too small to split; per-kernel thread barriers cost more than the work).
This is the only place that writes weights into the model.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Literal

import torch
from torch import Tensor, nn

from . import METHODS, memory, needs_of
from .arch import block_linears, decoder_blocks, family_of, get_weight, set_weight
from .calibration import capture_block_inputs, collect_stats, run_block
from .gradients import Norm, collect_grad_norms
from .types import LayerResult, LayerStats, PruneRun, Sparsity

Mode = Literal["sequential", "dense"]
Progress = Callable[[int, int, str], None]
STACK_BYTES = 160 * 2**20  # CPU cap on one batched problem of a Hessian method (dense mode)
SMALL_BYTES = 24 * 2**20  # CPU cap for the other methods: their scratch stays in reused heap


@dataclass
class DenseStats:
    """Statistics of the dense model, per block: linear name -> LayerStats (groups share one)."""

    needs: frozenset[str]
    blocks: list[dict[str, LayerStats]]
    nsamples: int
    seconds: float
    grads: dict[str, Tensor] = field(default_factory=dict)  # "block.linear" -> G (out, in), GBLM
    grad_norm: str | None = None  # "l2" / "l1" when grads were taken


def _cached(stats: DenseStats | None, grad_norm: str) -> frozenset[str]:
    """What a cache holds that a run can use: its gradients only if taken with the same norm."""
    if stats is None:
        return frozenset()
    return stats.needs if stats.grad_norm in (None, grad_norm) else stats.needs - {"grad"}


def _with_grad(st: LayerStats, grad: Tensor | None) -> LayerStats:
    """One linear's statistics with its own gradient norms (the shared object stays as it is)."""
    return st if grad is None else replace(st, grad=grad)


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
    grad_norm: Norm = "l2",
    tf32: bool = False,
) -> DenseStats:
    """One pass of the dense model over the windows, keeping the statistics `needs` asks for
    (with "grad": also GBLM's gradient pass, one backward per window, `grad_norm` over windows).
    The memory guard refuses first a pass that would not fit. tf32: tensor cores for the Hessian
    products on CUDA (calibration.py)."""
    memory.check_calibration(model, *windows.shape, frozenset(needs), batch_size=batch_size)
    start = time.perf_counter()
    blocks = decoder_blocks(model)
    inputs = capture_block_inputs(model, windows, batch_size)
    per_block = []
    for i, block in enumerate(blocks):
        stats, outputs = collect_stats(model, block, inputs, needs, tf32=tf32)
        _check_finite(stats, i)
        per_block.append(stats)
        inputs = inputs.with_hidden(outputs)
        if progress:
            progress(i + 1, len(blocks), f"dense statistics, block {i + 1}/{len(blocks)}")
    grads = {}
    if "grad" in needs:
        grads = collect_grad_norms(
            model, windows, norm=grad_norm, batch_size=batch_size, progress=progress
        )
    seconds = time.perf_counter() - start
    norm = grad_norm if "grad" in needs else None
    return DenseStats(frozenset(needs), per_block, len(windows), seconds, grads, norm)


def validate(model: nn.Module, method: str, sparsity: Sparsity, mode: str, hparams: dict) -> None:
    """Refuse a bad method, mode, option or N:M pattern with a clear ValueError, before any work."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if mode not in ("sequential", "dense"):
        raise ValueError(f"mode must be 'sequential' or 'dense', got {mode!r}")
    params = inspect.signature(METHODS[method].prune).parameters
    allowed = [p for p, v in params.items() if v.kind is inspect.Parameter.KEYWORD_ONLY]
    for key in hparams:
        if key not in allowed:
            raise ValueError(f"{method} has no option {key!r}; it takes {', '.join(allowed)}")
    if mode == "dense" and METHODS[method].refine is not None:
        raise ValueError(
            f"{method} rebuilds whole blocks on the pruned model's own block inputs: "
            "it runs in sequential mode only"
        )
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
                info={  # matrix-sized extras (GBLM's score terms) only on request, like the score
                    k: _item(v[i]) for k, v in res.info.items() if keep_scores or v.dim() < 3
                },
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


@contextlib.contextmanager
def _threads(n: int):
    """torch's intra-op thread count for the calling thread only (an OpenMP setting per thread)."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _dense_calls(
    model: nn.Module, needs: frozenset[str], device: torch.device
) -> list[tuple[tuple[str, ...], int, int]]:
    """Dense mode's batched problems, in order: (linear names sharing an input and a shape, first
    block, end block), each within the memory budget of one problem."""
    blocks = decoder_blocks(model)
    linears = block_linears(model, blocks[0])
    solver = "hessian" in needs
    if device.type == "cuda":
        budget = max(STACK_BYTES, memory.available_bytes(device) // (4 if solver else 8))
    else:
        budget = STACK_BYTES if solver else SMALL_BYTES
    calls = []
    for group in family_of(model).groups:
        by_shape: dict[tuple[int, ...], list[str]] = {}
        for name in group:
            by_shape.setdefault(tuple(get_weight(model, linears[name]).shape), []).append(name)
        for (rows, cols), names in by_shape.items():
            per = max(1, budget // memory.solve_bytes(len(names), rows, cols, needs))
            n = math.ceil(len(blocks) / per)  # as few problems as fit, of even size
            edges = [round(k * len(blocks) / n) for k in range(n + 1)]
            calls += [(tuple(names), edges[k], edges[k + 1]) for k in range(n)]
    return calls


def _dense_problem(
    model: nn.Module, names: tuple[str, ...], b0: int, b1: int, stats: DenseStats | None, needs
) -> tuple[Tensor, LayerStats]:
    """W (names, blocks, out, in) and its statistics: the shared ones broadcast over the names."""
    blocks = decoder_blocks(model)
    W = torch.stack(
        [get_weight(model, blocks[i].get_submodule(n)) for n in names for i in range(b0, b1)]
    )
    W = W.view(len(names), b1 - b0, *W.shape[-2:])
    st = LayerStats(nsamples=stats.nsamples if stats is not None else 0)
    for field_name in sorted(needs & {"sq_norm", "hessian"}):
        t = torch.stack([getattr(stats.blocks[i][names[0]], field_name) for i in range(b0, b1)])
        setattr(st, field_name, t.unsqueeze(0).expand(len(names), *t.shape))  # no copies
    grads = [stats.grads.get(f"{i}.{n}") for n in names for i in range(b0, b1)] if stats else []
    if "grad" in needs and all(g is not None for g in grads):
        st.grad = torch.stack(grads).view(len(names), b1 - b0, *grads[0].shape[-2:])
    return W, st


def _prune_dense(
    model: nn.Module,
    method: str,
    sparsity: Sparsity,
    stats: DenseStats | None,
    keep_scores: bool,
    progress: Progress | None,
    hparams: dict,
) -> dict[str, LayerResult]:
    """Dense mode's solve: every batched problem of `_dense_calls`, written into the model."""
    spec = METHODS[method]
    blocks = decoder_blocks(model)
    device = next(model.parameters()).device
    needs = needs_of(method, hparams)  # a warm start's statistics included
    calls = _dense_calls(model, needs, device)
    workers = min(torch.get_num_threads(), len(calls)) if device.type == "cpu" else 1

    def solve(call: tuple[tuple[str, ...], int, int]) -> dict[tuple[str, int], LayerResult]:
        names, b0, b1 = call
        with torch.no_grad(), _threads(1) if workers > 1 else contextlib.nullcontext():
            W, st = _dense_problem(model, names, b0, b1, stats, needs)
            res = spec.prune(W, st, sparsity, **hparams)
            keys = [(n, i) for n in names for i in range(b0, b1)]
            for k, (n, i) in enumerate(keys):
                set_weight(model, blocks[i].get_submodule(n), res.weight[k // (b1 - b0), i - b0])
            keep = keep_scores and res.score is not None  # (flattening a view may copy it)
            flat = LayerResult(
                weight=None,
                pruned=res.pruned.flatten(0, 1),
                score=res.score.flatten(0, 1) if keep else None,
                order=res.order.flatten(0, 1) if res.order is not None else None,
                loss=res.loss.flatten(0, 1) if res.loss is not None else None,
                trace=res.trace,
                info={k: v.flatten(0, 1) for k, v in res.info.items()},
            )
            return dict(zip(keys, _split(flat, len(keys), keep_scores)))

    groups = family_of(model).groups
    last = {}  # the index of each group's last problem: progress is reported per group
    for k, (names, _, _) in enumerate(calls):
        last[next(g for g, group in enumerate(groups) if names[0] in group)] = k
    parts: dict[tuple[str, int], LayerResult] = {}
    pool = ThreadPoolExecutor(workers) if workers > 1 else None
    try:
        results = [pool.submit(solve, call) for call in calls] if pool else calls
        for k, result in enumerate(results):
            parts.update(result.result() if pool else solve(result))
            for g, end in last.items():
                if end == k and progress:
                    progress(g + 1, len(groups), f"{method}: {', '.join(groups[g])}")
    finally:
        if pool:
            pool.shutdown(wait=True, cancel_futures=True)
    order = family_of(model).linear_names  # name-major, as the layers were always listed
    return {f"{i}.{n}": parts[n, i] for n in order for i in range(len(blocks))}


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
    grad_norm: Norm = "l2",
    tf32: bool = False,
    **hparams,
) -> PruneRun:
    """Prune every decoder linear of `model` in place and return what happened.

    windows: (nsamples, seqlen) token ids for calibration (unused by magnitude, or when dense_stats
    is given). hparams go to the method's prune(). grad_norm: "l2" or "l1" over the windows, for
    methods that need the dense model's gradients (taken once, before any pruning, in both modes;
    a dense_stats holding them with the same norm is used instead). tf32: tensor cores for the
    Hessian products on CUDA (off by default; see calibration.py).
    """
    validate(model, method, sparsity, mode, hparams)
    spec = METHODS[method]
    needs = needs_of(method, hparams)  # a warm start's statistics included
    have = _cached(dense_stats, grad_norm) if mode == "dense" else frozenset()
    if (needs or spec.refine) and windows is None and not (needs <= have and not spec.refine):
        raise ValueError(
            f"{method} in {mode} mode needs calibration windows (statistics: "
            f"{', '.join(sorted(needs))}; cached: {', '.join(sorted(have)) or 'none'})"
        )
    blocks = decoder_blocks(model)
    layers: dict[str, LayerResult] = {}
    seconds = {"calibrate": 0.0, "prune": 0.0}
    block_mse: list[float] = []

    if mode == "dense" or not (needs or spec.refine):
        if needs and not needs <= have:
            dense_stats = collect_dense_stats(
                model,
                windows,
                needs,
                batch_size=batch_size,
                progress=progress,
                grad_norm=grad_norm,
                tf32=tf32,
            )
            seconds["calibrate"] = dense_stats.seconds
        start = time.perf_counter()
        layers = _prune_dense(model, method, sparsity, dense_stats, keep_scores, progress, hparams)
        seconds["prune"] = time.perf_counter() - start
        return PruneRun(method, sparsity, mode, layers, [], seconds, _notes(layers, hparams))

    grads: dict[str, Tensor] = {}
    if "grad" in needs:  # of the dense model, once, before block 0 is pruned (as the reference)
        start = time.perf_counter()
        cached = "grad" in _cached(dense_stats, grad_norm)
        grads = (
            dense_stats.grads
            if cached
            else collect_grad_norms(
                model, windows, norm=grad_norm, batch_size=batch_size, progress=progress
            )
        )
        seconds["calibrate"] += time.perf_counter() - start
    memory.check_calibration(model, *windows.shape, needs, mode=mode, batch_size=batch_size)
    inputs = capture_block_inputs(model, windows, batch_size)
    for i, block in enumerate(blocks):
        start = time.perf_counter()
        stats, dense_out = collect_stats(model, block, inputs, needs, tf32=tf32)
        _check_finite(stats, i)
        seconds["calibrate"] += time.perf_counter() - start
        start = time.perf_counter()
        dense_w: dict[str, Tensor] = {}  # for a refine step: the block's weights before pruning
        for name, module in block_linears(model, block).items():
            W = get_weight(model, module)
            if spec.refine is not None:
                dense_w[name] = W.detach().clone()
            st = _with_grad(stats[name], grads.get(f"{i}.{name}"))
            res = spec.prune(W.unsqueeze(0), _batch1(st), sparsity, **hparams)
            set_weight(model, module, res.weight[0])
            layers[f"{i}.{name}"] = _split(res, 1, keep_scores)[0]
        if spec.refine is not None:  # block-level step (LLM-Barber): rewrites the block's weights
            mine = {name: layers[f"{i}.{name}"] for name in dense_w}
            refined = spec.refine(model, block, inputs, dense_w, mine, sparsity, **hparams)
            layers.update({f"{i}.{name}": r for name, r in refined.items()})
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
