"""Evaluation: perplexity with the reference protocol, achieved sparsity, block reconstruction
error against the dense model, and greedy generation.

Perplexity (algorithms.md §1.5): the evaluation tokens are cut into floor(n/L) non-overlapping
windows of L tokens (the remainder is dropped); each window's loss is the mean cross-entropy of its
L−1 next-token predictions; perplexity = exp(mean of the window losses).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .arch import block_linears, decoder_blocks, get_weight
from .calibration import capture_block_inputs, run_block


def windows_of(ids: Tensor, seqlen: int) -> Tensor:
    """(floor(n/L), L) non-overlapping windows of a 1-D token sequence."""
    n = ids.numel() // seqlen
    if n == 0:
        raise ValueError(
            f"evaluation text has {ids.numel()} tokens, fewer than one window of {seqlen}; "
            "use a shorter seqlen or more text"
        )
    return ids[: n * seqlen].view(n, seqlen)


@torch.no_grad()
def perplexity(
    model: nn.Module,
    ids: Tensor,
    seqlen: int,
    *,
    batch_size: int = 4,
    progress: Callable[[int, int, str], None] | None = None,
) -> float:
    """exp(mean window loss) over the non-overlapping windows of ids (1-D)."""
    windows = windows_of(ids, seqlen)
    device = next(model.parameters()).device
    losses = []
    for start in range(0, len(windows), batch_size):
        batch = windows[start : start + batch_size].to(device)
        logits = model(input_ids=batch, use_cache=False).logits  # (b, L, vocab)
        loss = F.cross_entropy(
            logits[:, :-1].flatten(0, 1).float(), batch[:, 1:].flatten(), reduction="none"
        )
        losses.append(loss.view(len(batch), -1).mean(1))  # (b,) one loss per window
        if progress:
            done = min(start + batch_size, len(windows))
            progress(done, len(windows), f"perplexity, window {done}/{len(windows)}")
    return math.exp(torch.cat(losses).double().mean().item())


@torch.no_grad()
def sparsity_by_layer(model: nn.Module) -> dict[str, float]:
    """Fraction of exact zeros in every prunable linear, measured on the model itself."""
    return {
        f"{i}.{name}": (get_weight(model, module) == 0).float().mean().item()
        for i, block in enumerate(decoder_blocks(model))
        for name, module in block_linears(model, block).items()
    }


@torch.no_grad()
def overall_sparsity(model: nn.Module) -> float:
    zeros = total = 0
    for block in decoder_blocks(model):
        for module in block_linears(model, block).values():
            W = get_weight(model, module)
            zeros += int((W == 0).sum())
            total += W.numel()
    return zeros / total


@torch.no_grad()
def block_errors(
    dense: nn.Module, pruned: nn.Module, windows: Tensor, *, batch_size: int = 8
) -> list[float]:
    """Per block: mean (dense_out − pruned_out)² / mean dense_out², both fed the dense inputs."""
    inputs = capture_block_inputs(dense, windows, batch_size)
    errors = []
    for dense_block, pruned_block in zip(decoder_blocks(dense), decoder_blocks(pruned)):
        want, got = run_block(dense_block, inputs), run_block(pruned_block, inputs)
        diff = sum(float((w.float() - g.float()).pow(2).sum()) for w, g in zip(want, got))
        norm = sum(float(w.float().pow(2).sum()) for w in want)
        errors.append(diff / max(norm, 1e-30))
        inputs = inputs.with_hidden(want)
    return errors


@torch.no_grad()
def generate(model: nn.Module, tokenizer, prompt: str, max_new_tokens: int = 40) -> str:
    """Greedy continuation of a prompt (the new text only)."""
    device = next(model.parameters()).device
    ids = tokenizer(prompt, return_tensors="pt").input_ids.to(device)
    out = model.generate(
        ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.eos_token_id
    )
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
