"""GBLM-Pruner's gradient pass (Das et al., arXiv 2311.04902): per-weight gradient norms of the
DENSE model's language-model loss, accumulated over the calibration windows.

For every window b: ℓ_b = mean next-token cross-entropy over its L−1 predictions (labels = the
window itself, nothing masked, as the reference), and for every prunable linear, with
g_b = ∂ℓ_b/∂W presented as (out, in) like the weight:

    ℓ2 (default):  G_ij = (Σ_b g_b,ij²)^½          ℓ1:  G_ij = Σ_b |g_b,ij|

accumulated in float32 (float64 for a float64 model). Unscaled: the reference's ×100 is GBLM's α
(see `gblm`). Needs: nothing but the model and the windows; returns {"block.linear": G}.

The reference runs one backward per window (batch 1) so that each window's gradient is .grad.
Here windows go through in batches and each window's gradient is formed per sample instead: a
linear's weight gradient is a sum over tokens, g_b = δ_bᵀ·x_b with x_b the window's inputs to the
layer and δ_b the gradient of ℓ_b at its outputs, and windows never mix in a forward pass, so one
backward of Σ_b ℓ_b hands every layer the δ_b of every window at once. A forward hook keeps x, a
hook on the output receives δ, and a batched matmul in the model's dtype (what autograd computes
for .grad) gives the per-sample g_b, which are squared (or |·|) into the accumulator and freed.
No weight requires grad; the gradient flows from the embeddings' output. Same sums as batch 1
(tests compare with explicitly stored per-sample gradients), far fewer kernel launches on a GPU.

Memory: the accumulators (4 bytes per prunable weight), one batch's activations with the layer
inputs the hooks keep, and one layer's per-sample gradients at a time, in chunks. The batch size
is the largest (up to `batch_size`) that fits in the memory the device has free.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .arch import block_linears, decoder_blocks, get_weight

Norm = Literal["l1", "l2"]
NORMS = ("l2", "l1")
Progress = Callable[[int, int, str], None]
GiB = 2**30
CHUNK_BYTES = 256 * 2**20  # per-sample gradients formed at once, at most (≥ one window's)


def prunable_linears(model: nn.Module) -> dict[str, nn.Module]:
    """ "block.linear" -> the linear module (nn.Linear, or GPT-2's Conv1D)."""
    return {
        f"{i}.{name}": module
        for i, block in enumerate(decoder_blocks(model))
        for name, module in block_linears(model, block).items()
    }


def prunable_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """ "block.linear" -> the weight parameter, in its stored layout."""
    return {key: module.weight for key, module in prunable_linears(model).items()}


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


def estimate_bytes(model: nn.Module, seqlen: int, batch: int = 1) -> dict[str, int]:
    """What the pass adds to the loaded model at a batch of `batch` windows, in bytes (a deliberate
    over- rather than under-estimate).

    accumulators: one float32 per prunable weight; gradient: the largest layer's per-sample
    gradients, one window's (a chunk holds at least one) in the model's dtype and in float32;
    activations: what backward keeps per window (per token and block ≈ 16·hidden + 6·mlp values
    with the layer inputs the hooks hold, plus two attention rows per head), and the logits with
    their float32 loss copies.
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
    largest = max(w.numel() for w in weights.values())
    return {
        "accumulators": sum(w.numel() for w in weights.values()) * acc_elem,
        "gradient": max(largest * (elem + acc_elem), min(CHUNK_BYTES, batch * largest * elem)),
        "activations": batch * (seqlen * per_token + seqlen * vocab * (elem + 8)),
    }


def _placement(
    model: nn.Module, nsamples: int, seqlen: int, batch_size: int, memory_limit: int | None
) -> tuple[torch.device, int]:
    """(where the accumulators go, windows per batch): with the model if everything fits there,
    else in host memory; the largest batch up to batch_size that fits."""
    device = next(model.parameters()).device
    free = memory_limit if memory_limit is not None else available_bytes(device)
    top = max(1, min(batch_size, nsamples))
    if free is None:
        return device, top
    for batch in range(top, 0, -1):
        need = estimate_bytes(model, seqlen, batch)
        if sum(need.values()) <= free:
            return device, batch
    need = estimate_bytes(model, seqlen)
    if device.type != "cpu":  # keep the accumulators in host memory, as the reference does
        host = memory_limit if memory_limit is not None else available_bytes(torch.device("cpu"))
        on_device = need["gradient"] + need["activations"]
        if on_device <= free and (host is None or need["accumulators"] <= host):
            return torch.device("cpu"), 1
    total = sum(need.values())
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
    batch_size: int = 8,
    progress: Progress | None = None,
    memory_limit: int | None = None,
) -> dict[str, Tensor]:
    """Per-weight gradient norms over the windows of the model as it is now (the dense model).

    windows: (nsamples, seqlen) token ids. Returns "block.linear" -> G (out, in), on the model's
    device (on the CPU when only that fits). batch_size: windows per backward at most (fewer when
    memory is short; the result does not depend on it). memory_limit: bytes the pass may add
    (default: what the device has free); a ValueError says so when even one window exceeds it.
    The model's weights, requires_grad flags, gradients and train/eval mode are as before.
    """
    if norm not in NORMS:
        raise ValueError(f"gradient norm must be one of {', '.join(NORMS)}, got {norm!r}")
    if windows.dim() != 2 or windows.shape[0] == 0 or windows.shape[1] < 2:
        raise ValueError(
            f"the gradient pass needs (nsamples, seqlen ≥ 2) windows, got {tuple(windows.shape)}"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    n, seqlen = windows.shape
    device = next(model.parameters()).device
    acc_device, batch = _placement(model, n, seqlen, batch_size, memory_limit)
    linears = prunable_linears(model)
    acc = {
        key: torch.zeros(
            get_weight(model, module).shape,
            dtype=torch.promote_types(module.weight.dtype, torch.float32),
            device=acc_device,
        )
        for key, module in linears.items()
    }
    inputs: dict[str, Tensor] = {}  # each layer's input of the batch in flight, until δ arrives
    rows = [0]  # windows in the batch in flight

    def fold(key: str, x: Tensor, delta: Tensor) -> None:
        """acc += Σ_b |g_b|² (or |g_b|) with g_b = δ_bᵀ·x_b, a few windows at a time."""
        b = rows[0]
        x, delta = x.reshape(b, -1, x.shape[-1]), delta.reshape(b, -1, delta.shape[-1])
        per = max(1, CHUNK_BYTES // (delta.shape[-1] * x.shape[-1] * x.element_size()))
        total = acc[key]
        for s in range(0, b, per):
            g = torch.bmm(delta[s : s + per].transpose(1, 2), x[s : s + per]).to(total.dtype)
            part = g.square_().sum(0) if norm == "l2" else g.abs_().sum(0)
            total.add_(part.to(acc_device))

    def keep_input(key: str):
        def hook(module: nn.Module, args: tuple, output: Tensor) -> None:
            if not output.requires_grad:
                return
            if key in inputs:  # its g_b would be a sum over calls, not one product
                raise RuntimeError(f"{key} ran twice in one forward pass; not supported")
            inputs[key] = args[0].detach()
            output.register_hook(lambda delta: fold(key, inputs.pop(key), delta))

        return hook

    def grad_source(module: nn.Module, args: tuple, output: Tensor) -> Tensor:
        return output.detach().requires_grad_()  # the gradient flows from here; no weight needs it

    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    was_training = model.training
    handles = [model.get_input_embeddings().register_forward_hook(grad_source)]
    handles += [m.register_forward_hook(keep_input(k)) for k, m in linears.items()]
    try:
        for p in params:
            p.requires_grad_(False)
        model.eval()
        with torch.enable_grad():
            for b0 in range(0, n, batch):
                ids = windows[b0 : b0 + batch].to(device)
                rows[0] = ids.shape[0]
                logits = model(input_ids=ids, use_cache=False).logits
                losses = F.cross_entropy(
                    logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten(), reduction="none"
                )
                losses = losses.view(ids.shape[0], -1).mean(1)  # ℓ_b of each window
                finite = torch.isfinite(losses)
                if not bool(finite.all()):
                    b = b0 + int((~finite).nonzero()[0])
                    raise ValueError(
                        f"non-finite loss on calibration window {b}: the model overflows on this "
                        "data; try float32"
                    )
                losses.sum().backward()
                del logits, losses
                if inputs:  # a layer whose output never reached the loss: its g_b are 0
                    inputs.clear()
                if progress:
                    done = b0 + ids.shape[0]
                    progress(done, n, f"gradients, window {done}/{n}")
    finally:
        inputs.clear()
        for handle in handles:
            handle.remove()
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
        model.train(was_training)
    out = {}
    for key in list(acc):
        G = acc.pop(key)
        if norm == "l2":
            G.sqrt_()
        if not torch.isfinite(G).all():
            raise ValueError(f"non-finite gradients in {key}: the model overflows; try float32")
        out[key] = G
    return out
