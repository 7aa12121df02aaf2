"""Pruning Lab, the web app: pick a model, a method and a sparsity; see which weights went, why,
and what it cost. Thin by design: handlers turn controls into library calls (`pruning.lab`) and
results into figures (`viz`); no math and no plotting here. Per-session runs live in gr.State.
"""

import inspect
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

import gradio as gr

import viz
from app_text import HONESTY, INTRO, METHOD_HELP, VIEW_HELP
from pruning import METHODS, Sparsity, lab, speed, stepper, structure
from pruning.models import BUNDLED, CURATED

MAX_RUNS = 8  # runs a session keeps (masks cost ~1 byte per weight each); oldest dropped first
SWEEP = (0.1, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9)
PRESETS = lab.PRESETS
_CANCEL: dict[str, threading.Event] = {}  # session -> cancel flag of its running job

try:  # on Hugging Face ZeroGPU Spaces a run gets a GPU for its duration; elsewhere a no-op
    import spaces

    _on_gpu = spaces.GPU(duration=120)
except ImportError:

    def _on_gpu(fn):
        return fn


_run = _on_gpu(lab.run)
_generate = _on_gpu(lab.generate_pair)
_export = _on_gpu(lab.export_run)
_speed = _on_gpu(speed.semi_structured_speedup)
# the controls a share link carries (not the pasted text: links stay short)
SHARED = ("preset", "model", "method", "pattern", "ratio", "nm", "mode", "data", "nsamples")
SHARED += ("seqlen", "seed", "eval_tokens", "options")


# ---- pure helpers (unit-tested) -------------------------------------------------------------
def parse_sparsity(pattern: str, ratio: float, nm: str) -> Sparsity:
    return Sparsity.parse(nm) if pattern == "N:M" else Sparsity(float(ratio))


def method_options(method: str) -> dict:
    """The method's keyword options and their defaults."""
    params = inspect.signature(METHODS[method].prune).parameters.values()
    scalar = (bool, int, float, str)  # tensors (ROSE's order) are not typed into a text box
    return {
        p.name: p.default
        for p in params
        if p.kind is inspect.Parameter.KEYWORD_ONLY and isinstance(p.default, scalar)
    }


def parse_options(method: str, text: str) -> dict:
    """'blocksize=128, percdamp=0.01' → dict, typed like the defaults; unknown keys are errors."""
    defaults, out = method_options(method), {}
    for item in filter(None, (s.strip() for s in (text or "").replace("\n", ",").split(","))):
        key, sep, value = (s.strip() for s in item.partition("="))
        if not sep or key not in defaults:
            known = ", ".join(defaults) or "none"
            raise ValueError(f"{method} has no option {item!r}; its options: {known}")
        kind = type(defaults[key]) if defaults[key] is not None else str
        out[key] = (value.lower() in ("1", "true", "yes")) if kind is bool else kind(value)
    return {k: v for k, v in out.items() if v != defaults[k]}


def format_options(method: str) -> str:
    return ", ".join(f"{k}={v}" for k, v in method_options(method).items())


def method_note(method: str) -> str:
    m = METHODS[method]
    return (
        f"**{method}**: {m.summary}. *{m.paper}*. Needs: {', '.join(sorted(m.needs)) or 'weights'}."
    )


def _layer(block: float, linear: str) -> str:
    return f"{int(block)}.{linear}"


def _pick(records: dict, label: str | None) -> lab.RunRecord | None:
    return records.get(label) or (list(records.values())[-1] if records else None)


# ---- handlers --------------------------------------------------------------------------------
def _setup(model, data, text, nsamples, seqlen, seed, eval_tokens) -> lab.Setup:
    if data == "my text" and not (text or "").strip():
        raise ValueError("paste some calibration text, or pick another calibration source")
    for name, v, lo in (
        ("windows", nsamples, 1),
        ("seqlen", seqlen, 8),
        ("eval tokens", eval_tokens, 0),
    ):
        if v is None or int(v) < lo or int(v) != v:
            raise ValueError(f"{name} must be a whole number ≥ {lo}, got {v}")
    return lab.Setup(
        model=(model or BUNDLED).strip(),
        data="bundled" if data == "my text" else data,
        text=text if data == "my text" else None,
        nsamples=int(nsamples),
        seqlen=int(seqlen),
        seed=int(seed or 0),
        eval_tokens=int(eval_tokens),
    )


def execute(records, jobs, setup_args, mode, request, progress):
    """Run jobs [(method, sparsity, options)] one after another in a worker thread; yields status.

    A generator so that Cancel can stop it: the worker checks the session's cancel flag at
    every block and stops there."""
    try:
        setup = _setup(*setup_args)
        jobs = [(m, Sparsity.parse(s) if isinstance(s, str) else s, o) for m, s, o in jobs]
    except ValueError as e:
        raise gr.Error(str(e)) from None
    cancel = _CANCEL.setdefault(request.session_hash if request else "-", threading.Event())
    cancel.clear()
    records, done, now, box = dict(records or {}), [], {"step": (0, 1, "loading")}, {}

    def work():
        try:
            for method, sparsity, options in jobs:
                label = f"{method} {sparsity} · {mode}"
                now["job"] = label
                report = lambda i, n, d: now.update(step=(i, n, d))
                rec = _run(
                    setup,
                    method,
                    sparsity,
                    mode=mode,
                    hparams=options,
                    label=label,
                    progress=report,
                    cancel=cancel,
                )
                done.append(rec)
        except BaseException as e:  # noqa: BLE001 (re-raised in the handler's thread)
            box["error"] = e

    worker = threading.Thread(target=work, daemon=True)
    start = time.perf_counter()
    worker.start()
    shown = 0
    try:
        while worker.is_alive():
            i, n, desc = now["step"]
            progress((i, n), desc=f"{now.get('job', '')}: {desc}")
            running = f"Running, {time.perf_counter() - start:.0f} s · {now.get('job', '')}: {desc}"
            count = len(done)  # (read once: the worker may append meanwhile)
            finished, shown = count > shown, count  # a run finished: its result on screen now
            status = "\n".join([running, *_lines(done[:shown])])  # finished runs stay listed
            yield (_keep(records, done[:shown]) if finished else gr.skip()), status
            worker.join(0.5)
    finally:
        if worker.is_alive():  # the page went away, or Cancel was pressed: stop at the next block
            cancel.set()
    records = _keep(records, done)
    err = box.get("error")
    if isinstance(err, lab.Cancelled):
        yield records, f"Cancelled after {time.perf_counter() - start:.0f} s."
        return
    if err is not None:
        msg = str(err) if isinstance(err, ValueError) else f"{type(err).__name__}: {err}"
        kept = f" ({len(done)} run(s) before it were kept)" if done else ""
        yield records, f"Stopped: {msg}{kept}"
        raise gr.Error(msg)
    lines = [f"Done: {len(done)} run(s) in {time.perf_counter() - start:.0f} s.", *_lines(done)]
    yield records, "\n".join(lines)


def _keep(records: dict, runs: list) -> dict:
    """The session's runs with these added (a re-run replaces its namesake), at most MAX_RUNS."""
    records = dict(records)
    for rec in runs:
        records.pop(rec.label, None)
        records[rec.label] = rec
    while len(records) > MAX_RUNS:
        records.pop(next(iter(records)))
    return records


def _lines(runs: list) -> list[str]:
    out = []
    for rec in runs:
        out.append(
            f"- **{rec.label}**: perplexity {rec.dense_ppl:.2f} → {rec.ppl:.2f}, achieved sparsity "
            f"{rec.run.achieved_sparsity():.2%}"
        )
        out += [f"  - note: {n}" for n in rec.run.notes[:5]]
    return out


def run_single(
    records,
    method,
    pattern,
    ratio,
    nm,
    options,
    model,
    data,
    text,
    nsamples,
    seqlen,
    seed,
    eval_tokens,
    mode,
    request: gr.Request,
    progress=gr.Progress(),  # noqa: B008 (gradio injects the tracker)
):
    """The Run button: the controls' method, sparsity and options."""
    try:
        job = [(method, parse_sparsity(pattern, ratio, nm), parse_options(method, options))]
    except ValueError as e:
        raise gr.Error(str(e)) from None
    setup_args = (model, data, text, nsamples, seqlen, seed, eval_tokens)
    yield from execute(records, job, setup_args, mode, request, progress)


def run_preset(
    records,
    preset,
    model,
    data,
    text,
    nsamples,
    seqlen,
    seed,
    eval_tokens,
    mode,
    request: gr.Request,
    progress=gr.Progress(),  # noqa: B008 (gradio injects the tracker)
):
    """A preset: several runs in one click, each with its method's default options."""
    job = [(m, s, {}) for m, s in PRESETS[preset]]
    setup_args = (model, data, text, nsamples, seqlen, seed, eval_tokens)
    yield from execute(records, job, setup_args, mode, request, progress)


def cancel_job(request: gr.Request):
    if request and request.session_hash in _CANCEL:
        _CANCEL[request.session_hash].set()
    return "Cancelling at the next block…"


def results_table(records: dict) -> list[list]:
    return [
        [
            r.label,
            r.setup.model,
            f"{r.run.achieved_sparsity():.4f}",
            round(r.dense_ppl, 3),
            round(r.ppl, 3),
            round(sum(r.seconds.get(k, 0) for k in ("statistics", "prune")), 1),
        ]
        for r in records.values()
    ]


def selectors(records: dict):
    labels = list(records)
    rec = _pick(records, None)
    linears = list(dict.fromkeys(n.split(".", 1)[1] for n in rec.run.layers)) if rec else []
    nblocks = 1 + max(int(n.split(".")[0]) for n in rec.run.layers) if rec else 1
    last = labels[-1] if labels else None
    other = labels[-2] if len(labels) > 1 else last
    return (
        gr.update(choices=labels, value=last),
        gr.update(choices=labels, value=other),
        gr.update(choices=labels, value=last),
        gr.update(maximum=max(nblocks - 1, 0)),
        gr.update(choices=linears, value=linears[0] if linears else None),
        results_table(records),
    )


def render_perplexity(records: dict):
    if not records:
        return None, None
    dense = list(records.values())[-1].dense_ppl
    bars = viz.perplexity_bars(dense, {k: r.ppl for k, r in records.items()})
    errors = viz.block_errors({k: r.block_error for k, r in records.items()}, relative=True)
    return bars, errors


def render_map(records, label, metric):
    rec = _pick(records, label)
    if rec is None:
        return "", None
    if metric == "error" and not rec.layer_error:
        return VIEW_HELP["no_error"], None
    values = rec.layer_error if metric == "error" else rec.run.layer_sparsity()
    what = "achieved sparsity" if metric == "sparsity" else "relative reconstruction error"
    return "", viz.model_map(values, metric=metric, title=f"{rec.label}: {what} of every linear")


def render_layer(records, label, block, linear, row0, col0):
    rec = _pick(records, label)
    if rec is None or linear is None:
        return None, None, None, None, ""
    name = _layer(block, linear)
    res = rec.run.layers[name]
    pruned = res.pruned.numpy()
    nm = rec.run.sparsity.nm
    detail = lab.layer_detail(rec, name)
    score = (
        detail.score[0].float().numpy() if detail is not None and detail.score is not None else None
    )
    r0 = min(int(row0), max(pruned.shape[0] - 32, 0))
    c0 = min(int(col0), max(pruned.shape[1] - 64, 0))
    tile_score = score[r0 : r0 + 32, c0 : c0 + 64] if score is not None else None
    note = f"**{name}** of *{rec.label}*: {tuple(pruned.shape)} (out × in), {pruned.mean():.2%} pruned."
    if score is None:
        note += " " + VIEW_HELP["no_scores"]
    return (
        viz.mask_overview(pruned, title=f"{name} · {rec.label}"),
        viz.mask_tile(pruned, row0=r0, col0=c0, nm=nm, score=tile_score),
        viz.mask_profiles(pruned),
        viz.score_histogram(score, pruned) if score is not None else None,
        note,
    )


def render_compare(records, a, b, block, linear):
    if not records or linear is None or a not in records or b not in records:
        return None, None, VIEW_HELP["compare"]
    name = _layer(block, linear)
    masks = {
        k: r.run.layers[name].pruned.numpy() for k, r in records.items() if name in r.run.layers
    }
    diff = viz.mask_diff(masks[a], masks[b], labels=(a, b))
    return diff, viz.agreement_matrix(masks), f"Layer **{name}**: {a} against {b}."


def render_rose(records, label, block, linear):
    rec = _pick(records, label)
    if rec is None or rec.method != "rose" or linear is None:
        return None, None, None, None, None, VIEW_HELP["rose"]
    name = _layer(block, linear)
    info = rec.run.layers[name].info
    layers = rec.run.layers
    rho = {k: float(v.info["rho"]) for k, v in layers.items()}
    reordered = {k: bool(v.info["reordered"]) for k, v in layers.items()}
    twin = next(
        (
            r
            for r in records.values()
            if r.method == "sparsegpt"
            and r.run.sparsity == rec.run.sparsity
            and r.setup == rec.setup
            and r.run.mode == rec.run.mode
            and r.layer_error
        ),
        None,
    )
    ratio = (
        viz.rose_error_ratio(
            {k: rec.layer_error[k] / max(twin.layer_error[k], 1e-30) for k in rec.layer_error}
        )
        if twin is not None and rec.layer_error
        else None
    )
    note = (
        f"**{name}**: ρ = {float(info['rho']):.3f}, "
        f"{'reordered' if reordered[name] else 'not reordered (ρ ≤ 0.5: SparseGPT order)'}; "
        f"{sum(reordered.values())} of {len(reordered)} layers reordered."
        + ("" if ratio is not None else " " + VIEW_HELP["rose_twin"])
    )
    return (
        viz.rose_columns(info["column_loss"].numpy()),
        viz.rose_blocks(info["block_loss"].numpy(), float(info["rho"])),
        viz.rose_order(layers[name].order.numpy()),
        viz.rose_model(rho, reordered),
        ratio,
        note,
    )


def render_gradients(records, label, block, linear):
    """GBLM's gradients and score terms for the layer; the structure index of every run's masks."""
    if not records or linear is None:
        return None, None, None, None, VIEW_HELP["gblm"]
    name = _layer(block, linear)
    index = structure.structure_table(
        {k: {n: r.pruned for n, r in rec.run.layers.items()} for k, rec in records.items()}
    )
    bars = viz.structure_bars(index)
    rec = _pick(records, label)
    detail = lab.layer_detail(rec, name) if rec.method == "gblm" else None
    if detail is None:
        return None, None, None, bars, VIEW_HELP["gblm"]
    info = {k: v[0].float().numpy() for k, v in detail.info.items()}
    mine = rec.run.layers[name].pruned.numpy()
    twins = {
        k: r.run.layers[name].pruned.numpy()
        for k, r in records.items()
        if r.method == "wanda" and r.run.sparsity == rec.run.sparsity and name in r.run.layers
    }
    note = f"**{name}** of *{rec.label}*: " + VIEW_HELP["gblm_layer"]
    return (
        viz.grad_heatmap(info["grad"]),
        viz.score_terms(info["activation_term"], info["gradient_term"]),
        viz.mask_profiles(mine, others=twins, label=rec.label),
        bars,
        note,
    )


def barber_losses(layers) -> tuple[list[float], list[float]]:
    """One (before, after) loss per rebuilt sub-block (attention, then MLP, of each block): the
    linears of a sub-block carry the same pair, and come in the model's order."""
    pairs = []
    for name, r in layers.items():
        pair = (
            name.split(".")[0],
            float(r.info["block_loss_before"]),
            float(r.info["block_loss_after"]),
        )
        if not pairs or pairs[-1] != pair:
            pairs.append(pair)
    return [p[1] for p in pairs], [p[2] for p in pairs]


def render_refine(records, label, block):
    """SparseSwaps traces and error reductions; LLM-Barber swaps and block losses."""
    rec = _pick(records, label)
    if rec is None or rec.method not in ("sparseswaps", "barber"):
        return None, None, VIEW_HELP["refine"]
    layers = rec.run.layers
    if rec.method == "sparseswaps":
        traces = {
            k: r.info["objective_trace"].tolist()
            for k, r in layers.items()
            if k.startswith(f"{int(block)}.")
        }
        reduction = {k: 100 * float(r.info["error_reduction"]) for k, r in layers.items()}
        mean = sum(reduction.values()) / max(len(reduction), 1)
        note = f"Mean error reduction against the warm start: **{mean:.1f}%** over {len(layers)} layers."
        return viz.swap_trace(traces), viz.error_reduction(reduction), note
    swaps = {k: int(r.info["swaps"]) for k, r in layers.items()}
    before, after = barber_losses(layers)
    note = f"{sum(swaps.values()):,} swaps in all; sparsity and N:M unchanged."
    return viz.barber_swaps(swaps), viz.barber_block_loss(before, after), note


def sweep(
    records,
    model,
    data,
    text,
    nsamples,
    seqlen,
    seed,
    eval_tokens,
    progress=gr.Progress(),  # noqa: B008 (gradio injects the tracker)
):
    """Perplexity against sparsity for every method among this session's runs (dense statistics)."""
    methods = [
        m
        for m in dict.fromkeys(r.method for r in (records or {}).values())
        if METHODS[m].refine is None
    ] or [
        "magnitude",
        "wanda",
    ]
    try:
        setup = _setup(model, data, text, nsamples, seqlen, seed, eval_tokens)
    except ValueError as e:
        raise gr.Error(str(e)) from None
    curves = lab.sweep(setup, methods, SWEEP, progress=lambda i, n, d: progress((i, n), desc=d))
    return viz.sparsity_sweep(curves, dense=lab.dense_perplexity(setup))


# ---- learn, generate, export, share, speed --------------------------------------------------
def stepper_build(
    records, view, block, linear, source, seed, toy_sparsity, algo, blocksize, force, r0=0, c0=0
):
    """Compute the toy's states once (they live in gr.State); the slider then only redraws."""
    rec = _pick(records, view)
    name = _layer(block, linear) if source == "layer on view" else None
    if name and (rec is None or not linear):
        raise gr.Error("run a method first to have a layer on view, or use the random toy")
    try:
        sp = Sparsity.parse(toy_sparsity)
        where = {"row0": int(r0 or 0), "col0": int(c0 or 0)}  # the Layer tab's tile corner
        W, H, what = lab.toy(rec.setup if name else None, name, seed=int(seed or 0), **where)
        order, note = None, ""
        if algo == "ROSE":
            threshold = -1.0 if force else 0.5
            kw = {"blocksize": int(blocksize), "threshold": threshold}
            order, rho, moved = stepper.rose_order(W, H, sp, **kw)
            note = f" ROSE: ρ = {rho:.2f}, " + (
                f"order {' '.join(str(int(j)) for j in order)}"
                if moved
                else "ρ ≤ 0.5 so the natural order (exactly SparseGPT)"
            )
        states = stepper.sparsegpt_steps(W, H, sp, order=order, blocksize=int(blocksize))
        toys = stepper.compare_methods(W, H, sp, blocksize=int(blocksize))
    except ValueError as e:
        raise gr.Error(str(e)) from None
    data = {"states": states, "compare": toys, "what": what + "." + note}
    return (data, gr.update(maximum=len(states) - 1, value=0), *stepper_draw(data, 0))


def stepper_draw(data, step):
    if not data:
        return None, None, None, VIEW_HELP["learn"]
    states, step = data["states"], int(min(max(step or 0, 0), len(data["states"]) - 1))
    s = states[step]
    zmax = float(abs(states[0].weight).max())
    trace = stepper.error_trace(states)
    if step == 0:
        line = "Step 0: nothing pruned yet. Move the slider."
    else:
        line = (
            f"Step {step}: column {s.column} processed; {int(s.new.sum())} weight(s) pruned here, "
            f"error {s.error:.4g} (running total {s.total:.4g}); the update moved the "
            f"{int((~s.processed).sum())} columns not yet processed."
        )
    return (
        viz.stepper_state(s, zmax=zmax),
        viz.stepper_errors(**trace, current=step or None),
        viz.stepper_compare(data["compare"], weight=states[0].weight),
        f"{data['what']}\n\n{line}",
    )


def generate(records, view, prompt, max_new, progress=gr.Progress()):  # noqa: B008
    rec = _pick(records, view)
    if rec is None:
        raise gr.Error(
            "run a method first: generation compares its pruned model with the dense one"
        )
    report = lambda i, n, d: progress((i, n), desc=f"rebuilding {rec.label}: {d}")
    try:
        dense, pruned = _generate(rec, prompt, int(max_new), progress=report)
    except (ValueError, RuntimeError) as e:  # RuntimeError: the rebuild did not match the run
        raise gr.Error(str(e)) from None
    note = f"*{rec.label}*: perplexity {rec.dense_ppl:.2f} → {rec.ppl:.2f}"
    return dense, pruned, note


def export_files(records, view, progress=gr.Progress()):  # noqa: B008
    rec = _pick(records, view)
    if rec is None:
        raise gr.Error("run a method first: the downloads are the run on view's")
    folder = Path(tempfile.mkdtemp(prefix="pruning-lab-"))
    report = lambda i, n, d: progress((i, n), desc=f"rebuilding {rec.label}: {d}")
    try:
        files = _export(rec, folder, progress=report)
    except (ValueError, RuntimeError, OSError) as e:  # OSError: the disk is full, for one
        raise gr.Error(f"export failed: {e}") from None
    size = sum(p.stat().st_size for p in files.values()) / 2**20
    note = f"*{rec.label}*: {', '.join(p.name for p in files.values())} ({size:.0f} MB in all)."
    return [str(p) for p in files.values()], note


def share_query(*values) -> str:
    """The query string of a share link: every shared control's value."""
    return "?" + urlencode({k: v for k, v in zip(SHARED, values) if v not in (None, "")})


def restore(request: gr.Request):
    """Controls from a share link's query parameters; values that do not parse are skipped and
    named in the status."""
    params = dict(request.query_params) if request else {}
    values, bad = {}, []
    for key in SHARED:
        if key in params:
            try:
                values[key] = _shared_value(key, params[key])
            except (ValueError, KeyError):
                bad.append(key)
    out = {k: gr.update(value=v) for k, v in values.items()}
    if "pattern" in values:  # the pattern shows the ratio slider or the N:M box
        nm_pattern = values["pattern"] == "N:M"
        out["nm"] = gr.update(
            visible=nm_pattern, **({"value": values["nm"]} if "nm" in values else {})
        )
        out["ratio"] = gr.update(
            visible=not nm_pattern, **({"value": values["ratio"]} if "ratio" in values else {})
        )
    note = method_note(values["method"]) if "method" in values else gr.skip()
    if not params:
        msg = gr.skip()
    elif bad:
        msg = f"Restored from the link, except: {', '.join(bad)} (not valid values)."
    else:
        msg = "Controls restored from the link: press **Run** (or **Run preset**)."
    return (*(out.get(k, gr.skip()) for k in SHARED), note, msg)


def _shared_value(key: str, value: str):
    if key == "preset":
        return PRESETS[value] and value
    if key == "method":
        return METHODS[value] and value
    if key in ("nsamples", "seqlen", "seed", "eval_tokens"):
        return int(value)
    if key == "ratio":
        Sparsity(float(value))  # in [0, 1)
        return float(value)
    if key == "pattern" and value not in ("unstructured", "N:M"):
        raise ValueError(value)
    if key == "mode" and value not in ("dense", "sequential"):
        raise ValueError(value)
    return value


def measure_speed(records, view):
    """The 2:4 speed panel: semi-structured sparse against dense matmuls at the model's shapes."""
    rec = _pick(records, view)
    dense, _ = lab.dense_model(rec.setup if rec else lab.Setup())
    shapes = speed.linear_shapes(dense)  # one forward's worth of the model's linears
    try:
        return speed.honest_note(_speed(shapes))
    except ValueError as e:
        return f"Not measured: {e}"


# ---- layout ----------------------------------------------------------------------------------
def build_demo() -> gr.Blocks:
    methods = list(METHODS)
    with gr.Blocks(title="Pruning Lab") as demo:
        gr.Markdown(INTRO)
        records = gr.State({})
        with gr.Row():
            with gr.Column(scale=1, min_width=330):
                preset = gr.Dropdown(list(PRESETS), value=next(iter(PRESETS)), label="Preset")
                preset_btn = gr.Button("Run preset", variant="primary")
                model = gr.Dropdown(
                    [BUNDLED, *CURATED],
                    value=BUNDLED,
                    label="Model",
                    allow_custom_value=True,
                    info="bundled works offline",
                )
                method = gr.Dropdown(methods, value="wanda", label="Method")
                note = gr.Markdown(method_note("wanda"))
                pattern = gr.Radio(["unstructured", "N:M"], value="unstructured", label="Pattern")
                ratio = gr.Slider(0.0, 0.95, value=0.5, step=0.05, label="Sparsity")
                nm = gr.Textbox("2:4", label="N:M (prune N of every M inputs)", visible=False)
                mode = gr.Radio(
                    ["dense", "sequential"],
                    value="dense",
                    label="Statistics",
                    info="dense: cached, seconds per run · sequential: the papers' protocol",
                )
                with gr.Accordion("Calibration and evaluation", open=False):
                    data = gr.Dropdown(
                        ["bundled", "wikitext2", "c4", "my text"],
                        value="bundled",
                        label="Calibration data",
                    )
                    text = gr.Textbox(
                        lines=3, label="My text", placeholder="paste calibration text"
                    )
                    nsamples = gr.Number(32, precision=0, label="Windows")
                    seqlen = gr.Number(256, precision=0, label="Tokens per window")
                    seed = gr.Number(0, precision=0, label="Seed")
                    eval_tokens = gr.Number(2048, precision=0, label="Evaluation tokens (0: all)")
                with gr.Accordion("Method options", open=False):
                    options = gr.Textbox(format_options("wanda"), label="key=value, …")
                with gr.Row():
                    run_btn = gr.Button("Run", variant="primary")
                    cancel_btn = gr.Button("Cancel", variant="stop")
                status = gr.Markdown(elem_id="status")
            with gr.Column(scale=3):
                with gr.Row():
                    view = gr.Dropdown([], label="Run on view")
                    block = gr.Slider(0, 29, value=0, step=1, label="Block")
                    linear = gr.Dropdown([], label="Linear")
                with gr.Tabs():
                    with gr.Tab("Perplexity"):
                        gr.Markdown(VIEW_HELP["perplexity"])
                        table = gr.Dataframe(
                            headers=[
                                "run",
                                "model",
                                "achieved",
                                "dense ppl",
                                "pruned ppl",
                                "seconds",
                            ],
                            interactive=False,
                            label="Runs of this session",
                        )
                        ppl_plot = gr.Plot(label="Perplexity")
                        err_plot = gr.Plot(label="Block errors")
                        sweep_btn = gr.Button("Sweep sparsity for these methods")
                        sweep_plot = gr.Plot(label="Sweep")
                    with gr.Tab("Model map"):
                        gr.Markdown(VIEW_HELP["map"])
                        metric = gr.Radio(["sparsity", "error"], value="sparsity", label="Colour")
                        map_note = gr.Markdown()
                        map_plot = gr.Plot(label="Model map")
                    with gr.Tab("Layer"):
                        gr.Markdown(VIEW_HELP["layer"])
                        layer_note = gr.Markdown()
                        with gr.Row():
                            row0 = gr.Slider(0, 8192, value=0, step=16, label="Tile row")
                            col0 = gr.Slider(0, 8192, value=0, step=16, label="Tile column")
                        overview = gr.Plot(label="Mask overview")
                        tile = gr.Plot(label="Tile")
                        profiles = gr.Plot(label="Profiles")
                        hist = gr.Plot(label="Scores")
                    with gr.Tab("Compare"):
                        with gr.Row():
                            run_a = gr.Dropdown([], label="Run A")
                            run_b = gr.Dropdown([], label="Run B")
                        cmp_note = gr.Markdown(VIEW_HELP["compare"])
                        diff_plot = gr.Plot(label="A vs B")
                        agree_plot = gr.Plot(label="Agreement")
                    with gr.Tab("ROSE"):
                        rose_note = gr.Markdown(VIEW_HELP["rose"])
                        rose_plots = [
                            gr.Plot(label=x) for x in ("columns", "blocks", "order", "ρ", "ratio")
                        ]
                    with gr.Tab("Gradients"):
                        grad_note = gr.Markdown(VIEW_HELP["gblm"])
                        grad_plots = [
                            gr.Plot(label=x)
                            for x in ("|∇W|", "score terms", "profiles", "structure")
                        ]
                    with gr.Tab("Refine"):
                        refine_note = gr.Markdown(VIEW_HELP["refine"])
                        refine_plots = [gr.Plot(label=x) for x in ("trace", "per layer")]
                    with gr.Tab("Generate"):
                        gr.Markdown(VIEW_HELP["generate"])
                        with gr.Row():
                            prompt = gr.Textbox("The capital of France is", label="Prompt", scale=3)
                            max_new = gr.Slider(8, 128, value=40, step=8, label="New tokens")
                        gen_btn = gr.Button("Generate, dense and pruned")
                        gen_note = gr.Markdown()
                        with gr.Row():
                            gen_dense = gr.Textbox(label="Dense model", lines=6)
                            gen_pruned = gr.Textbox(label="Pruned model", lines=6)
                    with gr.Tab("Learn"):
                        gr.Markdown(VIEW_HELP["learn"])
                        toy_data = gr.State(None)
                        with gr.Row():
                            toy_source = gr.Radio(
                                ["random", "layer on view"], value="random", label="Toy layer"
                            )
                            toy_seed = gr.Number(0, precision=0, label="Seed (random toy)")
                            toy_sparsity = gr.Dropdown(
                                ["50%", "70%", "2:4"], value="50%", label="Toy sparsity"
                            )
                        with gr.Row():
                            toy_algo = gr.Radio(
                                ["SparseGPT", "ROSE"], value="SparseGPT", label="Algorithm"
                            )
                            toy_block = gr.Dropdown(
                                [4, 8, 16], value=4, label="Block (columns per mask choice)"
                            )
                            toy_force = gr.Checkbox(False, label="ROSE: reorder even if ρ ≤ 0.5")
                        toy_btn = gr.Button("Build the toy")
                        toy_step = gr.Slider(0, 16, value=0, step=1, label="Step")
                        toy_note = gr.Markdown()
                        toy_plots = [
                            gr.Plot(label=x) for x in ("state", "error per step", "three ways")
                        ]
                        gr.Markdown("### The methods, exactly")
                        for name, help_text in METHOD_HELP.items():
                            if name in METHODS:
                                with gr.Accordion(name, open=False):
                                    gr.Markdown(help_text)
                    with gr.Tab("Export"):
                        gr.Markdown(VIEW_HELP["export"])
                        export_btn = gr.Button("Prepare the downloads of the run on view")
                        export_note = gr.Markdown()
                        export_out = gr.File(label="Downloads", file_count="multiple")
                        share_btn = gr.Button("Make a share link of the controls")
                        share_box = gr.Textbox(label="Share link", buttons=["copy"])
                    with gr.Tab("About"):
                        gr.Markdown(HONESTY)
                        speed_btn = gr.Button("Measure 2:4 sparse against dense matmuls here")
                        speed_note = gr.Markdown()

        setup_args = [model, data, text, nsamples, seqlen, seed, eval_tokens]
        sel = [view, run_a, run_b, block, linear, table]
        layer_in = [records, view, block, linear, row0, col0]
        layer_out = [overview, tile, profiles, hist, layer_note]

        def refresh(recs, v, a, b, blk, lin, r0, c0, met):
            return (
                *render_perplexity(recs),
                *render_map(recs, v, met),
                *render_layer(recs, v, blk, lin, r0, c0),
                *render_compare(recs, a, b, blk, lin),
                *render_rose(recs, v, blk, lin),
                *render_gradients(recs, v, blk, lin),
                *render_refine(recs, v, blk),
            )

        views_in = [records, view, run_a, run_b, block, linear, row0, col0, metric]
        views_out = [
            ppl_plot,
            err_plot,
            map_note,
            map_plot,
            *layer_out,
            diff_plot,
            agree_plot,
            cmp_note,
            *rose_plots,
            rose_note,
            *grad_plots,
            grad_note,
            *refine_plots,
            refine_note,
        ]

        ev1 = run_btn.click(
            run_single,
            [records, method, pattern, ratio, nm, options, *setup_args, mode],
            [records, status],
            concurrency_limit=1,
            concurrency_id="prune",
        )
        ev2 = preset_btn.click(
            run_preset,
            [records, preset, *setup_args, mode],
            [records, status],
            concurrency_limit=1,
            concurrency_id="prune",
        )
        for ev in (ev1, ev2):
            ev.then(selectors, records, sel).then(refresh, views_in, views_out)
        cancel_btn.click(cancel_job, None, status, cancels=[ev1, ev2])
        # input, not change: a share link sets the method and its options together
        method.input(lambda m: (method_note(m), format_options(m)), method, [note, options])
        pattern.change(
            lambda p: (gr.update(visible=p == "N:M"), gr.update(visible=p != "N:M")),
            pattern,
            [nm, ratio],
        )
        for c in (view, run_a, run_b, block, linear, metric):
            c.input(refresh, views_in, views_out)
        for c in (row0, col0):
            c.release(render_layer, layer_in, layer_out)
        sweep_btn.click(
            sweep, [records, *setup_args], sweep_plot, concurrency_limit=1, concurrency_id="prune"
        )
        toy_in = [records, view, block, linear, toy_source, toy_seed, toy_sparsity, toy_algo]
        toy_btn.click(
            stepper_build,
            [*toy_in, toy_block, toy_force, row0, col0],
            [toy_data, toy_step, *toy_plots, toy_note],
        )
        toy_step.change(stepper_draw, [toy_data, toy_step], [*toy_plots, toy_note])
        heavy = {"concurrency_limit": 1, "concurrency_id": "prune"}
        gen_btn.click(
            generate, [records, view, prompt, max_new], [gen_dense, gen_pruned, gen_note], **heavy
        )
        export_btn.click(export_files, [records, view], [export_out, export_note], **heavy)
        shared = [preset, model, method, pattern, ratio, nm, mode, data, nsamples, seqlen, seed]
        shared += [eval_tokens, options]
        share_btn.click(share_query, shared, share_box).then(
            None,
            share_box,
            share_box,
            js="(q) => window.location.origin + window.location.pathname + q",
        )
        demo.load(restore, None, [*shared, note, status])
        speed_btn.click(measure_speed, [records, view], speed_note, **heavy)
    # views may render while a run works; runs and sweeps share one slot ("prune")
    return demo.queue(default_concurrency_limit=4)


demo = build_demo()

if __name__ == "__main__":
    demo.launch()  # 127.0.0.1:7860 locally; Spaces sets GRADIO_SERVER_NAME
