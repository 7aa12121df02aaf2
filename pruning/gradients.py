"""GBLM-Pruner's gradient pass (Das et al., arXiv 2311.04902): per-weight gradient norms of the
DENSE model's language-model loss, accumulated over the calibration windows.

For every window b on its own (batch 1): ℓ_b = mean next-token cross-entropy over its L−1
predictions (labels = the window itself, nothing masked, as the reference), backward, and for every
prunable linear, with g_b = ∂ℓ_b/∂W presented as (out, in) like the weight:

    ℓ2 (default):  G_ij = (Σ_b g_b,ij²)^½          ℓ1:  G_ij = Σ_b |g_b,ij|

accumulated in float32 (float64 for a float64 model). Unscaled: the reference's ×100 is GBLM's α
(see `gblm`). Needs: nothing but the model and the windows; returns {"block.linear": G}.

Memory: each weight's gradient is folded into its accumulator the moment backward produces it (a
post-accumulate hook) and freed, so the pass holds the accumulators (4 bytes per prunable weight),
one weight's gradient at a time and the activations of one window; no per-sample gradient is
stored. Only the prunable weights require grad during the pass (restored afterwards).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .arch import block_linears, decoder_blocks, family_of

Norm = Literal["l1", "l2"]
NORMS = ("l2", "l1")
Progress = Callable[[int, int, str], None]
GiB = 2**30


def prunable_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """ "block.linear" -> the weight parameter, in its stored layout."""
    return {
        f"{i}.{name}": module.weight
        for i, block in enumerate(decoder_blocks(model))
        for name, module in block_linears(model, block).items()
    }


def available_bytes(device: torch.device) -> int | None:
    """Free memory on a device (CPU: MemAvailable), or None when it cannot be told."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    if device.type != "cpu":
        return None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        return None


def estimate_bytes(model: nn.Module, seqlen: int) -> dict[str, int]:
    """What the pass adds to the loaded model, in bytes (a deliberate over- rather than under-estimate).

    accumulators: one float32 per prunable weight; gradient: the largest weight's gradient;
    activations: what backward keeps of one window (per token and block ≈ 16·hidden + 6·mlp values
    plus two attention rows per head), and the logits with their float32 loss copies.
    """
    weights = prunable_weights(model)
    p = next(iter(weights.values()))
    elem = p.element_size()
    acc_elem = max(4, elem)
    hidden = model.get_input_embeddings().weight.shape[1]
    vocab = model.get_input_embeddings().weight.shape[0]
    mlp = max(max(w.shape) for w in weights.values())
    cfg = model.config
    heads = getattr(cfg, "num_attention_heads", None) or getattr(cfg, "n_head", None) or 1
    blocks = len(decoder_blocks(model))
    per_token = blocks * (16 * hidden + 6 * mlp + 2 * heads * seqlen) * elem
    return {
        "accumulators": sum(w.numel() for w in weights.values()) * acc_elem,
        "gradient": max(w.numel() for w in weights.values()) * elem,
        "activations": seqlen * per_token + seqlen * vocab * (elem + 8),
    }


def _placement(
    model: nn.Module, seqlen: int, memory_limit: int | None
) -> tuple[torch.device, dict[str, int]]:
    """Where the accumulators go: with the model if everything fits there, else on the CPU."""
    device = next(model.parameters()).device
    need = estimate_bytes(model, seqlen)
    total = sum(need.values())
    free = memory_limit if memory_limit is not None else available_bytes(device)
    if free is None or total <= free:
        return device, need
    if device.type != "cpu":  # keep the accumulators in host memory, as the reference does
        host = memory_limit if memory_limit is not None else available_bytes(torch.device("cpu"))
        on_device = need["gradient"] + need["activations"]
        if on_device <= free and (host is None or need["accumulators"] <= host):
            return torch.device("cpu"), need
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    raise ValueError(
        f"the gradient pass needs about {_size(total)} beyond the loaded model ({_size(params)}): "
        f"accumulators {_size(need['accumulators'])}, activations of one {seqlen}-token window "
        f"{_size(need['activations'])}, gradient {_size(need['gradient'])}; only {_size(free)} "
        f"is free on {device}. Use shorter windows, a smaller model, or a device with more memory"
    )


def _size(n: int) -> str:
    for unit, scale in (("GiB", GiB), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} bytes"


def collect_grad_norms(
    model: nn.Module,
    windows: Tensor,
    *,
    norm: Norm = "l2",
    progress: Progress | None = None,
    memory_limit: int | None = None,
) -> dict[str, Tensor]:
    """Per-weight gradient norms over the windows of the model as it is now (the dense model).

    windows: (nsamples, seqlen) token ids, one backward each. Returns "block.linear" -> G (out, in),
    on the model's device (on the CPU when only that fits). memory_limit: bytes the pass may add
    (default: what the device has free); a ValueError says so when the estimate exceeds it.
    The model's weights, requires_grad flags and train/eval mode are as before afterwards.
    """
    if norm not in NORMS:
        raise ValueError(f"gradient norm must be one of {', '.join(NORMS)}, got {norm!r}")
    if windows.dim() != 2 or windows.shape[0] == 0 or windows.shape[1] < 2:
        raise ValueError(
            f"the gradient pass needs (nsamples, seqlen ≥ 2) windows, got {tuple(windows.shape)}"
        )
    device = next(model.parameters()).device
    acc_device, _ = _placement(model, windows.shape[1], memory_limit)
    weights = prunable_weights(model)
    acc = {
        key: torch.zeros(
            w.shape, dtype=torch.promote_types(w.dtype, torch.float32), device=acc_device
        )
        for key, w in weights.items()
    }

    def fold(key: str) -> Callable[[Tensor], None]:
        def hook(param: Tensor) -> None:
            g = param.grad.to(device=acc_device, dtype=acc[key].dtype)
            if norm == "l2":
                acc[key].addcmul_(g, g)
            else:
                acc[key].add_(g.abs())
            param.grad = None  # freed now: one weight's gradient alive at a time

        return hook

    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    grads = [p.grad for p in params]  # a caller's gradients are put back, never mixed in
    was_training = model.training
    handles = []
    try:
        for p in params:
            p.requires_grad_(False)
            p.grad = None
        for key, w in weights.items():
            w.requires_grad_(True)
            handles.append(w.register_post_accumulate_grad_hook(fold(key)))
        model.eval()
        n = windows.shape[0]
        with torch.enable_grad():
            for b in range(n):
                ids = windows[b : b + 1].to(device)
                logits = model(input_ids=ids, use_cache=False).logits
                loss = F.cross_entropy(logits[0, :-1].float(), ids[0, 1:])
                if not math.isfinite(loss.item()):
                    raise ValueError(
                        f"non-finite loss on calibration window {b}: the model overflows on this "
                        "data; try float32"
                    )
                loss.backward()
                del logits, loss
                if progress:
                    progress(b + 1, n, f"gradients, window {b + 1}/{n}")
    finally:
        for handle in handles:
            handle.remove()
        for p, flag, grad in zip(params, flags, grads):
            p.requires_grad_(flag)
            p.grad = grad
        model.train(was_training)
    transposed = family_of(model).transposed
    out = {}
    for key in list(acc):
        G = acc.pop(key)
        if norm == "l2":
            G.sqrt_()
        if not torch.isfinite(G).all():
            raise ValueError(f"non-finite gradients in {key}: the model overflows; try float32")
        out[key] = G.T.contiguous() if transposed else G  # (out, in) like get_weight
    return out
