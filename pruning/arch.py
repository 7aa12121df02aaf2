"""Architecture adapters: where a model's decoder blocks are, which linears get pruned, and which
of them read the same input (so they share one statistics accumulator).

Every weight is presented to the methods as (out, in); GPT-2's `Conv1D` stores (in, out), and the
adapter transposes on the way in and out. Nothing else in the package knows a model family.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]  # config.model_type values this family covers
    blocks: str  # attribute path from the causal-LM to its nn.ModuleList of decoder blocks
    groups: tuple[tuple[str, ...], ...]  # block-relative linear names; each tuple shares an input
    transposed: bool = False  # weights stored (in, out) (GPT-2's Conv1D)

    @property
    def linear_names(self) -> tuple[str, ...]:
        return tuple(name for group in self.groups for name in group)


FAMILIES = (
    Family(
        "llama",
        ("llama", "mistral", "qwen2", "qwen3"),
        "model.layers",
        (
            ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
            ("self_attn.o_proj",),
            ("mlp.gate_proj", "mlp.up_proj"),
            ("mlp.down_proj",),
        ),
    ),
    Family(
        "opt",
        ("opt",),
        "model.decoder.layers",
        (
            ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
            ("self_attn.out_proj",),
            ("fc1",),
            ("fc2",),
        ),
    ),
    Family(
        "gpt2",
        ("gpt2",),
        "transformer.h",
        (("attn.c_attn",), ("attn.c_proj",), ("mlp.c_fc",), ("mlp.c_proj",)),
        transposed=True,
    ),
    Family(
        "gpt_neox",
        ("gpt_neox",),
        "gpt_neox.layers",
        (
            ("attention.query_key_value",),
            ("attention.dense",),
            ("mlp.dense_h_to_4h",),
            ("mlp.dense_4h_to_h",),
        ),
    ),
)


def supported() -> str:
    """Human-readable list of the supported model types."""
    return ", ".join(t for f in FAMILIES for t in f.model_types)


def family_of(model: nn.Module) -> Family:
    """The adapter for a model, from its config's model_type."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    raise ValueError(f"unsupported architecture {model_type!r}; supported: {supported()}")


def decoder_blocks(model: nn.Module) -> nn.ModuleList:
    return operator.attrgetter(family_of(model).blocks)(model)


def block_linears(model: nn.Module, block: nn.Module) -> dict[str, nn.Module]:
    """Block-relative name -> module, in the family's order."""
    return {name: block.get_submodule(name) for name in family_of(model).linear_names}


def get_weight(model: nn.Module, module: nn.Module) -> Tensor:
    """The weight as (out, in), a view of the parameter."""
    return module.weight.T if family_of(model).transposed else module.weight


@torch.no_grad()
def set_weight(model: nn.Module, module: nn.Module, W: Tensor) -> None:
    """Write an (out, in) weight into the module, in its own layout and dtype."""
    get_weight(model, module).copy_(W.to(module.weight.dtype))
