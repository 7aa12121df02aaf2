"""Export: everything a user downloads after a run, as plain files.

- the pruned model: `save_pretrained` (safetensors) + tokenizer + a Hugging Face model card;
- the masks: one safetensors file, one uint8 tensor per layer (1 = pruned), (out, in) as the
  methods see the weight (GPT-2's Conv1D stores the transpose);
- a run report: JSON (the run's metadata and one row per layer) and the same rows as CSV;
- a zip of a folder, for a single download button.

Nothing here prunes or evaluates: callers pass the numbers, this module only writes them.
"""

from __future__ import annotations

import csv
import json
import re
import zipfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from . import METHODS
from .models import BUNDLED, BUNDLED_NAME, HUB_TWIN
from .types import PruneRun

MASKS_FORMAT = "pruning-lab-masks/1"
MASKS_FILE = "pruning_masks.safetensors"
REPORT_JSON = "pruning_report.json"
REPORT_CSV = "pruning_report.csv"
CSV_BASE = ("name", "block", "linear", "rows", "cols", "pruned", "sparsity")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # "owner/name", as the hub spells ids
_PPL_NOTE = (
    "Perplexity is token-level over non-overlapping windows; the calibration and evaluation data "
    "change the numbers."
)
_DENSE_NOTE = (
    "**The zeros are stored densely.** This checkpoint is exactly as large as the dense one, and in "
    "plain PyTorch it runs no faster: a zero is multiplied like any other number."
)
_NM_NOTE = (
    "A 2:4 pattern can be accelerated on NVIDIA Ampere or newer GPUs by converting the weights with "
    "`torch.sparse.to_sparse_semi_structured`; this checkpoint does not do so."
)
_STORED = (".safetensors", ".bin", ".gguf", ".zip")  # already dense binary: deflating wastes time


def write_model(path: str | Path, model: nn.Module, tokenizer, card: str) -> Path:
    """Save the model (safetensors), its tokenizer (when given) and README.md (the model card)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)  # transformers ≥ 5 writes safetensors only
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    (path / "README.md").write_text(card, encoding="utf-8")
    return path


def base_model(model: str) -> str | None:
    """The hub id a run started from, or None for a local folder (the bundled model maps to its
    hub original, of which it is a 4-bit dequantized copy)."""
    if model in (BUNDLED, BUNDLED_NAME):
        return HUB_TWIN
    if _HUB_ID.match(model) and not Path(model).exists():
        return model
    return None


def _pattern(sparsity: str) -> str:
    """Human words for a sparsity label: '2:4' → N:M, '50%' → unstructured."""
    if ":" in sparsity:
        n, m = sparsity.split(":")
        return f"{n}:{m} semi-structured ({n} of every {m} consecutive inputs of each row pruned)"
    return "unstructured"


def _front_matter(meta: dict) -> str:
    """YAML front matter; every value is written as JSON, which YAML reads as the same value."""
    fields = {
        "library_name": "transformers",
        "pipeline_tag": "text-generation",
        "tags": ["pruning", "pruning-lab", meta["method"]],
    }
    base = base_model(str(meta["model"]))
    if base:
        fields["base_model"] = base
    body = "\n".join(f"{key}: {json.dumps(value)}" for key, value in fields.items())
    return f"---\n{body}\n---\n"


def _calibration_line(calibration: dict | None) -> str:
    if not calibration or calibration.get("data") is None:
        return "none (this method reads no data)"
    c = calibration
    return f"{c['data']}, {c['nsamples']} windows × {c['seqlen']} tokens, seed {c.get('seed', '-')}"


def _evaluation_line(evaluation: dict | None) -> str:
    if not evaluation:
        return "not evaluated"
    tokens = evaluation.get("tokens") or "all"
    windows = f", {evaluation['seqlen']}-token windows" if evaluation.get("seqlen") else ""
    return f"{evaluation['data']}, {tokens} tokens{windows}"


def _number(value, spec: str) -> str:
    """A number formatted ('inf' and 'nan' as such), or '-' when missing."""
    return "-" if value is None else format(float(value), spec)


def model_card(meta: dict) -> str:
    """A Hugging Face model card (README.md) for a pruned model.

    meta: model, method, sparsity ("50%", "2:4"), mode, hparams (dict), calibration (data,
    nsamples, seqlen, seed), evaluation (data, tokens, optional seqlen), dense_ppl, ppl,
    achieved (fraction), optional warm_start.
    """
    method, sparsity = meta["method"], str(meta["sparsity"])
    paper = METHODS[method].paper if method in METHODS else ""
    hparams = dict(meta.get("hparams") or {})
    if meta.get("warm_start"):
        hparams.setdefault("warm_start", meta["warm_start"])
    options = ", ".join(f"`{k}={v}`" for k, v in sorted(hparams.items())) or "defaults"
    model = str(meta["model"])
    bundled = model in (BUNDLED, BUNDLED_NAME)
    title = HUB_TWIN.split("/")[-1] if bundled else model
    source = f"{HUB_TWIN} (the bundled copy, dequantized from Q4_1 GGUF)" if bundled else model
    dense_ppl, ppl = _number(meta.get("dense_ppl"), ".3f"), _number(meta.get("ppl"), ".3f")
    lines = [
        _front_matter(meta),
        f"# {title} pruned with {method} ({sparsity})",
        "",
        "Pruned one-shot (no retraining) with Pruning Lab.",
        "",
        f"- **base model:** {source}",
        f"- **method:** {method}" + (f" ({paper})" if paper else ""),
        f"- **target sparsity:** {sparsity} of every prunable decoder linear",
        f"- **achieved sparsity** (decoder linears): {_number(meta.get('achieved'), '.4f')}",
        f"- **pattern:** {_pattern(sparsity)}",
        f"- **statistics mode:** {meta.get('mode', '-')}",
        f"- **method options:** {options}",
        f"- **calibration:** {_calibration_line(meta.get('calibration'))}",
        f"- **evaluation:** {_evaluation_line(meta.get('evaluation'))}",
        f"- **perplexity:** dense {dense_ppl}, pruned {ppl}",
        "",
        _PPL_NOTE,
        "",
        _DENSE_NOTE,
    ]
    if ":" in sparsity:
        lines += ["", _NM_NOTE]
    return "\n".join(lines) + "\n"


def write_masks(
    path: str | Path, masks: dict[str, Tensor], metadata: dict[str, str] | None = None
) -> Path:
    """One safetensors file: per layer name ("3.mlp.down_proj") a uint8 tensor, 1 = pruned.

    metadata: extra string fields for the file header (method, sparsity, …).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: pruned.to(torch.uint8).cpu().contiguous() for name, pruned in masks.items()}
    header = {
        **(metadata or {}),
        "format": MASKS_FORMAT,
        "convention": "1 = pruned",
        "layers": json.dumps(list(tensors)),  # safetensors sorts its keys; this keeps model order
    }
    save_file(tensors, str(path), metadata={k: str(v) for k, v in header.items()})
    return path


def read_masks(path: str | Path) -> dict[str, Tensor]:
    """The masks written by write_masks, as bool tensors (True = pruned), in the written order."""
    with safe_open(str(path), framework="pt") as f:
        header = f.metadata() or {}
        if header.get("format") != MASKS_FORMAT:
            raise ValueError(
                f"{path} is not a Pruning Lab masks file (format {header.get('format')})"
            )
        names = json.loads(header["layers"]) if "layers" in header else list(f.keys())
        return {name: f.get_tensor(name).bool() for name in names}


def layer_rows(run: PruneRun, errors: dict[str, float] | None = None) -> dict[str, dict]:
    """Per-layer rows, block by block (linears in the run's order): name, block, linear, rows,
    cols, pruned count, sparsity, and where known `error` (relative reconstruction error, from
    `errors`) and `loss` (the method's summed per-row loss estimate)."""
    linear_rank: dict[str, int] = {}
    for name in run.layers:  # dense-mode runs list a linear type across all blocks at once
        linear_rank.setdefault(name.partition(".")[2], len(linear_rank))

    def position(name: str) -> tuple[int, int]:
        block, _, linear = name.partition(".")
        return int(block), linear_rank[linear]

    rows = {}
    for name in sorted(run.layers, key=position):
        res = run.layers[name]
        block, _, linear = name.partition(".")
        n_pruned = int(res.pruned.sum())
        row = {
            "name": name,
            "block": int(block),
            "linear": linear,
            "rows": res.pruned.shape[-2],
            "cols": res.pruned.shape[-1],
            "pruned": n_pruned,
            "sparsity": n_pruned / max(res.pruned.numel(), 1),
        }
        if errors is not None and name in errors:
            row["error"] = float(errors[name])
        if res.loss is not None:
            row["loss"] = float(res.loss.double().sum())
        rows[name] = row
    return rows


def _plain(value):
    """json.dumps fallback: paths as text, 0-d tensors as numbers; anything else is a bug."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Tensor) and value.numel() == 1:
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to the JSON report")


def csv_columns(layers: dict[str, dict]) -> list[str]:
    """The base columns, then every other numeric key of any row, sorted (a stable order)."""
    extra = {
        key
        for row in layers.values()
        for key, value in row.items()
        if key not in CSV_BASE and isinstance(value, (int, float)) and not isinstance(value, bool)
    }
    return [*CSV_BASE, *sorted(extra)]


def write_report(folder: str | Path, meta: dict, layers: dict[str, dict]) -> tuple[Path, Path]:
    """pruning_report.json (meta plus `layers`, the per-layer rows) and pruning_report.csv (one
    row per layer, columns from csv_columns; a missing value is an empty cell)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = folder / REPORT_JSON, folder / REPORT_CSV
    report = {**meta, "layers": list(layers.values())}
    json_path.write_text(json.dumps(report, indent=2, default=_plain), encoding="utf-8")
    columns = csv_columns(layers)
    with csv_path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(layers.values())
    return json_path, csv_path


def bundle(folder: str | Path, out: str | Path | None = None) -> Path:
    """Zip a folder (default: <dir>.zip beside it), entries under the folder's name. Files are
    streamed from disk; text is deflated, safetensors and other binaries are stored as is."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"bundle needs a folder, got {folder}")
    out = Path(out) if out is not None else folder.with_name(folder.name + ".zip")
    with zipfile.ZipFile(out, "w") as zf:
        for file in sorted(p for p in folder.rglob("*") if p.is_file()):
            if file.resolve() == out.resolve():
                continue
            method = zipfile.ZIP_STORED if file.suffix in _STORED else zipfile.ZIP_DEFLATED
            arcname = Path(folder.name) / file.relative_to(folder)
            zf.write(file, arcname.as_posix(), compress_type=method)
    return out
