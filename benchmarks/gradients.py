"""GBLM's gradient pass and the structure gradients induce, on the bundled model.

    python -m benchmarks.gradients [--nsamples 32 --seqlen 256]

- Time: the gradient pass (`collect_grad_norms`: forward and backward over batches of 8 windows,
  per-window gradients formed from hooks and their ℓ2 norms accumulated on the fly) against a plain
  forward over the same tokens at batch 1 and at batch 8, measured in the same run, interleaved,
  the best of --repeat.
- Structure: dense-mode masks of magnitude, Wanda and GBLM at each sparsity, and the structure
  index per linear type (mean over blocks; columns axis: the spread of per-column kept fractions
  against a random mask with the same per-row counts, 1.0 = chance), also along rows.
Prints tables and writes benchmarks/results/gradients.json.
"""

from __future__ import annotations

import argparse
import copy
from dataclasses import replace
from pathlib import Path

import torch

from benchmarks.common import timed, write_result
from benchmarks.foundation import plain_forward
from pruning import Sparsity, collect_dense_stats, prune_model, structure
from pruning.data import calibration_windows
from pruning.gradients import collect_grad_norms
from pruning.models import load_model

METHODS = ("magnitude", "wanda", "gblm")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nsamples", type=int, default=32)
    p.add_argument("--seqlen", type=int, default=256)
    p.add_argument("--sparsity", default="0.5,2:4")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results/gradients.json")
    args = p.parse_args()
    model, tokenizer = load_model()
    windows = calibration_windows(tokenizer, nsamples=args.nsamples, seqlen=args.seqlen)
    r: dict = {"threads": torch.get_num_threads(), "tokens": args.nsamples * args.seqlen}
    grads = None
    with torch.no_grad():
        plain_forward(model, windows[:1], 1)  # warm-up
    for _ in range(args.repeat):
        for key, batch in (("forward_b1_s", 1), ("forward_b8_s", 8)):
            with torch.no_grad():
                t, _ = timed(lambda b=batch: plain_forward(model, windows, b))
            r[key] = min(t, r.get(key, float("inf")))
        t, grads = timed(lambda: collect_grad_norms(model, windows))
        r["grad_pass_s"] = min(t, r.get("grad_pass_s", float("inf")))
    r["grad_pass_over_forward_b1"] = r["grad_pass_s"] / r["forward_b1_s"]
    r["grad_pass_over_forward_b8"] = r["grad_pass_s"] / r["forward_b8_s"]

    stats = collect_dense_stats(model, windows, frozenset({"sq_norm"}))
    stats = replace(stats, needs=stats.needs | {"grad"}, grads=grads, grad_norm="l2")
    r["structure"] = {}
    for target in args.sparsity.split(","):
        sparsity = Sparsity.parse(target)
        masks = {}
        for method in METHODS:
            pruned = copy.deepcopy(model)
            run = prune_model(pruned, None, method, sparsity, mode="dense", dense_stats=stats)
            masks[method] = {k: v.pruned for k, v in run.layers.items()}
            del pruned
        r["structure"][str(sparsity)] = {
            axis: structure.structure_table(masks, axis) for axis in ("columns", "rows")
        }

    print(
        f"bundled SmolLM2-135M, {args.nsamples}×{args.seqlen} windows ({r['tokens']} tokens), "
        f"{r['threads']} threads"
    )
    for key, value in r.items():
        if isinstance(value, float):
            print(f"  {key:<28} {value:8.3f}")
    for target, axes in r["structure"].items():
        for axis, table in axes.items():
            types = list(next(iter(table.values())))
            print(f"\nstructure index at {target}, {axis} (1.0 = chance)")
            print(f"  {'method':<10}" + "".join(f"{t:>8}" for t in types))
            for method, row in table.items():
                print(f"  {method:<10}" + "".join(f"{row[t]:8.2f}" for t in types))
    write_result(args.out, r)


if __name__ == "__main__":
    main()
