"""The honesty panel's measurement: does a 2:4 pattern make this GPU's matmuls faster?

Unstructured zeros stored in a dense tensor cost the same FLOPs and bytes as any other value, so
they never speed up plain PyTorch. A 2:4 pattern can: NVIDIA's sparse tensor cores (compute
capability 8.0, Ampere, and newer) multiply a compressed 2:4 matrix, which PyTorch exposes as
`torch.sparse.to_sparse_semi_structured` (cuSPARSELt by default, CUTLASS when
`SparseSemiStructuredTensor._FORCE_CUTLASS` is set). This module times that against the dense
matmul on random 2:4 weights of given shapes. The weights' values do not change the kernels'
speed, so random weights measure what a pruned model's would.

"Unavailable" (no CUDA, an older GPU, another dtype, a conversion PyTorch refuses) is an answer,
returned as {"available": False, "reason": ...}; only malformed arguments raise.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .arch import block_linears, decoder_blocks, get_weight
from .masks import prune_lowest_nm

MIN_CAPABILITY = (8, 0)  # sparse tensor cores: Ampere and newer
# PyTorch's shape rules for a float16/bfloat16 sparse operand (torch/sparse/semi_structured.py,
# _DTYPE_SHAPE_CONSTRAINTS): both dims at least, and a multiple of, (rows, cols) for the backend
SHAPE_MULTIPLE = {"cusparselt": (16, 16), "cutlass": (32, 64)}
TOLERANCE = {torch.float16: 1e-2, torch.bfloat16: 2e-2}  # rtol = atol, outputs are O(1)


def backend() -> str:
    """The backend that to_sparse_semi_structured picks: "cutlass" when forced, else "cusparselt"."""
    from torch.sparse import SparseSemiStructuredTensor

    return "cutlass" if SparseSemiStructuredTensor._FORCE_CUTLASS else "cusparselt"


def check_shapes(shapes: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The (out, in) shapes as int pairs; ValueError unless every one is a positive multiple of
    what the semi-structured backend accepts for a weight."""
    rows, cols = SHAPE_MULTIPLE[backend()]
    if not shapes:
        raise ValueError("shapes must list at least one (out, in) weight shape, got none")
    out = []
    for shape in shapes:
        if len(shape) != 2 or not all(isinstance(d, int) and d > 0 for d in shape):
            raise ValueError(f"a shape must be (out, in) with positive integers, got {shape!r}")
        if shape[0] % rows or shape[1] % cols:
            raise ValueError(
                f"2:4 semi-structured weights ({backend()}) need out a multiple of {rows} and in a "
                f"multiple of {cols}, got {tuple(shape)}"
            )
        out.append((shape[0], shape[1]))
    return out


def _unavailable(reason: str) -> dict:
    return {"available": False, "reason": reason}


def _why_not(dtype: torch.dtype, device: torch.device) -> str | None:
    """Why the measurement cannot run here, or None when it can."""
    if dtype not in TOLERANCE:
        return f"2:4 semi-structured matmuls need float16 or bfloat16 here, got {dtype}"
    if device.type != "cuda":
        return f"2:4 semi-structured sparsity needs a CUDA device, got {device}"
    if not torch.cuda.is_available():
        build = (
            "this PyTorch build has no CUDA support"
            if torch.version.cuda is None
            else f"PyTorch {torch.__version__} (CUDA {torch.version.cuda}) finds no GPU"
        )
        return f"no CUDA device: {build}"
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"no such GPU: {device} ({torch.cuda.device_count()} visible)")
    capability = torch.cuda.get_device_capability(device)
    if capability < MIN_CAPABILITY:
        return (
            f"{torch.cuda.get_device_name(device)} has compute capability "
            f"{capability[0]}.{capability[1]}; 2:4 sparse tensor cores need 8.0 (Ampere) or newer"
        )
    return None


def random_24_weight(shape: tuple[int, int], generator: torch.Generator) -> Tensor:
    """(out, in) float32 weight, scaled so outputs are O(1), with the 2 smallest |w| of every 4
    consecutive inputs zeroed."""
    W = torch.randn(shape, generator=generator) / shape[1] ** 0.5
    return W.masked_fill(prune_lowest_nm(W.abs(), 2, 4), 0.0)


def _time_ms(fn: Callable[[], Tensor], repeats: int, trials: int = 3) -> float:
    """Mean milliseconds per call, from CUDA events, best of `trials` runs of `repeats` calls."""
    for _ in range(max(3, repeats // 4)):  # warm-up: kernel selection, caches, clocks
        fn()
    best = float("inf")
    for _ in range(trials):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(repeats):
            fn()
        end.record()
        torch.cuda.synchronize()
        best = min(best, start.elapsed_time(end) / repeats)
    return best


@torch.inference_mode()
def _measure(
    shape: tuple[int, int], tokens: int, dtype: torch.dtype, device: torch.device, repeats: int
) -> dict:
    """One shape: dense and sparse ms, speed-up, and the sparse result checked against dense."""
    from torch.sparse import to_sparse_semi_structured

    g = torch.Generator().manual_seed(0)
    W = random_24_weight(shape, g).to(device, dtype)  # (out, in)
    x = torch.randn(tokens, shape[1], generator=g).to(device, dtype)  # (tokens, in)
    W_sparse = to_sparse_semi_structured(W)
    dense, sparse = F.linear(x, W), F.linear(x, W_sparse)  # (tokens, out)
    tol = TOLERANCE[dtype]
    dense_ms = _time_ms(lambda: F.linear(x, W), repeats)
    sparse_ms = _time_ms(lambda: F.linear(x, W_sparse), repeats)
    return {
        "shape": shape,
        "dense_ms": dense_ms,
        "sparse_ms": sparse_ms,
        "speedup": dense_ms / sparse_ms,
        "max_abs_error": float((sparse.float() - dense.float()).abs().max()),
        "check_passed": bool(torch.allclose(sparse, dense, rtol=tol, atol=tol)),
    }


def semi_structured_speedup(
    shapes: Sequence[tuple[int, int]],
    *,
    tokens: int = 2048,
    dtype: torch.dtype = torch.float16,
    device: str | torch.device | None = None,
    repeats: int = 50,
) -> dict:
    """Time x @ Wᵀ for random 2:4 weights, dense against semi-structured sparse, on a GPU.

    shapes: (out, in) weight shapes; each distinct one is measured once and a repeated one
    counts that many times in the total (so a model's list of linears gives one forward pass
    through them). tokens: rows of x (batch × sequence). device: a CUDA device, default the
    current one.

    Returns {"available": True, "device", "capability", "backend", "dtype", "tokens",
    "shapes": [{shape, count, dense_ms, sparse_ms, speedup, max_abs_error, check_passed}],
    "total": {dense_ms, sparse_ms, speedup}, "check_passed", "check"} or, when it cannot run
    here, {"available": False, "reason"}.
    """
    counts = Counter(check_shapes(shapes))
    if not (isinstance(tokens, int) and tokens > 0):
        raise ValueError(f"tokens must be a positive integer, got {tokens!r}")
    if not (isinstance(repeats, int) and repeats > 0):
        raise ValueError(f"repeats must be a positive integer, got {repeats!r}")
    device = torch.device(device if device is not None else "cuda")
    reason = _why_not(dtype, device)
    if reason:
        return _unavailable(reason)
    if device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    rows = []
    for shape, count in counts.items():
        try:
            row = _measure(shape, tokens, dtype, device, repeats)
        except RuntimeError as e:  # PyTorch refused the conversion or the sparse matmul
            return _unavailable(
                f"semi-structured sparsity failed for weight {shape}: {str(e).strip()}"
            )
        rows.append({**row, "count": count})
    dense_ms = sum(r["dense_ms"] * r["count"] for r in rows)
    sparse_ms = sum(r["sparse_ms"] * r["count"] for r in rows)
    failed = [r["shape"] for r in rows if not r["check_passed"]]
    major, minor = torch.cuda.get_device_capability(device)
    return {
        "available": True,
        "device": torch.cuda.get_device_name(device),
        "capability": f"{major}.{minor}",
        "backend": backend(),
        "dtype": str(dtype).removeprefix("torch."),
        "tokens": tokens,
        "shapes": rows,
        "total": {"dense_ms": dense_ms, "sparse_ms": sparse_ms, "speedup": dense_ms / sparse_ms},
        "check_passed": not failed,
        "check": (
            "sparse results match dense"
            if not failed
            else f"sparse results differ from dense beyond tolerance for {failed}"
        ),
    }


def honest_note(result: dict) -> str:
    """A short markdown paragraph on what sparsity buys in speed and size, with the measurement
    (or the reason there is none)."""
    head = (
        "**Unstructured sparsity gives no speed-up and no smaller file** in plain PyTorch: the "
        "zeros are stored and multiplied like any other number. A **2:4** pattern can run faster "
        "on NVIDIA GPUs with sparse tensor cores (Ampere, compute capability 8.0, or newer) once "
        "the weights are converted to PyTorch's semi-structured format."
    )
    if not result.get("available"):
        return f"{head}\n\nNot measured here: {result.get('reason', 'unknown reason')}."
    total = result["total"]
    measured = (
        f"Measured on {result['device']} ({result['dtype']}, {result['tokens']} tokens, "
        f"{result['backend']}): the listed linears take {total['dense_ms']:.3f} ms dense and "
        f"{total['sparse_ms']:.3f} ms as 2:4, a **{total['speedup']:.2f}×** speed-up of those "
        "matmuls alone (attention, norms and the rest of the model are unchanged)."
    )
    if not result["check_passed"]:
        measured += f" Warning: {result['check']}."
    return f"{head}\n\n{measured}"


def linear_shapes(model: nn.Module) -> list[tuple[int, int]]:
    """(out, in) of every prunable decoder linear, in model order (repeats included)."""
    return [
        tuple(get_weight(model, module).shape)
        for block in decoder_blocks(model)
        for module in block_linears(model, block).values()
    ]
