"""Command line: `python -m pruning --method wanda,sparsegpt --sparsity 0.5,2:4`.

Loads a model once, measures dense perplexity, then prunes a fresh copy for every method × sparsity
and prints one table. Bad input exits with status 2 and a one-line message.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import json
import sys
import time
from pathlib import Path

import torch

from . import METHODS, Sparsity, collect_dense_stats, needs_of, prune_model
from .data import SOURCES, calibration_windows, evaluation_tokens
from .evaluate import overall_sparsity, perplexity
from .export import MASKS_FILE, layer_rows, model_card, write_masks, write_model, write_report
from .gradients import NORMS
from .models import BUNDLED, load_model
from .types import PruneRun


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pruning", description=__doc__.splitlines()[0])
    p.add_argument("--model", default=BUNDLED, help="'bundled' (offline), a hub id or a folder")
    p.add_argument("--method", default="wanda", help=f"comma list of {', '.join(METHODS)}")
    p.add_argument("--sparsity", default="0.5", help="comma list: 0.5, 60%%, 2:4, 4:8 …")
    p.add_argument("--mode", default="sequential", choices=("sequential", "dense"))
    p.add_argument("--data", default="bundled", choices=SOURCES, help="calibration data")
    p.add_argument("--text-file", help="calibrate on this text file instead of --data")
    p.add_argument("--eval-data", default="bundled", choices=SOURCES)
    p.add_argument("--eval-file", help="evaluate on this text file instead of --eval-data")
    p.add_argument("--nsamples", type=int, default=32, help="calibration windows")
    p.add_argument("--seqlen", type=int, default=256, help="tokens per window (calib and eval)")
    p.add_argument("--eval-tokens", type=int, default=16384, help="0: the whole evaluation text")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 … or auto")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument(
        "--dtype",
        default="auto",
        choices=("auto", "float16", "bfloat16", "float32"),
        help="the model's dtype (auto: float16 on CUDA, float32 on the CPU); statistics are float32",
    )
    p.add_argument(
        "--tf32", action="store_true", help="CUDA: tensor cores (TF32) for the Hessian products"
    )
    p.add_argument(
        "--warm-start",
        metavar="METHOD",
        help="sparseswaps, barber: the method whose mask they refine (default wanda)",
    )
    p.add_argument(
        "--grad-norm", default="l2", choices=NORMS, help="gblm: gradient norm over the windows"
    )
    p.add_argument(
        "-o",
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="method option, e.g. -o percdamp=0.1 -o group=row",
    )
    p.add_argument("--save", type=Path, help="write the pruned model here (one run only)")
    p.add_argument("--json", type=Path, help="write the results table as JSON")
    return p


def _value(text: str) -> int | float | str:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _options(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"options look like KEY=VALUE, got {item!r}")
        out[key.strip()] = _value(value.strip())
    return out


def _read(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        return Path(path).read_text()
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror}") from e


def run(args: argparse.Namespace) -> list[dict]:
    methods = [m.strip() for m in args.method.split(",") if m.strip()]
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"unknown method {m!r}; choose one of {', '.join(METHODS)}")
    targets = [Sparsity.parse(s) for s in args.sparsity.split(",") if s.strip()]
    hparams = _options(args.option)
    options = {m: dict(hparams) for m in methods}  # --warm-start goes to the methods taking one
    if args.warm_start is not None:
        if not any(_warm_default(m) for m in methods):
            refiners = ", ".join(m for m in METHODS if _warm_default(m))
            raise ValueError(f"--warm-start needs a method that refines a mask: {refiners}")
        for m in methods:
            if _warm_default(m):
                options[m]["warm_start"] = args.warm_start
    if args.save and len(methods) * len(targets) != 1:
        raise ValueError("--save takes a single method and a single sparsity")
    device = (
        args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    )

    t0 = time.perf_counter()
    dtype = None if args.dtype == "auto" else getattr(torch, args.dtype)
    model, tokenizer = load_model(args.model, device=device, dtype=dtype)
    load_s = time.perf_counter() - t0
    max_len = getattr(model.config, "max_position_embeddings", None)
    if max_len and args.seqlen > max_len:
        raise ValueError(f"--seqlen {args.seqlen} is longer than the model's {max_len} positions")
    needs = frozenset().union(*(needs_of(m, options[m]) for m in methods))
    windows = None
    if needs or any(METHODS[m].refine for m in methods):
        windows = calibration_windows(
            tokenizer, args.data, args.nsamples, args.seqlen, args.seed, text=_read(args.text_file)
        )
    eval_ids = evaluation_tokens(
        tokenizer, args.eval_data, max_tokens=args.eval_tokens or None, text=_read(args.eval_file)
    )
    t0 = time.perf_counter()
    dense_ppl = perplexity(model, eval_ids, args.seqlen, batch_size=args.batch_size)
    rows = [
        {
            "method": "dense",
            "sparsity": "0%",
            "mode": "-",
            "achieved": overall_sparsity(model),
            "dense_ppl": dense_ppl,
            "ppl": dense_ppl,
            "load_s": load_s,
            "calibrate_s": 0.0,
            "prune_s": 0.0,
            "eval_s": time.perf_counter() - t0,
        }
    ]
    dense_stats = None
    if args.mode == "dense" and needs:
        dense_stats = collect_dense_stats(
            model,
            windows,
            needs,
            batch_size=args.batch_size,
            grad_norm=args.grad_norm,
            tf32=args.tf32,
        )
    for method in methods:
        for target in targets:
            pruned = copy.deepcopy(model)  # never prune the loaded dense model
            result = prune_model(
                pruned,
                windows,
                method,
                target,
                mode=args.mode,
                dense_stats=dense_stats,
                batch_size=args.batch_size,
                grad_norm=args.grad_norm,
                tf32=args.tf32,
                **options[method],
            )
            t0 = time.perf_counter()
            ppl = perplexity(pruned, eval_ids, args.seqlen, batch_size=args.batch_size)
            calibrate_s = result.seconds["calibrate"] + (dense_stats.seconds if dense_stats else 0)
            rows.append(
                {
                    "method": method,
                    "sparsity": str(target),
                    "mode": args.mode,
                    "achieved": overall_sparsity(pruned),
                    "dense_ppl": dense_ppl,
                    "ppl": ppl,
                    "load_s": 0.0,
                    "calibrate_s": calibrate_s,
                    "prune_s": result.seconds["prune"],
                    "eval_s": time.perf_counter() - t0,
                    "notes": result.notes,
                }
            )
            if _warm_default(method):
                rows[-1]["warm_start"] = options[method].get("warm_start", _warm_default(method))
            if args.save:
                _save(pruned, tokenizer, args, rows[-1], result)
    return rows


def _save(model, tokenizer, args: argparse.Namespace, row: dict, run: PruneRun) -> None:
    """The pruned model with its card, its masks and the run report, all in args.save."""
    hparams = _options(args.option)
    if "warm_start" in row:
        hparams["warm_start"] = row["warm_start"]
    method = row["method"]
    calibration = {
        "data": args.text_file or args.data,
        "nsamples": args.nsamples,
        "seqlen": args.seqlen,
        "seed": args.seed,
    }
    if not (needs_of(method, hparams) or METHODS[method].refine):
        calibration = None  # magnitude reads no data
    meta = {
        "model": args.model,
        "method": method,
        "sparsity": row["sparsity"],
        "mode": row["mode"],
        "hparams": hparams,
        "calibration": calibration,
        "evaluation": {
            "data": args.eval_file or args.eval_data,
            "tokens": args.eval_tokens,
            "seqlen": args.seqlen,
        },
        "dense_ppl": row["dense_ppl"],
        "ppl": row["ppl"],
        "achieved": row["achieved"],
        "result": row,  # the results-table row: timings and notes too
    }
    write_model(args.save, model, tokenizer, model_card(meta))
    write_masks(
        args.save / MASKS_FILE,
        {name: res.pruned for name, res in run.layers.items()},
        metadata={"method": method, "sparsity": row["sparsity"]},
    )
    write_report(args.save, meta, layer_rows(run))


def _warm_default(method: str) -> str | None:
    """The default warm start of a method that refines another's mask, else None."""
    param = inspect.signature(METHODS[method].prune).parameters.get("warm_start")
    return None if param is None else param.default


def _label(row: dict) -> str:
    return f"{row['method']}({row['warm_start']})" if "warm_start" in row else row["method"]


def table(rows: list[dict]) -> str:
    w = max(11, *(len(_label(r)) for r in rows))
    head = (
        f"{'method':<{w}} {'sparsity':>8} {'mode':>10} {'achieved':>8} {'dense ppl':>10} "
        f"{'pruned ppl':>10} {'load s':>7} {'calib s':>7} {'prune s':>7} {'eval s':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{_label(r):<{w}} {r['sparsity']:>8} {r['mode']:>10} {r['achieved']:>8.4f} "
            f"{r['dense_ppl']:>10.3f} {r['ppl']:>10.3f} {r['load_s']:>7.1f} "
            f"{r['calibrate_s']:>7.1f} {r['prune_s']:>7.2f} {r['eval_s']:>7.1f}"
        )
        lines += [f"  note: {n}" for n in r.get("notes", [])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the table is the output; loading bars are noise
    hf_logging.set_verbosity_error()
    try:
        rows = run(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
