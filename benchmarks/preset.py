"""The app's default preset through the library calls the app makes (`pruning.lab.run`), without
the web server, on the default device (a GPU when there is one): how long a click takes.

    python -m benchmarks.preset [--device cuda]

Timed in one process: the model load, the preset with nothing else cached (calibration
statistics and dense perplexity made on the way), then again with everything cached, then one more
run at another sparsity (a slider move); each run's phases as the app records them. `benchmarks.app_latency` measures the same through the web app (Gradio).
Writes benchmarks/results/preset.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from benchmarks.common import write_result
from pruning import Sparsity, lab


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results/preset.json")
    args = p.parse_args(argv)
    setup = lab.Setup(device=args.device)
    name, runs = next(iter(lab.PRESETS.items()))
    device = setup.resolved_device()
    r: dict = {"preset": name, "device": device, "threads": torch.get_num_threads()}
    if device.startswith("cuda"):
        r["gpu"] = torch.cuda.get_device_name(0)

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    start = time.perf_counter()
    lab.dense_model(setup)  # the model load (and on a GPU the device's start-up) on its own
    sync()
    r["load_s"] = time.perf_counter() - start
    for key in ("uncached", "cached"):
        start, firsts = time.perf_counter(), []
        for method, target in runs:
            record = lab.run(setup, method, Sparsity.parse(target))
            sync()
            firsts.append(time.perf_counter() - start)
            r[f"{key}_{method}_{target}_ppl"] = record.ppl
            for phase, seconds in record.seconds.items():
                r[f"{key}_{method}_{phase}_s"] = seconds
        r[f"preset_{key}_first_result_s"] = firsts[0]
        r[f"preset_{key}_all_s"] = firsts[-1]
    start = time.perf_counter()
    lab.run(setup, runs[-1][0], Sparsity(0.6))
    sync()
    r["single_run_cached_s"] = time.perf_counter() - start
    print(f"default preset ({name}) through pruning.lab on {r.get('gpu', device)}")
    for key, value in r.items():
        print(f"  {key:<32} {value:8.3f}" if isinstance(value, float) else f"  {key:<32} {value}")
    write_result(args.out, r)
    return r


if __name__ == "__main__":
    main()
