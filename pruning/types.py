"""Core data types: the sparsity target, per-layer statistics and results, and a whole run."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from torch import Tensor


@dataclass(frozen=True)
class Sparsity:
    """What to prune: a ratio of every matrix, optionally as an N:M pattern.

    ratio: fraction of weights removed, in [0, 1).
    nm: (n, m) prunes n of every m consecutive inputs of each row; then ratio must equal n/m.
    """

    ratio: float = 0.5
    nm: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.ratio, (int, float)) and math.isfinite(self.ratio)):
            raise ValueError(f"sparsity must be a finite number, got {self.ratio!r}")
        if not 0 <= self.ratio < 1:
            raise ValueError(f"sparsity must be in [0, 1), got {self.ratio}")
        if self.nm is not None:
            n, m = self.nm
            if not (isinstance(n, int) and isinstance(m, int) and 0 < n < m):
                raise ValueError(f"N:M needs integers 0 < N < M, got {n}:{m}")
            if not math.isclose(self.ratio, n / m, abs_tol=1e-9):
                raise ValueError(f"N:M {n}:{m} prunes {n / m:g}, but the ratio is {self.ratio:g}")

    @classmethod
    def parse(cls, text: str | float) -> Sparsity:
        """'0.5' → 50% unstructured; '2:4' → 2 of every 4 pruned; '50%' also works."""
        if isinstance(text, (int, float)):
            return cls(float(text))
        s = str(text).strip()
        if ":" in s:
            parts = s.split(":")
            if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
                raise ValueError(f"N:M pattern must look like '2:4', got {text!r}")
            n, m = (int(p) for p in parts)
            if not 0 < n < m:
                raise ValueError(f"N:M needs integers 0 < N < M, got {text!r}")
            return cls(n / m, (n, m))
        try:
            value = float(s[:-1]) / 100 if s.endswith("%") else float(s)
        except ValueError:
            raise ValueError(
                f"sparsity must be a number like 0.5 or a pattern like 2:4, got {text!r}"
            )
        return cls(value)

    def __str__(self) -> str:
        return f"{self.nm[0]}:{self.nm[1]}" if self.nm else f"{self.ratio:.0%}"


@dataclass
class LayerStats:
    """What calibration knows about one linear's input; float32.

    Tensors may carry leading batch dimensions (several layers solved as one problem).
    """

    nsamples: int = 0
    sq_norm: Tensor | None = None  # (..., in)      mean over sequences of Σ_tokens x_j²   Wanda
    hessian: Tensor | None = None  # (..., in, in)  (2/N)·Σ_tokens x xᵀ                  SparseGPT
    grad: Tensor | None = None  # (..., out, in)  accumulated gradient norm of the weight   GBLM


@dataclass
class LayerResult:
    """One layer's pruning outcome. Tensors may carry leading batch dimensions."""

    weight: Tensor | None  # (out, in) new weight, zeros where pruned; the runner drops it
    pruned: Tensor  # (out, in) bool, True = removed
    score: Tensor | None = None  # (out, in) the importance that decided
    order: Tensor | None = None  # (in,) column processing order
    loss: Tensor | None = None  # (out,) per-row reconstruction-loss estimate
    trace: list[float] = field(default_factory=list)  # objective per iteration
    info: dict[str, Tensor] = field(default_factory=dict)  # per-layer extras: scalars (dampening
    # used, ρ) or small arrays (ROSE's column losses); batched like the other tensors


@dataclass
class PruneRun:
    """A whole-model run, as the app stores it and the figures draw it. Tensors on the CPU."""

    method: str
    sparsity: Sparsity
    mode: str
    layers: dict[str, LayerResult]  # "3.mlp.down_proj" -> result (weight=None)
    block_mse: list[float]  # per block: mean (dense_out − pruned_out)², empty in dense mode
    seconds: dict[str, float]  # phase -> seconds ("calibrate", "prune", …)
    notes: list[str] = field(
        default_factory=list
    )  # things the user should know (dampening raised…)

    def layer_sparsity(self) -> dict[str, float]:
        return {name: res.pruned.float().mean().item() for name, res in self.layers.items()}

    def achieved_sparsity(self) -> float:
        pruned = sum(int(res.pruned.sum()) for res in self.layers.values())
        total = sum(res.pruned.numel() for res in self.layers.values())
        return pruned / max(total, 1)
