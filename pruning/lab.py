"""The session layer under the app: cached dense models, statistics and perplexities, and one run.

A run = a private copy of the cached dense model → prune_model → perplexity, per-block output error
and (where a Hessian is cached) each layer's relative reconstruction error → a RunRecord that the
app keeps per browser session. The cached dense model is never pruned. Caches are keyed by
everything that determines their content and share one lock, so concurrent sessions can use them.
"""

from __future__ import annotations

import copy
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import Tensor, nn

from . import METHODS, export, needs_of, stepper
from .arch import block_linears, decoder_blocks, get_weight
from .data import calibration_windows, evaluation_tokens
from .evaluate import block_errors, generate, perplexity
from .models import BUNDLED, load_model
from .runner import DenseStats, collect_dense_stats, prune_model, validate
from .types import LayerResult, LayerStats, PruneRun, Sparsity

Progress = Callable[[int, int, str], None]
PRESETS = {  # the app's presets: name -> runs (method, sparsity), each with its default options
    "Wanda vs magnitude at 50%": [("magnitude", "0.5"), ("wanda", "0.5")],
    "SparseGPT vs ROSE at 70%": [("sparsegpt", "0.7"), ("rose", "0.7")],
    "GBLM structure at 50%": [("wanda", "0.5"), ("gblm", "0.5")],
    "2:4 three ways": [("magnitude", "2:4"), ("wanda", "2:4"), ("sparsegpt", "2:4")],
    "Wanda refined by SparseSwaps at 60%": [("wanda", "0.6"), ("sparseswaps", "0.6")],
}
ERROR_WINDOWS = 4  # calibration windows used for the per-block output error of each run


class Cancelled(Exception):
    """Raised inside a run when its cancel event is set (checked at every progress step)."""


@dataclass(frozen=True)
class Setup:
    """Everything that determines the dense model, its calibration statistics and the evaluation."""

    model: str = BUNDLED
    data: str = "bundled"  # bundled | wikitext2 | c4; ignored when text is given
    text: str | None = None  # user calibration text
    nsamples: int = 32
    seqlen: int = 256
    seed: int = 0
    eval_data: str = "bundled"
    eval_text: str | None = None
    eval_tokens: int = 2048
    device: str = "auto"

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        return "cuda" if torch.cuda.is_available() else "cpu"

    def calibration(self) -> tuple:
        dev = self.resolved_device()
        return (self.model, dev, self.data, self.text, self.nsamples, self.seqlen, self.seed)

    def evaluation(self) -> tuple:
        dev = self.resolved_device()
        return (self.model, dev, self.eval_data, self.eval_text, self.eval_tokens, self.seqlen)


@dataclass
class RunRecord:
    """One run as a browser session keeps it: masks and method outputs, no model."""

    label: str
    setup: Setup
    method: str
    hparams: dict
    run: PruneRun
    dense_ppl: float
    ppl: float
    block_error: list[float]  # relative output error of each block on dense inputs
    layer_error: dict[str, float] = field(default_factory=dict)  # tr(ΔW H ΔWᵀ)/tr(W H Wᵀ)
    seconds: dict[str, float] = field(default_factory=dict)


_LOCK = threading.RLock()  # guards the caches; held briefly
_WORK = threading.RLock()  # one heavy job (statistics, pruning, evaluation) at a time
_MODELS: OrderedDict = OrderedDict()  # (name, device) -> (model, tokenizer); at most 1
_STATS: OrderedDict = OrderedDict()  # calibration key -> DenseStats; at most 2
_CACHE: dict = {}  # small values: windows, evaluation tokens, dense perplexities, norms


def _remember(store: OrderedDict, key, value, size: int):
    store[key] = value
    store.move_to_end(key)
    while len(store) > size:
        store.popitem(last=False)
    return value


def dense_model(setup: Setup) -> tuple[nn.Module, object]:
    """The cached dense (model, tokenizer): read-only, never pruned; one model kept at a time."""
    key = (setup.model, setup.resolved_device())
    with _LOCK:
        if key not in _MODELS:
            _MODELS.clear()  # free the previous model before loading the next
            _STATS.clear()
            _CACHE.clear()
            model, tok = load_model(setup.model, device=key[1])
            model.requires_grad_(False)
            _remember(_MODELS, key, (model, tok), 1)
        return _MODELS[key]


def _cached(key, make):
    """_CACHE[key], made on first use (outside the cache lock: making may take seconds)."""
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
    value = make()
    with _LOCK:
        return _CACHE.setdefault(key, value)


def calibration(setup: Setup) -> Tensor:
    """(nsamples, seqlen) calibration windows of the setup."""
    _, tok = dense_model(setup)
    return _cached(
        ("windows", setup.calibration()),
        lambda: calibration_windows(
            tok, setup.data, setup.nsamples, setup.seqlen, setup.seed, text=setup.text
        ),
    )


def dense_stats(
    setup: Setup, needs: frozenset[str], progress: Progress | None = None
) -> DenseStats:
    """Dense statistics with at least `needs`; collected once per calibration setting."""
    key = setup.calibration()
    with _WORK:
        with _LOCK:
            have = _STATS.get(key)
        if have is not None and needs <= have.needs:
            return have
        needs = needs | (have.needs if have is not None else frozenset())
        model, _ = dense_model(setup)
        stats = collect_dense_stats(model, calibration(setup), needs, progress=progress)
        with _LOCK:
            return _remember(_STATS, key, stats, 2)


def dense_perplexity(setup: Setup, progress: Progress | None = None) -> float:
    model, _ = dense_model(setup)

    def make():
        return perplexity(model, evaluation_ids(setup), setup.seqlen, progress=progress)

    return _cached(("ppl", setup.evaluation()), make)


def evaluation_ids(setup: Setup) -> Tensor:
    _, tok = dense_model(setup)
    return _cached(
        ("eval", setup.evaluation()),
        lambda: evaluation_tokens(
            tok, setup.eval_data, max_tokens=setup.eval_tokens or None, text=setup.eval_text
        ),
    )


@torch.no_grad()
def layer_errors(dense: nn.Module, pruned: nn.Module, stats: DenseStats) -> dict[str, float]:
    """Relative reconstruction error of every linear on the dense calibration inputs."""
    out = {}
    for i, (db, pb) in enumerate(zip(decoder_blocks(dense), decoder_blocks(pruned))):
        pruned_linears = block_linears(pruned, pb)
        for name, module in block_linears(dense, db).items():
            H = stats.blocks[i][name].hessian
            W = get_weight(dense, module).float()
            dW = W - get_weight(pruned, pruned_linears[name]).float()
            norm = _cached(
                ("norm", id(stats), i, name), lambda W=W, H=H: float(((W @ H) * W).sum())
            )
            out[f"{i}.{name}"] = float(((dW @ H) * dW).sum()) / max(norm, 1e-30)
    return out


def _prune(setup, method, sparsity, mode, hparams, step, seconds=None, t0=0.0):
    """A private copy of the dense model, pruned: (model, PruneRun). Deterministic for a setting."""
    needs = needs_of(method, hparams)
    windows = calibration(setup) if needs or mode == "sequential" else None
    stats = dense_stats(setup, needs, step) if mode == "dense" and needs else None
    if seconds is not None:
        seconds["statistics"] = time.perf_counter() - t0
    pruned = copy.deepcopy(dense_model(setup)[0])
    result = prune_model(
        pruned, windows, method, sparsity, mode=mode, dense_stats=stats, progress=step, **hparams
    )
    return pruned, result


def run(
    setup: Setup,
    method: str,
    sparsity: Sparsity,
    *,
    mode: str = "dense",
    hparams: dict | None = None,
    label: str | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> RunRecord:
    """Prune a private copy of the setup's dense model and measure it; raises Cancelled."""
    hparams = dict(hparams or {})

    def step(i: int, n: int, desc: str) -> None:
        if cancel is not None and cancel.is_set():
            raise Cancelled("run cancelled")
        if progress:
            progress(i, n, desc)

    seconds = {}
    t0 = time.perf_counter()
    dense, _ = dense_model(setup)
    validate(dense, method, sparsity, mode, hparams)  # bad input fails before any heavy work
    with _WORK:  # one pruning at a time: two runs on two cores only slow each other down
        pruned, result = _prune(setup, method, sparsity, mode, hparams, step, seconds, t0)
        seconds.update(result.seconds)
        t0 = time.perf_counter()
        step(0, 1, "perplexity of the dense model")
        dense_ppl = dense_perplexity(setup, step)
        ppl = perplexity(pruned, evaluation_ids(setup), setup.seqlen, progress=step)
        step(0, 1, "block output errors")
        errors = block_errors(dense, pruned, calibration(setup)[:ERROR_WINDOWS])
        cached = _STATS.get(setup.calibration())
        layer_error = (
            layer_errors(dense, pruned, cached)
            if cached is not None and "hessian" in cached.needs
            else {}
        )
        seconds["evaluate"] = time.perf_counter() - t0
        del pruned
    label = label or f"{method} {sparsity}"
    return RunRecord(
        label, setup, method, hparams, result, dense_ppl, ppl, errors, layer_error, seconds
    )


def layer_detail(record: RunRecord, name: str) -> LayerResult | None:
    """The method's full result (scores, score terms) for one layer, recomputed from the cached
    dense statistics: exact for dense-mode runs (each layer is solved on its own there); None for
    sequential runs, whose statistics came from the pruned predecessors and were not kept."""
    if record.run.mode != "dense":
        return None
    setup = record.setup
    dense, _ = dense_model(setup)
    block, linear = name.split(".", 1)
    module = decoder_blocks(dense)[int(block)].get_submodule(linear)
    W = get_weight(dense, module).unsqueeze(0)
    needs = needs_of(record.method, record.hparams)
    st = LayerStats()
    if needs:
        stats = dense_stats(setup, needs)
        src = replace(stats.blocks[int(block)][linear], grad=stats.grads.get(name))
        batched = {f: getattr(src, f) for f in needs if getattr(src, f, None) is not None}
        st = replace(src, **{f: t.unsqueeze(0) for f, t in batched.items()})
    return METHODS[record.method].prune(W, st, record.run.sparsity, **record.hparams)


def sweep(
    setup: Setup,
    methods: list[str],
    ratios: tuple[float, ...],
    *,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> dict[str, list[tuple[float, float]]]:
    """Perplexity against unstructured sparsity for each method, from cached dense statistics."""
    dense, _ = dense_model(setup)
    curves: dict[str, list[tuple[float, float]]] = {}
    total, done = len(methods) * len(ratios), 0
    for method in methods:
        needs = needs_of(method, {})
        stats = dense_stats(setup, needs) if needs else None
        windows = calibration(setup) if needs else None
        for ratio in ratios:
            if cancel is not None and cancel.is_set():
                raise Cancelled("sweep cancelled")
            if progress:
                progress(done, total, f"sweep: {method} at {ratio:.0%}")
            with _WORK:
                pruned = copy.deepcopy(dense)
                prune_model(
                    pruned, windows, method, Sparsity(ratio), mode="dense", dense_stats=stats
                )
                ppl = perplexity(pruned, evaluation_ids(setup), setup.seqlen)
                del pruned
            curves.setdefault(method, []).append((ratio, ppl))
            done += 1
    return curves


_PRUNED: OrderedDict = OrderedDict()  # the last rebuilt pruned model, for generation and export


def pruned_model(record: RunRecord, progress: Progress | None = None) -> nn.Module:
    """The record's pruned model. Runs keep masks, not models (SparseGPT's and ROSE's updated
    weights would cost a model per run), so it is the same run again: deterministic for the
    setting, and checked against the record's masks. The last one is kept."""
    run_ = record.run
    key = (
        record.setup,
        record.method,
        str(run_.sparsity),
        run_.mode,
        repr(sorted(record.hparams.items())),
    )
    with _LOCK:
        if key in _PRUNED:
            return _PRUNED[key]
    with _WORK:
        step = progress or (lambda i, n, d: None)
        model, result = _prune(
            record.setup, record.method, run_.sparsity, run_.mode, record.hparams, step
        )
        for name, layer in run_.layers.items():
            if not torch.equal(result.layers[name].pruned, layer.pruned):
                raise RuntimeError(f"rebuilding {record.label} gave another mask at {name}")
        with _LOCK:
            _PRUNED.clear()  # one at a time: a model's worth of memory
            return _remember(_PRUNED, key, model, 1)


def generate_pair(
    record: RunRecord, prompt: str, max_new_tokens: int = 40, progress: Progress | None = None
) -> tuple[str, str]:
    """Greedy continuations of the prompt by the dense and the record's pruned model."""
    if not (prompt or "").strip():
        raise ValueError("type a prompt to continue")
    dense, tok = dense_model(record.setup)
    pruned = pruned_model(record, progress)
    with _WORK:
        return generate(dense, tok, prompt, max_new_tokens), generate(
            pruned, tok, prompt, max_new_tokens
        )


def run_meta(record: RunRecord) -> dict:
    """What a model card and a report say about a run."""
    s = record.setup
    return {
        "model": s.model,
        "method": record.method,
        "sparsity": str(record.run.sparsity),
        "mode": record.run.mode,
        "hparams": dict(record.hparams),
        "calibration": {
            "data": "user text" if s.text else s.data,
            "nsamples": s.nsamples,
            "seqlen": s.seqlen,
            "seed": s.seed,
        },
        "evaluation": {
            "data": "user text" if s.eval_text else s.eval_data,
            "tokens": s.eval_tokens,
        },
        "dense_ppl": record.dense_ppl,
        "ppl": record.ppl,
        "achieved": record.run.achieved_sparsity(),
    }


def export_run(
    record: RunRecord, folder: Path, progress: Progress | None = None
) -> dict[str, Path]:
    """The downloads of a run in `folder`: the pruned model as a zip (safetensors, tokenizer, model
    card), its masks (safetensors, uint8, 1 = pruned) and a report (JSON and CSV)."""
    meta = run_meta(record)
    folder.mkdir(parents=True, exist_ok=True)
    masks = {k: v.pruned for k, v in record.run.layers.items()}
    rows = export.layer_rows(record.run, record.layer_error or None)
    json_path, csv_path = export.write_report(folder, meta, rows)
    mask_path = export.write_masks(folder / export.MASKS_FILE, masks)
    model = pruned_model(record, progress)
    _, tok = dense_model(record.setup)
    with _WORK:
        export.write_model(folder / "model", model, tok, export.model_card(meta))
    zipped = export.bundle(folder / "model")
    shutil.rmtree(folder / "model")  # the zip is the download; a model's worth of disk less
    return {
        "model": zipped,
        "masks": mask_path,
        "json": json_path,
        "csv": csv_path,
    }


def toy(
    setup: Setup | None, name: str | None, *, seed: int = 0, row0: int = 0, col0: int = 0
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """An 8×16 toy layer for the stepper: (W, H, description). With a layer name ("3.mlp.up_proj")
    the window of the dense model's weight at (row0, col0) and its dense Hessian (collected once
    per setting, as SparseGPT's); else a seeded random one."""
    if not name:
        W, H = stepper.toy_problem(seed=seed)
        return W, H, f"random 8×16 toy, seed {seed}"
    dense, _ = dense_model(setup)
    block, linear = name.split(".", 1)
    weight = get_weight(dense, decoder_blocks(dense)[int(block)].get_submodule(linear))
    hessian = dense_stats(setup, frozenset({"hessian"})).blocks[int(block)][linear].hessian
    rows, cols = weight.shape
    row0, col0 = min(max(row0, 0), rows - 8), min(max(col0, 0), cols - 16)
    W, H = stepper.toy_problem(
        weight=weight.double(), hessian=hessian.double(), row0=row0, col0=col0
    )
    return W, H, f"{name}, rows {row0}–{row0 + 7}, columns {col0}–{col0 + 15}, dense Hessian"
