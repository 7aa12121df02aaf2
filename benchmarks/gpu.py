"""GPU benchmark at the papers' scale: Llama-shaped models built from configs with random weights
(no timed step depends on the weight values), random tokens, dense-mode statistics. For each
method: the total time of `prune_model` (calibration + gradients + solve) next to a plain forward
over the same tokens at batch 8 measured in the same run, their ratio, and peak device memory.

    python -m benchmarks.gpu                                  # all shapes, 128 × 2048, on cuda
    python -m benchmarks.gpu --shapes tinyllama-1.1b --methods wanda,sparsegpt
    python -m benchmarks.gpu --shapes tiny --device cpu --nsamples 4 --seqlen 32   # CI size

Prints a table and writes benchmarks/results/gpu.json. The model runs in --dtype (float16 on CUDA,
as the references; float32 on the CPU); statistics and solves are float32, TF32 off unless --tf32.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from pruning import METHODS, Sparsity, collect_dense_stats, prune_model
from pruning.memory import check_load, peak_rss_bytes, reset_peak_rss

SHAPES = {  # LlamaConfig fields of each shape
    "smollm2-135m": {
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "vocab_size": 49152,
        "max_position_embeddings": 8192,
        "rope_theta": 100000.0,
        "tie_word_embeddings": True,
    },
    "tinyllama-1.1b": {
        "hidden_size": 2048,
        "intermediate_size": 5632,
        "num_hidden_layers": 22,
        "num_attention_heads": 32,
        "num_key_value_heads": 4,
        "vocab_size": 32000,
        "max_position_embeddings": 2048,
    },
    "llama2-7b": {
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "vocab_size": 32000,
        "max_position_embeddings": 4096,
    },
    "tiny": {  # for CI on a CPU
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 256,
        "max_position_embeddings": 256,
    },
}
REFERENCE = {  # issue 10: the unchanged reference code, one H100, fp16, 128 × 2048, seconds
    "smollm2-135m": {"fwd": 0.56, "wanda": 10.1, "sparsegpt": 36.7, "rose": 36.4, "gblm": 52.2},
    "tinyllama-1.1b": {"fwd": 1.75, "wanda": 7.5, "sparsegpt": 86.0, "rose": 91.8, "gblm": 223.6},
    "llama2-7b": {"fwd": 8.02, "wanda": 19.0, "sparsegpt": 294.8},
}
DEFAULT_METHODS = ("magnitude", "wanda", "sparsegpt", "rose", "gblm")
BIG_METHODS = ("magnitude", "wanda", "sparsegpt")  # the reference measured only these at 7B


def build(shape: str, device: torch.device, dtype: torch.dtype, seed: int = 0):
    """A random Llama-shaped causal LM, made directly on the device in its dtype."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**SHAPES[shape], bos_token_id=0, eos_token_id=1)
    with torch.device("meta"):
        params = sum(p.numel() for p in LlamaForCausalLM(config).parameters())
    check_load(params, dtype, device)  # the memory guard, before anything is allocated
    torch.manual_seed(seed)
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(old)
    return model.eval(), params


@torch.no_grad()
def randomize(model: torch.nn.Module, seed: int) -> None:
    """Fresh random weights (std 0.02, as the config's init), so each method starts dense."""
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    for name, p in model.named_parameters():
        if p.dim() > 1:
            p.normal_(0, 0.02, generator=gen)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        reset_peak_rss()


def _peak_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return peak_rss_bytes() / 2**30


@torch.no_grad()
def plain_forward(model, windows: torch.Tensor, batch_size: int, device: torch.device) -> float:
    """Seconds for the model's forward over the windows at `batch_size`, nothing kept."""
    model(input_ids=windows[:batch_size].to(device), use_cache=False)  # warm-up
    _sync(device)
    start = time.perf_counter()
    for batch in windows.split(batch_size):
        model(input_ids=batch.to(device), use_cache=False)
    _sync(device)
    return time.perf_counter() - start


def run_shape(shape: str, methods: list[str], args) -> dict:
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    start = time.perf_counter()
    model, params = build(shape, device, dtype, args.seed)
    _sync(device)
    out: dict = {"params": params, "build_s": time.perf_counter() - start, "methods": {}}
    gen = torch.Generator().manual_seed(args.seed)
    windows = torch.randint(0, model.config.vocab_size, (args.nsamples, args.seqlen), generator=gen)
    out["forward_s"] = fwd = plain_forward(model, windows, 8, device)
    print(f"{shape}: {params / 1e9:.2f}B parameters, forward {fwd:.2f} s", flush=True)
    for k, method in enumerate(methods):
        randomize(model, args.seed + k + 1)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        _sync(device)
        _reset_peak(device)
        start = time.perf_counter()
        needs = METHODS[method].needs
        stats = (
            collect_dense_stats(model, windows, needs, batch_size=8, tf32=args.tf32)
            if needs
            else None
        )
        _sync(device)
        calibrate = time.perf_counter() - start
        run = prune_model(model, None, method, Sparsity(0.5), mode="dense", dense_stats=stats)
        _sync(device)
        total = time.perf_counter() - start
        row = {
            "total_s": total,
            "ratio": total / fwd,
            "calibrate_s": calibrate,
            "prune_s": total - calibrate,
            "peak_gb": _peak_gb(device),
            "sparsity": run.achieved_sparsity(),
        }
        ref = REFERENCE.get(shape, {}).get(method)
        if ref is not None:
            row["reference_s"] = ref
            row["reference_ratio"] = ref / REFERENCE[shape]["fwd"]
        out["methods"][method] = row
        print(
            f"  {method:<10} {total:8.2f} s  {total / fwd:6.2f}× fwd  "
            f"(calibrate {row['calibrate_s']:.2f} s, solve {row['prune_s']:.2f} s)  "
            f"peak {row['peak_gb']:.2f} GB"
            + (f"  [reference {ref:.1f} s, {row['reference_ratio']:.1f}×]" if ref else ""),
            flush=True,
        )
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", default="smollm2-135m,tinyllama-1.1b,llama2-7b")
    p.add_argument("--methods", default=None, help="comma-separated (default: per shape)")
    p.add_argument("--nsamples", type=int, default=128)
    p.add_argument("--seqlen", type=int, default=2048)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default=None, help="float16 on CUDA, float32 on the CPU")
    p.add_argument("--tf32", action="store_true", help="tensor cores for the Hessian products")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results/gpu.json")
    args = p.parse_args(argv)
    args.dtype = args.dtype or ("float16" if args.device.startswith("cuda") else "float32")
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = False  # as the reference measurements
        torch.backends.cudnn.allow_tf32 = False
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    for shape in shapes:
        if shape not in SHAPES:
            raise SystemExit(f"unknown shape {shape!r}; choose from {', '.join(SHAPES)}")
    result = {
        "device": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "dtype": args.dtype,
        "tf32": args.tf32,
        "nsamples": args.nsamples,
        "seqlen": args.seqlen,
        "shapes": {},
    }
    for shape in shapes:
        wanted = args.methods.split(",") if args.methods else None
        methods = wanted or list(BIG_METHODS if shape == "llama2-7b" else DEFAULT_METHODS)
        methods = [m for m in methods if m in METHODS]
        result["shapes"][shape] = run_shape(shape, methods, args)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))  # after every shape: partial results
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
