"""Click to result in the app, as a browser session sees it (product.md §5: the default preset's
first result on screen ≤ 30 s on a 2-core CPU with statistics cached).

    python -m benchmarks.app_latency

Starts the app in this process on a free port and drives it with gradio_client, the way the page's
buttons call it: the default preset in a fresh process (nothing cached: model, calibration
statistics and dense perplexity are made on the way), the same preset again (cached), and a single
Run at another sparsity (what moving the slider costs). For the preset, the time until its first
run's perplexity is in the status (each run's result goes on screen as it finishes) and until all
are. Writes benchmarks/results/app.json.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import torch
from gradio_client import Client

import app
from benchmarks.common import write_result

SETTINGS = {
    "model": "bundled",
    "data": "bundled",
    "text": "",
    "nsamples": 32,
    "seqlen": 256,
    "seed": 0,
}
SETTINGS.update(eval_tokens=2048, mode="dense")  # the app's defaults


def main() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo = app.build_demo()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    client = Client(f"http://127.0.0.1:{port}/", verbose=False)
    preset = next(iter(app.PRESETS))
    r: dict = {"preset": preset, "threads": torch.get_num_threads()}
    for key in ("uncached", "cached"):
        start, first = time.perf_counter(), None
        job = client.submit(preset=preset, api_name="/run_preset", **SETTINGS)
        while not job.done():
            if first is None and any("→" in str(o) for o in job.outputs()):
                first = time.perf_counter() - start  # the first run's perplexity is on screen
            time.sleep(0.05)
        status = job.result()
        r[f"preset_{key}_first_result_s"] = first or time.perf_counter() - start
        r[f"preset_{key}_all_s"] = time.perf_counter() - start
        assert status.startswith("Done"), status
    start = time.perf_counter()
    status = client.predict(
        method="wanda",
        pattern="unstructured",
        ratio=0.6,
        nm="2:4",
        options="",
        api_name="/run_single",
        **SETTINGS,
    )
    r["single_run_cached_s"] = time.perf_counter() - start
    assert status.startswith("Done"), status
    demo.close()
    print(f"app latency, default preset ({preset}), bundled model, {r['threads']} threads")
    for key, value in r.items():
        print(f"  {key:<28} {value:8.2f}" if isinstance(value, float) else f"  {key:<28} {value}")
    out = Path(__file__).parent / "results/app.json"
    write_result(out, r)


if __name__ == "__main__":
    main()
