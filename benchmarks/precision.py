"""Perplexity of the bundled model across devices and dtypes: fp16 on a GPU should stay within 1%
of fp32 on the CPU, for the dense model and after pruning.

    python -m benchmarks.precision                            # cpu float32, and each CUDA setting
    python -m benchmarks.precision --save-data ids.pt         # keep the exact tokens ...
    python -m benchmarks.precision --data ids.pt --settings cuda:float16   # ... for another machine

For each setting (device:dtype, with ":tf32" for tensor-core Hessian products): the dense
perplexity and Wanda / SparseGPT at 50% in sequential mode with the command line's defaults (32 ×
256 bundled calibration windows, 16384 held-out tokens), and each relative to the first setting.
The tokens are the bundled corpus's, or those of --data, so two machines can compare exactly
(the corpus is CPython's pydoc topics, which differ between Python versions).
Writes benchmarks/results/precision.json (or --out).
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch

from benchmarks.common import write_result
from pruning import Sparsity, prune_model
from pruning.data import calibration_windows, evaluation_tokens
from pruning.evaluate import perplexity
from pruning.models import load_model

METHODS = ("wanda", "sparsegpt")


def default_settings() -> list[str]:
    cuda = ["cuda:float16", "cuda:bfloat16", "cuda:float16:tf32"]
    return ["cpu:float32", *(cuda if torch.cuda.is_available() else [])]


def measure(setting: str, windows: torch.Tensor, eval_ids: torch.Tensor, seqlen: int) -> dict:
    device, dtype, *flags = setting.split(":")
    tf32 = "tf32" in flags
    model, _ = load_model(device=device, dtype=getattr(torch, dtype))
    start = time.perf_counter()
    row = {"dense": perplexity(model, eval_ids, seqlen)}
    for method in METHODS:
        pruned = copy.deepcopy(model)
        prune_model(pruned, windows, method, Sparsity(0.5), mode="sequential", tf32=tf32)
        row[method] = perplexity(pruned, eval_ids, seqlen)
        del pruned
    row["seconds"] = time.perf_counter() - start
    return row


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--settings", default=None, help="comma list of device:dtype[:tf32]")
    p.add_argument("--nsamples", type=int, default=32)
    p.add_argument("--seqlen", type=int, default=256)
    p.add_argument("--eval-tokens", type=int, default=16384)
    p.add_argument("--data", type=Path, help="read the windows and evaluation tokens from here")
    p.add_argument("--save-data", type=Path, help="write the windows and evaluation tokens here")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results/precision.json")
    args = p.parse_args(argv)
    settings = args.settings.split(",") if args.settings else default_settings()
    if args.data:
        data = torch.load(args.data)
    else:
        _, tokenizer = load_model()
        data = {
            "windows": calibration_windows(tokenizer, nsamples=args.nsamples, seqlen=args.seqlen),
            "eval_ids": evaluation_tokens(tokenizer, max_tokens=args.eval_tokens),
        }
    if args.save_data:
        torch.save(data, args.save_data)
    seqlen = data["windows"].shape[1]
    result = {"windows": list(data["windows"].shape), "eval_tokens": len(data["eval_ids"])}
    result["settings"] = {}
    print(f"{'setting':<20}" + "".join(f"{k:>18}" for k in ("dense", *METHODS)) + "   seconds")
    for setting in settings:
        row = measure(setting, data["windows"], data["eval_ids"], seqlen)
        first = next(iter(result["settings"].values()), row)
        for key in ("dense", *METHODS):
            row[f"{key}_rel"] = row[key] / first[key] - 1
        result["settings"][setting] = row
        cells = "".join(
            f"{row[k]:>10.3f} ({100 * row[k + '_rel']:+5.2f}%)" for k in ("dense", *METHODS)
        )
        print(f"{setting:<20}{cells}   {row['seconds']:7.1f}", flush=True)
    write_result(args.out, result)
    return result


if __name__ == "__main__":
    main()
