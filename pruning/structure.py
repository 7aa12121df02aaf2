"""Structure of pruning masks: kept fractions per row and per column, and a structure index.

The GBLM paper (arXiv 2311.04902) reports that gradients induce structured masks. The index makes the
claim checkable on any mask (magnitude, Wanda, GBLM …). With f_j the kept fraction of input column j
and p_r that of output row r (R rows, C columns):

    index = Var_j(f_j) / E₀[Var_j(f_j)],    E₀[Var_j(f_j)] = (1/R²)·Σ_r p_r(1 − p_r)

where Var_j is the population variance over the C columns and E₀ the expectation under chance: a mask
that keeps, in every row independently, a uniformly random set of the same size (same per-row counts,
so the methods' per-row constraint is no structure). Under chance the mean of f_j is fixed and each
f_j has exactly that variance, so E₀[index] = 1 exactly: 1.0 means "no more column structure than
chance", R means every column is wholly kept or wholly pruned. A random N:M mask has the same
per-entry marginals and independent rows, hence the same E₀: the index applies to N:M masks as is.
axis="rows" asks the transposed question (row spread against masks with the same column counts).
Pure functions on bool masks (..., out, in), True = pruned, as everywhere in the package.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Literal

import torch
from torch import Tensor

Axis = Literal["columns", "rows"]


def row_kept(pruned: Tensor) -> Tensor:
    """Kept fraction of every output row: (..., out), float32."""
    return (~pruned).float().mean(-1)


def col_kept(pruned: Tensor) -> Tensor:
    """Kept fraction of every input column: (..., in), float32."""
    return (~pruned).float().mean(-2)


def structure_index(pruned: Tensor, axis: Axis = "columns") -> Tensor:
    """Spread of the column (or row) kept fractions over its expectation under chance: (...,).

    float64; NaN where chance has no spread to compare with (every row all kept or all pruned).
    """
    if axis == "rows":
        pruned = pruned.transpose(-1, -2)
    elif axis != "columns":
        raise ValueError(f"axis must be 'columns' or 'rows', got {axis!r}")
    if pruned.dim() < 2:
        raise ValueError(f"a mask is (..., out, in), got shape {tuple(pruned.shape)}")
    kept = (~pruned).double()
    R = kept.shape[-2]
    f = kept.mean(-2)  # (..., C)
    p = kept.mean(-1)  # (..., R)
    observed = f.var(-1, correction=0)
    chance = (p * (1 - p)).sum(-1) / R**2
    return torch.where(chance > 0, observed / chance, torch.full_like(chance, float("nan")))


def random_like(pruned: Tensor, *, seed: int = 0) -> Tensor:
    """A chance mask: every row prunes as many entries as in `pruned`, chosen uniformly at random."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    noise = torch.rand(pruned.shape, generator=g).to(pruned.device)
    rank = noise.argsort(-1).argsort(-1)  # a uniformly random permutation of 0…C−1 per row
    return rank < pruned.sum(-1, keepdim=True)


def linear_type(name: str) -> str:
    """'12.mlp.down_proj' -> 'mlp.down_proj' (the block index dropped)."""
    return re.sub(r"^\d+\.", "", name)


def by_linear_type(masks: Mapping[str, Tensor], axis: Axis = "columns") -> dict[str, float]:
    """Mean structure index over the blocks, per linear type, from {"block.linear": mask}.

    Types keep the order in which they first appear; layers whose index is NaN are left out.
    """
    values: dict[str, list[float]] = {}
    for name, mask in masks.items():
        values.setdefault(linear_type(name), []).append(float(structure_index(mask, axis)))
    out = {}
    for kind, vals in values.items():
        finite = [v for v in vals if not math.isnan(v)]
        out[kind] = sum(finite) / len(finite) if finite else float("nan")
    return out


def structure_table(
    runs: Mapping[str, Mapping[str, Tensor]], axis: Axis = "columns"
) -> dict[str, dict[str, float]]:
    """{method: {"block.linear": mask}} -> {method: {linear type: mean index}} (viz.structure_bars)."""
    return {method: by_linear_type(masks, axis) for method, masks in runs.items()}
