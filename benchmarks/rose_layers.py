"""ROSE against SparseGPT, layer by layer, on the bundled model (dense statistics).

    python -m benchmarks.rose_layers [--sparsity 0.5,0.7,2:4]

Both methods prune every linear from the same dense Hessians; per layer the relative
reconstruction error e = tr(ΔW H ΔWᵀ) / tr(W H Wᵀ) = ‖ΔW X‖² / ‖W X‖² on the calibration inputs.
Prints, per sparsity, the fraction of layers ROSE reordered (ρ > 0.5) and which, and the mean
ratio e_ROSE / e_SparseGPT over all layers and over the reordered ones (a layer ROSE leaves in
natural order is SparseGPT's exactly: ratio 1). Writes benchmarks/results/rose_layers.json.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

from benchmarks.common import write_result
from pruning import Sparsity, collect_dense_stats, prune_model
from pruning.data import calibration_windows
from pruning.lab import layer_errors
from pruning.models import load_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nsamples", type=int, default=32)
    p.add_argument("--seqlen", type=int, default=256)
    p.add_argument("--sparsity", default="0.5,0.7,2:4")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results/rose_layers.json")
    args = p.parse_args()
    model, tokenizer = load_model()
    windows = calibration_windows(tokenizer, nsamples=args.nsamples, seqlen=args.seqlen)
    stats = collect_dense_stats(model, windows, frozenset({"hessian"}))
    out = {}
    for target in args.sparsity.split(","):
        sparsity, errors, runs = Sparsity.parse(target), {}, {}
        for method in ("sparsegpt", "rose"):
            pruned = copy.deepcopy(model)
            runs[method] = prune_model(
                pruned, None, method, sparsity, mode="dense", dense_stats=stats
            )
            errors[method] = layer_errors(model, pruned, stats)
            del pruned
        moved = [k for k, r in runs["rose"].layers.items() if float(r.info["reordered"])]
        ratio = {k: errors["rose"][k] / errors["sparsegpt"][k] for k in errors["rose"]}
        out[str(sparsity)] = row = {
            "layers": len(ratio),
            "reordered": moved,
            "reordered_fraction": len(moved) / len(ratio),
            "mean_ratio_all": sum(ratio.values()) / len(ratio),
            "mean_ratio_reordered": sum(ratio[k] for k in moved) / len(moved) if moved else None,
            "min_ratio": min(ratio.values()),
            "mean_error_sparsegpt": sum(errors["sparsegpt"].values()) / len(ratio),
            "mean_error_rose": sum(errors["rose"].values()) / len(ratio),
            "rho": {k: float(r.info["rho"]) for k, r in runs["rose"].layers.items()},
        }
        print(
            f"{sparsity!s:>4}: reordered {len(moved)}/{len(ratio)} "
            f"({row['reordered_fraction']:.1%}: {', '.join(moved) or 'none'}); "
            f"mean ratio ROSE/SparseGPT {row['mean_ratio_all']:.4f} over all layers, "
            f"{row['mean_ratio_reordered'] or float('nan'):.3f} over the reordered, "
            f"min {row['min_ratio']:.3f}; mean error {row['mean_error_sparsegpt']:.5f} → "
            f"{row['mean_error_rose']:.5f}"
        )
    write_result(args.out, out)


if __name__ == "__main__":
    main()
