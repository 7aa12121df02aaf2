"""Shared fixtures: seeded linear-layer problems with their calibration statistics, and tiny models
of every supported family with seeded calibration windows."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never download; set before hub imports
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # so a plain `pytest` works as well as `python -m pytest`
    sys.path.insert(0, str(ROOT))

from pruning.models import tiny_model
from pruning.types import LayerStats

FAMILIES = ("llama", "opt", "gpt2", "gpt_neox")


def stats_from_X(X: torch.Tensor, nsamples: int) -> LayerStats:
    """The statistics calibration.py defines, computed directly from X (in, tokens) of `nsamples`
    sequences: sq_norm_j = Σ_tokens x_j² / nsamples, H = (2/nsamples)·X Xᵀ."""
    return LayerStats(
        nsamples=nsamples,
        sq_norm=X.pow(2).sum(-1) / nsamples,
        hessian=2 / nsamples * X @ X.transpose(-1, -2),
    )


def recon_error(W: torch.Tensor, W_new: torch.Tensor, X: torch.Tensor) -> float:
    """‖(W − W_new) X‖², the layer's output error on the calibration inputs."""
    return float(((W.double() - W_new.double()) @ X.double()).pow(2).sum())


@pytest.fixture
def linear_problem():
    """Factory: a seeded W (out, in), X (in, n), and the statistics of X, taking each column of X
    as one calibration sequence of one token unless `nsamples` says otherwise.

    correlated=True makes the input channels share a few factors and gives them different scales,
    the situation where activation-aware methods and SparseGPT's compensation matter.
    """

    def make(
        out: int = 8,
        inp: int = 16,
        n: int = 64,
        *,
        seed: int = 0,
        dtype: torch.dtype = torch.float64,
        correlated: bool = False,
        nsamples: int | None = None,
    ) -> SimpleNamespace:
        g = torch.Generator().manual_seed(seed)
        W = torch.randn(out, inp, generator=g, dtype=torch.float64)
        X = torch.randn(inp, n, generator=g, dtype=torch.float64)
        if correlated:  # 4 shared factors plus noise, channel scales spread over 10×
            B = torch.randn(inp, 4, generator=g, dtype=torch.float64)
            Z = torch.randn(4, n, generator=g, dtype=torch.float64)
            scale = torch.logspace(-0.5, 0.5, inp, dtype=torch.float64)[
                torch.randperm(inp, generator=g)
            ]
            X = scale[:, None] * (B @ Z + 0.5 * X)
        nsamples = n if nsamples is None else nsamples
        st = stats_from_X(X, nsamples)
        W, X = W.to(dtype), X.to(dtype)
        st = LayerStats(nsamples, st.sq_norm.to(dtype), st.hessian.to(dtype))
        return SimpleNamespace(W=W, X=X, stats=st, nsamples=nsamples)

    return make


def windows(n: int = 6, seqlen: int = 16, seed: int = 0) -> torch.Tensor:
    """Seeded random token ids in [0, 128), the tiny models' vocabulary."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 128, (n, seqlen), generator=g)


@pytest.fixture(scope="session")
def _transformers_loaded():
    """Build one model of each family once, so the import cost is not charged to one test."""
    for family in FAMILIES:
        tiny_model(family)


@pytest.fixture
def tiny(_transformers_loaded):
    """Factory: tiny(family) -> (fresh random model of that family, (6, 16) calibration windows)."""

    def make(family: str = "llama", *, n: int = 6, seqlen: int = 16, seed: int = 0):
        return tiny_model(family, seed=seed), windows(n, seqlen, seed)

    return make
