"""The memory guard: estimate what a load or a calibration pass will hold (model, statistics,
activations) against the memory free on the device, and refuse with a clear message, naming a
smaller setting that fits, before any work starts. Also the working-set estimate the runner sizes
its batched problems with, and the process's peak RSS (per phase, for the benchmarks).

Estimates are deliberately simple upper bounds of the large tensors (float32 statistics, the
calibration activations kept between blocks, one chunk's working set); they are not allocator
accounting. A margin of MARGIN of the free memory is kept back.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from .arch import block_linears, decoder_blocks, family_of, get_weight

GB = 2**30
MARGIN = 0.1  # fraction of the free memory never planned for
STATS_BYTES = 4  # statistics are float32


class MemoryGuardError(ValueError):
    """A request that would not fit in memory; the message names a smaller setting."""


def available_bytes(device: torch.device | str = "cpu") -> int:
    """Memory free for new tensors: MemAvailable on the CPU, free + cached-unused on CUDA."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        reusable = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + reusable)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def tensor_bytes(model: nn.Module) -> int:
    """Bytes of the model's parameters and buffers as they are."""
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))


@dataclass(frozen=True)
class Shape:
    """What the estimates need to know of a decoder: read off a model (or its config)."""

    blocks: int
    hidden: int
    widest: int  # the widest linear input or output (the MLP's intermediate size)
    groups: tuple[tuple[int, ...], ...]  # per shared-input group: its input size, then each out
    vocab: int

    @classmethod
    def of(cls, model: nn.Module) -> Shape:
        blocks = decoder_blocks(model)
        linears = block_linears(model, blocks[0])
        groups = []
        for group in family_of(model).groups:
            shapes = [get_weight(model, linears[name]).shape for name in group]
            groups.append((shapes[0][1], *(s[0] for s in shapes)))
        widest = max(max(g) for g in groups)
        config = model.config
        hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd", widest)
        vocab = getattr(config, "vocab_size", 0)
        return cls(len(blocks), hidden, widest, tuple(groups), vocab)

    def weights_per_block(self) -> int:
        return sum(g[0] * sum(g[1:]) for g in self.groups)


def statistics_bytes(shape: Shape, needs: frozenset[str], blocks: int) -> int:
    """float32 statistics of `blocks` blocks (all of them in dense mode, one in sequential)."""
    per_block = 0
    for inp, *_ in shape.groups:
        per_block += inp * STATS_BYTES if "sq_norm" in needs else 0
        per_block += inp * inp * STATS_BYTES if "hessian" in needs else 0
    total = per_block * blocks
    if "grad" in needs:  # per-linear gradient norms of every block, kept for the whole run
        total += shape.weights_per_block() * shape.blocks * STATS_BYTES
    return total


def activation_bytes(
    shape: Shape, nsamples: int, seqlen: int, batch_size: int, dtype: torch.dtype
) -> int:
    """Block inputs and outputs of every window, plus one chunk's working set in a block."""
    size = torch.tensor([], dtype=dtype).element_size()
    kept = 2 * nsamples * seqlen * shape.hidden * size
    chunk = min(batch_size, nsamples) * seqlen
    working = chunk * (4 * shape.widest + 6 * shape.hidden) * size  # MLP and attention tensors
    working += chunk * shape.widest * STATS_BYTES  # the float32 copy the Hessian update reads
    return kept + working


def _fmt(n: int) -> str:
    return f"{n / GB:.2f} GB"


def check_calibration(
    model: nn.Module,
    nsamples: int,
    seqlen: int,
    needs: frozenset[str],
    *,
    mode: str = "dense",
    batch_size: int = 8,
    free: int | None = None,
) -> int:
    """Refuse (MemoryGuardError) a calibration pass that would not fit; returns the estimate.

    The model is already loaded, so only statistics and activations must fit in what is free.
    """
    if not needs:
        return 0
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    free = available_bytes(device) if free is None else free
    budget = int(free * (1 - MARGIN))
    shape = Shape.of(model)

    def need(n: int, L: int, m: str, b: int) -> tuple[int, int]:
        st = statistics_bytes(shape, needs, shape.blocks if m == "dense" else 1)
        return st, activation_bytes(shape, n, L, b, dtype)

    stats, acts = need(nsamples, seqlen, mode, batch_size)
    if stats + acts <= budget:
        return stats + acts
    hints = []
    n = nsamples
    while n > 1 and sum(need(n, seqlen, mode, batch_size)) > budget:
        n //= 2
    if sum(need(n, seqlen, mode, batch_size)) <= budget:
        hints.append(f"nsamples={n}")
    L = seqlen
    while L > 16 and sum(need(nsamples, L, mode, batch_size)) > budget:
        L //= 2
    if sum(need(nsamples, L, mode, batch_size)) <= budget:
        hints.append(f"seqlen={L}")
    b = batch_size
    while b > 1 and sum(need(nsamples, seqlen, mode, b)) > budget:
        b //= 2
    if b < batch_size and sum(need(nsamples, seqlen, mode, b)) <= budget:
        hints.append(f"batch size {b}")
    if mode == "dense" and sum(need(nsamples, seqlen, "sequential", batch_size)) <= budget:
        hints.append("sequential mode (statistics of one block at a time)")
    hint = "; try " + " or ".join(hints) if hints else "; no smaller setting of this model fits"
    raise MemoryGuardError(
        f"calibrating {nsamples}×{seqlen} tokens in {mode} mode needs about {_fmt(stats + acts)} "
        f"on {device} (statistics {_fmt(stats)}, activations {_fmt(acts)}), but only "
        f"{_fmt(free)} is free{hint}"
    )


def check_load(params: int, dtype: torch.dtype, device: torch.device | str = "cpu") -> int:
    """Refuse (MemoryGuardError) loading a model of `params` parameters that would not fit."""
    size = torch.tensor([], dtype=dtype).element_size()
    need = params * size
    free = available_bytes(device)
    if need <= free * (1 - MARGIN):
        return need
    fits = [
        str(dt).removeprefix("torch.")
        for dt in (torch.float16, torch.bfloat16)
        if torch.tensor([], dtype=dt).element_size() < size
        and params * torch.tensor([], dtype=dt).element_size() <= free * (1 - MARGIN)
    ]
    hint = f"; try dtype {' or '.join(fits)}" if fits else "; try a smaller model"
    raise MemoryGuardError(
        f"the model has {params / 1e9:.2f}B parameters: {_fmt(need)} in "
        f"{str(dtype).removeprefix('torch.')}, but only {_fmt(free)} is free on {device}{hint}"
    )


def solve_bytes(layers: int, rows: int, cols: int, needs: frozenset[str]) -> int:
    """Working set per block of one batched problem: `layers` linears of (rows, cols) sharing an
    input (their statistics once), weights, scores and masks several times over, float32."""
    per = layers * rows * cols * (4 * STATS_BYTES + 1)
    if "grad" in needs:
        per += layers * rows * cols * STATS_BYTES
    if "hessian" in needs:
        per += 3 * cols * cols * STATS_BYTES  # the stacked Hessians, the factor, its scratch
    return per


def reset_peak_rss() -> bool:
    """Restart the process's peak-RSS count (Linux: /proc/self/clear_refs); False if unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """The process's peak resident memory since start or the last `reset_peak_rss`."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
