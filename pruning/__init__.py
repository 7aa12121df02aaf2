"""Pruning Lab's library: one-shot pruning methods for causal language models.

METHODS is the registry: key -> the method's layer function, the statistics it needs, its paper.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from . import magnitude, sparsegpt, wanda
from .types import LayerResult, LayerStats, PruneRun, Sparsity


@dataclass(frozen=True)
class Method:
    prune: Callable[..., LayerResult]
    needs: frozenset[str] = frozenset()  # ⊆ {"sq_norm", "hessian"}: what calibration must collect
    paper: str = ""
    summary: str = ""


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
}

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
    "prune_model",
]
