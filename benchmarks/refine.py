"""Mask-refinement benchmark on the bundled model: SparseSwaps and LLM-Barber.

    python -m benchmarks.refine [--nsamples 32 --seqlen 256 --sparsity 0.5,0.6,2:4 --converge 100]

- SparseSwaps: re-prune of every layer from cached dense statistics (dense mode, Wanda warm
  start) at the default iteration cap, per sparsity: seconds (target ≤ 30 s on 2 cores, wall and
  CPU time), the mean per-layer error reduction against the warm start, the fraction of rows at a
  1-swap local optimum; with --converge N also at a cap of N swaps per row (at --converge-at).
- LLM-Barber: a sequential run's prune seconds minus Wanda's (the block rebuilds), against a
  plain forward+backward of the model over the same calibration tokens.
Prints a table and writes benchmarks/results/refine.json.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import torch

from benchmarks.common import write_result
from pruning import Sparsity, collect_dense_stats, prune_model
from pruning.data import calibration_windows
from pruning.models import load_model
from pruning.sparseswaps import ITERS


def _timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def forward_backward(model, windows: torch.Tensor, batch_size: int) -> None:
    """The floor for Barber: the model's forward and backward of its LM loss over the windows."""
    for batch in windows.split(batch_size):
        model.zero_grad(set_to_none=True)
        model(input_ids=batch, labels=batch, use_cache=False).loss.backward()
    model.zero_grad(set_to_none=True)


def swaps_run(model, stats, sparsity: Sparsity, iters: int) -> dict:
    pruned = copy.deepcopy(model)
    wall, cpu, run = _timed(
        lambda: prune_model(
            pruned, None, "sparseswaps", sparsity, mode="dense", dense_stats=stats, iters=iters
        )
    )
    infos = [r.info for r in run.layers.values()]
    return {
        "sparsity": str(sparsity),
        "iters": iters,
        "wall_s": wall,
        "cpu_s": cpu,
        "prune_s": run.seconds["prune"],
        "mean_layer_error_reduction": statistics.fmean(i["error_reduction"] for i in infos),
        "max_layer_error_reduction": max(i["error_reduction"] for i in infos),
        "converged_rows": statistics.fmean(i["converged"] for i in infos),
        "swaps_per_layer": statistics.fmean(i["swaps"] for i in infos),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nsamples", type=int, default=32)
    p.add_argument("--seqlen", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--sparsity", default="0.5,0.6,2:4")
    p.add_argument("--converge", type=int, default=0, help="also run SparseSwaps with this cap")
    p.add_argument("--converge-at", default="0.5", help="the sparsities of the --converge runs")
    p.add_argument("--no-barber", action="store_true")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results/refine.json")
    args = p.parse_args()
    r: dict = {"threads": torch.get_num_threads(), "default_iters": ITERS}

    model, tokenizer = load_model()
    windows = calibration_windows(tokenizer, nsamples=args.nsamples, seqlen=args.seqlen)
    needs = frozenset({"sq_norm", "hessian"})
    r["calibrate_s"], _, stats = _timed(
        lambda: collect_dense_stats(model, windows, needs, batch_size=args.batch_size)
    )
    targets = [Sparsity.parse(s) for s in args.sparsity.split(",")]
    pruned = copy.deepcopy(model)
    r["wanda_reprune_s"] = prune_model(
        pruned, None, "wanda", targets[0], mode="dense", dense_stats=stats
    ).seconds["prune"]
    del pruned
    r["sparseswaps"] = []
    long = {str(Sparsity.parse(x)) for x in args.converge_at.split(",")} if args.converge else set()
    for sparsity in targets:
        for iters in (ITERS, args.converge) if str(sparsity) in long else (ITERS,):
            row = swaps_run(model, stats, sparsity, iters)
            r["sparseswaps"].append(row)
            print(
                f"sparseswaps {row['sparsity']:>4} iters {iters:>4}: {row['wall_s']:7.1f} s wall "
                f"({row['cpu_s']:.1f} s CPU), mean layer error reduction "
                f"{row['mean_layer_error_reduction']:.3f} "
                f"(max {row['max_layer_error_reduction']:.3f}), "
                f"rows converged {row['converged_rows']:.3f}",
                flush=True,
            )

    if not args.no_barber:
        forward_backward(model, windows[: args.batch_size], args.batch_size)  # warm-up
        r["forward_backward_s"], _, _ = _timed(
            lambda: forward_backward(model, windows, args.batch_size)
        )
        for method in ("wanda", "barber"):
            pruned = copy.deepcopy(model)
            wall, _, run = _timed(
                lambda pruned=pruned, method=method: prune_model(
                    pruned, windows, method, targets[0], batch_size=args.batch_size
                )
            )
            r[f"{method}_sequential_s"] = wall
            r[f"{method}_sequential_prune_s"] = run.seconds["prune"]
            del pruned
        r["barber_rebuild_s"] = r["barber_sequential_prune_s"] - r["wanda_sequential_prune_s"]
        r["barber_rebuild_over_forward_backward"] = r["barber_rebuild_s"] / r["forward_backward_s"]
        for key in (
            "forward_backward_s",
            "wanda_sequential_s",
            "barber_sequential_s",
            "barber_rebuild_s",
            "barber_rebuild_over_forward_backward",
        ):
            print(f"  {key:<40} {r[key]:10.2f}")
    tokens = args.nsamples * args.seqlen
    print(f"bundled SmolLM2-135M, {args.nsamples}×{args.seqlen} = {tokens} calibration tokens")
    write_result(args.out, r)


if __name__ == "__main__":
    main()
