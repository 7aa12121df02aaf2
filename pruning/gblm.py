"""GBLM-Pruner (Das et al., arXiv 2311.04902). Score: S_ij = |W_ij|·‖X_j‖ + α·|W_ij|·G_ij,
compared within each output row. Needs: sq_norm, grad.

‖X_j‖ = √a_j is Wanda's term (a_j = mean over the N windows of Σ_tokens x_j²); G is the dense model's
gradient norm of W over the same N windows from `gradients.collect_grad_norms`, unscaled:
G = (Σ_b g_b²)^½ (ℓ2, default) or Σ_b |g_b| (ℓ1). No weight update; per row the lowest floor(in·s)
scores go (or the lowest N of every M inputs), exactly as Wanda.

α and the reference's balance. The reference's gradient file holds 100·G for either norm
(√Σ_b(100·g_b)² or Σ_b|100·g_b|) and its pruner adds |W|·file to |W|·√a unweighted, so

    reference:  S = |W|·√a + |W|·(100·G)      ⇒  default α = 100 reproduces it for the same N.

The balance depends on N: √a is a root-MEAN over the windows, G a SUM over them, so the gradient
term grows against the activation term about as √N (ℓ2) or N (ℓ1). To hold the balance of a reference
run on N_ref windows (128 in the paper) while calibrating on N: α = 100·√(N_ref/N) for ℓ2, or
100·N_ref/N for ℓ1. The window length L moves it too (a sums over tokens; g is of a per-token mean
loss; the reference used L = 2048). The reference rounds its file and the gradient term to float16;
here everything is float32.

The result carries, per layer, info["grad"] = G, info["activation_term"] = |W|·√a and
info["gradient_term"] = α·|W|·G (the two add up to the score).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .masks import Group, select
from .types import LayerResult, LayerStats, Sparsity

ALPHA = 100.0  # the reference's ×100 gradient scale: the same balance for the same nsamples


@torch.no_grad()
def prune(
    W: Tensor,
    stats: LayerStats,
    sparsity: Sparsity,
    *,
    alpha: float = ALPHA,
    group: Group = "row",
) -> LayerResult:
    """W: (..., out, in); stats.sq_norm: (..., in); stats.grad: (..., out, in) gradient norms."""
    if stats.sq_norm is None:
        raise ValueError("gblm needs activation norms (stats.sq_norm)")
    if stats.grad is None:
        raise ValueError("gblm needs gradient norms (stats.grad) from the gradient pass")
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"gblm's alpha must be a finite number ≥ 0, got {alpha!r}")
    if stats.grad.shape[-2:] != W.shape[-2:]:
        raise ValueError(
            f"gradient norms {tuple(stats.grad.shape)} do not match W {tuple(W.shape)}"
        )
    magnitude = W.float().abs()
    act = magnitude * stats.sq_norm.sqrt().unsqueeze(-2)  # Wanda's score, computed the same way
    G = stats.grad.to(device=W.device)
    grad = (alpha * magnitude) * G.to(act.dtype)
    S = act + grad
    pruned = select(S, sparsity, group)
    info = {"grad": G.float(), "activation_term": act, "gradient_term": grad}
    return LayerResult(weight=W.masked_fill(pruned, 0), pruned=pruned, score=S, info=info)
