"""What the benchmark scripts share: timing a call, and writing the results file."""

from __future__ import annotations

import json
import time
from pathlib import Path


def timed(fn):
    """(seconds, fn()) by the wall clock."""
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def write_result(path: Path, result: dict) -> None:
    """The results as indented JSON at `path` (folders made as needed), and a line saying so."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")
