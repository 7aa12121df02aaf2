"""Pruning Lab's library: one-shot pruning methods for causal language models.

METHODS is the registry: key -> the method's layer function, the statistics it needs, its paper.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

from . import barber, gblm, magnitude, rose, sparsegpt, sparseswaps, wanda
from .types import LayerResult, LayerStats, PruneRun, Sparsity


@dataclass(frozen=True)
class Method:
    prune: Callable[..., LayerResult]
    needs: frozenset[str] = frozenset()  # ⊆ {"sq_norm", "hessian", "grad"}: to collect
    paper: str = ""
    summary: str = ""
    # a block-level step after the layer step (LLM-Barber), sequential mode only:
    # refine(model, block, inputs, dense_weights, block_results, sparsity, **hparams) -> results
    refine: Callable[..., dict[str, LayerResult]] | None = None


METHODS: dict[str, Method] = {
    "magnitude": Method(magnitude.prune, frozenset(), "baseline", "smallest |W| per matrix"),
    "wanda": Method(
        wanda.prune,
        frozenset({"sq_norm"}),
        "Sun et al. 2023, arXiv 2306.11695",
        "smallest |W|·‖X_j‖ per output row",
    ),
    "sparsegpt": Method(
        sparsegpt.prune,
        frozenset({"hessian"}),
        "Frantar & Alistarh 2023, arXiv 2301.00774",
        "OBS with lazy block updates: prune by w²/[H⁻¹]_jj², compensate the rest",
    ),
    "rose": Method(
        rose.prune,
        frozenset({"hessian"}),
        "Su & Wang 2026, arXiv 2603.05878",
        "SparseGPT, columnar layers reordered: high pre-pruning-loss blocks and columns first",
    ),
    "gblm": Method(
        gblm.prune,
        frozenset({"sq_norm", "grad"}),
        "Das et al. 2023, arXiv 2311.04902",
        "smallest |W|·‖X_j‖ + α·|W|·‖∇W‖ per output row (dense-model gradients)",
    ),
    "sparseswaps": Method(
        sparseswaps.prune,
        frozenset({"hessian"}),  # plus the warm start's: see needs_of
        "Zimmer et al. 2025, arXiv 2512.10922",
        "a warm-start mask (Wanda) refined per row by exactly optimal 1-swaps on XXᵀ",
    ),
    "barber": Method(
        barber.prune,
        frozenset(),  # the warm start's, and the block inputs (sequential mode)
        "Su et al. 2024, arXiv 2408.10631",
        "a warm-start mask (Wanda) rebuilt per block by swaps on |W|·RMS(∇ block loss)",
        refine=barber.refine,
    ),
}


def needs_of(method: str, hparams: dict | None = None) -> frozenset[str]:
    """The statistics a run of `method` needs: its own, plus its warm start's where it takes one
    (hparams["warm_start"], else the default of its prune())."""
    spec = METHODS[method]
    param = inspect.signature(spec.prune).parameters.get("warm_start")
    if param is None:
        return spec.needs
    warm = (hparams or {}).get("warm_start", param.default)
    if warm not in METHODS or warm == method:  # prune() says what is wrong with it
        return spec.needs
    return spec.needs | needs_of(warm)

from .runner import DenseStats, collect_dense_stats, prune_model

__all__ = [
    "METHODS",
    "DenseStats",
    "LayerResult",
    "LayerStats",
    "Method",
    "PruneRun",
    "Sparsity",
    "collect_dense_stats",
    "needs_of",
    "prune_model",
]
