"""Render every viz figure on realistic synthetic inputs to PNGs, and print each figure's payload.

    python -m benchmarks.viz_gallery OUT_DIR [--rows 576 --cols 1536] [--payload-only]

Layers are synthetic but shaped like the real thing: weights ~ N(0, 1), input channels with
log-normal activation norms and a few outlier channels (what makes Wanda differ from magnitude), a
gradient with row and column structure. Per-layer values use the bundled model's layout (30 blocks
× 7 linears). PNGs need kaleido (`pip install kaleido==1.5.0`) and a Chromium: set BROWSER_PATH
(e.g. /usr/bin/chromium). Payload = len(fig.to_json()), what the app would send.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import viz

LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")
LINEARS += ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


def layer(rng, rows: int, cols: int) -> dict[str, np.ndarray]:
    """Weights, Wanda scores, gradient and four masks of one synthetic layer (True = pruned)."""
    W = rng.standard_normal((rows, cols), dtype=np.float32)
    norm = rng.lognormal(0.0, 0.6, cols).astype(np.float32)
    norm[rng.choice(cols, max(cols // 100, 1), replace=False)] *= 20  # outlier channels
    S = np.abs(W) * norm
    k = cols // 2
    half = W.size // 2
    magnitude = np.abs(W) <= np.partition(np.abs(W).ravel(), half - 1)[half - 1]
    wanda = S <= np.partition(S, k - 1, axis=1)[:, k - 1 : k]
    groups = S.reshape(rows, -1, 4)  # 2:4 on the Wanda score: the 2 lowest of every 4 go
    nm = (groups.argsort(-1).argsort(-1) < 2).reshape(rows, cols)
    row_g = rng.lognormal(0, 0.8, (rows, 1)).astype(np.float32)
    grad = np.abs(rng.standard_normal((rows, cols), dtype=np.float32)) * row_g * norm**0.5 * 1e-3
    gblm = S + np.abs(W) * grad * 300
    gblm_mask = gblm <= np.partition(gblm, k - 1, axis=1)[:, k - 1 : k]
    return {
        "W": W,
        "S": S,
        "grad": grad,
        "gblm": gblm,
        "magnitude": magnitude,
        "wanda": wanda,
        "nm": nm,
        "gblm_mask": gblm_mask,
    }


def rose_stats(S: np.ndarray, ratio: float = 0.5, blocksize: int = 128):
    """ROSE's pre-pruning losses (algorithms.md §5): column losses, block losses, ρ, order."""
    cols = S.shape[1]
    col_loss = np.zeros(cols, np.float64)
    for b in range(0, cols, blocksize):
        blk = S[:, b : b + blocksize]
        t = np.sort(blk, axis=None)[int(blk.size * ratio)]
        col_loss[b : b + blocksize] = (blk * (blk <= t)).sum(0)
    beta = np.add.reduceat(col_loss, np.arange(0, cols, blocksize))
    rho = float((beta.max() - beta.min()) / beta.max())
    blocks = np.argsort(-beta, kind="stable") if rho > 0.5 else np.arange(beta.size)
    order = (
        np.concatenate(
            [
                b * blocksize + np.argsort(-col_loss[b * blocksize : (b + 1) * blocksize])
                for b in blocks
            ]
        )
        if rho > 0.5
        else np.arange(cols)
    )
    return col_loss, beta, rho, order


def model_values(rng) -> dict[str, dict]:
    """Per-layer values of a 30-block model, shaped like what the runner reports."""
    names = [f"{b}.{t}" for b in range(30) for t in LINEARS]
    depth = {n: int(n.split(".")[0]) / 29 for n in names}
    err = {
        n: float(0.02 * (1 + 4 * depth[n]) * (3 if "down" in n else 1) * rng.lognormal(0, 0.3))
        for n in names
    }
    rho = {n: float(np.clip(rng.normal(0.75 if "o_proj" in n else 0.4, 0.15), 0, 1)) for n in names}
    traces = {
        n: list(np.minimum.accumulate(1 - np.cumsum(rng.random(40) * 0.01 * (1 + depth[n]))))
        for n in names
    }
    return {
        "sparsity": {n: 0.5 for n in names},
        "owl": {n: float(0.5 + 0.15 * (depth[n] - 0.5)) for n in names},
        "error": err,
        "rho": rho,
        "reordered": {n: r > 0.5 for n, r in rho.items()},
        "ratio": {n: float(rng.normal(0.93 if rho[n] > 0.5 else 1.0, 0.02)) for n in names},
        "traces": {n: [float(x) * (1 + 10 * depth[n]) for x in v] for n, v in traces.items()},
        "reduction": {n: float(100 * (1 - v[-1] / v[0])) for n, v in traces.items()},
        "swaps": {n: int(rng.poisson(40 + 200 * depth[n])) for n in names},
    }


def figures(rows: int, cols: int, seed: int = 0) -> dict:
    """name -> a call that builds the figure from the synthetic data made here."""
    rng = np.random.default_rng(seed)
    L, M = layer(rng, rows, cols), model_values(rng)
    columnar = np.repeat(rng.lognormal(0, 0.6, -(-cols // 128)), 128)[:cols]  # o_proj-like
    col_loss, beta, rho, order = rose_stats(L["S"] * columnar.astype(np.float32))
    blocks = [float(0.01 * 1.12**b * rng.lognormal(0, 0.2)) for b in range(30)]
    before = [float(0.02 * 1.1**b * rng.lognormal(0, 0.2)) for b in range(60)]
    curve = {
        m: [(s, d * np.exp(k * s**3)) for s in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)]
        for m, d, k in (("magnitude", 17.8, 12.0), ("wanda", 17.6, 6.0), ("sparsegpt", 17.6, 4.5))
    }
    structure = {
        m: {t.split(".")[-1]: float(v * rng.lognormal(0, 0.2)) for t in LINEARS}
        for m, v in (("magnitude", 1.05), ("wanda", 1.6), ("gblm", 2.4))
    }
    return {
        "model_map_sparsity": lambda: viz.model_map(M["owl"], metric="sparsity"),
        "model_map_error": lambda: viz.model_map(M["error"], metric="error"),
        "mask_overview": lambda: viz.mask_overview(
            L["wanda"], title="Wanda 50%: kept fraction per tile"
        ),
        "mask_tile_2of4": lambda: viz.mask_tile(L["nm"], row0=8, col0=16, nm=(2, 4), score=L["S"]),
        "mask_profiles": lambda: viz.mask_profiles(
            L["gblm_mask"], label="gblm", others={"wanda": L["wanda"]}
        ),
        "score_histogram_wanda": lambda: viz.score_histogram(L["S"], L["wanda"]),
        "score_histogram_magnitude": lambda: viz.score_histogram(np.abs(L["W"]), L["magnitude"]),
        "mask_diff": lambda: viz.mask_diff(
            L["wanda"], L["magnitude"], labels=("wanda", "magnitude")
        ),
        "mask_diff_window": lambda: viz.mask_diff(
            L["wanda"], L["magnitude"], labels=("wanda", "magnitude"), window=(0, 0, 32, 64)
        ),
        "agreement_matrix": lambda: viz.agreement_matrix(
            {
                "magnitude": L["magnitude"],
                "wanda": L["wanda"],
                "wanda 2:4": L["nm"],
                "gblm": L["gblm_mask"],
                "random": rng.random((rows, cols)) < 0.5,
            }
        ),
        "block_errors": lambda: viz.block_errors(
            {
                "magnitude": [b * 3 for b in blocks],
                "wanda": blocks,
                "sparsegpt": [b * 0.7 for b in blocks],
            }
        ),
        "perplexity_bars": lambda: viz.perplexity_bars(
            17.6,
            {"magnitude 50%": 141.0, "wanda 50%": 31.2, "sparsegpt 50%": 27.9, "wanda 2:4": 64.5},
        ),
        "sparsity_sweep": lambda: viz.sparsity_sweep(curve, dense=17.6),
        "rose_columns": lambda: viz.rose_columns(col_loss),
        "rose_blocks": lambda: viz.rose_blocks(beta, rho),
        "rose_order": lambda: viz.rose_order(order),
        "rose_model": lambda: viz.rose_model(M["rho"], M["reordered"]),
        "rose_error_ratio": lambda: viz.rose_error_ratio(M["ratio"]),
        "grad_heatmap": lambda: viz.grad_heatmap(L["grad"]),
        "score_terms": lambda: viz.score_terms(L["S"], L["gblm"] - L["S"]),
        "structure_bars": lambda: viz.structure_bars(structure),
        "swap_trace": lambda: viz.swap_trace(M["traces"]),
        "error_reduction": lambda: viz.error_reduction(M["reduction"]),
        "barber_swaps": lambda: viz.barber_swaps(M["swaps"]),
        "barber_block_loss": lambda: viz.barber_block_loss(before, [b * 0.85 for b in before]),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--rows", type=int, default=576)
    p.add_argument("--cols", type=int, default=1536)
    p.add_argument("--payload-only", action="store_true", help="print sizes, write no PNG")
    args = p.parse_args()
    calls = figures(args.rows, args.cols)
    print(f"{len(calls)} figures, {args.rows}×{args.cols} layer\n{'figure':28s} payload   build")
    figs = {}
    for name, call in calls.items():
        start = time.perf_counter()
        figs[name] = call()
        seconds = time.perf_counter() - start
        print(f"{name:28s} {len(figs[name].to_json()) / 1e3:7.1f} kB {seconds:6.2f} s")
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.payload_only:  # one Chromium session for all of them
        import plotly.io as pio

        pio.write_images(
            list(figs.values()),
            [args.out / f"{n}.png" for n in figs],
            width=900,
            height=[f.layout.height or 520 for f in figs.values()],
        )
        print(f"PNGs in {args.out}")


if __name__ == "__main__":
    main()
