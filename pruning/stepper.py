"""The toy-layer stepper: SparseGPT (and ROSE, through its order) on a small matrix, one column at a
time, every intermediate state kept, so that a class can watch Optimal Brain Surgeon happen.

The arithmetic is the plain OBS form of algorithms.md §4, written for legibility on a toy (8×16 by
default) in float64 numpy: U is the upper Cholesky factor of the damped H⁻¹ (H⁻¹ = UᵀU), and at the
column in position p of the processing order, with w its current weights and q = w with the chosen
entries zeroed,
    e = (w − q)/U_pp,   error = Σ_rows (w − q)²/U_pp² / 2,   W[:, later] −= e ⊗ U[p, later].
U_pp² = [H_F⁻¹]_qq is the OBS denominator, H_F the Hessian of the columns not yet processed.

The rules are those of `sparsegpt.prune`, so that the last state is its result (same mask, same
weights up to rounding): the same dampening and dead-input handling (its `factor`, including the
10× retries), unstructured masks chosen at the start of each block of `blocksize` positions over
all rows jointly on the weights updated so far, with the exact count floor(r·c_b·s) −
floor(r·c_{b−1}·s), N:M masks chosen just in time per M-group, both through the library's own
selection functions (ties to the lower index). With `order`, positions are processing positions:
column order[p] is processed p-th, as `sparsegpt.prune(order=…)` and ROSE do.

Every state also carries `measured`, ½·tr(ΔW H ΔWᵀ) of the current weights against the start (H
undamped): OBS's losses telescope, so with percdamp = 0 the running total equals it at every step,
not just at the end (with dampening it is close). `compare_methods` puts magnitude, Wanda and
SparseGPT masks of the same toy side by side with their errors tr(ΔW H ΔWᵀ).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np
import torch

from . import METHODS, rose, sparsegpt
from .masks import count, lowest_k, prune_lowest_nm
from .types import LayerStats, Sparsity


@dataclass(frozen=True)
class StepState:
    """The toy layer after `step` columns (0: before any). Arrays are in the original column order.

    column: the original column processed at this step (−1 at step 0); position = step − 1.
    weight (r, c): the weights now; pruned (r, c) bool: pruned so far (processed and zeroed);
    new (r, c) bool: pruned by this step (only in `column`); chosen (r, c) bool: the mask decided so
    far, including the current block's (or N:M group's) columns not reached yet; score (r, c): the
    w²/[H_F⁻¹]_qq that decided each chosen entry's group, NaN where not decided yet;
    update (r, c): what this step added to the columns not yet processed (0 elsewhere);
    removed (r,): w − q, the values this step zeroed in `column` (0 where kept);
    group: the original columns of the mask group `column` belongs to (its block, or N:M group);
    error: this step's OBS loss; total: the running sum of errors; row_loss (r,): the running
    per-row sums (the last state's is SparseGPT's `loss`); measured: ½·tr(ΔW H ΔWᵀ), ΔW = weight −
    the start; processed (c,) bool: columns done; order (c,): the processing order; percdamp: the
    dampening used (raised 10× at a time where H was not positive definite).
    """

    step: int
    column: int
    weight: np.ndarray
    pruned: np.ndarray
    new: np.ndarray
    chosen: np.ndarray
    score: np.ndarray
    update: np.ndarray
    removed: np.ndarray
    group: np.ndarray
    error: float
    total: float
    row_loss: np.ndarray
    measured: float
    processed: np.ndarray
    order: np.ndarray
    percdamp: float


def _numpy(x) -> np.ndarray:
    """float64 numpy copy of an array or a (CPU or GPU, any dtype) tensor."""
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64).numpy().copy()
    return np.array(x, dtype=np.float64)


def _sparsity(sparsity: Sparsity | str | float) -> Sparsity:
    return sparsity if isinstance(sparsity, Sparsity) else Sparsity.parse(sparsity)


def hessian_of(inputs, nsamples: int | None = None) -> np.ndarray:
    """H = (2/nsamples)·Σ_tokens x xᵀ for inputs (..., in), calibration.py's convention: nsamples is
    the number of sequences, by default inputs.shape[0] (sequences of (b, L, in) captured inputs,
    or tokens of a (tokens, in) matrix, each then its own sequence)."""
    X = _numpy(inputs)
    n = X.shape[0] if nsamples is None else nsamples
    X = X.reshape(-1, X.shape[-1])
    return 2 / n * X.T @ X


def toy_problem(
    rows: int = 8,
    cols: int = 16,
    *,
    seed: int = 0,
    weight=None,
    inputs=None,
    hessian=None,
    nsamples: int | None = None,
    row0: int = 0,
    col0: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(W (rows, cols), H (cols, cols)), float64.

    Random (seeded) where nothing is given: W standard normal; inputs of `nsamples` (64) tokens
    whose channels share 3 factors and differ in scale over 10×, so that Wanda differs from
    magnitude and SparseGPT's compensation matters. A real layer: pass its `weight` (out, in) and
    its captured `inputs` (..., in) or its `hessian` (in, in); the window of rows×cols at (row0,
    col0) is cut out (H's block on those columns is exactly the Hessian of the slice's inputs).
    Inputs without a weight get a random one.
    """
    rng = np.random.default_rng(seed)
    c1 = col0 + cols
    if weight is None:
        W = rng.standard_normal((rows, cols))
    else:
        W = _numpy(weight)[row0 : row0 + rows, col0:c1]
    if hessian is not None:
        H = _numpy(hessian)[col0:c1, col0:c1]
    elif inputs is not None:
        H = hessian_of(_numpy(inputs)[..., col0:c1], nsamples)
    elif weight is not None:
        raise ValueError("a real layer's toy needs its inputs or its Hessian")
    else:
        n = 64 if nsamples is None else nsamples
        factors = rng.standard_normal((n, 3)) @ rng.standard_normal((3, cols))
        scale = np.logspace(-0.5, 0.5, cols)[rng.permutation(cols)]
        H = hessian_of(scale * (factors + 0.5 * rng.standard_normal((n, cols))), n)
    if W.shape[1] != H.shape[0] or H.shape[0] != H.shape[1] or W.size == 0:
        raise ValueError(f"the window {W.shape} does not fit the layer (Hessian {H.shape})")
    return W, H


def _check_order(order, c: int, nm: tuple[int, int] | None) -> np.ndarray:
    """order as int64 (c,), a permutation; with N:M every M positions hold one original group."""
    if order is None:
        return np.arange(c)
    perm = np.asarray(order.cpu() if isinstance(order, torch.Tensor) else order).astype(np.int64)
    if perm.shape != (c,) or not np.array_equal(np.sort(perm), np.arange(c)):
        raise ValueError(f"order must be a permutation of the {c} columns")
    if nm is not None:
        groups = perm.reshape(-1, nm[1]) // nm[1]
        if not (groups == groups[:, :1]).all():
            raise ValueError(f"with {nm[0]}:{nm[1]}, an order must move whole groups of {nm[1]}")
    return perm


def _upper_inverse_factor(H: np.ndarray, percdamp: float) -> tuple[np.ndarray, float]:
    """(U, percdamp used): H⁻¹ = UᵀU, U upper, of H after sparsegpt's dead-input fix and dampening
    (its own `factor`: T with H = T·Tᵀ, and U = T⁻¹)."""
    T, damp = sparsegpt.factor(torch.from_numpy(H)[None], percdamp)
    eye = torch.eye(H.shape[0], dtype=T.dtype)
    U = torch.linalg.solve_triangular(T[0], eye, upper=True)
    return U.numpy(), float(damp[0])


def sparsegpt_steps(
    W,
    H,
    sparsity: Sparsity | str | float,
    *,
    order=None,
    percdamp: float = 0.01,
    blocksize: int = 128,
) -> list[StepState]:
    """SparseGPT on W (r, c) with Hessian H (c, c), one state per processed column plus the start.

    order: a permutation of the columns (ROSE's π, e.g. from `rose_order`); blocksize: the columns
    (positions) of one unstructured mask group, as `sparsegpt.prune`'s (for N:M it only batches
    updates there, so it changes nothing here). The last state's weight and pruned are
    `sparsegpt.prune(W, H, sparsity, order=order, percdamp=…, blocksize=…)`'s.
    """
    sp = _sparsity(sparsity)
    W0, H0 = _numpy(W), _numpy(H)
    if W0.ndim != 2 or H0.shape != (W0.shape[1], W0.shape[1]):
        raise ValueError(f"W must be (r, c) and H (c, c), got {W0.shape} and {H0.shape}")
    if blocksize < 1:
        raise ValueError(f"blocksize must be at least 1, got {blocksize}")
    r, c = W0.shape
    nm = sp.nm
    if nm is not None and c % nm[1]:
        raise ValueError(f"N:M with M={nm[1]} needs the input size to be a multiple of {nm[1]}")
    perm = _check_order(order, c, nm)
    back = np.argsort(perm)
    Hp = H0[np.ix_(perm, perm)]
    U, damp = _upper_inverse_factor(Hp, percdamp)
    denom = np.diagonal(U) ** 2  # [H_F⁻¹]_qq of each position
    Wp = W0[:, perm] * (np.diagonal(Hp) != 0)  # dead inputs zeroed, as the reference
    chosen = np.zeros((r, c), dtype=bool)
    score = np.full((r, c), np.nan)
    row_loss = np.zeros(r)
    group = np.arange(0)

    def state(step: int, new: np.ndarray, update: np.ndarray, cut: np.ndarray) -> StepState:
        dW = Wp[:, back] - W0
        done = np.arange(c) < step
        return StepState(
            step=step,
            column=int(perm[step - 1]) if step else -1,
            weight=Wp[:, back].copy(),
            pruned=(chosen & done)[:, back],
            new=new[:, back],
            chosen=chosen[:, back].copy(),
            score=score[:, back].copy(),
            update=update[:, back],
            removed=cut,
            group=perm[group].copy(),
            error=float((cut**2).sum() / denom[step - 1] / 2) if step else 0.0,
            total=float(row_loss.sum()),
            row_loss=row_loss.copy(),
            measured=float(np.einsum("ij,jk,ik->", dW, H0, dW) / 2),
            processed=done[back],
            order=perm.copy(),
            percdamp=damp,
        )

    zeros = np.zeros((r, c))
    states = [state(0, np.zeros((r, c), dtype=bool), zeros, np.zeros(r))]
    for p in range(c):
        if nm is None and p % blocksize == 0:  # adaptive mask: the whole r×b block, jointly
            i2 = min(p + blocksize, c)
            group = np.arange(p, i2)
            S = Wp[:, group] ** 2 / denom[group]
            k = count(r * i2, sp.ratio) - count(r * p, sp.ratio)
            chosen[:, group] = lowest_k(torch.from_numpy(S.reshape(1, -1)), k).view(S.shape).numpy()
            score[:, group] = S
        elif nm is not None and p % nm[1] == 0:  # N:M, just in time on the updated weights
            group = np.arange(p, p + nm[1])
            S = Wp[:, group] ** 2 / denom[group]
            chosen[:, group] = prune_lowest_nm(torch.from_numpy(S), *nm).numpy()
            score[:, group] = S
        w = Wp[:, p].copy()
        cut = w * chosen[:, p]  # w − q
        row_loss += cut**2 / denom[p] / 2
        update = np.zeros((r, c))
        update[:, p + 1 :] = -np.outer(cut / U[p, p], U[p, p + 1 :])
        Wp += update
        Wp[:, p] = w - cut
        new = np.zeros((r, c), dtype=bool)
        new[:, p] = chosen[:, p]
        states.append(state(p + 1, new, update, cut))
    return states


def error_trace(states: list[StepState]) -> dict[str, np.ndarray]:
    """Per step 1…c: errors, totals (running), measured, columns, pruned (count this step), the
    arrays `viz.stepper_errors` draws."""
    steps = states[1:]
    return {
        "errors": np.array([s.error for s in steps]),
        "totals": np.array([s.total for s in steps]),
        "measured": np.array([s.measured for s in steps]),
        "columns": np.array([s.column for s in steps], dtype=np.int64),
        "pruned": np.array([int(s.new.sum()) for s in steps], dtype=np.int64),
    }


def rose_order(
    W,
    H,
    sparsity: Sparsity | str | float,
    *,
    blocksize: int = 128,
    percdamp: float = 0.01,
    threshold: float = 0.5,
) -> tuple[np.ndarray, float, bool]:
    """(π, ρ, reordered): ROSE's processing order of the toy (the identity when ρ ≤ threshold), to
    pass as `order` to `sparsegpt_steps` with the same blocksize (rounded to a multiple of M for
    N:M, as ROSE does)."""
    sp = _sparsity(sparsity)
    res = rose.prune(
        torch.from_numpy(_numpy(W)),
        LayerStats(1, hessian=torch.from_numpy(_numpy(H))),
        sp,
        blocksize=blocksize,
        percdamp=percdamp,
        threshold=threshold,
    )
    rho, flag = float(res.info["rho"]), bool(res.info["reordered"])
    return res.order.numpy().astype(np.int64), rho, flag


def reconstruction_error(W, W_new, H) -> float:
    """tr(ΔW H ΔWᵀ), ΔW = W_new − W: (2/nsamples)·‖ΔW X‖², the layer's output error."""
    dW = _numpy(W_new) - _numpy(W)
    return float(np.einsum("ij,jk,ik->", dW, _numpy(H), dW))


def compare_methods(
    W,
    H,
    sparsity: Sparsity | str | float,
    *,
    methods: tuple[str, ...] = ("magnitude", "wanda", "sparsegpt"),
    **hparams,
) -> dict[str, dict]:
    """Each method's result on the same toy, through the registry: {name: {"pruned" (r, c) bool,
    "weight" (r, c), "error": tr(ΔW H ΔWᵀ), "relative": error / tr(W H Wᵀ)}}.

    Wanda's activation norms are diag(H)/2 (calibration's sq_norm, exactly); hparams go to the
    methods whose prune() takes them (blocksize and percdamp: SparseGPT and ROSE; group: magnitude
    and Wanda). A method needing gradients (GBLM) cannot run on a toy.
    """
    sp = _sparsity(sparsity)
    W0, H0 = _numpy(W), _numpy(H)
    Wt, Ht = torch.from_numpy(W0), torch.from_numpy(H0)
    stats = LayerStats(1, sq_norm=Ht.diagonal().clamp_min(0) / 2, hessian=Ht)
    dense = reconstruction_error(np.zeros_like(W0), W0, H0)
    out = {}
    for name in methods:
        fn = METHODS[name].prune
        params = inspect.signature(fn).parameters
        res = fn(Wt, stats, sp, **{k: v for k, v in hparams.items() if k in params})
        weight = res.weight.to(torch.float64).numpy()
        err = reconstruction_error(W0, weight, H0)
        out[name] = {
            "pruned": res.pruned.numpy().copy(),
            "weight": weight.copy(),
            "error": err,
            "relative": err / dense if dense > 0 else float("nan"),
        }
    return out
