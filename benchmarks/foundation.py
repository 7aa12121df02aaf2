"""Foundation benchmark on the bundled model: every figure is a ratio to a plain forward pass over
the same tokens, measured in the same run, interleaved, the best of --repeat passes of each (machines
are noisy; ratios of minima travel).

    python -m benchmarks.foundation [--nsamples 32 --seqlen 256 --eval-tokens 8192]

Peak memory during pruning (product.md §5: ≤ 3 × the fp32 model + the statistics requested) is
measured per method in a fresh subprocess that holds only what pruning needs (the model, the cached
statistics, read from a file) over the interpreter's and torch's own baseline; the main process's
per-phase peaks are printed as well, but they also hold the benchmark's dense model next to the copy
it prunes, and heap the earlier phases left.

Prints a table and writes benchmarks/results/foundation.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import timed, write_result
from pruning import METHODS, Sparsity, collect_dense_stats, prune_model
from pruning.arch import block_linears, decoder_blocks, get_weight, set_weight
from pruning.data import calibration_windows, evaluation_tokens
from pruning.evaluate import perplexity, windows_of
from pruning.memory import peak_rss_bytes, reset_peak_rss
from pruning.models import load_model
from pruning.types import LayerStats


def _phase(r: dict, name: str, fn):
    """Time fn and record the process's peak RSS during it (GB) as peak_rss_<name>_gb."""
    reset_peak_rss()
    seconds, out = timed(fn)
    r[f"peak_rss_{name}_gb"] = peak_rss_bytes() / 2**30
    return seconds, out


def _rss_bytes() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def _memory_probe(method: str, stats_file: str) -> None:
    """In a fresh process: load the model and the statistics, prune, print the peak RSS above the
    runtime's baseline (interpreter, torch and the library imported, nothing loaded)."""
    base = _rss_bytes()
    model, _ = load_model()
    stats = torch.load(stats_file, weights_only=False)
    reset_peak_rss()
    prune_model(model, None, method, Sparsity(0.5), mode="dense", dense_stats=stats)
    print(json.dumps({"peak_gb": (peak_rss_bytes() - base) / 2**30}))


def _probe(method: str, stats_file: str) -> float:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.foundation", "--memory-probe", method, stats_file],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parent.parent,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_gb"]


def _best(r: dict, key: str, fn, phase: str | None = None):
    """Time fn into r[key], keeping the smallest time over repeats; returns fn's output."""
    seconds, out = _phase(r, phase, fn) if phase else timed(fn)
    r[key] = min(seconds, r.get(key, float("inf")))
    return out


def _looped(model, method: str, stats) -> float:
    """Seconds to re-prune every linear on its own, one call per layer with all threads (each
    Hessian factored per layer, nothing stacked): the dense-mode solve before batching."""
    prune = METHODS[method].prune
    start = time.perf_counter()
    for i, block in enumerate(decoder_blocks(model)):
        for name, module in block_linears(model, block).items():
            st = stats.blocks[i][name]
            one = LayerStats(st.nsamples, st.sq_norm[None], st.hessian[None])
            res = prune(get_weight(model, module)[None], one, Sparsity(0.5))
            set_weight(model, module, res.weight[0])
    return time.perf_counter() - start


def _stats_bytes(stats) -> int:
    """Bytes of the statistics held (linears of a group share theirs: counted once)."""
    seen = {id(st): st for block in stats.blocks for st in block.values()}
    tensors = [t for st in seen.values() for t in (st.sq_norm, st.hessian) if t is not None]
    return sum(t.numel() * t.element_size() for t in tensors)


@torch.no_grad()
def plain_forward(model, windows: torch.Tensor, batch_size: int) -> None:
    """The floor: the model's forward over the same windows, nothing kept."""
    for batch in windows.split(batch_size):
        model(input_ids=batch, use_cache=False)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nsamples", type=int, default=32)
    p.add_argument("--seqlen", type=int, default=256)
    p.add_argument("--eval-tokens", type=int, default=8192)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--repeat", type=int, default=2, help="timed passes; the best of each counts")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results/foundation.json")
    p.add_argument("--memory-probe", nargs=2, metavar=("METHOD", "STATS"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.memory_probe:
        return _memory_probe(*args.memory_probe)
    r: dict[str, float] = {
        "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(default)"),
    }

    with tempfile.TemporaryDirectory() as tmp:  # first load: GGUF dequantization + cache write
        old = os.environ.get("PRUNING_LAB_CACHE")
        os.environ["PRUNING_LAB_CACHE"] = tmp
        r["load_first_s"], _ = timed(lambda: load_model())
        if old is None:
            del os.environ["PRUNING_LAB_CACHE"]
        else:
            os.environ["PRUNING_LAB_CACHE"] = old
    load_model()  # make sure the real cache exists, then time a cached load
    r["load_cached_s"], (model, tokenizer) = timed(lambda: load_model())
    fp32_bytes = sum(p.numel() * 4 for p in model.parameters())

    windows = calibration_windows(tokenizer, nsamples=args.nsamples, seqlen=args.seqlen)
    plain_forward(model, windows[: args.batch_size], args.batch_size)  # warm-up
    eval_ids = evaluation_tokens(tokenizer, max_tokens=args.eval_tokens)
    eval_windows = windows_of(eval_ids, args.seqlen)
    calibrations = (("sq_norm", {"sq_norm"}), ("sq_norm_hessian", {"sq_norm", "hessian"}))
    for _ in range(args.repeat):  # interleaved, the best of each: a ratio of two minima
        _best(r, "forward_calib_tokens_s", lambda: plain_forward(model, windows, args.batch_size))
        for name, needs in calibrations:
            stats = _best(
                r,
                f"calibrate_{name}_s",
                lambda needs=needs: collect_dense_stats(
                    model, windows, frozenset(needs), batch_size=args.batch_size
                ),
                phase=f"calibrate_{name}",
            )
        _best(r, "forward_eval_tokens_s", lambda: plain_forward(model, eval_windows, 4))
        ppl = _best(
            r,
            "evaluate_s",
            lambda: perplexity(model, eval_ids, args.seqlen, batch_size=4),
            phase="evaluate",
        )
    for name, _ in calibrations:
        r[f"calibrate_{name}_ratio"] = r[f"calibrate_{name}_s"] / r["forward_calib_tokens_s"]
    r["evaluate_ratio"] = r["evaluate_s"] / r["forward_eval_tokens_s"]
    r["dense_ppl"] = ppl

    # re-prunes interleaved: the first of each, then the best of --repeat more (ratios of minima)
    for attempt in range(1 + args.repeat):
        for method in ("magnitude", "wanda", "sparsegpt", "rose"):
            pruned = copy.deepcopy(model)
            phase = f"reprune_{method}_{'first' if attempt == 0 else 'again'}"
            _, run = _phase(
                r,
                phase,
                lambda m=pruned, method=method: prune_model(
                    m, None, method, Sparsity(0.5), mode="dense", dense_stats=stats
                ),
            )
            r[f"{phase}_s"] = min(run.seconds["prune"], r.get(f"{phase}_s", float("inf")))
            del pruned, run
    r["reprune_rose_over_sparsegpt"] = r["reprune_rose_again_s"] / r["reprune_sparsegpt_again_s"]
    for method in ("sparsegpt", "rose"):  # the same solve, one layer at a time
        r[f"reprune_{method}_looped_s"] = _looped(copy.deepcopy(model), method, stats)
        r[f"batching_speedup_{method}"] = (
            r[f"reprune_{method}_looped_s"] / r[f"reprune_{method}_again_s"]
        )

    r["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    r["model_fp32_gb"] = fp32_bytes / 2**30
    r["stats_hessian_gb"] = _stats_bytes(stats) / 2**30
    r["memory_limit_gb"] = 3 * r["model_fp32_gb"] + r["stats_hessian_gb"]
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(stats, f"{tmp}/stats.pt")
        for method in ("magnitude", "wanda", "sparsegpt", "rose"):
            r[f"prune_peak_{method}_gb"] = _probe(method, f"{tmp}/stats.pt")
    worst = max(r[f"prune_peak_{m}_gb"] for m in ("magnitude", "wanda", "sparsegpt", "rose"))
    r["prune_peak_over_limit"] = worst / r["memory_limit_gb"]
    tokens = args.nsamples * args.seqlen
    print(
        f"bundled SmolLM2-135M, {args.nsamples}×{args.seqlen} calibration tokens ({tokens}), "
        f"{eval_windows.numel()} evaluation tokens, {r['threads']} threads"
    )
    for key, value in r.items():
        print(f"  {key:<38} {value:10.3f}" if isinstance(value, float) else f"  {key:<38} {value}")
    write_result(args.out, r)


if __name__ == "__main__":
    main()
